using System.Diagnostics;
using System.Globalization;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Sandbox;

/// <summary>
/// The host identity a build runs as. As root, each build claims a uid and gid of its own (the same number) from
/// <see cref="FirstUid"/> on, as Nix's build users do: one build can then neither read nor signal another's files or
/// processes. A claim is an exclusive flock on <c>/run/tvix-fuse-build/uids/N.lock</c> (root's, mode 0700); flock
/// locks belong to an open file description, so two claims (threads, CLI runs, MSBuild nodes, <c>serve</c>) never
/// hold the same slot. Unprivileged callers keep their own uid: their builds share it.
/// </summary>
public sealed class BuildUser : IDisposable
{
    /// <summary>The first uid (and gid) of the range root-run builds take theirs from.</summary>
    public const int FirstUid = 0x35000000;

    /// <summary>How many builds can run as root at once.</summary>
    public const int Slots = 256;

    private static readonly Lazy<HashSet<long>> s_named = new(NamedIds);
    private int _lockFd;

    private BuildUser(int uid, int gid, int lockFd)
    {
        Uid = uid;
        Gid = gid;
        _lockFd = lockFd;
    }

    /// <summary>True when the caller runs as root: each build then runs as a build user of its own.</summary>
    public static bool IsRoot { get; } = Libc.geteuid() == 0;

    public int Uid { get; }

    public int Gid { get; }

    /// <summary>True when this is the caller's own identity (an unprivileged caller), shared by all its builds.</summary>
    public bool IsCallersOwn => _lockFd < 0;

    /// <summary>True when <paramref name="uid"/> is in the range root-run builds use.</summary>
    public static bool IsBuildUid(long uid) => uid >= FirstUid && uid < (long)FirstUid + Slots;

    /// <summary>
    /// As root: claims a free slot of the range (skipping ids /etc/passwd or /etc/group name), first killing whatever
    /// process of that uid a previous holder left behind. Otherwise: the caller's own uid and gid.
    /// </summary>
    /// <exception cref="SandboxException">Every slot is taken, or the lock directory is not safe to use.</exception>
    public static BuildUser Claim()
    {
        if (!BuildUser.IsRoot)
        {
            return new BuildUser((int)Libc.getuid(), (int)Libc.getgid(), -1);
        }

        string directory = LockDirectory();
        int busy = 0;
        for (int slot = 0; slot < Slots; slot++)
        {
            int id = FirstUid + slot;
            if (s_named.Value.Contains(id))
            {
                continue;
            }

            int fd = Libc.openat(Libc.AT_FDCWD, Path.Combine(directory, $"{slot}.lock"),
                Libc.O_RDWR | Libc.O_CREAT | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0x180 /* 0600 */);
            if (fd < 0)
            {
                throw new SandboxException(SandboxSetupException.FromErrno($"open the lock of build user {id} in {directory}", Errno.Last).Message);
            }

            if (Libc.flock(fd, Libc.LOCK_EX | Libc.LOCK_NB) < 0)
            {
                Libc.close(fd);
                busy++;
                continue;
            }

            if (!KillLeftovers(id))
            {
                Libc.close(fd);
                busy++;
                continue;
            }

            return new BuildUser(id, id, fd);
        }

        throw new SandboxException(
            $"no build user is free: all {busy} uids from {FirstUid} on are in use by running builds (at most {Slots} builds run as root at once)");
    }

    /// <summary>Releases the slot. Call once every process of the build is gone (after the sandbox returned).</summary>
    public void Dispose()
    {
        int fd = Interlocked.Exchange(ref _lockFd, -1);
        if (fd >= 0)
        {
            Libc.close(fd);
        }
    }

    /// <summary>
    /// A holder killed with SIGKILL releases its lock at once, while the kernel may still be tearing its sandbox down:
    /// every process whose real uid is <paramref name="uid"/> is killed, and the slot is used once none is left.
    /// </summary>
    private static bool KillLeftovers(int uid)
    {
        var deadline = Stopwatch.StartNew();
        while (true)
        {
            var left = ProcessesOf(uid);
            if (left.Count == 0)
            {
                return true;
            }

            if (deadline.Elapsed > TimeSpan.FromSeconds(10))
            {
                return false; // unkillable (stuck in the kernel): leave this slot alone
            }

            foreach (int pid in left)
            {
                Libc.kill(pid, Libc.SIGKILL);
            }

            Thread.Sleep(10);
        }
    }

    /// <summary>Live (not zombie) processes whose real uid is <paramref name="uid"/>.</summary>
    internal static List<int> ProcessesOf(int uid)
    {
        var found = new List<int>();
        string wanted = uid.ToString(CultureInfo.InvariantCulture);
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
            {
                continue;
            }

            try
            {
                bool ours = false;
                bool zombie = false;
                foreach (string line in File.ReadLines(Path.Combine(dir, "status")))
                {
                    if (line.StartsWith("State:", StringComparison.Ordinal))
                    {
                        zombie = line.Contains("(zombie)", StringComparison.Ordinal) || line.Contains("(dead)", StringComparison.Ordinal);
                    }
                    else if (line.StartsWith("Uid:", StringComparison.Ordinal))
                    {
                        ours = line.Split('\t', StringSplitOptions.RemoveEmptyEntries) is [_, var real, ..] && real == wanted;
                        break;
                    }
                }

                if (ours && !zombie)
                {
                    found.Add(pid);
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // gone meanwhile
            }
        }

        return found;
    }

    /// <summary><c>/run/tvix-fuse-build/uids</c>: root's, mode 0700, a real directory (checked, never repaired).</summary>
    private static string LockDirectory()
    {
        string parent = Directory.Exists("/run") ? "/run/tvix-fuse-build" : "/var/lib/tvix-fuse-build";
        string directory = Path.Combine(parent, "uids");
        const UnixFileMode Public = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute |
                                    UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;
        if (!Directory.Exists(parent))
        {
            Directory.CreateDirectory(parent, Public);
        }

        if (Libc.mkdirat(Libc.AT_FDCWD, directory, 0x1C0) < 0 && Errno.Last != Errno.EEXIST)
        {
            throw new SandboxException(SandboxSetupException.FromErrno($"create {directory}", Errno.Last).Message);
        }

        int mode = Libc.StatMode(Libc.AT_FDCWD, directory, Libc.AT_SYMLINK_NOFOLLOW);
        if (mode < 0 || ((uint)mode & Libc.S_IFMT) != Libc.S_IFDIR || (mode & 0xFFF) != 0x1C0 || Libc.OwnerOf(directory) != 0)
        {
            throw new SandboxException(
                $"cannot claim a build user: {directory} must be a directory of root's with mode 0700; remove it if nothing runs builds");
        }

        return directory;
    }

    /// <summary>Every uid of /etc/passwd and gid of /etc/group: never handed to a build.</summary>
    private static HashSet<long> NamedIds()
    {
        var ids = new HashSet<long>();
        foreach (string file in new[] { "/etc/passwd", "/etc/group" })
        {
            try
            {
                foreach (string line in File.ReadLines(file))
                {
                    var fields = line.Split(':');
                    if (fields.Length > 2 && long.TryParse(fields[2], NumberStyles.None, CultureInfo.InvariantCulture, out long id))
                    {
                        ids.Add(id);
                    }
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
            }
        }

        return ids;
    }
}
