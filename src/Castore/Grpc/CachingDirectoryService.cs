using System.Runtime.CompilerServices;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Castore.Grpc;

/// <summary>How a <see cref="CachingDirectoryService"/> fetches a directory the local cache lacks.</summary>
public enum DirectoryFetchMode
{
    /// <summary>Just that directory (one level): what a lazy filesystem looks at, nothing more.</summary>
    PerLevel,

    /// <summary>The directory's whole closure in one streamed call, cached at once.</summary>
    Closure,
}

/// <summary>
/// A remote directory service with a local cache in front. A directory missing locally is fetched (verified by the
/// remote client) and kept in the local store; a recursive get walks the local cache and fetches each missing subtree
/// from the remote with one recursive call. Writes go to the remote and the local store together.
/// </summary>
public sealed class CachingDirectoryService : IDirectoryService
{
    private readonly IDirectoryService _local;
    private readonly IDirectoryService _remote;
    private readonly bool _ownsStores;

    public CachingDirectoryService(IDirectoryService local, IDirectoryService remote, DirectoryFetchMode fetchMode = DirectoryFetchMode.PerLevel, bool ownsStores = false)
    {
        _local = local;
        _remote = remote;
        FetchMode = fetchMode;
        _ownsStores = ownsStores;
    }

    public DirectoryFetchMode FetchMode { get; }

    public IDirectoryService Local => _local;

    public IDirectoryService Remote => _remote;

    /// <summary>In the local cache, or else fetched from the remote (and kept), as <see cref="GetAsync"/> does.</summary>
    public async ValueTask<bool> HasAsync(B3Digest digest, CancellationToken cancellationToken = default) =>
        await _local.HasAsync(digest, cancellationToken).ConfigureAwait(false) ||
        await GetAsync(digest, cancellationToken).ConfigureAwait(false) is not null;

    public async ValueTask<CastoreDirectory?> GetAsync(B3Digest digest, CancellationToken cancellationToken = default)
    {
        var directory = await _local.GetAsync(digest, cancellationToken).ConfigureAwait(false);
        if (directory is not null)
        {
            return directory;
        }

        if (FetchMode == DirectoryFetchMode.Closure)
        {
            try
            {
                return await FetchClosureAsync(digest, cancellationToken).ConfigureAwait(false);
            }
            catch (ObjectNotFoundException)
            {
                // The root itself may be there with a missing descendant: fall back to the one level asked for.
            }
        }

        directory = await _remote.GetAsync(digest, cancellationToken).ConfigureAwait(false);
        if (directory is not null)
        {
            await _local.PutAsync(directory, cancellationToken).ConfigureAwait(false);
        }

        return directory;
    }

    public async IAsyncEnumerable<CastoreDirectory> GetRecursiveAsync(
        B3Digest root, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var queue = new Queue<B3Digest>([root]);
        var seen = new HashSet<B3Digest> { root };
        while (queue.TryDequeue(out var digest))
        {
            var directory = await _local.GetAsync(digest, cancellationToken).ConfigureAwait(false)
                ?? await FetchClosureAsync(digest, cancellationToken).ConfigureAwait(false);
            foreach (var child in directory.Directories)
            {
                if (seen.Add(child.Digest))
                {
                    queue.Enqueue(child.Digest);
                }
            }

            yield return directory;
        }
    }

    /// <summary>Fetches the closure of <paramref name="root"/> with one recursive call and caches it, children before parents.</summary>
    private async Task<CastoreDirectory> FetchClosureAsync(B3Digest root, CancellationToken cancellationToken)
    {
        var closure = new Dictionary<B3Digest, CastoreDirectory>();
        await foreach (var directory in _remote.GetRecursiveAsync(root, cancellationToken).ConfigureAwait(false))
        {
            closure[directory.Digest] = directory;
        }

        var stored = new HashSet<B3Digest>();
        var stack = new Stack<(CastoreDirectory Directory, int NextChild)>();
        stack.Push((closure[root], 0));
        while (stack.TryPop(out var frame))
        {
            var (directory, next) = frame;
            if (next < directory.Directories.Count)
            {
                stack.Push((directory, next + 1));
                var child = directory.Directories[next].Digest;
                if (!stored.Contains(child))
                {
                    stack.Push((closure[child], 0));
                }

                continue;
            }

            if (stored.Add(directory.Digest))
            {
                await _local.PutAsync(directory, cancellationToken).ConfigureAwait(false);
            }
        }

        return closure[root];
    }

    public async ValueTask<B3Digest> PutAsync(CastoreDirectory directory, CancellationToken cancellationToken = default)
    {
        var digest = await _remote.PutAsync(directory, cancellationToken).ConfigureAwait(false);
        await _local.PutAsync(directory, cancellationToken).ConfigureAwait(false);
        return digest;
    }

    public IDirectoryPutter CreatePutter() => new TeePutter(_remote.CreatePutter(), _local.CreatePutter());

    public async ValueTask DisposeAsync()
    {
        if (_ownsStores)
        {
            await _remote.DisposeAsync().ConfigureAwait(false);
            await _local.DisposeAsync().ConfigureAwait(false);
        }
    }

    private sealed class TeePutter(IDirectoryPutter remote, IDirectoryPutter local) : IDirectoryPutter
    {
        public async ValueTask PutAsync(CastoreDirectory directory, CancellationToken cancellationToken = default)
        {
            await local.PutAsync(directory, cancellationToken).ConfigureAwait(false);
            await remote.PutAsync(directory, cancellationToken).ConfigureAwait(false);
        }

        // The remote first: the local cache only gets a closure the remote accepted.
        public async ValueTask<B3Digest> CloseAsync(CancellationToken cancellationToken = default)
        {
            var root = await remote.CloseAsync(cancellationToken).ConfigureAwait(false);
            var cached = await local.CloseAsync(cancellationToken).ConfigureAwait(false);
            return cached == root
                ? root
                : throw new CorruptObjectException($"the remote stored a closure with root {root}, but it is {cached} locally");
        }

        public async ValueTask DisposeAsync()
        {
            await remote.DisposeAsync().ConfigureAwait(false);
            await local.DisposeAsync().ConfigureAwait(false);
        }
    }
}
