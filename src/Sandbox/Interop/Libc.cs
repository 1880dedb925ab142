using System.Runtime.InteropServices;

namespace TvixFuseBuild.Sandbox.Interop;

/// <summary>The libc calls the sandbox init makes. errno is captured at the call; <see cref="Errno"/> turns it into an exception.</summary>
internal static unsafe partial class Libc
{
    private const string Lib = "libc";

    public const int AT_FDCWD = -100;
    public const int AT_SYMLINK_NOFOLLOW = 0x100;
    public const int AT_EMPTY_PATH = 0x1000;
    public const int AT_RECURSIVE = 0x8000;

    public const int O_RDONLY = 0;
    public const int O_WRONLY = 1;
    public const int O_RDWR = 2;
    public const int O_CREAT = 0x40;
    public const int O_EXCL = 0x80;
    public const int O_TRUNC = 0x200;
    public const int O_DIRECTORY = 0x10000;
    public const int O_NOFOLLOW = 0x20000;
    public const int O_CLOEXEC = 0x80000;
    public const int O_PATH = 0x200000;

    public const int EINTR = 4;
    public const int ENOENT = 2;
    public const int ESRCH = 3;
    public const int EAGAIN = 11;
    public const int ELOOP = 40;
    public const int EXDEV = 18;
    public const int EEXIST = 17;
    public const int EINVAL = 22;
    public const int ECHILD = 10;

    public const uint S_IFMT = 0xF000;
    public const uint S_IFDIR = 0x4000;
    public const uint S_IFREG = 0x8000;
    public const uint S_IFLNK = 0xA000;
    public const uint S_IFCHR = 0x2000;
    public const uint S_IFBLK = 0x6000;

    // mount(2)
    public const ulong MS_RDONLY = 1;
    public const ulong MS_NOSUID = 2;
    public const ulong MS_NODEV = 4;
    public const ulong MS_NOEXEC = 8;
    public const ulong MS_REMOUNT = 32;
    public const ulong MS_BIND = 4096;
    public const int MNT_DETACH = 2;

    // The new mount API (numbers shared by all architectures).
    public const uint OPEN_TREE_CLONE = 1;
    public const uint OPEN_TREE_CLOEXEC = O_CLOEXEC;
    public const uint MOVE_MOUNT_F_EMPTY_PATH = 0x4;
    public const uint MOVE_MOUNT_T_EMPTY_PATH = 0x40;
    public const ulong MOUNT_ATTR_RDONLY = 0x1;
    public const ulong MOUNT_ATTR_NOSUID = 0x2;
    public const ulong MOUNT_ATTR_NODEV = 0x4;
    public const ulong MOUNT_ATTR_NOEXEC = 0x8;

    // prctl(2)
    public const int PR_SET_PDEATHSIG = 1;
    public const int PR_SET_DUMPABLE = 4;
    public const int PR_CAPBSET_DROP = 24;
    public const int PR_SET_NO_NEW_PRIVS = 38;
    public const int PR_CAP_AMBIENT = 47;
    public const int PR_CAP_AMBIENT_CLEAR_ALL = 4;

    public const int POSIX_SPAWN_SETSIGDEF = 0x04;
    public const int POSIX_SPAWN_SETSIGMASK = 0x08;
    public const int POSIX_SPAWN_SETSID = 0x80;

    public const int F_GETFD = 1;
    public const int F_SETFD = 2;
    public const int FD_CLOEXEC = 1;

    public const int LOCK_EX = 2;
    public const int LOCK_NB = 4;

    // openat2(2)
    public const ulong RESOLVE_NO_MAGICLINKS = 0x02;
    public const ulong RESOLVE_NO_SYMLINKS = 0x04;

    public const int RLIMIT_CORE = 4;
    public const int RLIMIT_NOFILE = 7;
    public const int RLIMIT_NPROC = 6;

    public const int SIGKILL = 9;
    public const int WALL = 0x40000000;

