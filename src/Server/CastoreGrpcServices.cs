using System.Buffers;
using Google.Protobuf;
using Grpc.Core;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Stores.Local;
using SnixV1 = Snix.Castore.V1;
using TvixV1 = Tvix.Castore.V1;

namespace TvixFuseBuild.Server;

/// <summary>Adds the castore services to a server.</summary>
public static class CastoreGrpcServices
{
    /// <summary>Hosts BlobService and DirectoryService over <paramref name="blobs"/> and <paramref name="directories"/>, under <c>tvix.castore.v1</c> and <c>snix.castore.v1</c>.</summary>
    public static GrpcServer AddCastore(this GrpcServer server, BlobGrpcService blobs, DirectoryGrpcService directories) => server
        .AddService(new TvixBlobService(blobs), TvixV1.BlobService.Descriptor)
        .AddService(new SnixBlobService(blobs), SnixV1.BlobService.Descriptor)
        .AddService(new TvixDirectoryService(directories), TvixV1.DirectoryService.Descriptor)
        .AddService(new SnixDirectoryService(directories), SnixV1.DirectoryService.Descriptor);

    public static GrpcServer AddCastore(this GrpcServer server, IBlobService blobs, IDirectoryService directories) =>
        server.AddCastore(new BlobGrpcService(blobs), new DirectoryGrpcService(directories));
}

/// <summary>
/// The castore BlobService over any <see cref="IBlobService"/>, for both packages. Large blobs get a chunk list (from
/// the store, or fixed-size chunks computed on demand by <see cref="BlobChunkIndex"/>), and each listed chunk can be
/// read by its own digest.
/// </summary>
/// <remarks>With <paramref name="inUse"/>, every blob a client asks about or uploads is a temp root of the store for a
/// while, so that a garbage collection does not take a blob a client was just told is there.</remarks>
public sealed class BlobGrpcService(IBlobService blobs, BlobChunkIndex? chunkIndex = null, ExpiringTempRoots? inUse = null)
{
    /// <summary>Bytes per Read response message.</summary>
    internal const int ReadMessageSize = 256 << 10;

    private readonly BlobChunkIndex _chunks = chunkIndex ?? new BlobChunkIndex();

    /// <summary>The chunk list (empty for a blob of one chunk, or when not asked for); throws NOT_FOUND.</summary>
    internal async Task<IReadOnlyList<ChunkMeta>> StatAsync(ByteString digestBytes, bool sendChunks, CancellationToken ct)
    {
        var digest = ParseDigest(digestBytes);
        if (inUse is not null)
        {
            await inUse.AddAsync(digest, ct).ConfigureAwait(false);
        }

        var info = await blobs.StatAsync(digest, sendChunks, ct).ConfigureAwait(false);
        if (info is null)
        {
            // A computed chunk is readable by its digest, so it exists (as a blob of one chunk).
            return _chunks.TryLocate(digest, out _) ? [] : throw NotFound(digest);
        }

        if (!sendChunks)
        {
            return [];
        }

        IReadOnlyList<ChunkMeta> chunks = info.Chunks;
        if (chunks.Count == 0 && (info.Size is null || info.Size > _chunks.ChunkSize))
        {
            chunks = await _chunks.GetChunksAsync(blobs, digest, ct).ConfigureAwait(false) ?? throw NotFound(digest);
        }

        return chunks;
    }

