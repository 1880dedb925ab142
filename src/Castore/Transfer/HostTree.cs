using System.Runtime.InteropServices;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Castore.Transfer;

/// <summary>Removing host trees the way builds leave them: read-only directories, names that are not UTF-8, and
/// mount points that must never be descended into.</summary>
public static class HostTree
{
    /// <summary>
    /// Removes <paramref name="path"/> and everything below it, making directories writable as it goes. Never follows a
    /// symlink and never crosses into another filesystem (a mount point below is an error, so a still-mounted FUSE
    /// tree or bind mount is not emptied). A missing path is not an error.
    /// </summary>
    public static unsafe void Remove(string path)
    {
        byte[] native = NativePath.FromString(path);
        FileStatus status;
        fixed (byte* p = native)
        {
            if (Libc.fstatat(Libc.AT_FDCWD, p, out status, Libc.AT_SYMLINK_NOFOLLOW) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == Errno.ENOENT)
                {
                    return;
                }

                throw new PosixException("stat", path, errno);
            }

            if (!status.IsDirectory)
            {
                Check(Libc.unlinkat(Libc.AT_FDCWD, p, 0), "remove", path);
                return;
            }

            int fd = Libc.openat(Libc.AT_FDCWD, p, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0);
            Check(fd, "open", path);
            RemoveContents(fd, status.Device, path);
            Check(Libc.unlinkat(Libc.AT_FDCWD, p, Libc.AT_REMOVEDIR), "remove", path);
        }
    }

    /// <summary>Empties the directory open at <paramref name="fd"/> (and closes it).</summary>
    private static unsafe void RemoveContents(int fd, ulong device, string display)
    {
        // Owner write and search on the directory itself, so its entries can be removed.
        Libc.fchmod(fd, 0x1C0);
        nint dir = Libc.fdopendir(fd);
        if (dir == 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            Libc.close(fd);
            throw new PosixException("open", display, errno);
        }

        try
        {
            var names = new List<byte[]>();
            while (true)
            {
                byte* entry = Libc.readdir(dir);
                if (entry == null)
                {
                    break;
                }

                var name = MemoryMarshal.CreateReadOnlySpanFromNullTerminated(entry + 19);
                if (!name.SequenceEqual("."u8) && !name.SequenceEqual(".."u8))
                {
                    names.Add(NativePath.FromBytes(name));
                }
            }

            foreach (byte[] name in names)
            {
                string childDisplay = NativePath.Join(display, name.AsSpan(0, name.Length - 1));
                fixed (byte* n = name)
                {
                    if (Libc.fstatat(fd, n, out var status, Libc.AT_SYMLINK_NOFOLLOW) != 0)
                    {
                        continue; // Gone meanwhile.
                    }

                    if (status.IsDirectory)
                    {
                        if (status.Device != device)
                        {
                            throw new IOException($"cannot remove {childDisplay}: it is a mount point");
                        }

                        int childFd = Libc.openat(fd, n, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0);
                        Check(childFd, "open", childDisplay);
                        RemoveContents(childFd, device, childDisplay);
                        Check(Libc.unlinkat(fd, n, Libc.AT_REMOVEDIR), "remove", childDisplay);
                    }
                    else
                    {
                        Check(Libc.unlinkat(fd, n, 0), "remove", childDisplay);
                    }
                }
            }
        }
        finally
        {
            Libc.closedir(dir);
        }
    }

    private static void Check(int result, string operation, string path)
    {
        if (result < 0)
        {
            throw PosixException.FromLastError(operation, path);
        }
    }
}
