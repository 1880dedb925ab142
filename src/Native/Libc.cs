using System.Runtime.InteropServices;

namespace TvixFuseBuild.Native;

/// <summary>
/// Every libc call the tool makes, bound once. Raw: each returns -1 (or null, or MAP_FAILED) and leaves errno for
/// <see cref="Errno.Last"/>; the caller turns it into an exception naming the operation (<see cref="PosixException"/>
/// or its own domain's, with the text from <see cref="Errno.Describe"/>) or into a reply. Numbers are x86-64 Linux
/// unless marked; those that differ on arm64 are chosen at run time.
/// </summary>
internal static unsafe partial class Libc
{
    private const string Lib = "libc";

    private static readonly bool IsX86 = RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.X86;

    // The runtime probes "libc" as libc.so (on glibc a linker script: dlopen reads it and fails), then liblibc.so in
    // every library directory, before it settles on the loaded libc; glibc's soname is asked for first, and the usual
    // probing still follows where there is none (musl).
    static Libc() => NativeLibrary.SetDllImportResolver(typeof(Libc).Assembly, static (name, _, _) =>
        name == Lib && NativeLibrary.TryLoad("libc.so.6", out nint handle) ? handle : 0);

    public const int AT_FDCWD = -100;
    public const int AT_SYMLINK_NOFOLLOW = 0x100;
    public const int AT_REMOVEDIR = 0x200;
    public const int AT_EMPTY_PATH = 0x1000;
    public const int AT_STATX_DONT_SYNC = 0x4000;
    public const int AT_RECURSIVE = 0x8000;

    public const int O_RDONLY = 0;
    public const int O_WRONLY = 1;
    public const int O_RDWR = 2;
    public const int O_ACCMODE = 3;
    public const int O_CREAT = 0x40;
    public const int O_EXCL = 0x80;
    public const int O_NOCTTY = 0x100;
    public const int O_TRUNC = 0x200;
    public const int O_NONBLOCK = 0x800;
    public const int O_CLOEXEC = 0x80000;
    public const int O_PATH = 0x200000;

    // The generic (asm-generic) values are arm64's; x86 has its own.
    public static readonly int O_DIRECTORY = IsX86 ? 0x10000 : 0x4000;
    public static readonly int O_NOFOLLOW = IsX86 ? 0x20000 : 0x8000;

    public const uint S_IFMT = 0xF000;
    public const uint S_IFSOCK = 0xC000;
    public const uint S_IFLNK = 0xA000;
    public const uint S_IFREG = 0x8000;
    public const uint S_IFBLK = 0x6000;
    public const uint S_IFDIR = 0x4000;
    public const uint S_IFCHR = 0x2000;
    public const uint S_IFIFO = 0x1000;
    public const uint S_IXUSR = 0x40;

    public const byte DT_UNKNOWN = 0;
    public const byte DT_DIR = 4;
    public const byte DT_REG = 8;
    public const byte DT_LNK = 10;

    public const uint STATX_TYPE = 0x1;
    public const uint STATX_MODE = 0x2;
    public const uint STATX_UID = 0x8;
    public const uint STATX_GID = 0x10;
    public const uint STATX_INO = 0x100;
    public const uint STATX_SIZE = 0x200;
    public const uint STATX_MNT_ID = 0x1000;
    public const uint STATX_MNT_ID_UNIQUE = 0x4000;

    public const int F_GETFD = 1;
    public const int F_SETFD = 2;
    public const int F_GETFL = 3;
    public const int F_SETFL = 4;
    public const int F_DUPFD_CLOEXEC = 1030;
    public const int FD_CLOEXEC = 1;

    public const int LOCK_SH = 1;
    public const int LOCK_EX = 2;
    public const int LOCK_NB = 4;
    public const int LOCK_UN = 8;

    public const uint RENAME_NOREPLACE = 1;
    public const uint RENAME_EXCHANGE = 2;

    public const int X_OK = 1;

    public const int PROT_READ = 1;
    public const int MAP_PRIVATE = 2;
    public const int MAP_POPULATE = 0x8000;
    public const int MADV_SEQUENTIAL = 2;
    public static readonly nint MapFailed = -1;

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

    // openat2(2)
    public const ulong RESOLVE_NO_MAGICLINKS = 0x02;
    public const ulong RESOLVE_NO_SYMLINKS = 0x04;

