using System.Globalization;

namespace TvixFuseBuild.Sandbox;

/// <summary>
/// A build's own cgroups, as root on a host with cgroup v1 controllers (the hybrid layout): one under the caller's
/// pids cgroup (pids.max) and one under its memory cgroup (memory.limit_in_bytes; tmpfs pages are charged there too).
/// The caller moves the init into them before the init starts anything, so every process of the build is inside from
/// its first fork. Removed when the build is over; those of callers that are gone are removed by the next build.
/// </summary>
internal sealed class BuildCgroup : IDisposable
{
    private const string Prefix = "tvix-fuse-build-";

    private readonly string? _pids;
    private readonly string? _memory;
    private readonly SandboxLimits _limits;

    private BuildCgroup(string? pids, string? memory, SandboxLimits limits)
    {
        _pids = pids;
        _memory = memory;
        _limits = limits;
    }

    /// <summary>The limits a reached-limit report can be given for.</summary>
    public IReadOnlyList<SandboxLimit> Watched
    {
        get
        {
            var watched = new List<SandboxLimit>(2);
            if (_pids is not null)
            {
                watched.Add(SandboxLimit.Processes);
            }

            if (_memory is not null)
            {
                watched.Add(SandboxLimit.Memory);
            }

            return watched;
        }
    }

    /// <summary>The build's cgroups, or null where this caller cannot have any (not root, no v1 pids or memory hierarchy).</summary>
    public static BuildCgroup? Create(SandboxLimits limits)
    {
        if (!BuildUser.IsRoot)
        {
            return null;
        }

        var hierarchies = V1Hierarchies();
        string? pidsParent = hierarchies.GetValueOrDefault("pids");
        string? memoryParent = limits.MaxMemory is null ? null : hierarchies.GetValueOrDefault("memory");
        if (pidsParent is null && memoryParent is null)
        {
            return null;
        }

        string name = $"{Prefix}{Environment.ProcessId}-{Random.Shared.NextInt64():x16}";
        string? pids = null;
        string? memory = null;
        try
        {
            if (pidsParent is not null)
            {
                Sweep(pidsParent);
                pids = Path.Combine(pidsParent, name);
                Directory.CreateDirectory(pids);
            }

            if (memoryParent is not null)
            {
                Sweep(memoryParent);
                memory = Path.Combine(memoryParent, name);
                Directory.CreateDirectory(memory);
                Write(Path.Combine(memory, "memory.limit_in_bytes"), limits.MaxMemory!.Value);

                // Without swap accounting the limit holds anyway; with it, swap must not extend it.
                string memsw = Path.Combine(memory, "memory.memsw.limit_in_bytes");
                if (File.Exists(memsw))
                {
                    Write(memsw, limits.MaxMemory!.Value);
                }
            }

            return new BuildCgroup(pids, memory, limits);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Remove(pids);
            Remove(memory);
            throw new SandboxException($"cannot create the build's cgroup: {e.Message}");
        }
    }

    /// <summary>
    /// Moves the init (host pid <paramref name="pid"/>, a child of <paramref name="unsharePid"/>) into the cgroups; the
    /// pids limit leaves room for the init's own <paramref name="initThreads"/> threads (and its watchdog thread).
    /// </summary>
    public void Place(int pid, int unsharePid, int initThreads)
    {
        // The pid comes from the init, which has run nothing of the build yet; still, it must be the init.
        if (ParentOf(pid) != unsharePid)
        {
            throw new SandboxException($"the sandbox init reported pid {pid}, which is not a child of unshare ({unsharePid})");
        }

        if (_pids is not null)
        {
            Write(Path.Combine(_pids, "pids.max"), (long)_limits.MaxProcesses + initThreads + 1);
            Write(Path.Combine(_pids, "cgroup.procs"), pid);
        }

        if (_memory is not null)
        {
            Write(Path.Combine(_memory, "cgroup.procs"), pid);
        }
    }

