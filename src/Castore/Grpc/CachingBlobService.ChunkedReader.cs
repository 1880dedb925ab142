using Microsoft.Win32.SafeHandles;
using TvixFuseBuild.Castore.Hashing;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Castore.Grpc;

public sealed partial class CachingBlobService
{
    /// <summary>
    /// Reads a remote chunked blob through the local cache: each read fetches only the chunks covering it (those not
    /// cached yet), sequential reads fetch a few ahead, and when every chunk is cached the blob is assembled locally.
    /// </summary>
    private sealed class ChunkedReader : IBlobReader
    {
        private const int ReadAhead = 3;

        private readonly CachingBlobService _owner;
        private readonly B3Digest _digest;
        private readonly ChunkLayout _layout;
        private readonly ChunkMeta[] _chunks;
        private readonly bool[] _cached;
        private readonly object _lock = new();
        private int _cachedCount;
        private long _sequentialOffset = -1;

        public ChunkedReader(CachingBlobService owner, BlobInfo info)
        {
            _owner = owner;
            _digest = info.Digest;
            _layout = new ChunkLayout(info.Chunks);
            _chunks = _layout.Chunks;
            _cached = new bool[_chunks.Length];
        }

        public B3Digest Digest => _digest;

        public long Length => _layout.Length;

        public SafeFileHandle? BackingFile => null;

        public async ValueTask<int> ReadAtAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(offset);
            if (offset >= Length || buffer.IsEmpty)
            {
                return 0;
            }

            int index = _layout.IndexOf(offset);
            long end = Math.Min(Length, offset + buffer.Length);
            bool sequential;
            lock (_lock)
            {
                sequential = offset > 0 && offset == _sequentialOffset;
                _sequentialOffset = end;
            }

            if (sequential)
            {
                for (int ahead = _layout.IndexOf(end - 1) + 1; ahead <= _layout.IndexOf(end - 1) + ReadAhead && ahead < _chunks.Length; ahead++)
                {
                    _ = EnsureCachedAsync(ahead, CancellationToken.None).AsTask().ContinueWith(
                        static t => t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
                }
            }

            int total = 0;
            while (total < buffer.Length && index < _chunks.Length)
            {
                await EnsureCachedAsync(index, cancellationToken).ConfigureAwait(false);
                using var chunk = await _owner._local.OpenReadAsync(_chunks[index].Digest, cancellationToken).ConfigureAwait(false)
                    ?? throw new StoreUnavailableException($"chunk {_chunks[index].Digest} vanished from the local cache");
                long within = offset + total - _layout.Start(index);
                int wanted = (int)Math.Min(buffer.Length - total, (long)_chunks[index].Size - within);
                int n = await ReadFullyAsync(chunk, within, buffer.Slice(total, wanted), cancellationToken).ConfigureAwait(false);
                if (n != wanted)
                {
                    throw new CorruptObjectException(
                        $"chunk {index} ({_chunks[index].Digest}) of blob {_digest} has {chunk.Length} bytes, but the chunk list says {_chunks[index].Size}");
                }

                total += n;
                index++;
            }

            return total;
        }

        private async ValueTask EnsureCachedAsync(int index, CancellationToken cancellationToken)
        {
            if (Volatile.Read(ref _cached[index]))
            {
                return;
            }

            var chunk = _chunks[index];
            if (!await _owner._local.HasAsync(chunk.Digest, cancellationToken).ConfigureAwait(false) &&
                !await _owner.FetchAsync(chunk.Digest, cancellationToken).ConfigureAwait(false))
            {
                throw new ObjectNotFoundException($"chunk {index} ({chunk.Digest}) of blob {_digest} not found in the remote store");
            }

            bool complete;
            lock (_lock)
            {
                if (_cached[index])
                {
                    return;
                }

                _cached[index] = true;
                complete = ++_cachedCount == _chunks.Length;
            }

            if (complete)
            {
                // Added before it starts, so that its own removal when done cannot come first.
                var assembly = new Lazy<Task>(() => Task.Run(AssembleAsync));
                if (_owner._assemblies.TryAdd(_digest, assembly))
                {
                    _ = assembly.Value;
                }
            }
        }

        /// <summary>Concatenates the cached chunks into the whole blob in the local store, if they make up the right digest.</summary>
        private async Task AssembleAsync()
        {
            try
            {
                var cancellationToken = _owner._disposed.Token;
                if (await _owner._local.HasAsync(_digest, cancellationToken).ConfigureAwait(false))
                {
                    return;
                }

                var hasher = new Blake3Hasher();
                await using var writer = _owner._local.OpenWrite();
                byte[] buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(256 << 10);
                try
                {
                    foreach (var meta in _chunks)
                    {
                        using var chunk = await _owner._local.OpenReadAsync(meta.Digest, cancellationToken).ConfigureAwait(false);
                        if (chunk is null)
                        {
                            return;
                        }

                        long offset = 0;
                        int n;
                        while ((n = await chunk.ReadAtAsync(offset, buffer, cancellationToken).ConfigureAwait(false)) > 0)
                        {
                            hasher.Update(buffer.AsSpan(0, n));
                            await writer.WriteAsync(buffer.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
                            offset += n;
                        }
                    }
                }
                finally
                {
                    System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
                }

                // A chunk list whose chunks do not make up the blob is not cached as that blob.
                if (hasher.Finalize() == _digest)
                {
                    await writer.CompleteAsync(cancellationToken).ConfigureAwait(false);
                }
            }
            finally
            {
                _owner._assemblies.TryRemove(_digest, out _);
            }
        }

        private static async ValueTask<int> ReadFullyAsync(IBlobReader reader, long offset, Memory<byte> buffer, CancellationToken cancellationToken)
        {
            int total = 0;
            while (total < buffer.Length)
            {
                int n = await reader.ReadAtAsync(offset + total, buffer[total..], cancellationToken).ConfigureAwait(false);
                if (n == 0)
                {
                    break;
                }

                total += n;
            }

            return total;
        }

        public void Dispose()
        {
        }
    }
}
