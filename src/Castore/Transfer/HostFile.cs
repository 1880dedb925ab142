using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Castore.Transfer;

/// <summary>A host path the tool will not write: what is there may be neither replaced nor written through.</summary>
public sealed class UnsafeDestinationException(string message) : IOException(message);

/// <summary>
/// Writes host files that are not the store's own objects (<c>build --out</c>, <c>--log-file</c>, MSBuild's step
/// files) without damaging what is at their path: the tool runs as root, and <c>--out /dev/null</c> must leave
/// /dev/null a device. What happens depends on what is at the path, never following a symlink there:
/// <list type="bullet">
/// <item>nothing, or a regular file: a new file is written in the same directory and renamed into place, so a failure
/// leaves the old file as it was and a hard link to it elsewhere keeps the old bytes;</item>
/// <item>a character device or a FIFO: opened (never created, truncated or replaced) and written through;</item>
/// <item>a symbolic link, a directory, a socket or a block device: <see cref="UnsafeDestinationException"/>. A symlink
/// is refused rather than followed (root writing wherever a planted link points is the classic abuse) or replaced
/// (a link made on purpose would silently stop pointing where its owner wants).</item>
/// </list>
/// </summary>
public static class HostFile
{
    // What is at the path may change between looking and writing; a few fresh looks, then the change is the error.
    private const int MaxAttempts = 3;

    /// <summary>Writes <paramref name="bytes"/> to <paramref name="path"/>, durably (fsync) when it is a new file.</summary>
    public static void WriteAllBytes(string path, ReadOnlySpan<byte> bytes)
    {
        for (int attempt = 1; ; attempt++)
        {
            using var file = PendingHostFile.Open(path, writeThroughOnly: false);
            try
            {
                file.Stream.Write(bytes);
                file.Commit(sync: true);
                return;
            }
            catch (DestinationChangedException) when (attempt < MaxAttempts)
            {
            }
        }
    }

    /// <summary>
    /// A stream whose bytes reach <paramref name="path"/> as they are written (a log): a new file is put in place of
    /// nothing or of a regular file at once, before the first byte; a character device or FIFO is opened.
    /// </summary>
    public static Stream CreateStream(string path)
    {
        for (int attempt = 1; ; attempt++)
        {
            using var file = PendingHostFile.Open(path, writeThroughOnly: false);
            try
            {
                file.Commit(sync: false);
                return file.Detach();
            }
            catch (DestinationChangedException) when (attempt < MaxAttempts)
            {
            }
        }
    }

    /// <summary>
    /// Every byte of <paramref name="path"/> if it is a regular file (symlinks followed), read on the calling thread;
    /// null when it cannot be opened or is anything else (a FIFO, a terminal, a directory), for the caller to read it
    /// the way that can wait and to say what is wrong. The open itself never waits (O_NONBLOCK: a FIFO without a
    /// writer does not hold it up).
    /// </summary>
    public static byte[]? TryReadRegularFile(string path)
    {
        int fd = Libc.open(path, Libc.O_RDONLY | Libc.O_NONBLOCK | Libc.O_CLOEXEC, 0);
        if (fd < 0)
        {
            return null;
        }

        using var handle = new SafeFileHandle(fd, ownsHandle: true);
        if (Libc.fstat(fd, out var status) != 0 || !status.IsRegularFile)
        {
            return null;
        }

        using var file = new FileStream(handle, FileAccess.Read, bufferSize: 0);
        using var bytes = new MemoryStream((int)Math.Clamp(status.Size + 1, 1, Array.MaxLength));
        file.CopyTo(bytes);
        return bytes.ToArray();
    }

    /// <summary>
    /// Whether writing <paramref name="path"/> as <see cref="WriteAllBytes"/> does, or stdout when it is null, may wait
    /// for a reader: true for anything but nothing there or a regular file (a FIFO, a terminal, a pipe, a socket).
    /// </summary>
    public static bool MayWaitForReader(string? path)
    {
        if (path is null)
        {
            return Libc.fstat(1, out var stdout) != 0 || !stdout.IsRegularFile;
        }

        try
        {
            return Inspect(path) is { IsRegularFile: false };
        }
        catch (PosixException)
        {
            return true; // the write says what is wrong
        }
    }

