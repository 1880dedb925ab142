using Google.Protobuf;
using Grpc.Core;
using TvixFuseBuild.Castore.Hashing;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Castore.Grpc;

/// <summary>
/// A castore BlobService reached over gRPC (<c>grpc+http://</c>, <c>grpc+https://</c>, <c>grpc+unix://</c>). Unlike
/// tvix's client it trusts nothing it receives: whole blobs are hashed before any byte is handed out, each chunk is
/// checked against its own digest, and a mismatch is a <see cref="CorruptObjectException"/>.
/// </summary>
public sealed partial class GrpcBlobService : IBlobService
{
    /// <summary>Chunks larger than this are refused: a chunk is held in memory while it is verified.</summary>
    internal const long MaxChunkSize = 16L << 20;

    /// <summary>Upload messages carry at most this many bytes (servers commonly accept 4 MiB messages).</summary>
    internal const int PutMessageSize = 1 << 20;

    private readonly GrpcStoreConnection _connection;

    private GrpcBlobService(GrpcStoreConnection connection) => _connection = connection;

    public GrpcStoreAddress Address => _connection.Address;

    /// <summary>Opens the BlobService at <paramref name="address"/>; with <c>wait-connect=1</c> connects (blocking) first.</summary>
    public static GrpcBlobService Open(string address, GrpcStoreOptions? options = null) =>
        OpenAsync(address, options).GetAwaiter().GetResult();

