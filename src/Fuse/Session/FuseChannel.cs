using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using TvixFuseBuild.Fuse.Abi;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Fuse.Session;

/// <summary>
/// One open <c>/dev/fuse</c> file: the one the mount was made with, or a clone of it (FUSE_DEV_IOC_CLONE) that gives a
/// worker its own processing queue. A reply must be written to the file its request was read from. Non-blocking and
/// close-on-exec: a child process must never keep a mount's connection alive after we die.
/// </summary>
internal sealed unsafe class FuseChannel : SafeHandleZeroOrMinusOneIsInvalid
{
    private FuseChannel(int fd)
        : base(ownsHandle: true)
    {
        SetHandle(fd);
    }

    public int Fd => (int)handle;

    /// <summary>Takes ownership of an open /dev/fuse descriptor and makes it non-blocking.</summary>
    public static FuseChannel Adopt(int fd)
    {
        var channel = new FuseChannel(fd);
        int flags = Libc.fcntl(fd, Libc.F_GETFL, 0);
        if (flags < 0 || Libc.fcntl(fd, Libc.F_SETFL, flags | Libc.O_NONBLOCK) < 0)
        {
            var error = FuseException.FromErrno("fcntl(/dev/fuse, O_NONBLOCK)");
            channel.Dispose();
            throw error;
        }

        return channel;
    }

    /// <summary>Opens /dev/fuse for a new mount.</summary>
    public static FuseChannel OpenDevice()
    {
        int fd = Libc.open("/dev/fuse", Libc.O_RDWR | Libc.O_CLOEXEC | Libc.O_NONBLOCK, 0);
        if (fd < 0)
        {
            throw FuseException.FromErrno("open /dev/fuse");
        }

        return new FuseChannel(fd);
    }

    /// <summary>A second file on the same connection, or null with the errno when the kernel or permissions refuse.</summary>
    public FuseChannel? TryClone(out int errno)
    {
        int fd = Libc.open("/dev/fuse", Libc.O_RDWR | Libc.O_CLOEXEC | Libc.O_NONBLOCK, 0);
        if (fd < 0)
        {
            errno = Marshal.GetLastPInvokeError();
            return null;
        }

        uint source = (uint)Fd;
        if (Libc.ioctl(fd, (nuint)FuseConstants.DevIocClone, &source) < 0)
        {
            errno = Marshal.GetLastPInvokeError();
            Libc.close(fd);
            return null;
        }

        errno = 0;
        return new FuseChannel(fd);
    }

    /// <summary>Reads one request; the byte count, or -errno (EAGAIN when none is queued).</summary>
    public int Read(byte* buffer, int size)
    {
        nint n = Libc.read(Fd, buffer, (nuint)size);
        return n >= 0 ? (int)n : -Marshal.GetLastPInvokeError();
    }

    /// <summary>Writes one reply; 0, or the errno (ENOENT: the request is gone, e.g. interrupted; ENODEV: unmounted).</summary>
    public int Write(byte* data, int length)
    {
        bool added = false;
        try
        {
            // Replies from async continuations may race with teardown; the reference keeps the fd number ours.
            DangerousAddRef(ref added);
            while (true)
            {
                nint n = Libc.write(Fd, data, (nuint)length);
                if (n >= 0)
                {
                    return 0;
                }

                int errno = Marshal.GetLastPInvokeError();
                if (errno != Errno.EINTR)
                {
                    return errno;
                }
            }
        }
        catch (ObjectDisposedException)
        {
            return Errno.ENODEV;
        }
        finally
        {
            if (added)
            {
                DangerousRelease();
            }
        }
    }

    /// <summary>Registers an open file for passthrough; its backing id, or -errno.</summary>
    public int OpenBacking(SafeFileHandle file)
    {
        bool addedSelf = false, addedFile = false;
        try
        {
            DangerousAddRef(ref addedSelf);
            file.DangerousAddRef(ref addedFile);
            var map = new FuseBackingMap { Fd = (int)file.DangerousGetHandle() };
            int id = Libc.ioctl(Fd, (nuint)FuseConstants.DevIocBackingOpen, &map);
            return id >= 0 ? id : -Marshal.GetLastPInvokeError();
        }
        catch (ObjectDisposedException)
        {
            return -Errno.ENODEV;
        }
        finally
        {
            if (addedFile)
            {
                file.DangerousRelease();
            }

            if (addedSelf)
            {
                DangerousRelease();
            }
        }
    }

    public void CloseBacking(int backingId)
    {
        bool added = false;
        try
        {
            DangerousAddRef(ref added);
            uint id = (uint)backingId;
            Libc.ioctl(Fd, (nuint)FuseConstants.DevIocBackingClose, &id);
        }
        catch (ObjectDisposedException)
        {
            // The connection is gone, and its backing files with it.
        }
        finally
        {
            if (added)
            {
                DangerousRelease();
            }
        }
    }

    protected override bool ReleaseHandle() => Libc.close((int)handle) == 0;
}