    // prctl(2)
    public const int PR_SET_PDEATHSIG = 1;
    public const int PR_SET_DUMPABLE = 4;
    public const int PR_CAPBSET_READ = 23;
    public const int PR_CAPBSET_DROP = 24;
    public const int PR_SET_NO_NEW_PRIVS = 38;
    public const int PR_CAP_AMBIENT = 47;
    public const int PR_CAP_AMBIENT_RAISE = 2;
    public const int PR_CAP_AMBIENT_CLEAR_ALL = 4;

    // clone(2) namespace flags.
    public const ulong CLONE_NEWNS = 0x00020000;
    public const ulong CLONE_NEWCGROUP = 0x02000000;
    public const ulong CLONE_NEWUTS = 0x04000000;
    public const ulong CLONE_NEWIPC = 0x08000000;
    public const ulong CLONE_NEWUSER = 0x10000000;
    public const ulong CLONE_NEWPID = 0x20000000;
    public const ulong CLONE_NEWNET = 0x40000000;

    public const ulong MS_REC = 0x4000;
    public const ulong MS_PRIVATE = 0x40000;

    public const int POSIX_SPAWN_SETSIGDEF = 0x04;
    public const int POSIX_SPAWN_SETSIGMASK = 0x08;
    public const int POSIX_SPAWN_SETSID = 0x80;

    public const int RLIMIT_CORE = 4;
    public const int RLIMIT_NPROC = 6;
    public const int RLIMIT_NOFILE = 7;
    public const int RLIMIT_AS = 9;

    public const int SIGHUP = 1;
    public const int SIGINT = 2;
    public const int SIGKILL = 9;
    public const int SIGTERM = 15;
    public const int SIGCHLD = 17;
    public static readonly nint SIG_DFL = 0;
    public static readonly nint SIG_IGN = 1;
    public const int WALL = 0x40000000;

    public const int EPOLL_CLOEXEC = 0x80000;
    public const int EPOLL_CTL_ADD = 1;
    public const uint EPOLLIN = 0x001;
    public const short POLLIN = 0x001;
    public const uint EPOLLEXCLUSIVE = 1u << 28;

    public const int EFD_CLOEXEC = 0x80000;
    public const int EFD_NONBLOCK = 0x800;

    public const int AF_UNIX = 1;
    public const int SOCK_STREAM = 1;
    public const int SOCK_CLOEXEC = 0x80000;
    public const int SOL_SOCKET = 1;
    public const int SCM_RIGHTS = 1;
    public const int MSG_CMSG_CLOEXEC = 0x40000000;

    /// <summary>struct statx (256 bytes; the same on every architecture).</summary>
    [StructLayout(LayoutKind.Explicit, Size = 256)]
    public struct Statx
    {
        [FieldOffset(0)]
        public uint Mask;

        [FieldOffset(20)]
        public uint Uid;

        [FieldOffset(24)]
        public uint Gid;

        [FieldOffset(28)]
        public ushort Mode;

        [FieldOffset(32)]
        public ulong Inode;

        [FieldOffset(40)]
        public ulong Size;

        [FieldOffset(136)]
        public uint DevMajor;

        [FieldOffset(140)]
        public uint DevMinor;

        /// <summary>stx_mnt_id: the mount's reusable id (STATX_MNT_ID) or, since Linux 6.8, its unique one (STATX_MNT_ID_UNIQUE).</summary>
        [FieldOffset(144)]
        public ulong MountId;

        public readonly uint FileType => Mode & S_IFMT;
    }

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

    /// <summary>struct open_how (openat2).</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct OpenHow
    {
        public ulong Flags;
        public ulong Mode;
        public ulong Resolve;
    }

    /// <summary>struct mount_attr (mount_setattr).</summary>
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