    [StructLayout(LayoutKind.Sequential)]
    public struct MountAttr
    {
        public ulong AttrSet;
        public ulong AttrClr;
        public ulong Propagation;
        public ulong UsernsFd;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct RLimit
    {
        public ulong Cur;
        public ulong Max;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct OpenHow
    {
        public ulong Flags;
        public ulong Mode;
        public ulong Resolve;
    }

    [LibraryImport(Lib, SetLastError = true)]
    private static partial nint syscall(nint number, nint a1, nint a2, nint a3, nint a4, nint a5);

    private static bool IsArm64 => RuntimeInformation.ProcessArchitecture == Architecture.Arm64;

    public static int OpenTree(int dirFd, string path, uint flags)
    {
        fixed (byte* p = Utf8Z(path))
        {
            return (int)syscall(428, dirFd, (nint)p, (nint)flags, 0, 0);
        }
    }

    /// <summary>openat2(2) for one path relative to <paramref name="dirFd"/>, O_PATH, with the given RESOLVE_ flags.</summary>
    public static int OpenAt2Path(int dirFd, string path, ulong resolve)
    {
        var how = new OpenHow { Flags = (ulong)(O_PATH | O_CLOEXEC), Resolve = resolve };
        fixed (byte* p = Utf8Z(path))
        {
            return (int)syscall(437, dirFd, (nint)p, (nint)(&how), sizeof(OpenHow), 0);
        }
    }

    /// <summary>The owner, type and mode of an open file (statx with AT_EMPTY_PATH); false with errno set.</summary>
    public static bool StatFd(int fd, out uint uid, out uint mode)
    {
        byte* buf = stackalloc byte[256];
        int rc = statx(fd, "", AT_EMPTY_PATH, 0xB /* STATX_TYPE | STATX_MODE | STATX_UID */, buf);
        uid = rc < 0 ? 0 : *(uint*)(buf + 20);
        mode = rc < 0 ? 0u : *(ushort*)(buf + 28);
        return rc == 0;
    }

    /// <summary>The filesystem type (f_type of fstatfs) of an open file, or -1.</summary>
    public static long FsType(int fd)
    {
        byte* buf = stackalloc byte[128];
        return fstatfs(fd, buf) < 0 ? -1 : *(long*)buf;
    }

    public static int MoveMount(int fromFd, string fromPath, int toFd, string toPath, uint flags)
    {
        fixed (byte* f = Utf8Z(fromPath))
        fixed (byte* t = Utf8Z(toPath))
        {
            return (int)syscall(429, fromFd, (nint)f, toFd, (nint)t, (nint)flags);
        }
    }

    public static int MountSetAttr(int dirFd, string path, uint flags, ulong set, ulong clear)
    {
        var attr = new MountAttr { AttrSet = set, AttrClr = clear };
        fixed (byte* p = Utf8Z(path))
        {
            return (int)syscall(442, dirFd, (nint)p, (nint)flags, (nint)(&attr), sizeof(MountAttr));
        }
    }

    public static int PivotRoot(string newRoot, string putOld)
    {
        fixed (byte* n = Utf8Z(newRoot))
        fixed (byte* o = Utf8Z(putOld))
        {
            return (int)syscall(IsArm64 ? 41 : 155, (nint)n, (nint)o, 0, 0, 0);
        }
    }

    /// <summary>statx(2) for the file type and mode only; returns st_mode or -1.</summary>
    public static int StatMode(int dirFd, string path, int flags)
    {
        byte* buf = stackalloc byte[256];
        int rc = statx(dirFd, path, flags, 0x3 /* STATX_TYPE | STATX_MODE */, buf);
        return rc < 0 ? -1 : *(ushort*)(buf + 28);
    }

    /// <summary>The owning user of a host path (not following symlinks), or -1.</summary>
    public static long OwnerOf(string path)
    {
        byte* buf = stackalloc byte[256];
        int rc = statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, 0x8 /* STATX_UID */, buf);
        return rc < 0 ? -1 : *(uint*)(buf + 20);
    }

    /// <summary>The owning group of a host path (following symlinks), or -1.</summary>
    public static int GetGid(string path)
    {
        byte* buf = stackalloc byte[256];
        int rc = statx(AT_FDCWD, path, 0, 0x10 /* STATX_GID */, buf);
        return rc < 0 ? -1 : (int)*(uint*)(buf + 24);
    }

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int statx(int dirFd, string path, int flags, uint mask, byte* buf);

    [LibraryImport(Lib, SetLastError = true)]
    private static partial int fstatfs(int fd, byte* buf);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int flock(int fd, int operation);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int kill(int pid, int signal);

    [LibraryImport(Lib)]
    public static partial uint getuid();

