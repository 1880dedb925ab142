using System.Collections.Concurrent;
using TvixFuseBuild.Castore.Hashing;

namespace TvixFuseBuild.Castore.Stores.Memory;

/// <summary>Blobs held in memory (<c>memory://</c>): for tests and throwaway builds.</summary>
public sealed class MemoryBlobService : IBlobService
{
    private readonly ConcurrentDictionary<B3Digest, byte[]> _blobs = new();

    public int Count => _blobs.Count;

    public ValueTask<bool> HasAsync(B3Digest digest, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(_blobs.ContainsKey(digest));

    public ValueTask<BlobInfo?> StatAsync(B3Digest digest, bool withChunks, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(_blobs.TryGetValue(digest, out var bytes) ? BlobInfo.Whole(digest, bytes.Length) : null);

    public ValueTask<IBlobReader?> OpenReadAsync(B3Digest digest, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult<IBlobReader?>(_blobs.TryGetValue(digest, out var bytes) ? new ArrayBlobReader(digest, bytes) : null);

    public IBlobWriter OpenWrite() => new Writer(this);

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    private sealed class Writer(MemoryBlobService owner) : IBlobWriter
    {
        private readonly Blake3Hasher _hasher = new();
        private readonly MemoryStream _buffer = new();
        private bool _completed;

        public ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
        {
            if (_completed)
            {
                ThrowHelper.ThrowInvalidOperation("the blob was already completed");
            }

            _hasher.Update(data.Span);
            _buffer.Write(data.Span);
            return ValueTask.CompletedTask;
        }

        public ValueTask<B3Digest> CompleteAsync(CancellationToken cancellationToken = default)
        {
            if (_completed)
            {
                ThrowHelper.ThrowInvalidOperation("the blob was already completed");
            }

            _completed = true;
            var digest = _hasher.Finalize();
            owner._blobs.TryAdd(digest, _buffer.ToArray());
            return ValueTask.FromResult(digest);
        }

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
