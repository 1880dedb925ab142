namespace TvixFuseBuild.Castore.Stores;

/// <summary>
/// Directory objects named by their digest. Everything returned is verified against the digest it was asked for.
/// </summary>
public interface IDirectoryService : IAsyncDisposable
{
    /// <summary>The directory, or null when absent.</summary>
    ValueTask<CastoreDirectory?> GetAsync(B3Digest digest, CancellationToken cancellationToken = default);

    /// <summary>Whether the store has the directory; a store that can tell without reading and decoding it says so cheaper.</summary>
    async ValueTask<bool> HasAsync(B3Digest digest, CancellationToken cancellationToken = default) =>
        await GetAsync(digest, cancellationToken).ConfigureAwait(false) is not null;

    /// <summary>
    /// The closure of <paramref name="root"/>: the root first, then every directory it reaches, each once, every one
    /// after a directory that refers to it. Throws <see cref="ObjectNotFoundException"/> if any of them is missing.
    /// </summary>
    IAsyncEnumerable<CastoreDirectory> GetRecursiveAsync(B3Digest root, CancellationToken cancellationToken = default);

    /// <summary>Stores one directory. Its children are not checked; use <see cref="CreatePutter"/> for closures.</summary>
    ValueTask<B3Digest> PutAsync(CastoreDirectory directory, CancellationToken cancellationToken = default);

    /// <summary>
    /// Starts a closure upload, leaves to root: every directory after the ones it refers to, the root last.
    /// <see cref="IDirectoryPutter.CloseAsync"/> rejects dangling references, several roots and wrong edge sizes,
    /// and only then makes the closure visible.
    /// </summary>
    IDirectoryPutter CreatePutter();
}

public interface IDirectoryPutter : IAsyncDisposable
{
    /// <summary>Adds a directory; throws <see cref="InvalidClosureException"/> at once for a dangling reference or a wrong size.</summary>
    ValueTask PutAsync(CastoreDirectory directory, CancellationToken cancellationToken = default);

    /// <summary>Validates the closure, stores it, and returns the root digest.</summary>
    ValueTask<B3Digest> CloseAsync(CancellationToken cancellationToken = default);
}
