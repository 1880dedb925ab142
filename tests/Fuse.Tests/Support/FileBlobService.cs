using System.Collections.Concurrent;
using Microsoft.Win32.SafeHandles;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Stores.Memory;

namespace TvixFuseBuild.Fuse.Tests.Support;

/// <summary>
/// Blobs kept as whole files in a directory, whose readers expose <see cref="IBlobReader.BackingFile"/> the way the
/// local store does (what FUSE passthrough needs). Records the reads that reach it.
/// </summary>
internal sealed class FileBlobService(string directory) : IBlobService
{
    private readonly MemoryBlobService _hashing = new();

    public ConcurrentQueue<(long Offset, int Length)> Reads { get; } = new();

    public async Task<B3Digest> PutAsync(byte[] bytes)
    {
        await using var writer = _hashing.OpenWrite();
        await writer.WriteAsync(bytes);
        var digest = await writer.CompleteAsync();
        await File.WriteAllBytesAsync(Path.Combine(directory, digest.ToHex()), bytes);
        return digest;
    }

    public ValueTask<bool> HasAsync(B3Digest digest, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(File.Exists(Path.Combine(directory, digest.ToHex())));

    public ValueTask<BlobInfo?> StatAsync(B3Digest digest, bool withChunks, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException();

    public ValueTask<IBlobReader?> OpenReadAsync(B3Digest digest, CancellationToken cancellationToken = default)
    {
        string path = Path.Combine(directory, digest.ToHex());
        return ValueTask.FromResult<IBlobReader?>(File.Exists(path) ? new Reader(this, digest, File.OpenHandle(path)) : null);
    }

    public IBlobWriter OpenWrite() => throw new NotSupportedException();

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    private sealed class Reader(FileBlobService owner, B3Digest digest, SafeFileHandle file) : IBlobReader
    {
        public B3Digest Digest => digest;

        public long Length => RandomAccess.GetLength(file);

        public SafeFileHandle? BackingFile => file;

        public ValueTask<int> ReadAtAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            owner.Reads.Enqueue((offset, buffer.Length));
            return ValueTask.FromResult(RandomAccess.Read(file, buffer.Span, offset));
        }

        public void Dispose() => file.Dispose();
    }
}

/// <summary>A blob service whose reads fail the way a store reports bytes that do not match their digest.</summary>
internal sealed class CorruptBlobService(IBlobService inner) : IBlobService
{
    public ValueTask<bool> HasAsync(B3Digest digest, CancellationToken cancellationToken = default) => inner.HasAsync(digest, cancellationToken);

    public ValueTask<BlobInfo?> StatAsync(B3Digest digest, bool withChunks, CancellationToken cancellationToken = default) =>
        inner.StatAsync(digest, withChunks, cancellationToken);

    public async ValueTask<IBlobReader?> OpenReadAsync(B3Digest digest, CancellationToken cancellationToken = default) =>
        await inner.OpenReadAsync(digest, cancellationToken) is { } reader ? new Reader(reader) : null;

    public IBlobWriter OpenWrite() => inner.OpenWrite();

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    private sealed class Reader(IBlobReader inner) : IBlobReader
    {
        public B3Digest Digest => inner.Digest;

        public long Length => inner.Length;

        public SafeFileHandle? BackingFile => null;

        public ValueTask<int> ReadAtAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            throw new CorruptObjectException($"blob {inner.Digest} does not match its digest");

        public void Dispose() => inner.Dispose();
    }
}