    /// <summary>The status of <paramref name="path"/> itself (a symlink is not followed), or null when nothing is there.</summary>
    internal static unsafe FileStatus? Inspect(string path)
    {
        byte[] native = NativePath.FromString(path);
        fixed (byte* p = native)
        {
            if (Libc.fstatat(Libc.AT_FDCWD, p, out var status, Libc.AT_SYMLINK_NOFOLLOW) == 0)
            {
                return status;
            }

            int errno = Marshal.GetLastPInvokeError();
            return errno == Errno.ENOENT ? null : throw new PosixException("stat", path, errno);
        }
    }

    internal static bool IsWriteThrough(in FileStatus status) => status.Type is Libc.S_IFCHR or Libc.S_IFIFO;

    internal static string Describe(in FileStatus status) => status.Type switch
    {
        Libc.S_IFLNK => "a symbolic link",
        Libc.S_IFDIR => "a directory",
        Libc.S_IFSOCK => "a socket",
        Libc.S_IFBLK => "a block device",
        Libc.S_IFCHR => "a character device",
        Libc.S_IFIFO => "a FIFO",
        Libc.S_IFREG => "a regular file",
        _ => "of an unknown file type",
    };

    internal static UnsafeDestinationException Refuse(string path, in FileStatus status) =>
        new($"refusing to replace {path}: it is {Describe(status)} (only a regular file is replaced, a character device or FIFO written through)");
}

/// <summary>What was at a destination changed between looking at it and writing it.</summary>
internal sealed class DestinationChangedException(string message) : IOException(message);

/// <summary>
/// One write of <see cref="HostFile"/>: the opened device or FIFO, or the new file beside the destination until
/// <see cref="Commit"/> puts it in place. Every call is relative to the destination's directory, opened once, so a
/// directory renamed meanwhile cannot redirect the later steps. Disposing without committing removes the new file.
/// </summary>
internal sealed unsafe class PendingHostFile : IDisposable
{
    private const int TempNameChars = 24;

    private readonly SafeFileHandle _directory;
    private readonly string _display;
    private readonly byte[] _name;
    private readonly byte[]? _temp;
    private readonly bool _replacing;
    private readonly FileStream _stream;
    private bool _tempIsOurs;
    private bool _committed;
    private bool _detached;

    private PendingHostFile(SafeFileHandle directory, string display, byte[] name, byte[]? temp, bool replacing, FileStream stream)
    {
        _directory = directory;
        _display = display;
        _name = name;
        _temp = temp;
        _tempIsOurs = temp is not null;
        _replacing = replacing;
        _stream = stream;
    }

    /// <summary>Unbuffered: each write reaches the file (or device) at once.</summary>
    public FileStream Stream => _stream;

    private int DirectoryFd => (int)_directory.DangerousGetHandle();

