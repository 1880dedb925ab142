using System.Buffers;
using Microsoft.Win32.SafeHandles;
using TvixFuseBuild.Castore.Hashing;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Castore.Grpc;

public sealed partial class GrpcBlobService
{
    /// <summary>
    /// Reads a chunked blob by fetching the chunks that cover each range, each verified against its own digest.
    /// Sequential reads fetch a few chunks ahead. When the blob is read from the start to the end, the chunks are also
    /// hashed together and checked against the blob's digest (the chunk list itself cannot be verified any other way).
    /// </summary>
    private sealed class ChunkedReader : IBlobReader
    {
        private const int CacheSize = 8;
        private const int ReadAhead = 3;

        private readonly GrpcBlobService _owner;
        private readonly B3Digest _digest;
        private readonly ChunkLayout _layout;
        private readonly ChunkMeta[] _chunks;
        private readonly CancellationTokenSource _disposed = new();
        private readonly object _lock = new();
        private readonly (int Index, Task<byte[]>? Task)[] _cache = new (int, Task<byte[]>?)[CacheSize];
        private int _nextSlot;
        private long _sequentialOffset = -1;
        private readonly Blake3Hasher _wholeHasher = new();
        private int _hashedChunks;
        private Exception? _corrupt;

        public ChunkedReader(GrpcBlobService owner, BlobInfo info)
        {
            _owner = owner;
            _digest = info.Digest;
            _layout = new ChunkLayout(info.Chunks);
            _chunks = _layout.Chunks;

            for (int i = 0; i < CacheSize; i++)
            {
                _cache[i] = (-1, null);
            }
        }

        public B3Digest Digest => _digest;

        public long Length => _layout.Length;

        public SafeFileHandle? BackingFile => null;

        public async ValueTask<int> ReadAtAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(offset);
            ObjectDisposedException.ThrowIf(_disposed.IsCancellationRequested, this);
            if (_corrupt is not null)
            {
                throw _corrupt;
            }

            if (offset >= Length || buffer.IsEmpty)
            {
                return 0;
            }

            int index = _layout.IndexOf(offset);
            long end = Math.Min(Length, offset + buffer.Length);
            int last = _layout.IndexOf(end - 1);
            lock (_lock)
            {
                // A read that continues where the previous one ended is a sequential stream: fetch ahead of it.
                // Any other read fetches exactly the chunks that cover it.
                bool sequential = offset > 0 && offset == _sequentialOffset;
                _sequentialOffset = end;
                int upTo = Math.Min(last + (sequential ? ReadAhead : 0), index + (CacheSize / 2));
                for (int i = index; i <= upTo && i < _chunks.Length; i++)
                {
                    GetOrFetch(i);
                }
            }

            int total = 0;
            while (total < buffer.Length && index < _chunks.Length)
            {
                Task<byte[]> fetch;
                lock (_lock)
                {
                    fetch = GetOrFetch(index);
                }

                byte[] data = await fetch.WaitAsync(cancellationToken).ConfigureAwait(false);
                VerifyInOrder(index, data);
                long within = offset + total - _layout.Start(index);
                int n = (int)Math.Min(buffer.Length - total, data.Length - within);
                data.AsSpan((int)within, n).CopyTo(buffer.Span[total..]);
                total += n;
                index++;
            }

            return total;
        }

        // Called under _lock.
        private Task<byte[]> GetOrFetch(int index)
        {
            foreach (var (cached, task) in _cache)
            {
                if (cached == index && task is { IsFaulted: false, IsCanceled: false })
                {
                    return task;
                }
            }

            var fetch = FetchAsync(index);
            _cache[_nextSlot] = (index, fetch);
            _nextSlot = (_nextSlot + 1) % CacheSize;
            return fetch;
        }

        private async Task<byte[]> FetchAsync(int index)
        {
            await Task.Yield();
            var meta = _chunks[index];
            var sink = new ArraySink(new byte[meta.Size]);
            bool found = await _owner.DownloadAsync(
                meta.Digest, sink, _disposed.Token, (long)meta.Size, _owner._connection.Address.CallTimeout).ConfigureAwait(false);
            if (!found)
            {
                throw new ObjectNotFoundException(
                    $"chunk {index} ({meta.Digest}) of blob {_digest} not found in {_owner._connection.Address.Address}");
            }

            if (sink.Position != sink.Array.Length)
            {
                throw _owner._connection.Corrupt(
                    $"chunk {index} ({meta.Digest}) of blob {_digest} with {sink.Position} bytes, but the chunk list says {meta.Size}");
            }

            return sink.Array;
        }

