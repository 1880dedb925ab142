using System.Buffers;
using Google.Protobuf;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Grpc;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Stores.Local;
using Tvix.Castore.V1;

namespace TvixFuseBuild.Build.Grpc;

/// <summary>
/// The castore BlobService over any <see cref="IBlobService"/>, under both <c>tvix.castore.v1</c> and
/// <c>snix.castore.v1</c>. Large blobs get a chunk list (from the store, or fixed-size chunks computed on demand by
/// <see cref="BlobChunkIndex"/>), and each listed chunk can be read by its own digest.
/// </summary>
/// <remarks>With <paramref name="inUse"/>, every blob a client asks about or uploads is a temp root of the store for a
/// while, so that a garbage collection does not take a blob a client was just told is there.</remarks>
public sealed class BlobGrpcService(IBlobService blobs, BlobChunkIndex? chunkIndex = null, ExpiringTempRoots? inUse = null) : IGrpcService
{
    /// <summary>Bytes per Read response message.</summary>
    internal const int ReadMessageSize = 256 << 10;

    private readonly BlobChunkIndex _chunks = chunkIndex ?? new BlobChunkIndex();

    public void Bind(GrpcServiceBinder binder)
    {
        foreach (var methods in new[] { CastoreGrpcMethods.Tvix, CastoreGrpcMethods.Snix })
        {
            binder
                .AddUnary(methods.BlobStat, StatAsync)
                .AddServerStreaming(methods.BlobRead, ReadAsync)
                .AddClientStreaming(methods.BlobPut, PutAsync);
        }
    }

    private async ValueTask<StatBlobResponse> StatAsync(StatBlobRequest request, GrpcServerCallContext context)
    {
        var digest = ParseDigest(request.Digest);
        var ct = context.CancellationToken;
        if (inUse is not null)
        {
            await inUse.AddAsync(digest, ct).ConfigureAwait(false);
        }

        var info = await blobs.StatAsync(digest, request.SendChunks, ct).ConfigureAwait(false);
        if (info is null)
        {
            // A computed chunk is readable by its digest, so it exists (as a blob of one chunk).
            return _chunks.TryLocate(digest, out _) ? new StatBlobResponse() : throw NotFound(digest);
        }

        var response = new StatBlobResponse();
        if (!request.SendChunks)
        {
            return response;
        }

        IReadOnlyList<ChunkMeta> chunks = info.Chunks;
        if (chunks.Count == 0 && (info.Size is null || info.Size > _chunks.ChunkSize))
        {
            chunks = await _chunks.GetChunksAsync(blobs, digest, ct).ConfigureAwait(false) ?? throw NotFound(digest);
        }

        foreach (var chunk in chunks)
        {
            response.Chunks.Add(new StatBlobResponse.Types.ChunkMeta { Digest = chunk.Digest.ToByteString(), Size = chunk.Size });
        }

        return response;
    }