    [LibraryImport(Lib)]
    public static partial uint getgid();

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint realpath(string path, byte* resolved);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mount(string? source, string target, string? fstype, ulong flags, string? data);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int umount2(string target, int flags);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int openat(int dirFd, string path, int flags, uint mode);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mkdirat(int dirFd, string path, uint mode);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int symlinkat(string target, int dirFd, string path);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint readlinkat(int dirFd, string path, byte* buf, nuint size);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int unlinkat(int dirFd, string path, int flags);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int chdir(string path);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int sethostname(byte* name, nuint len);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial nint read(int fd, byte* buf, nuint count);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial nint write(int fd, byte* buf, nuint count);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int fcntl(int fd, int cmd, int arg);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int prctl(int option, nuint a2, nuint a3, nuint a4, nuint a5);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int capset(void* header, void* data);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int socket(int domain, int type, int protocol);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int ioctl(int fd, nuint request, void* arg);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int waitpid(int pid, int* status, int options);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int setrlimit(int resource, RLimit* limit);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int getrlimit(int resource, RLimit* limit);

    [LibraryImport(Lib)]
    public static partial void _exit(int status);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int memfd_create(string name, uint flags);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial long lseek(int fd, long offset, int whence);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial nint pread(int fd, byte* buf, nuint count, long offset);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int statfs(string path, StatFs* buf);

    /// <summary>struct statfs on 64-bit Linux (120 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct StatFs
    {
        public long Type;
        public long BlockSize;
        public ulong Blocks;
        public ulong BlocksFree;
        public ulong BlocksAvailable;
        public ulong Files;
        public ulong FilesFree;
        public ulong FsId;
        public long NameLength;
        public long FragmentSize;
        public long Flags;
        public long Spare0;
        public long Spare1;
        public long Spare2;
        public long Spare3;
    }

    [LibraryImport(Lib)]
    public static partial uint umask(uint mask);

    [LibraryImport(Lib)]
    public static partial uint geteuid();

    public const int X_OK = 1;

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int access(string path, int mode);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int lchown(string path, int uid, int gid);

    [LibraryImport(Lib)]
    public static partial int posix_spawn(int* pid, byte* path, void* fileActions, void* attr, byte** argv, byte** envp);

    [LibraryImport(Lib)]
    public static partial int posix_spawn_file_actions_init(void* fileActions);

    [LibraryImport(Lib)]
    public static partial int posix_spawn_file_actions_destroy(void* fileActions);

    [LibraryImport(Lib)]
    public static partial int posix_spawn_file_actions_adddup2(void* fileActions, int fd, int newFd);

    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int posix_spawn_file_actions_addopen(void* fileActions, int fd, string path, int flags, uint mode);

    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int posix_spawn_file_actions_addchdir_np(void* fileActions, string path);

    [LibraryImport(Lib)]
    public static partial int posix_spawn_file_actions_addclosefrom_np(void* fileActions, int from);

    [LibraryImport(Lib)]
    public static partial int posix_spawnattr_init(void* attr);

    [LibraryImport(Lib)]
    public static partial int posix_spawnattr_destroy(void* attr);

    [LibraryImport(Lib)]
    public static partial int posix_spawnattr_setflags(void* attr, short flags);

    [LibraryImport(Lib)]
    public static partial int posix_spawnattr_setsigdefault(void* attr, void* sigset);

    [LibraryImport(Lib)]
    public static partial int posix_spawnattr_setsigmask(void* attr, void* sigset);

    [LibraryImport(Lib)]
    public static partial int sigfillset(void* set);

    [LibraryImport(Lib)]
    public static partial int sigemptyset(void* set);

    [LibraryImport(Lib)]
    public static partial int sigdelset(void* set, int signal);

    /// <summary>NUL-terminated UTF-8 for the raw syscalls.</summary>
    public static byte[] Utf8Z(string s)
    {
        var bytes = new byte[System.Text.Encoding.UTF8.GetByteCount(s) + 1];
        System.Text.Encoding.UTF8.GetBytes(s, bytes);
        return bytes;
    }
}

/// <summary>errno at the syscall edge, an exception naming the operation above it.</summary>
internal static class Errno
{
    public static int Last => Marshal.GetLastPInvokeError();

    public static SandboxSetupException Exception(string operation, int errno) =>
        new($"{operation}: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})", errno);

    public static int Check(int rc, string operation)
    {
        if (rc < 0)
        {
            throw Exception(operation, Last);
        }

        return rc;
    }
}

/// <summary>A step of setting up the sandbox failed; carries errno when a syscall did.</summary>
internal sealed class SandboxSetupException(string message, int errno = 0) : Exception(message)
{
    public int Errno { get; } = errno;
}
