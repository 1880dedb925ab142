using System.Buffers;
using System.Collections.Concurrent;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Hashing;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Server;

/// <summary>
/// Chunk lists for stores that keep blobs whole: a large blob is cut into fixed-size pieces (1 MiB by default) whose
/// digests are computed on the first Stat that asks for chunks (one pass over the blob) and remembered, together
/// with where each chunk lies, so that a chunk can then be read by its own digest. Held in memory for the life of the
/// server (about 100 bytes per MiB of chunked blob).
/// </summary>
public sealed class BlobChunkIndex(int chunkSize = BlobChunkIndex.DefaultChunkSize)
{
    public const int DefaultChunkSize = 1 << 20;

    private readonly ConcurrentDictionary<B3Digest, Lazy<Task<ChunkMeta[]?>>> _lists = new();
    private readonly ConcurrentDictionary<B3Digest, ChunkLocation> _locations = new();

    /// <summary>Blobs up to this size are not chunked; larger ones are cut into pieces of this size.</summary>
    public int ChunkSize { get; } = chunkSize > 0 ? chunkSize : throw new ArgumentOutOfRangeException(nameof(chunkSize));

    /// <summary>Where a computed chunk lies: in which blob, at which offset, how long.</summary>
    public readonly record struct ChunkLocation(B3Digest Blob, long Offset, int Size);

    public bool TryLocate(B3Digest chunk, out ChunkLocation location) => _locations.TryGetValue(chunk, out location);

    /// <summary>
    /// The chunk list of blob <paramref name="digest"/> in <paramref name="blobs"/>, computed once; empty when the blob
    /// fits in one chunk; null when the store does not have it.
    /// </summary>
    public async Task<IReadOnlyList<ChunkMeta>?> GetChunksAsync(IBlobService blobs, B3Digest digest, CancellationToken cancellationToken)
    {
        var lazy = _lists.GetOrAdd(digest, d => new Lazy<Task<ChunkMeta[]?>>(() => ComputeAsync(blobs, d)));
        try
        {
            return await lazy.Value.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            // Failures and absent blobs are not remembered: the next Stat tries again.
            if (lazy.Value is { IsCompleted: true } task && (task.IsFaulted || task.Result is null))
            {
                _lists.TryRemove(new KeyValuePair<B3Digest, Lazy<Task<ChunkMeta[]?>>>(digest, lazy));
            }
        }
    }

    // Not tied to one caller's cancellation: another Stat may be waiting for the same list. It is bounded work.
    private async Task<ChunkMeta[]?> ComputeAsync(IBlobService blobs, B3Digest digest)
    {
        using var reader = await blobs.OpenReadAsync(digest).ConfigureAwait(false);
        if (reader is null)
        {
            return null;
        }

        long length = reader.Length;
        if (length <= ChunkSize)
        {
            return [];
        }

        var chunks = new ChunkMeta[(int)((length + ChunkSize - 1) / ChunkSize)];
        byte[] buffer = ArrayPool<byte>.Shared.Rent(ChunkSize);
        try
        {
            for (int i = 0; i < chunks.Length; i++)
            {
                long offset = (long)i * ChunkSize;
                int size = (int)Math.Min(ChunkSize, length - offset);
                int filled = 0;
                while (filled < size)
                {
                    int n = await reader.ReadAtAsync(offset + filled, buffer.AsMemory(filled, size - filled)).ConfigureAwait(false);
                    if (n == 0)
                    {
                        throw new CorruptObjectException($"blob {reader.Digest} ended at {offset + filled} bytes, before its length {length}");
                    }

                    filled += n;
                }

                chunks[i] = new ChunkMeta(Blake3.Hash(buffer.AsSpan(0, size)), (ulong)size);
            }

            // The store verified the bytes it returned (IBlobService's contract), so the list describes the blob.
            for (int i = 0; i < chunks.Length; i++)
            {
                _locations.TryAdd(chunks[i].Digest, new ChunkLocation(reader.Digest, (long)i * ChunkSize, (int)chunks[i].Size));
            }

            return chunks;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