    private async Task ReadAsync(ReadBlobRequest request, GrpcServerStreamWriter<ReadOnlySequence<byte>> responses, GrpcServerCallContext context)
    {
        var digest = ParseDigest(request.Digest);
        var ct = context.CancellationToken;
        using var reader = await blobs.OpenReadAsync(digest, ct).ConfigureAwait(false);
        if (reader is null)
        {
            if (!_chunks.TryLocate(digest, out var location))
            {
                throw NotFound(digest);
            }

            await ReadChunkAsync(digest, location, responses, ct).ConfigureAwait(false);
            return;
        }

        byte[] buffer = ArrayPool<byte>.Shared.Rent(ReadMessageSize);
        try
        {
            long offset = 0;
            while (true)
            {
                int n = await reader.ReadAtAsync(offset, buffer.AsMemory(0, ReadMessageSize), ct).ConfigureAwait(false);
                if (n == 0)
                {
                    break;
                }

                await responses.WriteAsync(new ReadOnlySequence<byte>(buffer, 0, n)).ConfigureAwait(false);
                offset += n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>
    /// Serves a computed chunk from its blob. The store verifies what it returns (IBlobService's contract) and the
    /// chunk's digest was computed from those bytes at that offset, so the bytes are not hashed again here.
    /// </summary>
    private async Task ReadChunkAsync(
        B3Digest digest, BlobChunkIndex.ChunkLocation location, GrpcServerStreamWriter<ReadOnlySequence<byte>> responses, CancellationToken ct)
    {
        using var reader = await blobs.OpenReadAsync(location.Blob, ct).ConfigureAwait(false)
            ?? throw new RpcStatusException(GrpcStatusCode.NotFound, $"chunk {digest}: its blob {location.Blob} is gone");
        byte[] buffer = ArrayPool<byte>.Shared.Rent(ReadMessageSize);
        try
        {
            int sent = 0;
            while (sent < location.Size)
            {
                int n = await reader.ReadAtAsync(
                    location.Offset + sent, buffer.AsMemory(0, Math.Min(ReadMessageSize, location.Size - sent)), ct).ConfigureAwait(false);
                if (n == 0)
                {
                    throw new RpcStatusException(GrpcStatusCode.DataLoss, $"chunk {digest}: its blob {location.Blob} ends early");
                }

                await responses.WriteAsync(new ReadOnlySequence<byte>(buffer, 0, n)).ConfigureAwait(false);
                sent += n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private async ValueTask<PutBlobResponse> PutAsync(GrpcServerStreamReader<ReadOnlySequence<byte>> requests, GrpcServerCallContext context)
    {
        var ct = context.CancellationToken;
        await using var writer = blobs.OpenWrite();
        while (await requests.MoveNextAsync().ConfigureAwait(false))
        {
            foreach (var segment in requests.Current)
            {
                await writer.WriteAsync(segment, ct).ConfigureAwait(false);
            }
        }

        var digest = await writer.CompleteAsync(ct).ConfigureAwait(false);
        if (inUse is not null)
        {
            await inUse.AddAsync(digest, ct).ConfigureAwait(false);
        }

        return new PutBlobResponse { Digest = digest.ToByteString() };
    }

    internal static B3Digest ParseDigest(ByteString bytes) =>
        B3Digest.TryCreate(bytes.Span, out var digest)
            ? digest
            : throw new RpcStatusException(GrpcStatusCode.InvalidArgument, $"invalid digest: {bytes.Length} bytes, a BLAKE3 digest has {B3Digest.Length}");

    private static RpcStatusException NotFound(B3Digest digest) => new(GrpcStatusCode.NotFound, $"blob {digest} not found");
}

/// <summary>
/// The castore DirectoryService over any <see cref="IDirectoryService"/>, under both packages. Get streams one
/// directory or a closure root to leaves; Put accepts a closure leaves to root and rejects an invalid one with
/// INVALID_ARGUMENT and the reason.
/// </summary>
public sealed class DirectoryGrpcService(IDirectoryService directories) : IGrpcService
{
    public void Bind(GrpcServiceBinder binder)
    {
        foreach (var methods in new[] { CastoreGrpcMethods.Tvix, CastoreGrpcMethods.Snix })
        {
            binder
                .AddServerStreaming(methods.DirectoryGet, GetAsync)
                .AddClientStreaming(methods.DirectoryPut, PutAsync);
        }
    }

    private async Task GetAsync(GetDirectoryRequest request, GrpcServerStreamWriter<CastoreDirectory> responses, GrpcServerCallContext context)
    {
        if (request.ByWhatCase != GetDirectoryRequest.ByWhatOneofCase.Digest)
        {
            throw new RpcStatusException(GrpcStatusCode.InvalidArgument, "no digest given (by_what is not set)");
        }

        var digest = BlobGrpcService.ParseDigest(request.Digest);
        var ct = context.CancellationToken;
        if (!request.Recursive)
        {
            var directory = await directories.GetAsync(digest, ct).ConfigureAwait(false)
                ?? throw new RpcStatusException(GrpcStatusCode.NotFound, $"directory {digest} not found");
            await responses.WriteAsync(directory).ConfigureAwait(false);
            return;
        }

        await foreach (var directory in directories.GetRecursiveAsync(digest, ct).ConfigureAwait(false))
        {
            await responses.WriteAsync(directory).ConfigureAwait(false);
        }
    }

    private async ValueTask<PutDirectoryResponse> PutAsync(GrpcServerStreamReader<CastoreDirectory> requests, GrpcServerCallContext context)
    {
        var ct = context.CancellationToken;
        await using var putter = directories.CreatePutter();
        while (await requests.MoveNextAsync().ConfigureAwait(false))
        {
            await putter.PutAsync(requests.Current, ct).ConfigureAwait(false);
        }

        var root = await putter.CloseAsync(ct).ConfigureAwait(false);
        return new PutDirectoryResponse { RootDigest = root.ToByteString() };
    }
}
