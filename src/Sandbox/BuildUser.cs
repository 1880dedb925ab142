using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
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

    /// <summary>
    /// Live (not zombie) processes whose real uid is <paramref name="uid"/>. Every claim reads every process's
    /// /proc/PID/status, so this is written with system calls and buffers on the stack (a third of the CPU time of
    /// File.ReadLines over the same files).
    /// </summary>
    internal static unsafe List<int> ProcessesOf(int uid)
    {
        var found = new List<int>();
        int proc = Libc.openat(Libc.AT_FDCWD, "/proc", Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        if (proc < 0)
        {
            throw new SandboxException(SandboxSetupException.FromErrno("list the processes in /proc", Errno.Last).Message);
        }

        try
        {
            const int DentsSize = 16384;
            const int StatusSize = 2048; // Name to Uid come first, well within this
            byte* dents = stackalloc byte[DentsSize];
            byte* path = stackalloc byte[32];
            byte* status = stackalloc byte[StatusSize];
            Span<byte> wanted = stackalloc byte[16];
            uid.TryFormat(wanted, out int wantedLength, default, CultureInfo.InvariantCulture);
            wanted = wanted[..wantedLength];
            while (true)
            {
                nint n = Libc.getdents64(proc, dents, DentsSize);
                if (n < 0)
                {
                    throw new SandboxException(SandboxSetupException.FromErrno("list the processes in /proc", Errno.Last).Message);
                }

                if (n == 0)
                {
                    return found;
                }

                for (nint offset = 0; offset < n;)
                {
                    ushort length = *(ushort*)(dents + offset + 16); // struct linux_dirent64: d_reclen
                    var name = MemoryMarshal.CreateReadOnlySpanFromNullTerminated(dents + offset + 19);
                    offset += length;
                    if (!int.TryParse(name, NumberStyles.None, CultureInfo.InvariantCulture, out int pid) || name.Length > 16)
                    {
                        continue;
                    }

                    name.CopyTo(new Span<byte>(path, 32));
                    "/status\0"u8.CopyTo(new Span<byte>(path + name.Length, 32 - name.Length));
                    int fd = Libc.openat(proc, path, Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
                    if (fd < 0)
                    {
                        continue; // gone meanwhile
                    }

                    nint read = Libc.read(fd, status, StatusSize);
                    Libc.close(fd);
                    if (read > 0 && IsLiveWithRealUid(new ReadOnlySpan<byte>(status, (int)read), wanted))
                    {
                        found.Add(pid);
                    }
                }
            }
        }
        finally
        {
            Libc.close(proc);
        }
    }

    /// <summary>True when a /proc/PID/status's State is not zombie or dead and the first field of its Uid line (the real uid) is <paramref name="uid"/>.</summary>
    private static bool IsLiveWithRealUid(ReadOnlySpan<byte> status, ReadOnlySpan<byte> uid)
    {
        var state = Field(status, "\nState:\t"u8);
        if (state.StartsWith("Z"u8) || state.StartsWith("X"u8))
        {
            return false;
        }

        var ids = Field(status, "\nUid:\t"u8);
        int tab = ids.IndexOf((byte)'\t');
        return tab > 0 && ids[..tab].SequenceEqual(uid);
    }

    private static ReadOnlySpan<byte> Field(ReadOnlySpan<byte> status, ReadOnlySpan<byte> key)
    {
        int at = status.IndexOf(key);
        if (at < 0)
        {
            return default;
        }

        var value = status[(at + key.Length)..];
        int end = value.IndexOf((byte)'\n');
        return end < 0 ? value : value[..end];
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
