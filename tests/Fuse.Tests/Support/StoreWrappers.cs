using System.Collections.Concurrent;
using Microsoft.Win32.SafeHandles;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Fuse.Tests.Support;

/// <summary>
/// A directory service that records every fetch, can answer asynchronously (as a remote store would), and can hold
/// fetches at a gate until the test opens it.
/// </summary>
internal sealed class CountingDirectoryService(IDirectoryService inner) : IDirectoryService
{
    public ConcurrentQueue<B3Digest> Fetched { get; } = new();

    /// <summary>Complete every call on another thread, as a remote store does.</summary>
    public bool Asynchronous { get; set; }

    /// <summary>When set, fetches wait for it (cancellably); <see cref="Entered"/> completes when one is waiting.</summary>
    public TaskCompletionSource? Gate { get; set; }

    public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public async ValueTask<CastoreDirectory?> GetAsync(B3Digest digest, CancellationToken cancellationToken = default)
    {
        Fetched.Enqueue(digest);
        if (Gate is { } gate)
        {
            Entered.TrySetResult();
            await gate.Task.WaitAsync(cancellationToken);
        }

        if (Asynchronous)
        {
            await Task.Yield();
        }

        return await inner.GetAsync(digest, cancellationToken);
    }

    public IAsyncEnumerable<CastoreDirectory> GetRecursiveAsync(B3Digest root, CancellationToken cancellationToken = default) =>
        inner.GetRecursiveAsync(root, cancellationToken);

    public ValueTask<B3Digest> PutAsync(CastoreDirectory directory, CancellationToken cancellationToken = default) =>
        inner.PutAsync(directory, cancellationToken);

    public IDirectoryPutter CreatePutter() => inner.CreatePutter();

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}

/// <summary>A blob service that records every open and every range read, and can answer asynchronously.</summary>
internal sealed class CountingBlobService(IBlobService inner) : IBlobService
{
    public ConcurrentQueue<B3Digest> Opened { get; } = new();

    private int _openReaders;

    /// <summary>Readers opened and not disposed yet.</summary>
    public int OpenReaders => Volatile.Read(ref _openReaders);

    public ConcurrentQueue<(B3Digest Digest, long Offset, int Length)> Reads { get; } = new();

    public bool Asynchronous { get; set; }

    public ValueTask<bool> HasAsync(B3Digest digest, CancellationToken cancellationToken = default) => inner.HasAsync(digest, cancellationToken);

    public ValueTask<BlobInfo?> StatAsync(B3Digest digest, bool withChunks, CancellationToken cancellationToken = default) =>
        inner.StatAsync(digest, withChunks, cancellationToken);

    public async ValueTask<IBlobReader?> OpenReadAsync(B3Digest digest, CancellationToken cancellationToken = default)
    {
        Opened.Enqueue(digest);
        if (Asynchronous)
        {
            await Task.Yield();
        }

        var reader = await inner.OpenReadAsync(digest, cancellationToken);
        if (reader is null)
        {
            return null;
        }

        Interlocked.Increment(ref _openReaders);
        return new Reader(this, reader);
    }

    public IBlobWriter OpenWrite() => inner.OpenWrite();

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    private sealed class Reader(CountingBlobService owner, IBlobReader inner) : IBlobReader
    {
        public B3Digest Digest => inner.Digest;

        public long Length => inner.Length;

        public SafeFileHandle? BackingFile => inner.BackingFile;

        public async ValueTask<int> ReadAtAsync(long offset, Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            owner.Reads.Enqueue((inner.Digest, offset, buffer.Length));
            if (owner.Asynchronous)
            {
                await Task.Yield();
            }

            return await inner.ReadAtAsync(offset, buffer, cancellationToken);
        }

        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                Interlocked.Decrement(ref owner._openReaders);
            }

            inner.Dispose();
        }
    }
}
