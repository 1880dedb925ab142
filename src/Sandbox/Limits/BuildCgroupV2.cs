using TvixFuseBuild.Native;

namespace TvixFuseBuild.Sandbox;

/// <summary>
/// Where a build's cgroup v2 can be created: a cgroup that enables (or, being ours and empty, may enable) the
/// controllers in its cgroup.subtree_control, that we can write to, on a read-write cgroup2 mount.
/// </summary>
/// <remarks>
/// cgroup v2 lets a cgroup enable controllers for its children only while it holds no processes, so the build's
/// cgroup cannot be a child of our own (we are in it). Moving ourselves into a leaf child to free our cgroup would
/// change the caller's cgroup behind its back (systemd's, a service manager's), so we do not. Instead:
/// <list type="bullet">
/// <item><c>TVIX_FUSE_BUILD_CGROUP</c> names a cgroup the admin delegated to us (empty of processes, writable by our
/// uid, memory and pids in its cgroup.controllers); we enable them in its subtree_control when they are not yet.</item>
/// <item>Without it, the builds' cgroups are created next to ours, in our cgroup's parent, but only where that parent
/// already enables the controllers and is writable by us (root; or a user whose systemd user@.service subtree is
/// delegated): that needs no change to anyone's cgroup, and leaf cgroups of ours there break no rule.</item>
/// </list>
/// Moving the init across needs write access to cgroup.procs of the common ancestor of our cgroup and the target.
/// </remarks>
internal sealed record CgroupV2Parent(string Path, IReadOnlyList<string> Enable)
{
    /// <summary>
    /// The parent to use, or the reason there is none. <paramref name="mountinfo"/> and <paramref name="procCgroup"/>
    /// are the lines of /proc/self/mountinfo and /proc/self/cgroup; <paramref name="euid"/> decides who must be able to write.
    /// </summary>
    public static (CgroupV2Parent? Parent, string? Reason) Detect(
        IEnumerable<string> mountinfo, IEnumerable<string> procCgroup, string? configured, uint euid, bool memory)
    {
        string? mount = null;
        bool readOnly = false;
        foreach (var entry in MountInfo.Parse(mountinfo))
        {
            if (entry.FileSystemType == "cgroup2" && entry.Root == "/")
            {
                mount = entry.MountPoint;
                readOnly = entry.Options.Split(',').Contains("ro");
                break;
            }
        }

        if (mount is null)
        {
            return (null, "no cgroup2 file system is mounted");
        }

        if (readOnly)
        {
            return (null, $"the cgroup2 file system at {mount} is mounted read-only");
        }

        string? ours = procCgroup.FirstOrDefault(l => l.StartsWith("0::", StringComparison.Ordinal))?[3..];
        if (ours is null || !ours.StartsWith('/') || ours.Split('/').Contains(".."))
        {
            return (null, "this process is in no cgroup v2 it can see (no usable 0:: line in /proc/self/cgroup)");
        }

        string own = System.IO.Path.TrimEndingDirectorySeparator(mount + ours);
        if (!Directory.Exists(own))
        {
            return (null, $"this process's cgroup {own} does not exist");
        }

        string candidate;
        if (configured is not null)
        {
            if (!System.IO.Path.IsPathFullyQualified(configured) ||
                System.IO.Path.TrimEndingDirectorySeparator(System.IO.Path.GetFullPath(configured)) is not { } full ||
                !(full == mount || full.StartsWith(mount.TrimEnd('/') + "/", StringComparison.Ordinal)) ||
                !File.Exists(System.IO.Path.Combine(full, "cgroup.controllers")))
            {
                return (null, $"it is not a cgroup directory in the cgroup2 file system at {mount}");
            }

            candidate = full;
        }
        else
        {
            candidate = ours == "/" ? mount : System.IO.Path.GetDirectoryName(own)!;
        }

        string[] needed = memory ? ["memory", "pids"] : ["pids"];
        var available = Words(System.IO.Path.Combine(candidate, "cgroup.controllers"));
        var missing = needed.Where(c => !available.Contains(c)).ToList();
        if (missing.Count > 0)
        {
            return (null, $"{candidate} does not have the {string.Join(" and ", missing)} controller{(missing.Count > 1 ? "s" : "")} (cgroup.controllers: {Show(available)})");
        }

        var enabled = Words(System.IO.Path.Combine(candidate, "cgroup.subtree_control"));
        var enable = needed.Where(c => !enabled.Contains(c)).ToList();
        if (enable.Count > 0 && configured is null)
        {
            return (null, $"{candidate} does not enable {string.Join(" and ", enable)} for its children (cgroup.subtree_control: {Show(enabled)}), " +
                $"and it is not ours to change; set {BuildCgroups.Variable} to a cgroup delegated to us");
        }

        if (enable.Count > 0 && Words(System.IO.Path.Combine(candidate, "cgroup.procs")).Count > 0)
        {
            return (null, $"{candidate} holds processes, so it cannot enable {string.Join(" and ", enable)} for its children (cgroup v2's no-internal-processes rule)");
        }

        string ancestor = CommonAncestor(own, candidate);
        List<string> mustWrite = [candidate, System.IO.Path.Combine(ancestor, "cgroup.procs")];
        if (enable.Count > 0)
        {
            mustWrite.Add(System.IO.Path.Combine(candidate, "cgroup.subtree_control"));
        }

        foreach (string path in mustWrite)
        {
            if (!WritableBy(path, euid))
            {
                return (null, $"{path} is not writable by uid {euid} (the cgroup is not delegated to it)");
            }
        }

        return (new CgroupV2Parent(candidate, enable), null);
    }

