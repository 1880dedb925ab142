using Microsoft.Win32.SafeHandles;

namespace TvixFuseBuild.Castore.Stores;

/// <summary>A blob whose verified bytes are in memory.</summary>
internal sealed class ArrayBlobReader(B3Digest digest, byte[] bytes) : IBlobReader
{
    public B3Digest Digest => digest;

    public long Length => bytes.Length;

    public SafeFileHandle? BackingFile => null;

    public ValueTask<int> ReadAtAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        if (offset >= bytes.Length)
        {
            return ValueTask.FromResult(0);
        }

        int n = (int)Math.Min(buffer.Length, bytes.Length - offset);
        bytes.AsSpan((int)offset, n).CopyTo(buffer.Span);
        return ValueTask.FromResult(n);
    }

    public void Dispose()
    {
    }
}

/// <summary>
/// A blob whose verified bytes are a whole local file (owned by the reader). Reads are synchronous positioned reads:
/// the file is local, usually in the page cache, and a thread-pool hop would cost more than the read.
/// </summary>
internal sealed class FileBlobReader(B3Digest digest, SafeFileHandle file, long length) : IBlobReader
{
    public B3Digest Digest => digest;

    public long Length => length;

    public SafeFileHandle? BackingFile => file;

    public ValueTask<int> ReadAtAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        if (offset >= length || buffer.IsEmpty)
        {
            return ValueTask.FromResult(0);
        }

        int n = (int)Math.Min(buffer.Length, length - offset);
        return ValueTask.FromResult(RandomAccess.Read(file, buffer.Span[..n], offset));
    }

    public void Dispose() => file.Dispose();
}