    public static async Task<GrpcBlobService> OpenAsync(string address, GrpcStoreOptions? options = null, CancellationToken cancellationToken = default)
    {
        var connection = new GrpcStoreConnection(GrpcStoreAddress.Parse(address), options);
        try
        {
            if (connection.ConnectsAtOpen)
            {
                await connection.ProbeAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        catch
        {
            connection.Dispose();
            throw;
        }

        return new GrpcBlobService(connection);
    }

    public async ValueTask<bool> HasAsync(B3Digest digest, CancellationToken cancellationToken = default) =>
        await StatCoreAsync(digest, withChunks: false, cancellationToken).ConfigureAwait(false) is not null;

    public async ValueTask<BlobInfo?> StatAsync(B3Digest digest, bool withChunks, CancellationToken cancellationToken = default)
    {
        var response = await StatCoreAsync(digest, withChunks, cancellationToken).ConfigureAwait(false);
        return response is null ? null : ToBlobInfo(digest, response);
    }

    private async ValueTask<IReadOnlyList<(ByteString Digest, ulong Size)>?> StatCoreAsync(B3Digest digest, bool withChunks, CancellationToken cancellationToken)
    {
        try
        {
            return await _connection.Rpc.StatAsync(digest, withChunks, _connection.Call(cancellationToken)).ConfigureAwait(false);
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.NotFound)
        {
            return null;
        }
        catch (RpcException e)
        {
            throw _connection.Map(e, $"stat blob {digest}", cancellationToken);
        }
    }

    /// <summary>Checks the chunk list; a single chunk that is the blob itself means "read it whole", with a known size.</summary>
    private BlobInfo ToBlobInfo(B3Digest digest, IReadOnlyList<(ByteString Digest, ulong Size)> response)
    {
        if (response.Count == 0)
        {
            return BlobInfo.Whole(digest, null);
        }

        var chunks = new ChunkMeta[response.Count];
        ulong total = 0;
        for (int i = 0; i < chunks.Length; i++)
        {
            var meta = response[i];
            if (!B3Digest.TryCreate(meta.Digest.Span, out var chunkDigest))
            {
                throw _connection.Corrupt($"an invalid chunk list for blob {digest}: chunk {i} has a digest of {meta.Digest.Length} bytes");
            }

            if (meta.Size == 0 || meta.Size > MaxChunkSize)
            {
                throw _connection.Corrupt($"an invalid chunk list for blob {digest}: chunk {i} has size {meta.Size}");
            }

            total += meta.Size;
            if (total > long.MaxValue)
            {
                throw _connection.Corrupt($"an invalid chunk list for blob {digest}: the sizes add up to more than 2^63");
            }

            chunks[i] = new ChunkMeta(chunkDigest, meta.Size);
        }

        return chunks.Length == 1 && chunks[0].Digest == digest
            ? BlobInfo.Whole(digest, (long)total)
            : new BlobInfo(digest, (long)total, chunks);
    }

    /// <summary>
    /// Opens a blob. With a chunk list, reads fetch only the chunks covering the range asked for; otherwise the blob is
    /// downloaded whole and verified first (in memory when small, else in an unlinked temporary file).
    /// </summary>
    public async ValueTask<IBlobReader?> OpenReadAsync(B3Digest digest, CancellationToken cancellationToken = default)
    {
        var info = await StatAsync(digest, withChunks: true, cancellationToken).ConfigureAwait(false);
        if (info is null)
        {
            return null;
        }

        if (info.Chunks.Count > 0)
        {
            return new ChunkedReader(this, info);
        }

        var buffer = new SpillBuffer();
        try
        {
            if (!await DownloadAsync(digest, buffer, cancellationToken).ConfigureAwait(false))
            {
                buffer.Dispose();
                return null;
            }

            return buffer.ToReader(digest);
        }
        catch
        {
            buffer.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Streams blob (or chunk) <paramref name="digest"/> into <paramref name="sink"/>, hashing as it goes; false when
    /// the store does not have it. Throws <see cref="CorruptObjectException"/> when the bytes do not match (the sink
    /// then holds unverified bytes and must be discarded). Transient failures before the first byte are retried.
    /// </summary>
    internal async ValueTask<bool> DownloadAsync(
        B3Digest digest, IBlobSink sink, CancellationToken cancellationToken, long? expectedSize = null, TimeSpan? timeout = null)
    {
        // UNAVAILABLE before the first message is retried by the channel's retry policy; after it, the call is committed.
        long received = 0;
        var options = timeout is { } t ? new CallOptions(deadline: DateTime.UtcNow + t, cancellationToken: cancellationToken) : GrpcStoreConnection.Unbounded(cancellationToken);
        using var call = _connection.Rpc.Read(digest, options);
        try
        {
            var hasher = new Blake3Hasher();
            while (await call.MoveNextAsync(cancellationToken).ConfigureAwait(false))
            {
                var data = call.Current.Memory;
                received += data.Length;
                if (received > expectedSize)
                {
                    throw _connection.Corrupt($"more than the {expectedSize} bytes of {digest}");
                }

                hasher.Update(data.Span);
                await sink.WriteAsync(data, cancellationToken).ConfigureAwait(false);
            }

            var actual = hasher.Finalize();
            if (actual != digest)
            {
                throw _connection.Corrupt($"corrupt data for {digest}: the {received} bytes received hash to {actual}");
            }

            return true;
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.NotFound && received == 0)
        {
            return false;
        }
        catch (RpcException e)
        {
            throw _connection.Map(e, $"read blob {digest}", cancellationToken);
        }
    }

    /// <summary>
    /// Downloads blob (or chunk) <paramref name="digest"/> straight into <paramref name="destination"/> with one Read,
    /// verifying it as it streams, and completes the writer only when the bytes match. False when the store does not
    /// have it; <see cref="CorruptObjectException"/> on a mismatch (the writer is then left uncompleted: dispose it to
    /// discard what it holds).
    /// </summary>
    public async ValueTask<bool> DownloadToAsync(B3Digest digest, IBlobWriter destination, CancellationToken cancellationToken = default)
    {
        if (!await DownloadAsync(digest, new WriterSink(destination), cancellationToken).ConfigureAwait(false))
        {
            return false;
        }

        var stored = await destination.CompleteAsync(cancellationToken).ConfigureAwait(false);
        return stored == digest
            ? true
            : throw new CorruptObjectException($"blob {digest} was stored as {stored} after it was verified; the destination store changed the bytes");
    }

    public IBlobWriter OpenWrite() => new Writer(this);

    public ValueTask DisposeAsync()
    {
        _connection.Dispose();
        return ValueTask.CompletedTask;
    }

    public override string ToString() => _connection.Address.Address;
}

/// <summary>Where downloaded bytes go while they are being verified.</summary>
internal interface IBlobSink
{
    ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken);
}

internal sealed class WriterSink(IBlobWriter writer) : IBlobSink
{
    public ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken) => writer.WriteAsync(data, cancellationToken);
}
