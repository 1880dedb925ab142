using Microsoft.Win32.SafeHandles;

namespace TvixFuseBuild.Castore.Stores;

/// <summary>One chunk of a blob: its own digest (it can be read by it) and its size.</summary>
public readonly record struct ChunkMeta(B3Digest Digest, ulong Size);

/// <summary>What a store knows about a blob: its size when known, and its chunks, in order (empty: read it whole).</summary>
public sealed record BlobInfo(B3Digest Digest, long? Size, IReadOnlyList<ChunkMeta> Chunks)
{
    public static BlobInfo Whole(B3Digest digest, long? size) => new(digest, size, []);
}

/// <summary>
/// Content-addressed blobs named by their BLAKE3 digest. Every byte an implementation returns matches the digest it
/// was asked for: a mismatch is reported as <see cref="CorruptObjectException"/>, never served.
/// </summary>
public interface IBlobService : IAsyncDisposable
{
    ValueTask<bool> HasAsync(B3Digest digest, CancellationToken cancellationToken = default);

    /// <summary>Null when the blob is absent. With <paramref name="withChunks"/> the store may list the blob's chunks.</summary>
    ValueTask<BlobInfo?> StatAsync(B3Digest digest, bool withChunks, CancellationToken cancellationToken = default);

    /// <summary>Opens a blob for random-access reads; null when absent.</summary>
    ValueTask<IBlobReader?> OpenReadAsync(B3Digest digest, CancellationToken cancellationToken = default);

    /// <summary>Starts writing a blob. Nothing is visible in the store until <see cref="IBlobWriter.CompleteAsync"/>.</summary>
    IBlobWriter OpenWrite();

    /// <summary>
    /// Stores the first <paramref name="length"/> bytes of an open host file. When the caller already hashed the file it
    /// passes <paramref name="expectedDigest"/>; the store may then skip the copy if it has the blob. Stores the bytes it
    /// actually read and returns their digest (which differs from the expected one if the file changed meanwhile).
    /// </summary>
    async ValueTask<B3Digest> PutFileAsync(
        SafeFileHandle file, long length, B3Digest? expectedDigest, CancellationToken cancellationToken = default)
    {
        if (expectedDigest is { } known && await HasAsync(known, cancellationToken).ConfigureAwait(false))
        {
            return known;
        }

        await using var writer = OpenWrite();
        byte[] buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(1 << 20);
        try
        {
            long offset = 0;
            while (offset < length)
            {
                int n = await RandomAccess.ReadAsync(
                    file, buffer.AsMemory(0, (int)Math.Min(buffer.Length, length - offset)), offset, cancellationToken).ConfigureAwait(false);
                if (n == 0)
                {
                    break;
                }

                await writer.WriteAsync(buffer.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
                offset += n;
            }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
        }

        return await writer.CompleteAsync(cancellationToken).ConfigureAwait(false);
    }
}

/// <summary>Random-access reads of one blob. Thread-safe: concurrent reads at different offsets are allowed.</summary>
public interface IBlobReader : IDisposable
{
    B3Digest Digest { get; }

    long Length { get; }

    /// <summary>Reads up to <paramref name="buffer"/>.Length bytes at <paramref name="offset"/>; 0 at or past the end.</summary>
    ValueTask<int> ReadAtAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default);

    /// <summary>
    /// The open host file holding exactly the blob's verified bytes, when the blob is stored as one; lets callers copy
    /// in the kernel or hand the file to FUSE passthrough. Null otherwise. Owned by the reader.
    /// </summary>
    SafeFileHandle? BackingFile { get; }
}

/// <summary>Streams a new blob into a store, hashing as it writes. Disposing without completing discards it.</summary>
public interface IBlobWriter : IAsyncDisposable
{
    ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default);

    /// <summary>Makes the blob visible in the store (atomically) and returns its digest.</summary>
    ValueTask<B3Digest> CompleteAsync(CancellationToken cancellationToken = default);
}
