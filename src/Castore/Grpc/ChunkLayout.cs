using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Castore.Grpc;

/// <summary>Where each chunk of a chunked blob starts, and which chunk holds a given offset.</summary>
internal sealed class ChunkLayout
{
    private readonly long[] _starts;

    public ChunkLayout(IReadOnlyList<ChunkMeta> chunks)
    {
        Chunks = [.. chunks];
        _starts = new long[Chunks.Length + 1];
        for (int i = 0; i < Chunks.Length; i++)
        {
            _starts[i + 1] = _starts[i] + (long)Chunks[i].Size;
        }
    }

    public ChunkMeta[] Chunks { get; }

    public int Count => Chunks.Length;

    public long Length => _starts[^1];

    public long Start(int index) => _starts[index];

    /// <summary>The chunk holding byte <paramref name="offset"/> (0 ≤ offset &lt; <see cref="Length"/>).</summary>
    public int IndexOf(long offset)
    {
        int index = Array.BinarySearch(_starts, offset);
        return index < 0 ? ~index - 1 : index;
    }
}
