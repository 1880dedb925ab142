using System.IO.MemoryMappedFiles;
using Microsoft.Win32.SafeHandles;

namespace TvixFuseBuild.Castore.Hashing;

public static unsafe partial class Blake3
{
    /// <summary>Smaller files are read: for them a mapping costs more than the copy it saves (as b3sum decides).</summary>
    internal const long MapThreshold = 64 * 1024;

    private const int ReadBufferLength = 16 * 1024;

    /// <summary>The digest of the file at <paramref name="path"/>, hashed with all cores.</summary>
    public static B3Digest HashFile(string path)
    {
        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        return HashFile(file, RandomAccess.GetLength(file));
    }

    /// <summary>
    /// The digest of the first <paramref name="length"/> bytes of <paramref name="file"/> (opened for reading).
    /// Files of 64 KiB and more are memory-mapped and, when <paramref name="parallel"/>, hashed with all cores.
    /// </summary>
    /// <exception cref="IOException">The file is shorter than <paramref name="length"/>, or cannot be read.</exception>
    /// <remarks>
    /// As with any memory mapping, the file must not be truncated while it is hashed: the kernel would signal
    /// SIGBUS on the pages that vanished.
    /// </remarks>
    public static B3Digest HashFile(SafeFileHandle file, long length, bool parallel = true)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Span<byte> output = stackalloc byte[OutLength];
        if (length < MapThreshold)
        {
            HashByReading(file, length, output);
        }
        else
        {
            HashMapped(file, length, parallel ? Environment.ProcessorCount : 1, output);
        }

        return new B3Digest(output);
    }

    private static void HashByReading(SafeFileHandle file, long length, Span<byte> output)
    {
        var state = new Blake3State(in IVWords, 0, Blake3Backend.Best);
        Span<byte> buffer = stackalloc byte[ReadBufferLength];
        for (long offset = 0; offset < length;)
        {
            int n = RandomAccess.Read(file, buffer[..(int)Math.Min(buffer.Length, length - offset)], offset);
            if (n == 0)
            {
                throw Truncated(offset, length);
            }

            fixed (byte* bytes = buffer)
            {
                state.Update(bytes, (nuint)n);
            }

            offset += n;
        }

        state.Finalize(output);
    }

    private static void HashMapped(SafeFileHandle file, long length, int parallelism, Span<byte> output)
    {
        long fileLength = RandomAccess.GetLength(file);
        if (fileLength < length)
        {
            throw Truncated(fileLength, length);
        }

        using var map = MemoryMappedFile.CreateFromFile(file, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: true);
        using var view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
        var handle = view.SafeMemoryMappedViewHandle;
        byte* pointer = null;
        handle.AcquirePointer(ref pointer);
        try
        {
            HashCore(pointer + view.PointerOffset, (nuint)length, in IVWords, 0, output, Blake3Backend.Best, parallelism);
        }
        finally
        {
            handle.ReleasePointer();
        }
    }

    private static IOException Truncated(long available, long length) =>
        new($"cannot hash {length} bytes of the file: it ends after {available}");
}
