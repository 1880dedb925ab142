using System.Buffers;
using System.Runtime.ExceptionServices;
using Microsoft.Win32.SafeHandles;

namespace TvixFuseBuild.Castore.Hashing;

/// <summary>
/// Multi-threaded hashing: the input is cut into equal pieces, each an aligned power-of-two subtree of the input's
/// tree. With at least two pieces none of them is the root, so each one's chaining value is a node of the tree;
/// threads hash pieces independently, and the values are then pushed in order onto an incremental state, which
/// merges them exactly as if it had hashed the pieces itself. The caller hashes the rest (less than a piece).
/// </summary>
internal abstract unsafe class Blake3Parallel
{
    // Pieces of at most 1 MiB: each fits a core's L2 cache (read into a buffer, for files), and there are many more
    // pieces than threads, so a thread slowed by others on the machine does not hold everyone up.
    private const int MaxPiece = 1024 * 1024;

    private const int MinPiece = 64 * 1024;

    private readonly CvWords _key;
    private readonly uint _flags;
    private readonly Blake3Level _level;

    protected Blake3Parallel(long length, ref readonly CvWords key, uint flags, Blake3Level level, int parallelism)
    {
        int pieceLength = MaxPiece;
        while (pieceLength > MinPiece && length / pieceLength < 4L * parallelism)
        {
            pieceLength /= 2;
        }

        Length = length;
        PieceLength = pieceLength;
        Pieces = length / pieceLength;
        Parallelism = parallelism;
        _key = key;
        _flags = flags;
        _level = level;
    }

    /// <summary>All of the input: the pieces, and the rest the caller hashes.</summary>
    protected long Length { get; }

    protected int PieceLength { get; }

    private long Pieces { get; }

    private int Parallelism { get; }

    /// <summary>Worth the threads: enough input for several pieces per thread.</summary>
    public static bool IsWorthwhile(long length, int parallelism) => parallelism > 1 && length >= 2L * parallelism * MinPiece;

    /// <summary>Hashes the whole pieces onto <paramref name="state"/> (which must be empty); returns the bytes done.</summary>
    public long HashPieces(ref Blake3State state)
    {
        byte[] cvs = ArrayPool<byte>.Shared.Rent(checked((int)(Pieces * Blake3.OutLength)));
        try
        {
            try
            {
                Parallel.For(0, Pieces, new ParallelOptions { MaxDegreeOfParallelism = Parallelism }, piece => HashPiece(piece, cvs));
            }
            catch (AggregateException error)
            {
                ExceptionDispatchInfo.Capture(error.InnerExceptions[0]).Throw();
            }

            fixed (byte* cv = cvs)
            {
                for (long piece = 0; piece < Pieces; piece++)
                {
                    state.PushSubtree(cv + (piece * Blake3.OutLength), (ulong)(PieceLength / Blake3.ChunkLength));
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(cvs);
        }

        return Pieces * PieceLength;
    }

    private void HashPiece(long piece, byte[] cvs)
    {
        fixed (byte* cv = &cvs[piece * Blake3.OutLength])
        {
            HashPiece(piece * PieceLength, cv);
        }
    }

    /// <summary>Hashes the piece at <paramref name="offset"/> (use <see cref="HashSubtree"/>) into its chaining value.</summary>
    protected abstract void HashPiece(long offset, byte* cv);

    protected void HashSubtree(byte* piece, long offset, byte* cv)
    {
        byte* children = stackalloc byte[Blake3.BlockLength];
        Blake3Tree.CompressSubtreeToParentNode(
            piece, (nuint)PieceLength, in _key, (ulong)(offset / Blake3.ChunkLength), _flags, children, _level);
        Blake3Output.Parent(children, in _key, _flags).ChainingValue(cv, _level);
    }

    /// <summary>Pieces of memory, which all threads read where it is.</summary>
    public sealed class Memory(byte* input, long length, ref readonly CvWords key, uint flags, Blake3Level level, int parallelism)
        : Blake3Parallel(length, in key, flags, level, parallelism)
    {
        private readonly nint _input = (nint)input;

        protected override void HashPiece(long offset, byte* cv) => HashSubtree((byte*)_input + offset, offset, cv);
    }

    /// <summary>Pieces of a file, each read into a buffer by the thread that hashes it.</summary>
    public sealed class File(
        SafeFileHandle file, long length, ref readonly CvWords key, uint flags, Blake3Level level, int parallelism, FileReadObserver? observer = null)
        : Blake3Parallel(length, in key, flags, level, parallelism)
    {
        protected override void HashPiece(long offset, byte* cv)
        {
            byte[] buffer = ArrayPool<byte>.Shared.Rent(PieceLength);
            try
            {
                Blake3.ReadFully(file, buffer.AsSpan(0, PieceLength), offset, Length);
                observer?.Invoke(offset, buffer.AsSpan(0, PieceLength));
                fixed (byte* bytes = buffer)
                {
                    HashSubtree(bytes, offset, cv);
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }
}
