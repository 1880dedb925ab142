using System.Globalization;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Fuse.Mounting;

/// <summary>
/// Our mounts carry the serving process in their fsname (<c>tvix-fuse-build@PID.STARTTIME</c>). A mount whose process
/// is gone is stale: its readers get ENOTCONN until someone detaches it, which the next start of the tool does.
/// </summary>
internal static class StaleMounts
{
    public const string Subtype = "tvix-fuse-build";

    private static readonly Lazy<string> OwnFsName = new(() =>
        $"{Subtype}@{Environment.ProcessId}.{StartTime(Environment.ProcessId)?.ToString(CultureInfo.InvariantCulture) ?? "0"}");

    /// <summary>The fsname of mounts this process serves.</summary>
    public static string FsName => OwnFsName.Value;

    /// <summary>A mount of ours, as /proc/self/mountinfo lists it.</summary>
    internal readonly record struct OurMount(string Mountpoint, string FsName, int Pid, ulong StartTime);

    /// <summary>Every mount of ours visible in this mount namespace.</summary>
    public static IReadOnlyList<OurMount> List()
    {
        var mounts = new List<OurMount>();
        List<MountInfo> all;
        try
        {
            all = MountInfo.ReadSelf();
        }
        catch (IOException)
        {
            return mounts;
        }

        foreach (var mount in all)
        {
            if (mount.FileSystemType == "fuse." + Subtype && TryParseFsName(mount.Source, out int pid, out ulong start))
            {
                mounts.Add(new OurMount(mount.MountPoint, mount.Source, pid, start));
            }
        }

        return mounts;
    }

    /// <summary>Detaches every mount of ours whose serving process is dead; returns how many.</summary>
    public static int RemoveDead(Action<string> log)
    {
        int removed = 0;
        foreach (var mount in List())
        {
            if (IsAlive(mount.Pid, mount.StartTime) || !IsDisconnected(mount.Mountpoint))
            {
                continue;
            }

            bool done = Libc.geteuid() == 0
                ? Libc.umount2(mount.Mountpoint, Libc.MNT_DETACH) == 0 || KernelMount.RunFusermountUnmount(mount.Mountpoint, log)
                : KernelMount.RunFusermountUnmount(mount.Mountpoint, log);
            if (done)
            {
                removed++;
                log($"removed the stale mount at {mount.Mountpoint} (its server, pid {mount.Pid}, is gone)");
            }
            else
            {
                log($"cannot remove the stale mount at {mount.Mountpoint}: {Errno.Text(Errno.Last)}");
            }
        }

        return removed;
    }

    /// <summary>
    /// Detaches every mount at or below <paramref name="directory"/> (deepest first): as root with umount2(MNT_DETACH),
    /// otherwise FUSE mounts with <c>fusermount3 -u -z</c>. For the directory of a build whose owner is gone. Returns
    /// false when a mount stays.
    /// </summary>
    public static bool DetachUnder(string directory, Action<string> log)
    {
        List<MountInfo> mounts;
        try
        {
            mounts = MountInfo.ReadSelf();
        }
        catch (IOException)
        {
            return false;
        }

        var mountpoints = mounts.Where(m => m.MountPoint == directory || m.MountPoint.StartsWith(directory + "/", StringComparison.Ordinal))
            .Select(m => (Path: m.MountPoint, Fuse: m.FileSystemType.StartsWith("fuse", StringComparison.Ordinal)))
            .ToList();

        bool root = Libc.geteuid() == 0;
        bool all = true;
        foreach (var (mountpoint, fuse) in mountpoints.OrderByDescending(m => m.Path.Length))
        {
            bool done = root
                ? Libc.umount2(mountpoint, Libc.MNT_DETACH) == 0 || (fuse && KernelMount.RunFusermountUnmount(mountpoint, log))
                : fuse && KernelMount.RunFusermountUnmount(mountpoint, log);
            if (done)
            {
                log($"removed the mount at {mountpoint} (its build's owner is gone)");
            }
            else
            {
                all = false;
                log($"cannot remove the mount at {mountpoint} (its build's owner is gone)");
            }
        }

        return all;
    }

    internal static bool TryParseFsName(string fsName, out int pid, out ulong startTime)
    {
        pid = 0;
        startTime = 0;
        string prefix = Subtype + "@";
        if (!fsName.StartsWith(prefix, StringComparison.Ordinal))
        {
            return false;
        }

        string[] parts = fsName[prefix.Length..].Split('.');
        return parts.Length == 2 &&
            int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out pid) &&
            ulong.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out startTime);
    }

    /// <summary>True when <paramref name="pid"/> runs and is the process that started at <paramref name="startTime"/>.</summary>
    internal static bool IsAlive(int pid, ulong startTime) => pid > 0 && StartTime(pid) == startTime;

    /// <summary>The start time of a live process in clock ticks since boot (field 22 of /proc/PID/stat); null when it is gone or a zombie.</summary>
    internal static ulong? StartTime(int pid)
    {
        if (Stat(pid) is not { } fields)
        {
            return null;
        }

        // fields[0] is field 3 (the state), so field 22 is fields[19].
        return fields[0] is not ("Z" or "X") && ulong.TryParse(fields[19], NumberStyles.None, CultureInfo.InvariantCulture, out ulong start)
            ? start
            : null;
    }

    /// <summary>
    /// A dead FUSE server's mount answers ENOTCONN at once. Asked with statfs, which the kernel never answers from its
    /// caches (stat and access may be, with our long timeouts).
    /// </summary>
    private static unsafe bool IsDisconnected(string mountpoint)
    {
        Libc.StatFs fs;
        if (Libc.statfs(mountpoint, &fs) == 0)
        {
            return false;
        }

        int errno = Errno.Last;
        return errno is Errno.ENOTCONN or Errno.ECONNABORTED;
    }

    /// <summary>The fields of /proc/PID/stat from the third (the state) on, or null.</summary>
    private static string[]? Stat(int pid)
    {
        string stat;
        try
        {
            stat = File.ReadAllText($"/proc/{pid}/stat");
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }

        // The command name (field 2) is in parentheses and may contain anything; count fields after its end.
        int close = stat.LastIndexOf(')');
        if (close < 0 || close + 2 >= stat.Length)
        {
            return null;
        }

        string[] fields = stat[(close + 2)..].Split(' ');
        return fields.Length > 19 ? fields : null;
    }
}
