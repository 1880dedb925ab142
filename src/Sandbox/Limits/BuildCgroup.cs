using System.Globalization;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Sandbox;

/// <summary>
/// A build's own cgroups, as root on a host with cgroup v1 controllers and no usable v2 hierarchy (see <see cref="BuildCgroupV2"/>) (the hybrid layout): one under the caller's
/// pids cgroup (pids.max) and one under its memory cgroup (memory.limit_in_bytes; tmpfs pages are charged there too).
/// The init's outer process moves itself into them before it creates the namespaces, so every process of the build is
/// inside from its first fork. Removed when the build is over; those of callers that are gone are removed by the next build.
/// </summary>
internal sealed class BuildCgroup : IBuildCgroup
{
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

        string name = CgroupFiles.NewName();
        string? pids = null;
        string? memory = null;
        try
        {
            if (pidsParent is not null)
            {
                CgroupFiles.Sweep(pidsParent, CgroupFs.Real);
                pids = Path.Combine(pidsParent, name);
                CgroupFs.Real.MakeDirectory(pids);
            }

            if (memoryParent is not null)
            {
                CgroupFiles.Sweep(memoryParent, CgroupFs.Real);
                memory = Path.Combine(memoryParent, name);
                CgroupFs.Real.MakeDirectory(memory);
                CgroupFiles.Write(Path.Combine(memory, "memory.limit_in_bytes"), limits.MaxMemory!.Value);

                // Without swap accounting the limit holds anyway; with it, swap must not extend it.
                string memsw = Path.Combine(memory, "memory.memsw.limit_in_bytes");
                if (File.Exists(memsw))
                {
                    CgroupFiles.Write(memsw, limits.MaxMemory!.Value);
                }
            }

            return new BuildCgroup(pids, memory, limits);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or SandboxSetupException)
        {
            CgroupFiles.Remove(pids, CgroupFs.Real);
            CgroupFiles.Remove(memory, CgroupFs.Real);
            throw new SandboxException($"cannot create the build's cgroup: {e.Message}");
        }
    }

    public IReadOnlyList<string> Directories => new[] { _pids, _memory }.OfType<string>().ToList();

    public string? PidsMax => _pids is null ? null : Path.Combine(_pids, "pids.max");

    /// <summary>The limits the build reached, read once everything of it is gone.</summary>
    public IReadOnlyList<SandboxLimit> Hits()
    {
        var hits = new List<SandboxLimit>();
        if (_pids is not null && CgroupFiles.ReadKey(Path.Combine(_pids, "pids.events"), "max") > 0)
        {
            hits.Add(SandboxLimit.Processes);
        }

        if (_memory is not null && CgroupFiles.ReadKey(Path.Combine(_memory, "memory.oom_control"), "oom_kill") > 0)
        {
            hits.Add(SandboxLimit.Memory);
        }

        return hits;
    }

    public void Dispose()
    {
        CgroupFiles.Remove(_pids, CgroupFs.Real);
        CgroupFiles.Remove(_memory, CgroupFs.Real);
    }

    /// <summary>Where the caller's own cgroup of each v1 controller is (from mountinfo and /proc/self/cgroup).</summary>
    private static Dictionary<string, string> V1Hierarchies()
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        try
        {
            var mounts = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var mount in MountInfo.ReadSelf())
            {
                if (mount.FileSystemType != "cgroup" || mount.Root != "/")
                {
                    continue;
                }

                foreach (string option in mount.SuperOptions.Split(','))
                {
                    if (option is "pids" or "memory")
                    {
                        mounts.TryAdd(option, mount.MountPoint);
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
}
