using System.Collections.Concurrent;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Fuse.Abi;
using TvixFuseBuild.Native;
using TvixFuseBuild.Fuse.Session;

namespace TvixFuseBuild.Fuse.CastoreFs;

// Files: OPEN opens the blob (one reader per inode, shared by its open files), READ reads exactly the range asked,
// RELEASE closes the reader with the last open file. With zero-message open the kernel sends neither OPEN nor RELEASE
// (after the first OPEN answered ENOSYS): READ opens the blob, and it stays open while the kernel keeps the inode, the
// oldest idle ones closed beyond a limit. OpenCount then counts the READs in flight.
internal sealed partial class CastoreFileSystem
{
    private const FuseOpenFlags FileOpenFlags = FuseOpenFlags.KeepCache | FuseOpenFlags.NoFlush;

    private readonly ConcurrentQueue<Inode> _lazyReaders = new();

    public override async ValueTask OpenAsync(FuseRequestContext request, ulong nodeId, int flags)
    {
        var inode = _inodes.Get(nodeId);
        if (inode is null)
        {
            request.ReplyError(Errno.ENOENT);
            return;
        }

        if (inode.Kind is not (InodeKind.File or InodeKind.Executable))
        {
            request.ReplyError(inode.IsDirectory ? Errno.EISDIR : Errno.ELOOP);
            return;
        }

        if ((flags & Libc.O_ACCMODE) != Libc.O_RDONLY)
        {
            request.ReplyError(Errno.EROFS);
            return;
        }

        if (_zeroMessageOpen)
        {
            // The kernel takes this as "open files yourself from now on" and opens this one with KEEP_CACHE.
            request.ReplyError(Errno.ENOSYS);
            return;
        }

        if (!TryShareOpenFile(inode, out int backingId))
        {
            var reader = await OpenBlobAsync(request, inode).ConfigureAwait(false);
            if (reader is null)
            {
                return;
            }

            backingId = InstallReader(inode, reader, request.Channel);
        }

        var reply = new FuseOpenOut { Fh = inode.Id, OpenFlags = FileOpenFlags };
        if (backingId > 0)
        {
            // The kernel accepts only PASSTHROUGH, DIRECT_IO and NOFLUSH with it (KEEP_CACHE makes the open EIO):
            // the page cache is the backing file's.
            reply.OpenFlags = FuseOpenFlags.Passthrough | FuseOpenFlags.NoFlush;
            reply.BackingId = backingId;
        }

        if (!request.Reply(reply))
        {
            ReleaseOpenFile(inode, request.Channel);
        }
    }

    /// <summary>Opens an inode's blob and checks its length; null (after replying EIO, with a log line) when that fails.</summary>
    private async ValueTask<IBlobReader?> OpenBlobAsync(FuseRequestContext request, Inode inode)
    {
        IBlobReader? reader;
        try
        {
            reader = await request.Track(_blobs.OpenReadAsync(inode.Digest, request.Token)).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            Log($"blob {inode.Digest}: {FuseSession.Describe(e)}");
            request.ReplyError(Errno.EIO);
            return null;
        }

        if (reader is null)
        {
            Log($"blob {inode.Digest} is not in the store");
            request.ReplyError(Errno.EIO);
            return null;
        }

        if ((ulong)reader.Length != inode.Size)
        {
            Log($"blob {inode.Digest} has {reader.Length} bytes, its file node says {inode.Size}");
            reader.Dispose();
            request.ReplyError(Errno.EIO);
            return null;
        }

        return reader;
    }

    /// <summary>Counts one more open file on an inode whose blob is already open.</summary>
    private static bool TryShareOpenFile(Inode inode, out int backingId)
    {
        lock (inode)
        {
            backingId = inode.BackingId;
            if (inode.Reader is null)
            {
                return false;
            }

            inode.OpenCount++;
            return true;
        }
    }

    /// <summary>Makes <paramref name="reader"/> the inode's (unless another open won the race) and counts the open file.</summary>
    private int InstallReader(Inode inode, IBlobReader reader, FuseChannel channel)
    {
        IBlobReader? loser = null;
        int backingId;
        lock (inode)
        {
            if (inode.Reader is null)
            {
                inode.Reader = reader;
                if (_passthrough && reader.BackingFile is { } file)
                {
                    int id = channel.OpenBacking(file);
                    if (id > 0)
                    {
                        inode.BackingId = id;
                    }
                    else
                    {
                        _passthrough = false;
                        Log($"FUSE passthrough refused ({Errno.Text(-id)}); serving reads ourselves");
                    }
                }
            }
            else
            {
                loser = reader;
            }

            inode.OpenCount++;
            backingId = inode.BackingId;
        }

        loser?.Dispose();
        return backingId;
    }

    public override async ValueTask ReadAsync(FuseRequestContext request, ulong nodeId, ulong handle, long offset, int size)
    {
        var inode = _inodes.Get(nodeId);
        var openReader = inode?.Reader;
        if (inode is null || (!_zeroMessageOpen && openReader is null))
        {
            request.ReplyError(Errno.EBADF);
            return;
        }

        if ((ulong)offset >= inode.Size || size == 0)
        {
            request.ReplyPayload(0);
            return;
        }

        if (!_zeroMessageOpen)
        {
            await ReadRangeAsync(request, inode, openReader!, offset, size).ConfigureAwait(false);
            return;
        }

        var reader = await AcquireLazyReaderAsync(request, inode).ConfigureAwait(false);
        if (reader is null)
        {
            return;
        }

        try
        {
            await ReadRangeAsync(request, inode, reader, offset, size).ConfigureAwait(false);
        }
        finally
        {
            lock (inode)
            {
                inode.OpenCount--;
            }
        }
    }

