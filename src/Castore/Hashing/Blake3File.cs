using System.Buffers;
using System.Runtime.ExceptionServices;
using Microsoft.Win32.SafeHandles;

namespace TvixFuseBuild.Castore.Hashing;

public static unsafe partial class Blake3
{
    // Files are read in pieces of this size: a power-of-two subtree, and a buffer that stays in the core's L2 cache.
    private const int MaxReadPiece = 1024 * 1024;

    private const int MinReadPiece = 64 * 1024;

    /// <summary>The digest of the file at <paramref name="path"/>, hashed with all cores.</summary>
    public static B3Digest HashFile(string path)
    {
        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        return HashFile(file, RandomAccess.GetLength(file));
    }

    /// <summary>
    /// The digest of the first <paramref name="length"/> bytes of <paramref name="file"/> (opened for reading), read
    /// with positioned reads (the file's position is not used). Large files are hashed on all cores when
    /// <paramref name="parallel"/>, each thread reading and hashing its own whole subtrees.
    /// </summary>
    /// <exception cref="IOException">The file is shorter than <paramref name="length"/>, or cannot be read.</exception>
    public static B3Digest HashFile(SafeFileHandle file, long length, bool parallel = true)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Span<byte> output = stackalloc byte[OutLength];
        var state = new Blake3State(in IVWords, 0, Blake3Backend.Best);
        long offset = 0;
        int parallelism = parallel ? Environment.ProcessorCount : 1;
        if (parallelism > 1 && length >= ParallelThreshold)
        {
            offset = HashPiecesInParallel(file, length, parallelism, ref state);
        }

        byte[] buffer = ArrayPool<byte>.Shared.Rent((int)Math.Min(length - offset, MaxReadPiece));
        try
        {
            fixed (byte* bytes = buffer)
            {
                while (offset < length)
                {
                    int n = ReadFully(file, buffer.AsSpan(0, (int)Math.Min(buffer.Length, length - offset)), offset, length);
                    state.Update(bytes, (nuint)n);
                    offset += n;
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        state.Finalize(output);
        return new B3Digest(output);
    }

    /// <summary>
    /// Hashes the file's whole pieces on the thread pool and pushes them onto <paramref name="state"/>; returns where
    /// the rest (less than a piece) starts. Pieces are aligned power-of-two subtrees and there are at least two, so
    /// each one's chaining value is a node of the file's tree.
    /// </summary>
    private static long HashPiecesInParallel(SafeFileHandle file, long length, int parallelism, ref Blake3State state)
    {
        int pieceLength = MaxReadPiece;
        while (pieceLength > MinReadPiece && length / pieceLength < 4L * parallelism)
        {
            pieceLength /= 2;
        }

        long pieces = length / pieceLength;
        byte[] cvs = ArrayPool<byte>.Shared.Rent(checked((int)(pieces * OutLength)));
        try
        {
            var work = new FilePieceWork(file, pieceLength, length);
            try
            {
                Parallel.For(0, pieces, new ParallelOptions { MaxDegreeOfParallelism = parallelism }, piece => work.Hash(piece, cvs));
            }
            catch (AggregateException error) when (error.InnerExceptions.Count > 0)
            {
                ExceptionDispatchInfo.Capture(error.InnerExceptions[0]).Throw();
            }

            fixed (byte* cv = cvs)
            {
                for (long piece = 0; piece < pieces; piece++)
                {
                    state.PushSubtree(cv + (piece * OutLength), (ulong)(pieceLength / ChunkLength));
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(cvs);
        }

        return pieces * pieceLength;
    }

    private sealed class FilePieceWork(SafeFileHandle file, int pieceLength, long length)
    {
        public void Hash(long piece, byte[] cvs)
        {
            byte[] buffer = ArrayPool<byte>.Shared.Rent(pieceLength);
            try
            {
                long offset = piece * pieceLength;
                ReadFully(file, buffer.AsSpan(0, pieceLength), offset, length);
                byte* children = stackalloc byte[BlockLength];
                fixed (byte* bytes = buffer)
                fixed (byte* cv = cvs)
                {
                    Blake3Tree.CompressSubtreeToParentNode(
                        bytes, (nuint)pieceLength, in IVWords, (ulong)(offset / ChunkLength), 0, children, Blake3Backend.Best);
                    Blake3Output.Parent(children, in IVWords, 0).ChainingValue(cv + (piece * OutLength), Blake3Backend.Best);
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }

    /// <summary>Fills <paramref name="buffer"/> from <paramref name="offset"/>; the file ending first is an error.</summary>
    private static int ReadFully(SafeFileHandle file, Span<byte> buffer, long offset, long length)
    {
        for (int done = 0; done < buffer.Length;)
        {
            int n = RandomAccess.Read(file, buffer[done..], offset + done);
            if (n == 0)
            {
                throw new IOException($"cannot hash {length} bytes of the file: it ends after {offset + done}");
            }

            done += n;
        }

        return buffer.Length;
    }
}