    private static HashSet<string> Words(string file)
    {
        try
        {
            return [.. File.ReadAllText(file).Split((char[])[' ', '\n'], StringSplitOptions.RemoveEmptyEntries)];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }

    private static string Show(HashSet<string> words) => words.Count == 0 ? "none" : string.Join(' ', words.Order(StringComparer.Ordinal));

    private static string CommonAncestor(string a, string b)
    {
        var x = a.Split('/');
        var y = b.Split('/');
        int n = 0;
        while (n < x.Length && n < y.Length && x[n] == y[n])
        {
            n++;
        }

        return string.Join('/', x[..n]) is { Length: > 0 } common ? common : "/";
    }

    /// <summary>Delegation is by owner (systemd chowns a delegated cgroup's directory and files to the user).</summary>
    private static bool WritableBy(string path, uint euid)
    {
        if (euid == 0)
        {
            return true;
        }

        long owner = Libc.OwnerOf(path);
        if (owner < 0)
        {
            return false;
        }

        var mode = File.GetUnixFileMode(path);
        return (owner == euid && mode.HasFlag(UnixFileMode.UserWrite)) || mode.HasFlag(UnixFileMode.OtherWrite);
    }
}

/// <summary>
/// A build's own cgroup v2: one leaf below <see cref="CgroupV2Parent"/> with memory.max (memory.swap.max 0, so swap
/// does not extend it, as memsw does on v1) and pids.max. Reached limits come from memory.events (oom_kill) and
/// pids.events (max). Removed when the build is over; those of callers that are gone are removed by the next build.
/// </summary>
internal sealed class BuildCgroupV2 : IBuildCgroup
{
    private readonly string _dir;
    private readonly SandboxLimits _limits;
    private readonly ICgroupFs _fs;

    private BuildCgroupV2(string dir, SandboxLimits limits, ICgroupFs fs)
    {
        _dir = dir;
        _limits = limits;
        _fs = fs;
    }

    /// <summary>The build's cgroup directory.</summary>
    public string CgroupPath => _dir;

    public IReadOnlyList<SandboxLimit> Watched =>
        _limits.MaxMemory is null ? [SandboxLimit.Processes] : [SandboxLimit.Processes, SandboxLimit.Memory];

    public static BuildCgroupV2 Create(CgroupV2Parent parent, SandboxLimits limits, ICgroupFs fs)
    {
        string dir = Path.Combine(parent.Path, CgroupFiles.NewName());
        bool made = false;
        try
        {
            CgroupFiles.Sweep(parent.Path, fs);
            if (parent.Enable.Count > 0)
            {
                CgroupFiles.Write(Path.Combine(parent.Path, "cgroup.subtree_control"), string.Join(' ', parent.Enable.Select(c => "+" + c)));
            }

            fs.MakeDirectory(dir);
            made = true;
            if (limits.MaxMemory is { } max)
            {
                CgroupFiles.Write(Path.Combine(dir, "memory.max"), max);

                // Absent without swap accounting (swapaccount=0, or no swap controller): then swap cannot extend it anyway.
                string swap = Path.Combine(dir, "memory.swap.max");
                if (File.Exists(swap))
                {
                    CgroupFiles.Write(swap, 0);
                }
            }

            return new BuildCgroupV2(dir, limits, fs);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or SandboxSetupException)
        {
            if (made)
            {
                CgroupFiles.Remove(dir, fs);
            }

            throw new SandboxException($"cannot create the build's cgroup in {parent.Path}: {e.Message}");
        }
    }

    public IReadOnlyList<string> Directories => [_dir];

    public string? PidsMax => Path.Combine(_dir, "pids.max");

    public IReadOnlyList<SandboxLimit> Hits()
    {
        var hits = new List<SandboxLimit>();
        if (CgroupFiles.ReadKey(Path.Combine(_dir, "pids.events"), "max") > 0)
        {
            hits.Add(SandboxLimit.Processes);
        }

        if (_limits.MaxMemory is not null && CgroupFiles.ReadKey(Path.Combine(_dir, "memory.events"), "oom_kill") > 0)
        {
            hits.Add(SandboxLimit.Memory);
        }

        return hits;
    }

    public void Dispose() => CgroupFiles.Remove(_dir, _fs);
}