    /// <summary>The inode's reader, opened on its first READ, with one more READ counted in flight; null after an error reply.</summary>
    private async ValueTask<IBlobReader?> AcquireLazyReaderAsync(FuseRequestContext request, Inode inode)
    {
        lock (inode)
        {
            if (inode.Reader is { } open)
            {
                inode.OpenCount++;
                return open;
            }
        }

        var reader = await OpenBlobAsync(request, inode).ConfigureAwait(false);
        if (reader is null)
        {
            return null;
        }

        IBlobReader? loser = null;
        lock (inode)
        {
            if (inode.Reader is null)
            {
                inode.Reader = reader;
                _lazyReaders.Enqueue(inode);
            }
            else
            {
                loser = reader;
            }

            inode.OpenCount++;
            reader = inode.Reader;
        }

        loser?.Dispose();
        CloseIdleLazyReaders();
        return reader;
    }

    /// <summary>Closes the oldest lazily opened blobs no READ is using, until at most the limit are open.</summary>
    private void CloseIdleLazyReaders()
    {
        // Each inode queued now is looked at once at most: one in use goes to the back of the queue.
        for (int looked = 0, queued = _lazyReaders.Count; _lazyReaders.Count > _options.MaxLazyReaders && looked < queued; looked++)
        {
            if (!_lazyReaders.TryDequeue(out var inode))
            {
                return;
            }

            IBlobReader? idle = null;
            bool inUse = false;
            lock (inode)
            {
                if (inode.OpenCount > 0)
                {
                    inUse = inode.Reader is not null;
                }
                else
                {
                    // Null when the inode was forgotten meanwhile, or closed here before and not read since.
                    idle = inode.Reader;
                    inode.Reader = null;
                }
            }

            if (inUse)
            {
                _lazyReaders.Enqueue(inode);
            }

            idle?.Dispose();
        }
    }

    private async ValueTask ReadRangeAsync(FuseRequestContext request, Inode inode, IBlobReader reader, long offset, int size)
    {
        int length = (int)Math.Min((ulong)size, inode.Size - (ulong)offset);
        var destination = request.PayloadMemory[..length];
        int filled = 0;
        try
        {
            while (filled < length)
            {
                int n = await request.Track(reader.ReadAtAsync(offset + filled, destination[filled..], request.Token)).ConfigureAwait(false);
                if (n <= 0)
                {
                    Log($"blob {inode.Digest} ended at byte {offset + filled}, its file node says {inode.Size}");
                    request.ReplyError(Errno.EIO);
                    return;
                }

                filled += n;
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            Log($"reading blob {inode.Digest} at {offset + filled}: {FuseSession.Describe(e)}");
            request.ReplyError(Errno.EIO);
            return;
        }

        request.ReplyPayload(length);
    }

    public override void Release(FuseRequestContext request, ulong nodeId, ulong handle)
    {
        if (_inodes.Get(nodeId) is { } inode)
        {
            ReleaseOpenFile(inode, request.Channel);
        }

        request.ReplyEmpty();
    }

    private static void ReleaseOpenFile(Inode inode, FuseChannel channel)
    {
        bool last;
        lock (inode)
        {
            last = --inode.OpenCount <= 0;
        }

        if (last)
        {
            CloseOpenFile(inode, channel);
        }
    }

    /// <summary>Closes an inode's reader and its passthrough backing id (when the last open file goes, or at teardown).</summary>
    internal static void CloseOpenFile(Inode inode, FuseChannel? channel)
    {
        IBlobReader? reader;
        int backingId;
        lock (inode)
        {
            if (inode.OpenCount > 0 && channel is not null)
            {
                return;
            }

            reader = inode.Reader;
            backingId = inode.BackingId;
            inode.Reader = null;
            inode.BackingId = 0;
            inode.OpenCount = 0;
        }

        if (backingId > 0)
        {
            channel?.CloseBacking(backingId);
        }

        reader?.Dispose();
    }

    public override ValueTask LSeekAsync(FuseRequestContext request, ulong nodeId, ulong handle, long offset, uint whence)
    {
        var inode = _inodes.Get(nodeId);
        if (inode is null || inode.Kind is not (InodeKind.File or InodeKind.Executable))
        {
            request.ReplyError(inode is null ? Errno.EBADF : Errno.EINVAL);
            return default;
        }

        // Blobs have no holes: data runs from 0 to the size, the only hole is the end.
        if (whence is not (FuseConstants.SEEK_DATA or FuseConstants.SEEK_HOLE))
        {
            request.ReplyError(Errno.EINVAL);
        }
        else if (offset < 0 || (ulong)offset >= inode.Size)
        {
            request.ReplyError(Errno.ENXIO);
        }
        else
        {
            request.Reply(new FuseLSeekOut { Offset = whence == FuseConstants.SEEK_DATA ? (ulong)offset : inode.Size });
        }

        return default;
    }
}
