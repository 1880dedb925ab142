using System.Collections.Concurrent;
using Microsoft.Win32.SafeHandles;
using TvixFuseBuild.Castore.Hashing;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Castore.Stores.Local;

/// <summary>
/// Blobs as read-only files named by their digest. A blob's bytes are verified against its digest the first time this
/// process opens it, and again whenever the file's identity (inode, size, mtime, ctime) changes; a blob that does not
/// match is moved to quarantine/ and reported as <see cref="CorruptObjectException"/>, never served.
/// </summary>
public sealed class LocalBlobService : IBlobService
{
    private readonly LocalStore _store;
    private readonly ConcurrentDictionary<B3Digest, FileIdentity> _verified = new();

    internal LocalBlobService(LocalStore store) => _store = store;

    public ValueTask<bool> HasAsync(B3Digest digest, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(File.Exists(_store.BlobPath(digest)));

    public ValueTask<BlobInfo?> StatAsync(B3Digest digest, bool withChunks, CancellationToken cancellationToken = default)
    {
        var info = new FileInfo(_store.BlobPath(digest));
        return ValueTask.FromResult(info.Exists ? BlobInfo.Whole(digest, info.Length) : null);
    }

    public ValueTask<IBlobReader?> OpenReadAsync(B3Digest digest, CancellationToken cancellationToken = default)
    {
        string path = _store.BlobPath(digest);
        var handle = _store.OpenObject(path, $"blob {digest}");
        if (handle is null)
        {
            return ValueTask.FromResult<IBlobReader?>(null);
        }

        try
        {
            var identity = FileIdentity.Of(handle, path);
            if (!_verified.TryGetValue(digest, out var known) || known != identity)
            {
                var actual = Blake3.HashFile(handle, identity.Size);
                if (actual != digest)
                {
                    _verified.TryRemove(digest, out _);
                    handle.Dispose();
                    string movedTo = _store.Quarantine(path);
                    throw new CorruptObjectException(
                        $"blob {digest} in the local store {_store.Root} is corrupt: its bytes hash to {actual}; moved aside to {movedTo}");
                }

                _verified[digest] = identity;
            }

            return ValueTask.FromResult<IBlobReader?>(new FileBlobReader(digest, handle, identity.Size));
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    public IBlobWriter OpenWrite() => new LocalBlobWriter(_store);

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    private sealed class LocalBlobWriter : IBlobWriter
    {
        private readonly LocalStore _store;
        private readonly SafeFileHandle _handle;
        private readonly string _path;
        private readonly Blake3Hasher _hasher = new();
        private long _length;
        private bool _done;

        public LocalBlobWriter(LocalStore store)
        {
            _store = store;
            (_handle, _path) = store.CreateTemporaryFile();
        }

        public ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
        {
            if (_done)
            {
                ThrowHelper.ThrowInvalidOperation("the blob was already completed");
            }

            _hasher.Update(data.Span);
            RandomAccess.Write(_handle, data.Span, _length);
            _length += data.Length;
            return ValueTask.CompletedTask;
        }

        public ValueTask<B3Digest> CompleteAsync(CancellationToken cancellationToken = default)
        {
            if (_done)
            {
                ThrowHelper.ThrowInvalidOperation("the blob was already completed");
            }

            _done = true;
            var digest = _hasher.Finalize();
            _handle.Dispose();
            _store.Commit(_path, _store.BlobPath(digest));
            return ValueTask.FromResult(digest);
        }

        public ValueTask DisposeAsync()
        {
            if (!_done)
            {
                _done = true;
                _handle.Dispose();
                LocalStore.DeleteQuietly(_path);
            }

            return ValueTask.CompletedTask;
        }
    }
}

/// <summary>What identifies one version of a file: if any of it changes, the bytes may have changed.</summary>
internal readonly record struct FileIdentity(ulong Device, ulong Inode, long Size, long ModifyTimeNs, long ChangeTimeNs)
{
    public static FileIdentity Of(SafeFileHandle handle, string path)
    {
        if (Libc.fstat((int)handle.DangerousGetHandle(), out var status) != 0)
        {
            throw PosixException.FromLastError("fstat", path);
        }

        return new FileIdentity(
            status.Device,
            status.Inode,
            status.Size,
            (status.ModifyTimeSeconds * 1_000_000_000) + status.ModifyTimeNanoseconds,
            (status.ChangeTimeSeconds * 1_000_000_000) + status.ChangeTimeNanoseconds);
    }
}
