using System.Runtime.InteropServices;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Build.Refscan.Native;

/// <summary>
/// An open file descriptor. A SafeHandle, so work items that share a directory descriptor keep it alive with
/// <see cref="SafeHandle.DangerousAddRef"/> / <see cref="SafeHandle.DangerousRelease"/>; it closes after the last one.
/// </summary>
internal sealed unsafe class FileDescriptor : SafeHandle
{
    private FileDescriptor(int fd)
        : base(-1, ownsHandle: true) => SetHandle(fd);

    public override bool IsInvalid => handle == -1;

    public int Fd => (int)handle;

    /// <summary>Opens <paramref name="name"/> (NUL-terminated) relative to <paramref name="directory"/> (null: the working directory), never following a symlink.</summary>
    public static FileDescriptor OpenAt(FileDescriptor? directory, ReadOnlySpan<byte> name, bool isDirectory, string displayPath)
    {
        int flags = Libc.O_RDONLY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC | Libc.O_NOCTTY | Libc.O_NONBLOCK |
            (isDirectory ? Libc.O_DIRECTORY : 0);
        bool added = false;
        try
        {
            directory?.DangerousAddRef(ref added);
            int dirfd = directory?.Fd ?? Libc.AT_FDCWD;
            fixed (byte* p = name)
            {
                while (true)
                {
                    int fd = Libc.openat(dirfd, p, flags, 0);
                    if (fd >= 0)
                    {
                        return new FileDescriptor(fd);
                    }

                    int errno = Marshal.GetLastPInvokeError();
                    if (errno != Errno.EINTR)
                    {
                        throw Error("cannot open", displayPath, errno);
                    }
                }
            }
        }
        finally
        {
            if (added)
            {
                directory!.DangerousRelease();
            }
        }
    }

    /// <summary>stat of this descriptor.</summary>
    public Libc.Statx Stat(string displayPath)
    {
        Libc.Statx stat;
        fixed (byte* empty = ""u8)
        {
            if (Libc.statx(Fd, empty, Libc.AT_EMPTY_PATH, Libc.STATX_TYPE | Libc.STATX_SIZE, &stat) != 0)
            {
                throw Error("cannot stat", displayPath, Marshal.GetLastPInvokeError());
            }
        }

        return stat;
    }

    /// <summary>lstat of <paramref name="name"/> (NUL-terminated) relative to <paramref name="directory"/> (null: the working directory).</summary>
    public static Libc.Statx StatAt(FileDescriptor? directory, ReadOnlySpan<byte> name, string displayPath)
    {
        Libc.Statx stat;
        fixed (byte* p = name)
        {
            if (Libc.statx(directory?.Fd ?? Libc.AT_FDCWD, p, Libc.AT_SYMLINK_NOFOLLOW, Libc.STATX_TYPE | Libc.STATX_SIZE, &stat) != 0)
            {
                throw Error("cannot stat", displayPath, Marshal.GetLastPInvokeError());
            }
        }

        return stat;
    }

    /// <summary>The target of symlink <paramref name="name"/> (NUL-terminated), as raw bytes.</summary>
    public static byte[] ReadLinkAt(FileDescriptor? directory, ReadOnlySpan<byte> name, string displayPath)
    {
        // Linux symlink targets are at most PATH_MAX (4096) bytes including the terminator.
        Span<byte> buffer = stackalloc byte[4097];
        fixed (byte* p = name)
        fixed (byte* b = buffer)
        {
            nint length = Libc.readlinkat(directory?.Fd ?? Libc.AT_FDCWD, p, b, (nuint)buffer.Length);
            if (length < 0)
            {
                throw Error("cannot read symlink", displayPath, Marshal.GetLastPInvokeError());
            }

            return buffer[..(int)length].ToArray();
        }
    }

    public static IOException Error(string operation, string displayPath, int errno) =>
        new(Errno.Describe(operation, displayPath, errno)) { HResult = errno };

    /// <summary>NUL-terminated UTF-8 bytes of a path string.</summary>
    public static byte[] NulTerminated(string path) => NativePath.FromString(path);

    protected override bool ReleaseHandle() => Libc.close(Fd) == 0;
}