        private void VerifyInOrder(int index, byte[] data)
        {
            lock (_lock)
            {
                if (index != _hashedChunks)
                {
                    return;
                }

                _wholeHasher.Update(data);
                _hashedChunks++;
                if (_hashedChunks == _chunks.Length)
                {
                    var actual = _wholeHasher.Finalize();
                    if (actual != _digest)
                    {
                        _corrupt = _owner._connection.Corrupt(
                            $"a chunk list for blob {_digest} whose chunks make up a different blob ({actual})");
                        throw _corrupt;
                    }
                }
            }
        }

        public void Dispose()
        {
            if (!_disposed.IsCancellationRequested)
            {
                _disposed.Cancel();
                foreach (var (_, task) in _cache)
                {
                    // Fetches ahead that nobody awaited end with the cancellation; observe it.
                    _ = task?.ContinueWith(static t => t.Exception, TaskScheduler.Default);
                }
            }
        }
    }

    private sealed class ArraySink(byte[] array) : IBlobSink
    {
        public byte[] Array => array;

        public int Position { get; private set; }

        public ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
        {
            // The download checks the total against the expected size before writing.
            data.Span.CopyTo(array.AsSpan(Position));
            Position += data.Length;
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>
    /// Holds a whole blob while it downloads: in memory up to <see cref="MemoryLimit"/>, then in a temporary file that
    /// is unlinked at once (nothing is left behind, even after a crash).
    /// </summary>
    private sealed class SpillBuffer : IBlobSink, IDisposable
    {
        private const int MemoryLimit = 4 << 20;

        private byte[] _memory = ArrayPool<byte>.Shared.Rent(64 << 10);
        private int _memoryLength;
        private SafeFileHandle? _file;
        private long _fileLength;

        public async ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
        {
            if (_file is null && _memoryLength + data.Length <= MemoryLimit)
            {
                if (_memory.Length - _memoryLength < data.Length)
                {
                    byte[] larger = ArrayPool<byte>.Shared.Rent(Math.Min(MemoryLimit, Math.Max(_memory.Length * 2, _memoryLength + data.Length)));
                    _memory.AsSpan(0, _memoryLength).CopyTo(larger);
                    ArrayPool<byte>.Shared.Return(_memory);
                    _memory = larger;
                }

                data.Span.CopyTo(_memory.AsSpan(_memoryLength));
                _memoryLength += data.Length;
                return;
            }

            if (_file is null)
            {
                _file = CreateUnlinkedTempFile();
                await RandomAccess.WriteAsync(_file, _memory.AsMemory(0, _memoryLength), 0, cancellationToken).ConfigureAwait(false);
                _fileLength = _memoryLength;
                ArrayPool<byte>.Shared.Return(_memory);
                _memory = [];
                _memoryLength = 0;
            }

            await RandomAccess.WriteAsync(_file, data, _fileLength, cancellationToken).ConfigureAwait(false);
            _fileLength += data.Length;
        }

        /// <summary>Hands the verified bytes to a reader, which owns them from now on.</summary>
        public IBlobReader ToReader(B3Digest digest)
        {
            if (_file is { } file)
            {
                _file = null;
                return new FileBlobReader(digest, file, _fileLength);
            }

            var reader = new ArrayBlobReader(digest, _memory.AsSpan(0, _memoryLength).ToArray());
            Dispose();
            return reader;
        }

        private static SafeFileHandle CreateUnlinkedTempFile()
        {
            string path = Path.Combine(Path.GetTempPath(), $"tvix-fuse-build-blob-{Environment.ProcessId}-{Random.Shared.NextInt64():x16}");
            var handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None);
            File.Delete(path);
            return handle;
        }

        public void Dispose()
        {
            _file?.Dispose();
            _file = null;
            if (_memory.Length > 0)
            {
                ArrayPool<byte>.Shared.Return(_memory);
                _memory = [];
            }
        }
    }
}
