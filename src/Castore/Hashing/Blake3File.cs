using System.Buffers;
using Microsoft.Win32.SafeHandles;

namespace TvixFuseBuild.Castore.Hashing;

/// <summary>Sees the bytes of a file as they are read: <paramref name="data"/> is the file's bytes at <paramref name="offset"/>.</summary>
public delegate void FileReadObserver(long offset, ReadOnlySpan<byte> data);

public static unsafe partial class Blake3
{
    // Files are read in pieces of this size: a power-of-two subtree, and a buffer that stays in the core's L2 cache.
    private const int ReadLength = 1024 * 1024;

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
    public static B3Digest HashFile(SafeFileHandle file, long length, bool parallel = true) => HashFile(file, length, parallel, null);

    /// <summary>
    /// As <see cref="HashFile(SafeFileHandle, long, bool)"/>, handing every piece read to <paramref name="observer"/>
    /// (each byte once; from several threads at once, in no particular order, when hashed in parallel).
    /// </summary>
    public static B3Digest HashFile(SafeFileHandle file, long length, bool parallel, FileReadObserver? observer)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Span<byte> output = stackalloc byte[OutLength];
        var state = new Blake3State(in IVWords, 0, Blake3Backend.Best);
        long offset = 0;
        int parallelism = parallel ? Environment.ProcessorCount : 1;
        if (Blake3Parallel.IsWorthwhile(length, parallelism))
        {
            offset = new Blake3Parallel.File(file, length, in IVWords, 0, Blake3Backend.Best, parallelism, observer).HashPieces(ref state);
        }

        byte[] buffer = ArrayPool<byte>.Shared.Rent((int)Math.Min(length - offset, ReadLength));
        try
        {
            fixed (byte* bytes = buffer)
            {
                while (offset < length)
                {
                    int n = ReadFully(file, buffer.AsSpan(0, (int)Math.Min(buffer.Length, length - offset)), offset, length);
                    observer?.Invoke(offset, buffer.AsSpan(0, n));
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

    /// <summary>Fills <paramref name="buffer"/> from <paramref name="offset"/>; the file ending first is an error.</summary>
    internal static int ReadFully(SafeFileHandle file, Span<byte> buffer, long offset, long length)
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