    /// <summary>struct epoll_event: packed on x86-64 (12 bytes).</summary>
    [StructLayout(LayoutKind.Sequential, Pack = 4)]
    public struct EpollEvent
    {
        public uint Events;
        public ulong Data;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct PollFd
    {
        public int Fd;
        public short Events;
        public short ReturnedEvents;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct IoVec
    {
        public void* Base;
        public nuint Length;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct MsgHdr
    {
        public void* Name;
        public uint NameLength;
        public IoVec* Iov;
        public nuint IovLength;
        public void* Control;
        public nuint ControlLength;
        public int Flags;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct CMsgHdr
    {
        public nuint Length;
        public int Level;
        public int Type;
    }

    // Files and directories.

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int open(string path, int flags, uint mode);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int openat(int dirfd, byte* path, int flags, uint mode);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int openat(int dirfd, string path, int flags, uint mode);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial nint read(int fd, void* buffer, nuint count);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial nint write(int fd, void* buffer, nuint count);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial nint pread(int fd, void* buffer, nuint count, long offset);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial long lseek(int fd, long offset, int whence);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int fstatat(int dirfd, byte* path, out FileStatus status, int flags);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int fstat(int fd, out FileStatus status);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int statx(int dirfd, byte* path, int flags, uint mask, Statx* buffer);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int statx(int dirfd, string path, int flags, uint mask, Statx* buffer);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int fstatfs(int fd, StatFs* buffer);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int statfs(string path, StatFs* buffer);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial nint readlinkat(int dirfd, byte* path, byte* buffer, nuint size);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint readlinkat(int dirfd, string path, byte* buffer, nuint size);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int symlinkat(byte* target, int newdirfd, byte* linkpath);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int symlinkat(string target, int newdirfd, string linkpath);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mkdir(string path, uint mode);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int mkdirat(int dirfd, byte* path, uint mode);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mkdirat(int dirfd, string path, uint mode);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int unlinkat(int dirfd, byte* path, int flags);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int unlinkat(int dirfd, string path, int flags);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int renameat(int olddirfd, byte* oldpath, int newdirfd, byte* newpath);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int renameat2(int olddirfd, byte* oldpath, int newdirfd, byte* newpath, uint flags);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int fchmod(int fd, uint mode);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int fchmodat(int dirfd, byte* path, uint mode, int flags);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int lchown(string path, int uid, int gid);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int access(string path, int mode);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial nint realpath(string path, byte* resolved);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int chdir(string path);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial nint fdopendir(int fd);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial byte* readdir(nint dir);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int closedir(nint dir);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial nint getdents64(int fd, byte* buffer, nuint count);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial nint copy_file_range(int fdIn, long* offIn, int fdOut, long* offOut, nint length, uint flags);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int fsync(int fd);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int flock(int fd, int operation);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int ftruncate(int fd, long length);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int fcntl(int fd, int command, int argument);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int ioctl(int fd, nuint request, void* argument);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int memfd_create(string name, uint flags);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial nint mmap(nint address, nuint length, int protection, int flags, int fd, long offset);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int munmap(nint address, nuint length);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int madvise(nint address, nuint length, int advice);

    [LibraryImport(Lib)]
    public static partial uint umask(uint mask);

    // Mounts.

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int mount(string? source, string target, string? fileSystemType, ulong flags, string? data);

    [LibraryImport(Lib, SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int umount2(string target, int flags);

    // Events and sockets.

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int epoll_create1(int flags);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int epoll_ctl(int epfd, int op, int fd, EpollEvent* ev);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int epoll_wait(int epfd, EpollEvent* events, int maxEvents, int timeout);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int eventfd(uint initval, int flags);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int socket(int domain, int type, int protocol);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int pipe2(int* fds, int flags);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int poll(PollFd* fds, nuint count, int timeout);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int socketpair(int domain, int type, int protocol, int* sv);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial nint recvmsg(int fd, MsgHdr* msg, int flags);

    // Processes and credentials.

    [LibraryImport(Lib)]
    public static partial uint getuid();

    [LibraryImport(Lib)]
    public static partial uint getgid();

    [LibraryImport(Lib)]
    public static partial uint geteuid();

    [LibraryImport(Lib)]
    public static partial uint getegid();

    [LibraryImport(Lib)]
    public static partial int getpid();

    /// <summary>glibc's wrappers: the change applies to every thread of the process (glibc signals each one).</summary>
    [LibraryImport(Lib, SetLastError = true)]
    public static partial int setresuid(uint ruid, uint euid, uint suid);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int setresgid(uint rgid, uint egid, uint sgid);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int setgroups(nuint size, uint* list);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int getresuid(uint* ruid, uint* euid, uint* suid);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int getresgid(uint* rgid, uint* egid, uint* sgid);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int kill(int pid, int signal);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial nint signal(int signal, nint handler);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int execve(byte* path, byte** argv, byte** envp);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int waitpid(int pid, int* status, int options);

    [LibraryImport(Lib)]
    public static partial void _exit(int status);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int prctl(int option, nuint a2, nuint a3, nuint a4, nuint a5);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int capset(void* header, void* data);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int capget(void* header, void* data);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int sethostname(byte* name, nuint len);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int setrlimit(int resource, RLimit* limit);

    [LibraryImport(Lib, SetLastError = true)]
    public static partial int getrlimit(int resource, RLimit* limit);

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

    [LibraryImport(Lib)]
    public static partial int sigaddset(void* set, int signal);

    public const int SIG_BLOCK = 0;
    public const int SIG_SETMASK = 2;

    /// <summary>Returns an errno (not -1 and errno).</summary>
    [LibraryImport(Lib)]
    public static partial int pthread_sigmask(int how, void* set, void* oldset);

    // System calls glibc has no wrapper for (or not in every version we run on).

    [LibraryImport(Lib, SetLastError = true)]
    private static partial nint syscall(nint number, nint a1, nint a2, nint a3, nint a4, nint a5);

    /// <summary>struct clone_args (clone3), up to cgroup (size 88).</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct CloneArgs
    {
        public ulong Flags;
        public ulong PidFd;
        public ulong ChildTid;
        public ulong ParentTid;
        public ulong ExitSignal;
        public ulong Stack;
        public ulong StackSize;
        public ulong Tls;
        public ulong SetTid;
        public ulong SetTidSize;
        public ulong Cgroup;
    }

    /// <summary>
    /// clone3(2) without CLONE_VM: a fork whose child starts in new namespaces (<paramref name="flags"/>) and sends
    /// SIGCHLD when it exits. The child pid in the parent, 0 in the child, -1 with errno. Bypasses glibc's fork: the
    /// child must only make system calls until it calls execve.
    /// </summary>
    public static int CloneIntoNamespaces(ulong flags)
    {
        var args = new CloneArgs { Flags = flags, ExitSignal = SIGCHLD };
        return (int)syscall(435, (nint)(&args), sizeof(CloneArgs), 0, 0, 0);
    }

    public static int OpenTree(int dirFd, string path, uint flags)
    {
        fixed (byte* p = NativePath.FromString(path))
        {
            return (int)syscall(428, dirFd, (nint)p, (nint)flags, 0, 0);
        }
    }

    /// <summary>openat2(2) for one path relative to <paramref name="dirFd"/>, O_PATH, with the given RESOLVE_ flags.</summary>
    public static int OpenAt2Path(int dirFd, string path, ulong resolve)
    {
        var how = new OpenHow { Flags = (ulong)(O_PATH | O_CLOEXEC), Resolve = resolve };
        fixed (byte* p = NativePath.FromString(path))
        {
            return (int)syscall(437, dirFd, (nint)p, (nint)(&how), sizeof(OpenHow), 0);
        }
    }

    public static int MoveMount(int fromFd, string fromPath, int toFd, string toPath, uint flags)
    {
        fixed (byte* f = NativePath.FromString(fromPath))
        fixed (byte* t = NativePath.FromString(toPath))
        {
            return (int)syscall(429, fromFd, (nint)f, toFd, (nint)t, (nint)flags);
        }
    }

    public static int MountSetAttr(int dirFd, string path, uint flags, ulong set, ulong clear)
    {
        var attr = new MountAttr { AttrSet = set, AttrClr = clear };
        fixed (byte* p = NativePath.FromString(path))
        {
            return (int)syscall(442, dirFd, (nint)p, (nint)flags, (nint)(&attr), sizeof(MountAttr));
        }
    }

    /// <summary>
    /// arch_prctl(ARCH_GET_XCOMP_SUPP) on x86-64 (Linux 5.16+): the XSAVE state components the kernel enables for user
    /// space (bit 2: the upper halves of the YMM registers; bits 5-7: AVX-512's opmask and ZMM state). -1 with errno set
    /// where the kernel or architecture has no such call.
    /// </summary>
    public static int GetXsaveUserFeatures(out ulong features)
    {
        features = 0;
        if (RuntimeInformation.ProcessArchitecture != Architecture.X64)
        {
            Marshal.SetLastPInvokeError(Errno.EINVAL);
            return -1;
        }

        fixed (ulong* f = &features)
        {
            return (int)syscall(158, 0x1021, (nint)f, 0, 0, 0);
        }
    }

    public static int PivotRoot(string newRoot, string putOld)
    {
        fixed (byte* n = NativePath.FromString(newRoot))
        fixed (byte* o = NativePath.FromString(putOld))
        {
            return (int)syscall(IsX86 ? 155 : 41, (nint)n, (nint)o, 0, 0, 0);
        }
    }

    // statx for the one or two fields a caller wants.

    /// <summary>The owner, type and mode of an open file (statx with AT_EMPTY_PATH); false with errno set.</summary>
    public static bool StatFd(int fd, out uint uid, out uint mode)
    {
        Statx stat;
        int rc = statx(fd, "", AT_EMPTY_PATH, STATX_TYPE | STATX_MODE | STATX_UID, &stat);
        uid = rc < 0 ? 0 : stat.Uid;
        mode = rc < 0 ? 0u : stat.Mode;
        return rc == 0;
    }

    /// <summary>The owner, type and mode of <paramref name="path"/>, not following a symlink; false with errno set.</summary>
    public static bool StatPath(string path, out uint uid, out uint mode)
    {
        Statx stat;
        int rc = statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_TYPE | STATX_MODE | STATX_UID, &stat);
        uid = rc < 0 ? 0 : stat.Uid;
        mode = rc < 0 ? 0u : stat.Mode;
        return rc == 0;
    }

    /// <summary>statx(2) for the file type and mode only; returns st_mode or -1.</summary>
    public static int StatMode(int dirFd, string path, int flags)
    {
        Statx stat;
        return statx(dirFd, path, flags, STATX_TYPE | STATX_MODE, &stat) < 0 ? -1 : stat.Mode;
    }

    /// <summary>The owning user of a host path (not following symlinks), or -1.</summary>
    public static long OwnerOf(string path)
    {
        Statx stat;
        return statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_UID, &stat) < 0 ? -1 : stat.Uid;
    }

    /// <summary>The owning group of a host path (following symlinks), or -1.</summary>
    public static int GetGid(string path)
    {
        Statx stat;
        return statx(AT_FDCWD, path, 0, STATX_GID, &stat) < 0 ? -1 : (int)stat.Gid;
    }

    /// <summary>The inode of <paramref name="path"/> (not followed), or of <paramref name="fd"/> when the path is null; 0 when gone.</summary>
    public static ulong Inode(int fd, string? path)
    {
        Statx stat;
        int rc = statx(fd, path ?? "", path is null ? AT_EMPTY_PATH : AT_SYMLINK_NOFOLLOW, STATX_INO, &stat);
        return rc < 0 ? 0 : stat.Inode;
    }

    /// <summary>The filesystem type (f_type of fstatfs) of an open file, or -1.</summary>
    public static long FsType(int fd)
    {
        StatFs fs;
        return fstatfs(fd, &fs) < 0 ? -1 : fs.Type;
    }
}

/// <summary>struct stat on x86-64 Linux (144 bytes).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FileStatus
{
    public ulong Device;
    public ulong Inode;
    public ulong LinkCount;
    public uint Mode;
    public uint Uid;
    public uint Gid;
    private int _pad0;
    public ulong RDevice;
    public long Size;
    public long BlockSize;
    public long Blocks;
    public long AccessTimeSeconds;
    public long AccessTimeNanoseconds;
    public long ModifyTimeSeconds;
    public long ModifyTimeNanoseconds;
    public long ChangeTimeSeconds;
    public long ChangeTimeNanoseconds;
    private long _reserved0;
    private long _reserved1;
    private long _reserved2;

    public readonly uint Type => Mode & Libc.S_IFMT;

    public readonly bool IsDirectory => Type == Libc.S_IFDIR;

    public readonly bool IsRegularFile => Type == Libc.S_IFREG;

    public readonly bool IsSymlink => Type == Libc.S_IFLNK;

    public readonly bool IsOwnerExecutable => (Mode & Libc.S_IXUSR) != 0;

    public readonly string TypeDescription => Type switch
    {
        Libc.S_IFSOCK => "a socket",
        Libc.S_IFIFO => "a fifo",
        Libc.S_IFCHR => "a character device",
        Libc.S_IFBLK => "a block device",
        Libc.S_IFDIR => "a directory",
        Libc.S_IFLNK => "a symlink",
        Libc.S_IFREG => "a regular file",
        _ => "of an unknown file type",
    };
}