    /// <summary>
    /// Looks at <paramref name="path"/> and opens what will be written: the device or FIFO there, or a new file beside
    /// it. With <paramref name="writeThroughOnly"/> anything but a character device or FIFO counts as a change.
    /// </summary>
    public static PendingHostFile Open(string path, bool writeThroughOnly)
    {
        string full = Path.GetFullPath(path);
        string name = Path.GetFileName(full);
        string? parent = Path.GetDirectoryName(full);
        if (name.Length == 0 || parent is null)
        {
            throw new UnsafeDestinationException($"refusing to write {full}: it names a directory");
        }

        var directory = OpenDirectory(parent, full);
        try
        {
            byte[] nativeName = NativePath.FromString(name);
            var status = Lstat(directory, nativeName, full);
            if (status is { } existing && HostFile.IsWriteThrough(existing))
            {
                return new PendingHostFile(directory, full, nativeName, null, false, OpenWriteThrough(directory, nativeName, full, existing));
            }

            if (writeThroughOnly)
            {
                throw new DestinationChangedException($"{full} is no longer a character device or FIFO");
            }

            if (status is { IsRegularFile: false } other)
            {
                throw HostFile.Refuse(full, other);
            }

            var (temp, handle) = CreateTemporary(directory, name, full);
            return new PendingHostFile(directory, full, nativeName, temp, replacing: status is not null, new FileStream(handle, FileAccess.Write, 0));
        }
        catch
        {
            directory.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Puts the new file in place (after an fsync when <paramref name="sync"/>); for a device or FIFO, only flushes.
    /// Throws <see cref="DestinationChangedException"/>, with the destination untouched, when what is there is no
    /// longer what <see cref="Open"/> saw.
    /// </summary>
    public void Commit(bool sync)
    {
        _stream.Flush();
        if (_temp is null)
        {
            _committed = true;
            return;
        }

        if (sync && Libc.fsync((int)_stream.SafeFileHandle.DangerousGetHandle()) != 0)
        {
            throw PosixException.FromLastError("fsync", _display);
        }

        if (_replacing)
        {
            ReplaceRegularFile();
        }
        else
        {
            PlaceWhereNothingIs();
        }

        _committed = true;
    }

    /// <summary>Hands the stream over to the caller (after <see cref="Commit"/>).</summary>
    public Stream Detach()
    {
        _detached = true;
        return _stream;
    }

    public void Dispose()
    {
        if (!_detached)
        {
            _stream.Dispose();
        }

        if (_tempIsOurs && !_committed)
        {
            fixed (byte* t = _temp)
            {
                Libc.unlinkat(DirectoryFd, t, 0);
            }
        }

        _directory.Dispose();
    }

    private void PlaceWhereNothingIs()
    {
        fixed (byte* t = _temp)
        fixed (byte* n = _name)
        {
            if (Libc.renameat2(DirectoryFd, t, DirectoryFd, n, Libc.RENAME_NOREPLACE) == 0)
            {
                return;
            }

            int errno = Marshal.GetLastPInvokeError();
            if (errno == Errno.EEXIST)
            {
                throw new DestinationChangedException($"{_display} appeared while it was being written");
            }

            if (errno != Errno.EINVAL)
            {
                throw new PosixException("rename", _display, errno);
            }

            // A filesystem without RENAME_NOREPLACE: look once more and rename. Something created in between this look
            // and the rename would be replaced; such filesystems (some network ones) leave no atomic way to avoid that.
            if (Lstat(_directory, _name, _display) is not null)
            {
                throw new DestinationChangedException($"{_display} appeared while it was being written");
            }

            Check(Libc.renameat(DirectoryFd, t, DirectoryFd, n), "rename", _display);
        }
    }

    /// <summary>
    /// Swaps the new file with what is at the destination (RENAME_EXCHANGE), then looks at what came out: a regular
    /// file is removed; anything else (a device or directory put there since <see cref="Open"/> looked) is swapped
    /// back, so nothing but a regular file is ever replaced, with no window in between.
    /// </summary>
    private void ReplaceRegularFile()
    {
        fixed (byte* t = _temp)
        fixed (byte* n = _name)
        {
            if (Libc.renameat2(DirectoryFd, t, DirectoryFd, n, Libc.RENAME_EXCHANGE) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == Errno.ENOENT)
                {
                    throw new DestinationChangedException($"{_display} disappeared while it was being written");
                }

                if (errno != Errno.EINVAL)
                {
                    throw new PosixException("rename", _display, errno);
                }

                // A filesystem without RENAME_EXCHANGE: look once more and rename over it. A device or directory put
                // there between this look and the rename would be replaced; nothing atomic is left to prevent that.
                if (Lstat(_directory, _name, _display) is not { IsRegularFile: true })
                {
                    throw new DestinationChangedException($"{_display} changed while it was being written");
                }

                Check(Libc.renameat(DirectoryFd, t, DirectoryFd, n), "rename", _display);
                return;
            }

            // The temporary name now holds what was at the destination.
            if (Lstat(_directory, _temp!, _display) is { IsRegularFile: true })
            {
                // Committed from here on: the old file is ours to unlink (only this name of it; other links keep it).
                _tempIsOurs = false;
                Check(Libc.unlinkat(DirectoryFd, t, 0), "remove the old", _display);
                return;
            }

            if (Libc.renameat2(DirectoryFd, t, DirectoryFd, n, Libc.RENAME_EXCHANGE) != 0)
            {
                // What was there now sits under the temporary name; say where rather than remove it.
                _tempIsOurs = false;
                throw new IOException(
                    $"{_display} changed while it was being written and cannot be put back: it is now at " +
                    Path.Combine(Path.GetDirectoryName(_display)!, System.Text.Encoding.UTF8.GetString(_temp!, 0, _temp!.Length - 1)));
            }

            throw new DestinationChangedException($"{_display} changed while it was being written");
        }
    }

    private static SafeFileHandle OpenDirectory(string parent, string display)
    {
        byte[] native = NativePath.FromString(parent);
        fixed (byte* p = native)
        {
            int fd = Libc.openat(Libc.AT_FDCWD, p, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
            if (fd >= 0)
            {
                return new SafeFileHandle(fd, ownsHandle: true);
            }

            int errno = Marshal.GetLastPInvokeError();
            throw errno switch
            {
                Errno.ENOENT => new IOException($"cannot write {display}: the directory {parent} does not exist"),
                Errno.ENOTDIR => new IOException($"cannot write {display}: {parent} is not a directory"),
                _ => new PosixException("open", parent, errno),
            };
        }
    }

    private static FileStatus? Lstat(SafeFileHandle directory, byte[] name, string display)
    {
        fixed (byte* n = name)
        {
            if (Libc.fstatat((int)directory.DangerousGetHandle(), n, out var status, Libc.AT_SYMLINK_NOFOLLOW) == 0)
            {
                return status;
            }

            int errno = Marshal.GetLastPInvokeError();
            return errno == Errno.ENOENT ? null : throw new PosixException("stat", display, errno);
        }
    }

    /// <summary>
    /// Opens the device or FIFO that <paramref name="expected"/> describes: no O_CREAT (never makes a file), no O_TRUNC,
    /// O_NOFOLLOW; then checks it is the very node looked at. Opening a FIFO waits for its reader, as any writer does.
    /// </summary>
    private static FileStream OpenWriteThrough(SafeFileHandle directory, byte[] name, string display, FileStatus expected)
    {
        int fd;
        fixed (byte* n = name)
        {
            do
            {
                fd = Libc.openat((int)directory.DangerousGetHandle(), n, Libc.O_WRONLY | Libc.O_NOFOLLOW | Libc.O_NOCTTY | Libc.O_CLOEXEC, 0);
            }
            while (fd < 0 && Marshal.GetLastPInvokeError() == Errno.EINTR);
        }

        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw errno is Errno.ENOENT or Errno.ELOOP
                ? new DestinationChangedException($"{display} changed while it was being opened")
                : new PosixException("open", display, errno);
        }

        var handle = new SafeFileHandle(fd, ownsHandle: true);
        if (Libc.fstat(fd, out var opened) != 0 || opened.Device != expected.Device || opened.Inode != expected.Inode || opened.Type != expected.Type)
        {
            handle.Dispose();
            throw new DestinationChangedException($"{display} changed while it was being opened");
        }

        return new FileStream(handle, FileAccess.Write, 0);
    }

    /// <summary>A new file beside the destination: <c>.NAME.PID-RANDOM.tmp</c>, created exclusively (never through a link).</summary>
    private static (byte[] Name, SafeFileHandle Handle) CreateTemporary(SafeFileHandle directory, string name, string display)
    {
        string stem = name.Length > TempNameChars ? name[..TempNameChars] : name;
        for (int attempt = 0; ; attempt++)
        {
            byte[] temp = NativePath.FromString($".{stem}.{Environment.ProcessId}-{Random.Shared.Next():x8}.tmp");
            fixed (byte* t = temp)
            {
                int fd = Libc.openat(
                    (int)directory.DangerousGetHandle(), t, Libc.O_WRONLY | Libc.O_CREAT | Libc.O_EXCL | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0x1B6);
                if (fd >= 0)
                {
                    return (temp, new SafeFileHandle(fd, ownsHandle: true));
                }

                int errno = Marshal.GetLastPInvokeError();
                if (errno != Errno.EEXIST || attempt >= 8)
                {
                    throw new PosixException("create a temporary file for", display, errno);
                }
            }
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