    /// <summary>
    /// Sends the blob's bytes to <paramref name="write"/>, <see cref="ReadMessageSize"/> at a time, from one buffer:
    /// <paramref name="write"/> must be done with the bytes when its task completes.
    /// </summary>
    internal async Task ReadAsync(ByteString digestBytes, Func<ReadOnlyMemory<byte>, Task> write, CancellationToken ct)
    {
        var digest = ParseDigest(digestBytes);
        using var reader = await blobs.OpenReadAsync(digest, ct).ConfigureAwait(false);
        if (reader is null)
        {
            if (!_chunks.TryLocate(digest, out var location))
            {
                throw NotFound(digest);
            }

            await ReadChunkAsync(digest, location, write, ct).ConfigureAwait(false);
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

                await write(buffer.AsMemory(0, n)).ConfigureAwait(false);
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
    private async Task ReadChunkAsync(B3Digest digest, BlobChunkIndex.ChunkLocation location, Func<ReadOnlyMemory<byte>, Task> write, CancellationToken ct)
    {
        using var reader = await blobs.OpenReadAsync(location.Blob, ct).ConfigureAwait(false)
            ?? throw new ObjectNotFoundException($"chunk {digest}: its blob {location.Blob} is gone");
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
                    throw new CorruptObjectException($"chunk {digest}: its blob {location.Blob} ends early");
                }

                await write(buffer.AsMemory(0, n)).ConfigureAwait(false);
                sent += n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    internal async Task<ByteString> PutAsync<T>(IAsyncStreamReader<T> requests, Func<T, ByteString> data, CancellationToken ct)
    {
        await using var writer = blobs.OpenWrite();
        while (await requests.MoveNext(ct).ConfigureAwait(false))
        {
            await writer.WriteAsync(data(requests.Current).Memory, ct).ConfigureAwait(false);
        }

        var digest = await writer.CompleteAsync(ct).ConfigureAwait(false);
        if (inUse is not null)
        {
            await inUse.AddAsync(digest, ct).ConfigureAwait(false);
        }

        return digest.ToByteString();
    }

    internal static B3Digest ParseDigest(ByteString bytes) =>
        B3Digest.TryCreate(bytes.Span, out var digest)
            ? digest
            : throw new RpcException(new Status(StatusCode.InvalidArgument, $"invalid digest: {bytes.Length} bytes, a BLAKE3 digest has {B3Digest.Length}"));

    private static ObjectNotFoundException NotFound(B3Digest digest) => new($"blob {digest} not found");
}

/// <summary>
/// The castore DirectoryService over any <see cref="IDirectoryService"/>, for both packages. Get streams one directory
/// or a closure root to leaves; Put accepts a closure leaves to root and rejects an invalid one with INVALID_ARGUMENT
/// and the reason.
/// </summary>
public sealed class DirectoryGrpcService(IDirectoryService directories)
{
    internal async Task GetAsync(bool hasDigest, ByteString digestBytes, bool recursive, Func<CastoreDirectory, Task> write, CancellationToken ct)
    {
        if (!hasDigest)
        {
            throw new RpcException(new Status(StatusCode.InvalidArgument, "no digest given (by_what is not set)"));
        }

        var digest = BlobGrpcService.ParseDigest(digestBytes);
        if (!recursive)
        {
            var directory = await directories.GetAsync(digest, ct).ConfigureAwait(false)
                ?? throw new ObjectNotFoundException($"directory {digest} not found");
            await write(directory).ConfigureAwait(false);
            return;
        }

        await foreach (var directory in directories.GetRecursiveAsync(digest, ct).ConfigureAwait(false))
        {
            await write(directory).ConfigureAwait(false);
        }
    }

    internal async Task<ByteString> PutAsync<T>(IAsyncStreamReader<T> requests, CancellationToken ct)
        where T : IMessage
    {
        await using var putter = directories.CreatePutter();
        while (await requests.MoveNext(ct).ConfigureAwait(false))
        {
            await putter.PutAsync(CastoreDirectory.Decode(requests.Current.ToByteArray()), ct).ConfigureAwait(false);
        }

        var root = await putter.CloseAsync(ct).ConfigureAwait(false);
        return root.ToByteString();
    }
}

internal sealed class TvixBlobService(BlobGrpcService blobs) : TvixV1.BlobService.BlobServiceBase
{
    public override async Task<TvixV1.StatBlobResponse> Stat(TvixV1.StatBlobRequest request, ServerCallContext context)
    {
        var response = new TvixV1.StatBlobResponse();
        foreach (var chunk in await blobs.StatAsync(request.Digest, request.SendChunks, context.CancellationToken).ConfigureAwait(false))
        {
            response.Chunks.Add(new TvixV1.StatBlobResponse.Types.ChunkMeta { Digest = chunk.Digest.ToByteString(), Size = chunk.Size });
        }

        return response;
    }

    // The message is serialized before WriteAsync completes, so wrapping the reused buffer is safe.
    public override Task Read(TvixV1.ReadBlobRequest request, IServerStreamWriter<TvixV1.BlobChunk> responseStream, ServerCallContext context) =>
        blobs.ReadAsync(request.Digest, bytes => responseStream.WriteAsync(new TvixV1.BlobChunk { Data = UnsafeByteOperations.UnsafeWrap(bytes) }), context.CancellationToken);

    public override async Task<TvixV1.PutBlobResponse> Put(IAsyncStreamReader<TvixV1.BlobChunk> requestStream, ServerCallContext context) =>
        new() { Digest = await blobs.PutAsync(requestStream, static c => c.Data, context.CancellationToken).ConfigureAwait(false) };
}

internal sealed class SnixBlobService(BlobGrpcService blobs) : SnixV1.BlobService.BlobServiceBase
{
    public override async Task<SnixV1.StatBlobResponse> Stat(SnixV1.StatBlobRequest request, ServerCallContext context)
    {
        var response = new SnixV1.StatBlobResponse();
        foreach (var chunk in await blobs.StatAsync(request.Digest, request.SendChunks, context.CancellationToken).ConfigureAwait(false))
        {
            response.Chunks.Add(new SnixV1.StatBlobResponse.Types.ChunkMeta { Digest = chunk.Digest.ToByteString(), Size = chunk.Size });
        }

        return response;
    }

    public override Task Read(SnixV1.ReadBlobRequest request, IServerStreamWriter<SnixV1.BlobChunk> responseStream, ServerCallContext context) =>
        blobs.ReadAsync(request.Digest, bytes => responseStream.WriteAsync(new SnixV1.BlobChunk { Data = UnsafeByteOperations.UnsafeWrap(bytes) }), context.CancellationToken);

    public override async Task<SnixV1.PutBlobResponse> Put(IAsyncStreamReader<SnixV1.BlobChunk> requestStream, ServerCallContext context) =>
        new() { Digest = await blobs.PutAsync(requestStream, static c => c.Data, context.CancellationToken).ConfigureAwait(false) };
}

internal sealed class TvixDirectoryService(DirectoryGrpcService directories) : TvixV1.DirectoryService.DirectoryServiceBase
{
    public override Task Get(TvixV1.GetDirectoryRequest request, IServerStreamWriter<TvixV1.Directory> responseStream, ServerCallContext context) =>
        directories.GetAsync(
            request.ByWhatCase == TvixV1.GetDirectoryRequest.ByWhatOneofCase.Digest, request.Digest, request.Recursive,
            d => responseStream.WriteAsync(d.ToTvixProto()), context.CancellationToken);

    public override async Task<TvixV1.PutDirectoryResponse> Put(IAsyncStreamReader<TvixV1.Directory> requestStream, ServerCallContext context) =>
        new() { RootDigest = await directories.PutAsync(requestStream, context.CancellationToken).ConfigureAwait(false) };
}

internal sealed class SnixDirectoryService(DirectoryGrpcService directories) : SnixV1.DirectoryService.DirectoryServiceBase
{
    public override Task Get(SnixV1.GetDirectoryRequest request, IServerStreamWriter<SnixV1.Directory> responseStream, ServerCallContext context) =>
        directories.GetAsync(
            request.ByWhatCase == SnixV1.GetDirectoryRequest.ByWhatOneofCase.Digest, request.Digest, request.Recursive,
            d => responseStream.WriteAsync(d.ToSnixProto()), context.CancellationToken);

    public override async Task<SnixV1.PutDirectoryResponse> Put(IAsyncStreamReader<SnixV1.Directory> requestStream, ServerCallContext context) =>
        new() { RootDigest = await directories.PutAsync(requestStream, context.CancellationToken).ConfigureAwait(false) };
}
