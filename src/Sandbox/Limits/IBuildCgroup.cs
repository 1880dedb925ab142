using System.Globalization;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Sandbox;

/// <summary>
/// A build's own cgroup(s): created before the sandbox starts, entered by the init's outer process before it creates
/// anything of the build (it writes itself to each <see cref="Directories"/>' cgroup.procs and sets
/// <see cref="PidsMax"/>), read for reached limits once the build is gone, then removed.
/// </summary>
internal interface IBuildCgroup : IDisposable
{
    /// <summary>The limits a reached-limit report can be given for.</summary>
    IReadOnlyList<SandboxLimit> Watched { get; }

    /// <summary>The cgroup directories the sandbox starts in.</summary>
    IReadOnlyList<string> Directories { get; }

    /// <summary>The pids.max file, set by the init to the process limit plus its own threads; null without a pids cgroup.</summary>
    string? PidsMax { get; }

    /// <summary>The limits the build reached, read once everything of it is gone.</summary>
    IReadOnlyList<SandboxLimit> Hits();
}

internal static class BuildCgroups
{
    /// <summary>An admin-delegated cgroup v2 directory to create the builds' cgroups in (see <see cref="CgroupV2Parent"/>).</summary>
    public const string Variable = "TVIX_FUSE_BUILD_CGROUP";

    /// <summary>
    /// A cgroup v2 one where usable, else the v1 ones (root only), else null. A configured
    /// <see cref="Variable"/> that cannot be used is an error, not a silent fallback.
    /// </summary>
    public static IBuildCgroup? Create(SandboxLimits limits) => Create(limits, Environment.GetEnvironmentVariable(Variable));

    public static IBuildCgroup? Create(SandboxLimits limits, string? configured)
    {
        configured = string.IsNullOrEmpty(configured) ? null : configured;
        var (parent, reason) = CgroupV2Parent.Detect(
            ReadLines("/proc/self/mountinfo"), ReadLines("/proc/self/cgroup"), configured, Libc.geteuid(), limits.MaxMemory is not null);
        if (parent is not null)
        {
            return BuildCgroupV2.Create(parent, limits, CgroupFs.Real);
        }

        if (configured is not null)
        {
            throw new SandboxException($"{Variable}={configured} cannot hold the builds' cgroups: {reason}");
        }

        return BuildCgroup.Create(limits);
    }

    private static string[] ReadLines(string file)
    {
        try
        {
            return File.ReadAllLines(file);
        }
        catch (IOException)
        {
            return [];
        }
    }
}

/// <summary>Making and removing cgroup directories: the kernel fills and empties them.</summary>
internal interface ICgroupFs
{
    /// <summary>Creates the cgroup; it must not exist yet.</summary>
    void MakeDirectory(string path);

    /// <summary>Removes the cgroup: IOException while tasks are still leaving it, DirectoryNotFoundException when gone.</summary>
    void RemoveDirectory(string path);
}

internal sealed class CgroupFs : ICgroupFs
{
    public static CgroupFs Real { get; } = new();

    public void MakeDirectory(string path) =>
        SandboxSetupException.Check(Libc.mkdirat(Libc.AT_FDCWD, path, 0x1ED /* 0755 */), $"create cgroup {path}");

    public void RemoveDirectory(string path) => Directory.Delete(path);
}

/// <summary>What the v1 and v2 cgroups share: names, the stale sweep, removal, the files' formats.</summary>
internal static class CgroupFiles
{
    public const string Prefix = "tvix-fuse-build-";

    /// <summary>tvix-fuse-build-PID-RANDOM: the owner's pid is what the sweep goes by.</summary>
    public static string NewName() => $"{Prefix}{Environment.ProcessId}-{Random.Shared.NextInt64():x16}";

    /// <summary>Removes the empty cgroups of callers that are gone (a cgroup with processes cannot be removed anyway).</summary>
    public static void Sweep(string parent, ICgroupFs fs)
    {
        try
        {
            foreach (string dir in Directory.EnumerateDirectories(parent, Prefix + "*"))
            {
                var parts = Path.GetFileName(dir)[Prefix.Length..].Split('-');
                if (parts.Length == 2 && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int owner) &&
                    owner != Environment.ProcessId && !Directory.Exists($"/proc/{owner}"))
                {
                    Remove(dir, fs);
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    public static void Remove(string? dir, ICgroupFs fs)
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
                fs.RemoveDirectory(dir);
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
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return;
            }
        }
    }

    public static void Write(string file, long value) => Write(file, value.ToString(CultureInfo.InvariantCulture));

    public static void Write(string file, string value) => File.WriteAllText(file, value);

    /// <summary>The value of "key value" in a flat-keyed file (pids.events, memory.events, memory.oom_control), or 0.</summary>
    public static long ReadKey(string file, string key)
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
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }

        return 0;
    }
}
