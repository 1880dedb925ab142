using System.Buffers;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using TvixFuseBuild.Native;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Castore.Transfer;

public sealed record ExportOptions
{
    /// <summary>Give the owner write permission (0644/0755) instead of the store's read-only modes (0444/0555).</summary>
    public bool Writable { get; init; }

    /// <summary>
    /// How many files are fetched and written at once. Default: 16 (at least 2 per core): from a remote store each file
    /// costs round trips, so many in flight keep the link busy; from a local store they overlap the disk's latency.
    /// </summary>
    public int MaxParallelism { get; init; } = Math.Max(16, 2 * Environment.ProcessorCount);

    /// <summary>
    /// Replace what an earlier export left at the destination — a directory, a regular file or a symbolic link (the link
    /// itself, never what it points to) — in one step once the new tree is complete. Without it anything at the
    /// destination is an error. Either way a character device or FIFO receives a file's bytes and is never replaced,
    /// and a socket or block device is refused.
    /// </summary>
    public bool ReplaceExisting { get; init; }
}

/// <summary>
/// Materializes a node at a host path exactly: directories, files with their contents and executable bit (modes
/// 0444/0555, or 0644/0755 when asked), symlinks as symlinks. The tree is built beside the destination and renamed into
/// place at the end, so a failed export leaves nothing behind and a successful one appears at once.
/// A file exported to a character device or FIFO is written through it (<c>export BLOB /dev/stdout</c>); a directory or
/// symlink cannot be, and is refused. Nothing else at the destination is ever written into or replaced (see
/// <see cref="ExportOptions.ReplaceExisting"/>).
/// </summary>
public static class HostExporter
{
    public static Task ExportAsync(
        Node node, CastoreStore store, string destination, ExportOptions? options = null, CancellationToken cancellationToken = default) =>
        ExportAsync(node, store.Blobs, store.Directories, destination, options, cancellationToken);

    public static async Task ExportAsync(
        Node node, IBlobService blobs, IDirectoryService directories, string destination, ExportOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        options ??= new ExportOptions();
        destination = Path.GetFullPath(destination);
        string parent = Path.GetDirectoryName(Path.TrimEndingDirectorySeparator(destination))
            ?? throw new ExportException($"cannot export to {destination}: it has no parent directory");
        if (!Directory.Exists(parent))
        {
            throw new ExportException($"cannot export to {destination}: {parent} does not exist");
        }

        var existing = HostFile.Inspect(destination);
        if (existing is { } device && HostFile.IsWriteThrough(device))
        {
            if (node is not FileNode file)
            {
                throw new UnsafeDestinationException(
                    $"refusing to export a {node.KindDisplay} to {destination}: it is {HostFile.Describe(device)}, which only a file's bytes can be written to");
            }

            await WriteThroughAsync(file, blobs, destination, cancellationToken).ConfigureAwait(false);
            return;
        }

        if (existing is { } present)
        {
            if (!options.ReplaceExisting)
            {
                throw new ExportException($"cannot export to {destination}: it already exists");
            }

            if (!IsReplaceable(present))
            {
                throw HostFile.Refuse(destination, present);
            }
        }

        string staging = Path.Combine(parent, $".{Path.GetFileName(destination)}.export-{Environment.ProcessId}-{Random.Shared.Next():x8}");
        var job = new ExportJob(blobs, directories, options);
        try
        {
            if (node is DirectoryNode root)
            {
                await job.PrefetchAsync(root.Digest, cancellationToken).ConfigureAwait(false);
            }

            await job.MaterializeAsync(node, NativePath.FromString(staging), staging, cancellationToken).ConfigureAwait(false);
            if (job.Files.Count == 1)
            {
                // One file (a file output): written here, without a hop to the thread pool.
                cancellationToken.ThrowIfCancellationRequested();
                await job.WriteFileAsync(job.Files[0], cancellationToken).ConfigureAwait(false);
            }
            else if (job.Files.Count > 1)
            {
                await Parallel.ForEachAsync(
                    job.Files,
                    new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, options.MaxParallelism), CancellationToken = cancellationToken },
                    async (file, ct) => await job.WriteFileAsync(file, ct).ConfigureAwait(false)).ConfigureAwait(false);
            }

