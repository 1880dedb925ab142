using System.Buffers;
using System.Runtime.CompilerServices;

namespace TvixFuseBuild.Castore.Hashing;

/// <summary>
/// Multi-threaded hashing of one power-of-two subtree: it is cut into equal, aligned pieces (each a subtree of its
/// own, so each yields a real chaining value of the tree), the pieces are hashed on the thread pool, and their values
/// are merged layer by layer, many parents at a time.
/// </summary>
[SkipLocalsInit]
internal static unsafe class Blake3Parallel
{
    /// <summary>Smaller subtrees are not worth handing to other threads.</summary>
    public const nuint MinimumSubtree = 512 * 1024;

    // Pieces no smaller than this keep the per-piece overhead (a work item, a few parents) negligible.
    private const nuint MinimumPiece = 128 * 1024;

    // Enough pieces per thread that an unlucky thread (preempted, slower core) does not hold everyone up.
    private const int PiecesPerThread = 8;

    private const int MaxPieces = 4096;

    /// <summary>Like <see cref="Blake3Tree.CompressSubtreeToParentNode"/> for a power-of-two number of chunks.</summary>
    public static void CompressSubtreeToParentNode(
        byte* input, nuint length, ref readonly CvWords key, ulong chunkCounter, uint flags, byte* output, Blake3Level level, int parallelism)
    {
        nuint pieceLength = length;
        while (pieceLength / 2 >= MinimumPiece && length / pieceLength < (nuint)Math.Min(parallelism * PiecesPerThread, MaxPieces))
        {
            pieceLength /= 2;
        }

        int pieces = (int)(length / pieceLength);
        if (pieces < 4)
        {
            Blake3Tree.CompressSubtreeToParentNode(input, length, in key, chunkCounter, flags, output, level);
            return;
        }

        byte[] rented = ArrayPool<byte>.Shared.Rent(pieces * Blake3.OutLength * 3 / 2);
        try
        {
            fixed (byte* cvs = rented)
            {
                var work = new PieceWork((nint)input, pieceLength, key, chunkCounter, flags, level, (nint)cvs);
                Parallel.For(0, pieces, new ParallelOptions { MaxDegreeOfParallelism = parallelism }, work.Hash);

                // Merge the layers of parents until the subtree's two children are left.
                byte* layer = cvs;
                byte* next = cvs + (pieces * Blake3.OutLength);
                nuint count = (nuint)pieces;
                while (count > 2)
                {
                    count = Blake3Tree.CompressParents(layer, count, in key, flags, next, level);
                    byte* merged = next;
                    next = layer;
                    layer = merged;
                }

                Unsafe.CopyBlockUnaligned(output, layer, 2 * Blake3.OutLength);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    private sealed class PieceWork(nint input, nuint pieceLength, CvWords key, ulong chunkCounter, uint flags, Blake3Level level, nint cvs)
    {
        private CvWords _key = key;

        public void Hash(int piece)
        {
            byte* children = stackalloc byte[Blake3.BlockLength];
            Blake3Tree.CompressSubtreeToParentNode(
                (byte*)input + ((nuint)piece * pieceLength), pieceLength, in _key,
                chunkCounter + ((ulong)piece * (pieceLength / Blake3.ChunkLength)), flags, children, level);

            // There are several pieces, so none is the root: its value is an ordinary parent.
            Blake3Output.Parent(children, in _key, flags).ChainingValue((byte*)cvs + (piece * Blake3.OutLength), level);
        }
    }
}
