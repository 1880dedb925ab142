using System.Runtime.InteropServices;
using System.Text;

namespace TvixFuseBuild.Fuse.Tests.Support;

/// <summary>struct stat as x86-64 Linux lays it out.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct StatBuf
{
    public ulong Dev;
    public ulong Ino;
    public ulong NLink;
    public uint Mode;
    public uint Uid;
    public uint Gid;
    public int Pad0;
    public ulong RDev;
    public long Size;
    public long BlkSize;
    public long Blocks;
    public long ATime;
    public long ATimeNsec;
    public long MTime;
    public long MTimeNsec;
    public long CTime;
    public long CTimeNsec;
    public long Reserved0;
    public long Reserved1;
    public long Reserved2;

    public uint Permissions => Mode & 0xFFF;

    public uint Type => Mode & 0xF000;

    public bool IsDirectory => Type == 0x4000;

    public bool IsFile => Type == 0x8000;

    public bool IsSymlink => Type == 0xA000;
}

/// <summary>Test-side system calls, returning the errno instead of throwing so tests can assert it.</summary>
internal static unsafe partial class Posix
{
    public const int ENOENT = 2;
    public const int EIO = 5;
    public const int EACCES = 13;
    public const int EPERM = 1;
    public const int EROFS = 30;
    public const int ERANGE = 34;
    public const int ENODATA = 61;
    public const int ENOTCONN = 107;
    public const int ECONNABORTED = 103;

    [LibraryImport("libc", EntryPoint = "stat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int StatNative(string path, out StatBuf buf);

    [LibraryImport("libc", EntryPoint = "lstat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int LStatNative(string path, out StatBuf buf);

    [LibraryImport("libc", EntryPoint = "lgetxattr", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint LGetXAttr(string path, string name, byte* value, nuint size);

    [LibraryImport("libc", EntryPoint = "llistxattr", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint LListXAttr(string path, byte* list, nuint size);

    [LibraryImport("libc", EntryPoint = "umount2", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Umount2(string target, int flags);

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int OpenNative(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "close")]
    public static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "geteuid")]
    public static partial uint GetEuid();

    [LibraryImport("libc", EntryPoint = "getegid")]
    public static partial uint GetEgid();

    public static StatBuf Stat(string path)
    {
        int errno = TryStat(path, out var buf);
        Assert.True(errno == 0, $"stat {path}: errno {errno} ({Marshal.GetPInvokeErrorMessage(errno)})");
        return buf;
    }

    public static StatBuf LStat(string path)
    {
        int errno = TryLStat(path, out var buf);
        Assert.True(errno == 0, $"lstat {path}: errno {errno} ({Marshal.GetPInvokeErrorMessage(errno)})");
        return buf;
    }

    public static int TryStat(string path, out StatBuf buf) => StatNative(path, out buf) == 0 ? 0 : Marshal.GetLastPInvokeError();

    public static int TryLStat(string path, out StatBuf buf) => LStatNative(path, out buf) == 0 ? 0 : Marshal.GetLastPInvokeError();

    /// <summary>The attribute's value (null when size is 0: only its length is asked), its length, or the errno.</summary>
    public static (byte[]? Value, int Errno, int Length) GetXAttr(string path, string name, int size = 256)
    {
        var buffer = new byte[size];
        fixed (byte* p = buffer)
        {
            nint n = LGetXAttr(path, name, size == 0 ? null : p, (nuint)size);
            if (n < 0)
            {
                return (null, Marshal.GetLastPInvokeError(), 0);
            }

            return (size == 0 ? null : buffer[..(int)n], 0, (int)n);
        }
    }

    /// <summary>The attribute names, or the errno.</summary>
    public static (string[] Names, int Errno) ListXAttr(string path)
    {
        var buffer = new byte[1024];
        fixed (byte* p = buffer)
        {
            nint n = LListXAttr(path, p, (nuint)buffer.Length);
            if (n < 0)
            {
                return ([], Marshal.GetLastPInvokeError());
            }

            return (Encoding.UTF8.GetString(buffer, 0, (int)n).Split('\0', StringSplitOptions.RemoveEmptyEntries), 0);
        }
    }

    /// <summary>open(2) with the flags given; 0 on success (the fd is closed), else the errno.</summary>
    public static int TryOpen(string path, int flags, int mode = 0x1A4)
    {
        int fd = OpenNative(path, flags, mode);
        if (fd < 0)
        {
            return Marshal.GetLastPInvokeError();
        }

        Close(fd);
        return 0;
    }
}
