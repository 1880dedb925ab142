using System.Runtime.InteropServices;

namespace TvixFuseBuild.Castore.Interop;

/// <summary>
/// The libc calls the castore needs where .NET's file APIs fall short: raw-byte names and symlink targets, fd-relative
/// walks that never follow symlinks, and stat fields (inode, ctime) that FileInfo does not expose.
/// Every function returns -1 (or null) and leaves errno set on failure; callers turn that into <see cref="PosixException"/>.
/// </summary>
internal static unsafe partial class Libc
{
    private const string LibraryName = "libc";

    public const int AT_FDCWD = -100;
    public const int AT_SYMLINK_NOFOLLOW = 0x100;
    public const int AT_REMOVEDIR = 0x200;

    public const int O_RDONLY = 0;
    public const int O_WRONLY = 1;
    public const int O_RDWR = 2;
    public const int O_CREAT = 0x40;
    public const int O_EXCL = 0x80;
    public const int O_NOCTTY = 0x100;
    public const int O_TRUNC = 0x200;
    public const int O_NONBLOCK = 0x800;
    public const int O_DIRECTORY = 0x10000;
    public const int O_NOFOLLOW = 0x20000;
    public const int O_CLOEXEC = 0x80000;

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

    public const int ENOENT = 2;
    public const int EINTR = 4;
    public const int EACCES = 13;
    public const int EEXIST = 17;
    public const int ENOTDIR = 20;
    public const int EISDIR = 21;
    public const int EINVAL = 22;
    public const int ENOSPC = 28;
    public const int ESRCH = 3;
    public const int EAGAIN = 11;

    public const int LOCK_SH = 1;
    public const int LOCK_EX = 2;
    public const int LOCK_NB = 4;
    public const int LOCK_UN = 8;
    public const int ELOOP = 40;
    public const int ENOTEMPTY = 39;

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int openat(int dirfd, byte* path, int flags, uint mode);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int close(int fd);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int fstatat(int dirfd, byte* path, out FileStatus status, int flags);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int fstat(int fd, out FileStatus status);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial nint readlinkat(int dirfd, byte* path, byte* buffer, nint size);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int symlinkat(byte* target, int newdirfd, byte* linkpath);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int mkdirat(int dirfd, byte* path, uint mode);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int fchmod(int fd, uint mode);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int fchmodat(int dirfd, byte* path, uint mode, int flags);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int unlinkat(int dirfd, byte* path, int flags);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int renameat(int olddirfd, byte* oldpath, int newdirfd, byte* newpath);

    public const uint RENAME_NOREPLACE = 1;
    public const uint RENAME_EXCHANGE = 2;

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int renameat2(int olddirfd, byte* oldpath, int newdirfd, byte* newpath, uint flags);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial nint fdopendir(int fd);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial byte* readdir(nint dir);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int closedir(nint dir);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial nint copy_file_range(int fdIn, long* offIn, int fdOut, long* offOut, nint length, uint flags);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int kill(int pid, int signal);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int fsync(int fd);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int flock(int fd, int operation);

    [LibraryImport(LibraryName, SetLastError = true)]
    public static partial int ftruncate(int fd, long length);

    [LibraryImport(LibraryName)]
    public static partial nint strerror(int errnum);

    public static string ErrorText(int errno) => Marshal.PtrToStringUTF8(strerror(errno)) ?? $"errno {errno}";
}

/// <summary>struct stat on x86_64 Linux (144 bytes).</summary>
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