    /// <summary>The limits the build reached, read once everything of it is gone.</summary>
    public IReadOnlyList<SandboxLimit> Hits()
    {
        var hits = new List<SandboxLimit>();
        if (_pids is not null && ReadKey(Path.Combine(_pids, "pids.events"), "max") > 0)
        {
            hits.Add(SandboxLimit.Processes);
        }

        if (_memory is not null && ReadKey(Path.Combine(_memory, "memory.oom_control"), "oom_kill") > 0)
        {
            hits.Add(SandboxLimit.Memory);
        }

        return hits;
    }

    public void Dispose()
    {
        Remove(_pids);
        Remove(_memory);
    }

    /// <summary>Where the caller's own cgroup of each v1 controller is (from mountinfo and /proc/self/cgroup).</summary>
    private static Dictionary<string, string> V1Hierarchies()
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        try
        {
            var mounts = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (string line in File.ReadLines("/proc/self/mountinfo"))
            {
                int dash = line.IndexOf(" - ", StringComparison.Ordinal);
                if (dash < 0)
                {
                    continue;
                }

                var fields = line[..dash].Split(' ');
                var tail = line[(dash + 3)..].Split(' ');
                if (tail.Length < 3 || tail[0] != "cgroup" || fields.Length < 5 || fields[3] != "/")
                {
                    continue;
                }

                foreach (string option in tail[2].Split(','))
                {
                    if (option is "pids" or "memory")
                    {
                        mounts.TryAdd(option, fields[4].Replace("\\040", " "));
                    }
                }
            }

            foreach (string line in File.ReadLines("/proc/self/cgroup"))
            {
                var parts = line.Split(':', 3);
                if (parts.Length != 3)
                {
                    continue;
                }

                foreach (string controller in parts[1].Split(','))
                {
                    if (mounts.TryGetValue(controller, out string? mount))
                    {
                        string dir = Path.Join(mount, parts[2]);
                        if (Directory.Exists(dir))
                        {
                            result[controller] = dir;
                        }
                    }
                }
            }
        }
        catch (IOException)
        {
        }

        return result;
    }

    /// <summary>Removes the empty cgroups of callers that are gone (a cgroup with processes cannot be removed anyway).</summary>
    private static void Sweep(string parent)
    {
        try
        {
            foreach (string dir in Directory.EnumerateDirectories(parent, Prefix + "*"))
            {
                var parts = Path.GetFileName(dir)[Prefix.Length..].Split('-');
                if (parts.Length == 2 && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int owner) &&
                    owner != Environment.ProcessId && !Directory.Exists($"/proc/{owner}"))
                {
                    Remove(dir);
                }
            }
        }
        catch (IOException)
        {
        }
    }

    private static void Remove(string? dir)
    {
        if (dir is null)
        {
            return;
        }

        // The last tasks may still be leaving the cgroup right after the namespace is gone.
        for (int attempt = 0; ; attempt++)
        {
            try
            {
                Directory.Delete(dir);
                return;
            }
            catch (DirectoryNotFoundException)
            {
                return;
            }
            catch (IOException) when (attempt < 50)
            {
                Thread.Sleep(10);
            }
            catch (IOException)
            {
                return;
            }
        }
    }

    private static void Write(string file, long value) =>
        File.WriteAllText(file, value.ToString(CultureInfo.InvariantCulture));

    private static long ReadKey(string file, string key)
    {
        try
        {
            foreach (string line in File.ReadLines(file))
            {
                var parts = line.Split(' ', 2);
                if (parts.Length == 2 && parts[0] == key && long.TryParse(parts[1], CultureInfo.InvariantCulture, out long value))
                {
                    return value;
                }
            }
        }
        catch (IOException)
        {
        }

        return 0;
    }

    private static int ParentOf(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return int.Parse(fields[1], CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or FormatException or IndexOutOfRangeException)
        {
            return -1;
        }
    }
}
