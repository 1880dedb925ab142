using System.Collections.Concurrent;
using Microsoft.Win32.SafeHandles;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Castore.Grpc;

/// <summary>
/// A remote blob service with a local cache in front. Reads are served from the local store when it has the blob;
/// otherwise a blob without a chunk list is downloaded whole into the local store (verified) and served from there,
/// and a chunked blob is read chunk by chunk: only the chunks covering a read are fetched, each is kept in the local
/// store under its own digest, and once all of them are there the whole blob is assembled locally (its digest
/// checked), so the next open is local with no remote call. Writes go to the remote and the local store together.
/// </summary>
public sealed partial class CachingBlobService : IBlobService
{
    private readonly IBlobService _local;
    private readonly IBlobService _remote;
    private readonly bool _ownsStores;

    // Downloads and assemblies in flight, shared by concurrent readers of the same object.
    private readonly ConcurrentDictionary<B3Digest, Lazy<Task<bool>>> _fetches = new();
    private readonly ConcurrentDictionary<B3Digest, Lazy<Task>> _assemblies = new();
    private readonly CancellationTokenSource _disposed = new();

    public CachingBlobService(IBlobService local, IBlobService remote, bool ownsStores = false)
    {
        _local = local;
        _remote = remote;
        _ownsStores = ownsStores;
    }

    public IBlobService Local => _local;

    public IBlobService Remote => _remote;

    public async ValueTask<bool> HasAsync(B3Digest digest, CancellationToken cancellationToken = default) =>
        await _local.HasAsync(digest, cancellationToken).ConfigureAwait(false) ||
        await _remote.HasAsync(digest, cancellationToken).ConfigureAwait(false);

    public async ValueTask<BlobInfo?> StatAsync(B3Digest digest, bool withChunks, CancellationToken cancellationToken = default) =>
        await _local.StatAsync(digest, withChunks, cancellationToken).ConfigureAwait(false) ??
        await _remote.StatAsync(digest, withChunks, cancellationToken).ConfigureAwait(false);

    public async ValueTask<IBlobReader?> OpenReadAsync(B3Digest digest, CancellationToken cancellationToken = default)
    {
        var reader = await _local.OpenReadAsync(digest, cancellationToken).ConfigureAwait(false);
        if (reader is not null)
        {
            return reader;
        }

        var info = await _remote.StatAsync(digest, withChunks: true, cancellationToken).ConfigureAwait(false);
        if (info is null)
        {
            return null;
        }

        if (info.Chunks.Count > 0)
        {
            return new ChunkedReader(this, info);
        }

        if (!await FetchAsync(digest, cancellationToken).ConfigureAwait(false))
        {
            return null;
        }

        return await _local.OpenReadAsync(digest, cancellationToken).ConfigureAwait(false)
            ?? throw new StoreUnavailableException($"blob {digest} vanished from the local cache right after it was downloaded");
    }

    /// <summary>
    /// Makes sure blob or chunk <paramref name="digest"/> is in the local store, downloading it (verified) once even
    /// when several readers want it at the same time. False when the remote does not have it.
    /// </summary>
    internal Task<bool> FetchAsync(B3Digest digest, CancellationToken cancellationToken) =>
        _fetches.GetOrAdd(digest, d => new Lazy<Task<bool>>(() => DownloadAsync(d))).Value.WaitAsync(cancellationToken);

    // Shared by every reader waiting for it, so not tied to one caller's cancellation; disposal stops it. It removes
    // itself from _fetches when done (it only starts once it is in there, through Lazy.Value).
    private async Task<bool> DownloadAsync(B3Digest digest)
    {
        try
        {
            await Task.Yield();
            var cancellationToken = _disposed.Token;
            await using var writer = _local.OpenWrite();
            if (_remote is GrpcBlobService grpc)
            {
                return await grpc.DownloadToAsync(digest, writer, cancellationToken).ConfigureAwait(false);
            }

            using var reader = await _remote.OpenReadAsync(digest, cancellationToken).ConfigureAwait(false);
            if (reader is null)
            {
                return false;
            }

            await CopyAsync(reader, writer, digest, cancellationToken).ConfigureAwait(false);
            return true;
        }
        finally
        {
            _fetches.TryRemove(digest, out _);
        }
    }

    /// <summary>Copies a verified reader into a writer and completes it (the remote's reader already checked the bytes).</summary>
    private static async Task CopyAsync(IBlobReader reader, IBlobWriter writer, B3Digest digest, CancellationToken cancellationToken)
    {
        byte[] buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(256 << 10);
        try
        {
            long offset = 0;
            int n;
            while ((n = await reader.ReadAtAsync(offset, buffer, cancellationToken).ConfigureAwait(false)) > 0)
            {
                await writer.WriteAsync(buffer.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
                offset += n;
            }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
        }

        var stored = await writer.CompleteAsync(cancellationToken).ConfigureAwait(false);
        if (stored != digest)
        {
            throw new CorruptObjectException($"blob {digest} was cached as {stored}: the bytes changed on the way");
        }
    }

    /// <summary>Writes to the remote and into the local cache at once; the two digests must agree.</summary>
    public IBlobWriter OpenWrite() => new TeeWriter(_remote.OpenWrite(), _local.OpenWrite());

    /// <summary>
    /// Uploads a host file unless the remote already has it (the local cache having it is not enough: the remote is
    /// where it must end up), then keeps a copy in the cache.
    /// </summary>
    public async ValueTask<B3Digest> PutFileAsync(
        SafeFileHandle file, long length, B3Digest? expectedDigest, CancellationToken cancellationToken = default)
    {
        var digest = await _remote.PutFileAsync(file, length, expectedDigest, cancellationToken).ConfigureAwait(false);
        return await _local.PutFileAsync(file, length, digest, cancellationToken).ConfigureAwait(false) == digest
            ? digest
            : throw new CorruptObjectException($"the file changed while it was stored: the remote has it as {digest}, the cache got different bytes");
    }

    /// <summary>Waits for background assemblies of chunked blobs, then stops.</summary>
    public async ValueTask DisposeAsync()
    {
        foreach (var assembly in _assemblies.Values)
        {
            try
            {
                await assembly.Value.ConfigureAwait(false);
            }
            catch (Exception e) when (e is CastoreException or IOException or OperationCanceledException)
            {
                // An assembly that failed leaves the chunks cached; the blob is assembled next time.
            }
        }

        _disposed.Cancel();
        if (_ownsStores)
        {
            await _remote.DisposeAsync().ConfigureAwait(false);
            await _local.DisposeAsync().ConfigureAwait(false);
        }
    }

    private sealed class TeeWriter(IBlobWriter remote, IBlobWriter local) : IBlobWriter
    {
        public async ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
        {
            await remote.WriteAsync(data, cancellationToken).ConfigureAwait(false);
            await local.WriteAsync(data, cancellationToken).ConfigureAwait(false);
        }

        public async ValueTask<B3Digest> CompleteAsync(CancellationToken cancellationToken = default)
        {
            var digest = await remote.CompleteAsync(cancellationToken).ConfigureAwait(false);
            var cached = await local.CompleteAsync(cancellationToken).ConfigureAwait(false);
            return cached == digest
                ? digest
                : throw new CorruptObjectException($"the remote stored a blob as {digest}, but the same bytes hash to {cached} locally");
        }

        public async ValueTask DisposeAsync()
        {
            await remote.DisposeAsync().ConfigureAwait(false);
            await local.DisposeAsync().ConfigureAwait(false);
        }
    }
}
