using System.Collections.Concurrent;

namespace TvixFuseBuild.Castore.Stores.Memory;

/// <summary>Directories held in memory (<c>memory://</c>).</summary>
public sealed class MemoryDirectoryService : IDirectoryService
{
    private readonly ConcurrentDictionary<B3Digest, CastoreDirectory> _directories = new();

    public int Count => _directories.Count;

    public ValueTask<CastoreDirectory?> GetAsync(B3Digest digest, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(_directories.TryGetValue(digest, out var directory) ? directory : null);

    public IAsyncEnumerable<CastoreDirectory> GetRecursiveAsync(B3Digest root, CancellationToken cancellationToken = default) =>
        DirectoryTraversal.GetRecursiveAsync(this, root, cancellationToken);

    public ValueTask<B3Digest> PutAsync(CastoreDirectory directory, CancellationToken cancellationToken = default)
    {
        _directories.TryAdd(directory.Digest, directory);
        return ValueTask.FromResult(directory.Digest);
    }

    public IDirectoryPutter CreatePutter() => new ValidatingPutter(this);

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
