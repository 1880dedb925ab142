using System.Collections.Concurrent;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Build.Tests.Grpc;

/// <summary>Counts what the serving side is asked for, per digest, in front of a real store.</summary>
internal sealed class CountingBlobService(IBlobService inner) : IBlobService
{
    public ConcurrentDictionary<B3Digest, int> Opens { get; } = new();

    public ConcurrentDictionary<B3Digest, int> Stats { get; } = new();

    public int Total => Opens.Values.Sum() + Stats.Values.Sum();

    public int OpensOf(B3Digest digest) => Opens.GetValueOrDefault(digest);

    public ValueTask<bool> HasAsync(B3Digest digest, CancellationToken cancellationToken = default)
    {
        Stats.AddOrUpdate(digest, 1, (_, n) => n + 1);
        return inner.HasAsync(digest, cancellationToken);
    }

    public ValueTask<BlobInfo?> StatAsync(B3Digest digest, bool withChunks, CancellationToken cancellationToken = default)
    {
        Stats.AddOrUpdate(digest, 1, (_, n) => n + 1);
        return inner.StatAsync(digest, withChunks, cancellationToken);
    }

    public ValueTask<IBlobReader?> OpenReadAsync(B3Digest digest, CancellationToken cancellationToken = default)
    {
        Opens.AddOrUpdate(digest, 1, (_, n) => n + 1);
        return inner.OpenReadAsync(digest, cancellationToken);
    }

    public IBlobWriter OpenWrite() => inner.OpenWrite();

    public ValueTask DisposeAsync() => inner.DisposeAsync();
}

internal sealed class CountingDirectoryService(IDirectoryService inner) : IDirectoryService
{
    public ConcurrentDictionary<B3Digest, int> Gets { get; } = new();

    public ConcurrentDictionary<B3Digest, int> RecursiveGets { get; } = new();

    public int Total => Gets.Values.Sum() + RecursiveGets.Values.Sum();

    public ValueTask<CastoreDirectory?> GetAsync(B3Digest digest, CancellationToken cancellationToken = default)
    {
        Gets.AddOrUpdate(digest, 1, (_, n) => n + 1);
        return inner.GetAsync(digest, cancellationToken);
    }

    public IAsyncEnumerable<CastoreDirectory> GetRecursiveAsync(B3Digest root, CancellationToken cancellationToken = default)
    {
        RecursiveGets.AddOrUpdate(root, 1, (_, n) => n + 1);
        return inner.GetRecursiveAsync(root, cancellationToken);
    }

    public ValueTask<B3Digest> PutAsync(CastoreDirectory directory, CancellationToken cancellationToken = default) =>
        inner.PutAsync(directory, cancellationToken);

    public IDirectoryPutter CreatePutter() => inner.CreatePutter();

    public ValueTask DisposeAsync() => inner.DisposeAsync();
}