            // Directories become read-only last, deepest first, once nothing more is written into them.
            for (int i = job.Directories.Count - 1; i >= 0; i--)
            {
                Chmod(job.Directories[i].Native, job.Directories[i].Display, options.Writable ? 0x1EDu : 0x16Du);
            }

            if (existing is null)
            {
                RenameNoReplace(staging, destination);
            }
            else
            {
                Replace(staging, destination);
            }
        }
        catch (Exception e)
        {
            if (e is not StagingNotOursException)
            {
                HostTree.Remove(staging);
            }

            throw;
        }
    }

    /// <summary>What was at the destination now sits under the staging name and must not be removed with it.</summary>
    private sealed class StagingNotOursException(string message) : IOException(message);

    /// <summary>What an earlier export may have left, and so may be replaced: never a device, FIFO or socket.</summary>
    private static bool IsReplaceable(in FileStatus status) => status.IsDirectory || status.IsRegularFile || status.IsSymlink;

    /// <summary>
    /// Swaps the complete new tree at <paramref name="staging"/> with what is at <paramref name="destination"/>
    /// (RENAME_EXCHANGE), then removes the old one, now at the staging name — unless it is not something an export
    /// leaves (it changed since it was looked at), which is swapped back untouched.
    /// </summary>
    private static unsafe void Replace(string staging, string destination)
    {
        byte[] a = NativePath.FromString(staging), b = NativePath.FromString(destination);
        fixed (byte* pa = a)
        fixed (byte* pb = b)
        {
            if (Libc.renameat2(Libc.AT_FDCWD, pa, Libc.AT_FDCWD, pb, Libc.RENAME_EXCHANGE) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == Errno.ENOENT)
                {
                    RenameNoReplace(staging, destination); // It went away meanwhile.
                    return;
                }

                if (errno != Errno.EINVAL)
                {
                    throw new PosixException("rename", destination, errno);
                }

                // A filesystem without RENAME_EXCHANGE: remove the old one after one more look, then rename. A device
                // put there between that look and the removal would be removed; nothing atomic is left to prevent it.
                if (HostFile.Inspect(destination) is { } now && !IsReplaceable(now))
                {
                    throw HostFile.Refuse(destination, now);
                }

                HostTree.Remove(destination);
                RenameNoReplace(staging, destination);
                return;
            }

            if (HostFile.Inspect(staging) is { } old && !IsReplaceable(old))
            {
                if (Libc.renameat2(Libc.AT_FDCWD, pa, Libc.AT_FDCWD, pb, Libc.RENAME_EXCHANGE) != 0)
                {
                    throw new StagingNotOursException($"{destination} changed during the export and cannot be put back: it is now at {staging}");
                }

                throw HostFile.Refuse(destination, old);
            }
        }

        try
        {
            HostTree.Remove(staging);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ExportException($"exported to {destination}, but what was there before cannot be removed from {staging}: {e.Message}", e);
        }
    }

    /// <summary>Copies a file's bytes into the character device or FIFO at <paramref name="destination"/>; its mode stays as it is.</summary>
    private static async Task WriteThroughAsync(FileNode file, IBlobService blobs, string destination, CancellationToken cancellationToken)
    {
        using var reader = await blobs.OpenReadAsync(file.Digest, cancellationToken).ConfigureAwait(false)
            ?? throw new ObjectNotFoundException($"cannot export {destination}: blob {file.Digest} not found in the store");
        if ((ulong)reader.Length != file.Size)
        {
            throw new CorruptObjectException(
                $"cannot export {destination}: the node records {file.Size} bytes for blob {file.Digest}, which has {reader.Length}");
        }

        using var output = PendingHostFile.Open(destination, writeThroughOnly: true);
        await CopyAsync(reader, (data, _, ct) => output.Stream.WriteAsync(data, ct), cancellationToken).ConfigureAwait(false);
        output.Commit(sync: false);
    }

    /// <summary>Reads a blob front to back and hands each piece to <paramref name="write"/> with its offset.</summary>
    private static async ValueTask CopyAsync(
        IBlobReader reader, Func<ReadOnlyMemory<byte>, long, CancellationToken, ValueTask> write, CancellationToken cancellationToken)
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent(1 << 20);
        try
        {
            long offset = 0;
            while (offset < reader.Length)
            {
                int n = await reader.ReadAtAsync(offset, buffer, cancellationToken).ConfigureAwait(false);
                if (n == 0)
                {
                    throw new CorruptObjectException($"blob {reader.Digest} ended after {offset} of {reader.Length} bytes");
                }

                await write(buffer.AsMemory(0, n), offset, cancellationToken).ConfigureAwait(false);
                offset += n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private sealed record PendingFile(FileNode Node, byte[] Native, string Display);

    private sealed record CreatedDirectory(byte[] Native, string Display);

    private sealed class ExportJob(IBlobService blobs, IDirectoryService directories, ExportOptions options)
    {
        public List<PendingFile> Files { get; } = [];

        public List<CreatedDirectory> Directories { get; } = [];

        // The closure fetched ahead in one call (one round trip to a remote store instead of one per directory).
        private readonly Dictionary<B3Digest, CastoreDirectory> _prefetched = [];

        /// <summary>
        /// Fetches the closure of <paramref name="root"/> at once. A store that cannot (a directory is missing) leaves it
        /// to the walk, which then names the path that lacks it.
        /// </summary>
        public async ValueTask PrefetchAsync(B3Digest root, CancellationToken cancellationToken)
        {
            try
            {
                await foreach (var directory in directories.GetRecursiveAsync(root, cancellationToken).ConfigureAwait(false))
                {
                    _prefetched[directory.Digest] = directory;
                }
            }
            catch (ObjectNotFoundException)
            {
            }
        }

        public async ValueTask MaterializeAsync(Node node, byte[] native, string display, CancellationToken cancellationToken)
        {
            switch (node)
            {
                case SymlinkNode symlink:
                    CreateSymlink(symlink.Target, native, display);
                    break;
                case FileNode file:
                    Files.Add(new PendingFile(file, native, display));
                    break;
                case DirectoryNode directoryNode:
                    var directory = _prefetched.GetValueOrDefault(directoryNode.Digest)
                        ?? await directories.GetAsync(directoryNode.Digest, cancellationToken).ConfigureAwait(false)
                        ?? throw new ObjectNotFoundException($"cannot export {display}: directory {directoryNode.Digest} not found in the store");
                    if (!directory.IsAcceptableSize(directoryNode.Size))
                    {
                        throw new CorruptObjectException(
                            $"cannot export {display}: the node records size {directoryNode.Size} for directory {directoryNode.Digest}, which has size {directory.Size}");
                    }

                    MakeDirectory(native, display);
                    Directories.Add(new CreatedDirectory(native, display));
                    foreach (var child in directory.Entries)
                    {
                        byte[] childNative = Child(native, child.Name.Span);
                        await MaterializeAsync(child, childNative, NativePath.Join(display, child.Name.Span), cancellationToken).ConfigureAwait(false);
                    }

                    break;
            }
        }

        public async ValueTask WriteFileAsync(PendingFile file, CancellationToken cancellationToken)
        {
            using var reader = await blobs.OpenReadAsync(file.Node.Digest, cancellationToken).ConfigureAwait(false)
                ?? throw new ObjectNotFoundException($"cannot export {file.Display}: blob {file.Node.Digest} not found in the store");
            if ((ulong)reader.Length != file.Node.Size)
            {
                throw new CorruptObjectException(
                    $"cannot export {file.Display}: the node records {file.Node.Size} bytes for blob {file.Node.Digest}, which has {reader.Length}");
            }

            using var output = CreateFile(file.Native, file.Display);
            if (reader.BackingFile is { } backing && TryCopyInKernel(backing, output, reader.Length))
            {
                // Done by the kernel.
            }
            else
            {
                await CopyAsync(
                    reader,
                    (data, offset, _) =>
                    {
                        RandomAccess.Write(output, data.Span, offset);
                        return ValueTask.CompletedTask;
                    },
                    cancellationToken).ConfigureAwait(false);
            }

            uint mode = (file.Node.Executable, options.Writable) switch
            {
                (true, true) => 0x1ED, // 0755
                (true, false) => 0x16D, // 0555
                (false, true) => 0x1A4, // 0644
                (false, false) => 0x124, // 0444
            };
            if (Libc.fchmod((int)output.DangerousGetHandle(), mode) != 0)
            {
                throw PosixException.FromLastError("chmod", file.Display);
            }
        }

        private static unsafe bool TryCopyInKernel(SafeFileHandle source, SafeFileHandle destination, long length)
        {
            long inOffset = 0, outOffset = 0;
            int inFd = (int)source.DangerousGetHandle(), outFd = (int)destination.DangerousGetHandle();
            while (inOffset < length)
            {
                nint n = Libc.copy_file_range(inFd, &inOffset, outFd, &outOffset, (nint)Math.Min(length - inOffset, 1L << 30), 0);
                if (n <= 0)
                {
                    if (inOffset == 0)
                    {
                        return false; // Not supported here (e.g. across filesystems on old kernels): copy in user space.
                    }

                    throw n == 0
                        ? new CorruptObjectException("a blob file ended early while being copied")
                        : PosixException.FromLastError("copy_file_range", null);
                }
            }

            return true;
        }
    }

    private static byte[] Child(byte[] parentNative, ReadOnlySpan<byte> name)
    {
        int parentLength = parentNative.Length - 1;
        var child = new byte[parentLength + 1 + name.Length + 1];
        parentNative.AsSpan(0, parentLength).CopyTo(child);
        child[parentLength] = (byte)'/';
        name.CopyTo(child.AsSpan(parentLength + 1));
        return child;
    }

    private static unsafe void MakeDirectory(byte[] native, string display)
    {
        fixed (byte* p = native)
        {
            if (Libc.mkdirat(Libc.AT_FDCWD, p, 0x1C0) != 0)
            {
                throw PosixException.FromLastError("mkdir", display);
            }
        }
    }

    private static unsafe SafeFileHandle CreateFile(byte[] native, string display)
    {
        fixed (byte* p = native)
        {
            int fd = Libc.openat(Libc.AT_FDCWD, p, Libc.O_WRONLY | Libc.O_CREAT | Libc.O_EXCL | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0x180);
            if (fd < 0)
            {
                throw PosixException.FromLastError("create", display);
            }

            return new SafeFileHandle(fd, ownsHandle: true);
        }
    }

    private static unsafe void CreateSymlink(SymlinkTarget target, byte[] native, string display)
    {
        byte[] nativeTarget = NativePath.FromBytes(target.Span);
        fixed (byte* t = nativeTarget)
        fixed (byte* p = native)
        {
            if (Libc.symlinkat(t, Libc.AT_FDCWD, p) != 0)
            {
                throw PosixException.FromLastError("symlink", display);
            }
        }
    }

    private static unsafe void Chmod(byte[] native, string display, uint mode)
    {
        fixed (byte* p = native)
        {
            if (Libc.fchmodat(Libc.AT_FDCWD, p, mode, 0) != 0)
            {
                throw PosixException.FromLastError("chmod", display);
            }
        }
    }

    private static unsafe void RenameNoReplace(string from, string to)
    {
        byte[] a = NativePath.FromString(from), b = NativePath.FromString(to);
        fixed (byte* pa = a)
        fixed (byte* pb = b)
        {
            if (Libc.renameat2(Libc.AT_FDCWD, pa, Libc.AT_FDCWD, pb, Libc.RENAME_NOREPLACE) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                throw errno == Errno.EEXIST
                    ? new ExportException($"cannot export to {to}: it already exists")
                    : new PosixException("rename", to, errno);
            }
        }
    }
}
