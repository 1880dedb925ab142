using System.Runtime.InteropServices;

namespace TvixFuseBuild.Build.Refscan.Native;

/// <summary>
/// The libc calls the scanner needs to walk a tree by file descriptor (never following a symlink, names as raw
/// bytes) and to map files. Each returns -1 (or MAP_FAILED) and sets errno on failure; <see cref="FileDescriptor"/>
/// and the scanner turn that into exceptions naming the path.
/// </summary>
internal static unsafe partial class Libc
{
    public const int AT_FDCWD = -100;
    public const int AT_SYMLINK_NOFOLLOW = 0x100;
    public const int AT_EMPTY_PATH = 0x1000;

    public const int O_RDONLY = 0;
    public const int O_NOCTTY = 0x100;
    public const int O_NONBLOCK = 0x800;
    public const int O_CLOEXEC = 0x80000;

    public const int EINTR = 4;

    public const uint STATX_TYPE = 0x1;
    public const uint STATX_SIZE = 0x200;

    public const int S_IFMT = 0xF000;
    public const int S_IFDIR = 0x4000;
    public const int S_IFREG = 0x8000;
    public const int S_IFLNK = 0xA000;

    public const byte DT_UNKNOWN = 0;
    public const byte DT_DIR = 4;
    public const byte DT_REG = 8;
    public const byte DT_LNK = 10;

    public const int PROT_READ = 1;
    public const int MAP_PRIVATE = 2;
    public const int MAP_POPULATE = 0x8000;
    public const int MADV_SEQUENTIAL = 2;

    // The generic (asm-generic) values are arm64's; x86 has its own.
    public static readonly int O_DIRECTORY = RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.X86 ? 0x10000 : 0x4000;
    public static readonly int O_NOFOLLOW = RuntimeInformation.ProcessArchitecture is Architecture.X64 or Architecture.X86 ? 0x20000 : 0x8000;

    public static readonly nint MapFailed = -1;

    /// <summary>struct statx: 256 bytes; the scanner reads stx_mode and stx_size.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 256)]
    public struct Statx
    {
        [FieldOffset(0)]
        public uint Mask;

        [FieldOffset(28)]
        public ushort Mode;

        [FieldOffset(40)]
        public ulong Size;

        public readonly int FileType => Mode & S_IFMT;
    }

    [LibraryImport("libc", EntryPoint = "openat", SetLastError = true)]
    public static partial int OpenAt(int dirfd, byte* path, int flags, uint mode);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true)]
    public static partial int StatX(int dirfd, byte* path, int flags, uint mask, Statx* buffer);

    [LibraryImport("libc", EntryPoint = "getdents64", SetLastError = true)]
    public static partial nint GetDents64(int fd, byte* buffer, nuint count);

    [LibraryImport("libc", EntryPoint = "readlinkat", SetLastError = true)]
    public static partial nint ReadLinkAt(int dirfd, byte* path, byte* buffer, nuint size);

    [LibraryImport("libc", EntryPoint = "pread64", SetLastError = true)]
    public static partial nint PRead(int fd, byte* buffer, nuint count, long offset);

    [LibraryImport("libc", EntryPoint = "mmap64", SetLastError = true)]
    public static partial nint MMap(nint address, nuint length, int protection, int flags, int fd, long offset);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    public static partial int MUnmap(nint address, nuint length);

    [LibraryImport("libc", EntryPoint = "madvise", SetLastError = true)]
    public static partial int MAdvise(nint address, nuint length, int advice);

    public static string ErrorText(int errno) => Marshal.GetPInvokeErrorMessage(errno);
}
