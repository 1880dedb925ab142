namespace TvixFuseBuild.Castore.Stores.Local;

/// <summary>
/// Directories as files holding their canonical encoding, named by digest. Every read is decoded, validated and checked
/// against the digest it is stored under; a mismatch is moved to quarantine/ and reported, never returned.
/// </summary>
public sealed class LocalDirectoryService : IDirectoryService
{
    private readonly LocalStore _store;

    internal LocalDirectoryService(LocalStore store) => _store = store;

    /// <summary>Whether the directory's file is there; not decoded or verified (<see cref="GetAsync"/> does that when it is read).</summary>
    public ValueTask<bool> HasAsync(B3Digest digest, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(File.Exists(_store.DirectoryPath(digest)));

    public ValueTask<CastoreDirectory?> GetAsync(B3Digest digest, CancellationToken cancellationToken = default)
    {
        string path = _store.DirectoryPath(digest);
        byte[] bytes;
        using (var handle = _store.OpenObject(path, $"directory {digest}"))
        {
            if (handle is null)
            {
                return ValueTask.FromResult<CastoreDirectory?>(null);
            }

            bytes = ReadAll(handle, path);
        }

        CastoreDirectory directory;
        try
        {
            directory = CastoreDirectory.Decode(bytes);
        }
        catch (DirectoryValidationException e)
        {
            throw Corrupt(digest, path, e.Message);
        }

        if (directory.Digest != digest)
        {
            throw Corrupt(digest, path, $"its encoding hashes to {directory.Digest}");
        }

        return ValueTask.FromResult<CastoreDirectory?>(directory);
    }

    private static byte[] ReadAll(Microsoft.Win32.SafeHandles.SafeFileHandle handle, string path)
    {
        var bytes = new byte[RandomAccess.GetLength(handle)];
        int done = 0;
        while (done < bytes.Length)
        {
            int n = RandomAccess.Read(handle, bytes.AsSpan(done), done);
            if (n == 0)
            {
                throw new IOException($"{path} ended after {done} of {bytes.Length} bytes while being read");
            }

            done += n;
        }

        return bytes;
    }

    private CorruptObjectException Corrupt(B3Digest digest, string path, string reason)
    {
        string movedTo = _store.Quarantine(path);
        return new CorruptObjectException($"directory {digest} in the local store {_store.Root} is corrupt: {reason}; moved aside to {movedTo}");
    }

    public IAsyncEnumerable<CastoreDirectory> GetRecursiveAsync(B3Digest root, CancellationToken cancellationToken = default) =>
        DirectoryTraversal.GetRecursiveAsync(this, root, cancellationToken);

    public ValueTask<B3Digest> PutAsync(CastoreDirectory directory, CancellationToken cancellationToken = default)
    {
        var digest = directory.Digest;
        string finalPath = _store.DirectoryPath(digest);
        if (File.Exists(finalPath))
        {
            LocalStore.Touch(finalPath);
        }

        if (!File.Exists(finalPath))
        {
            var (handle, temporaryPath) = _store.CreateTemporaryFile();
            try
            {
                using (handle)
                {
                    RandomAccess.Write(handle, directory.Encoding, 0);
                }

                _store.Commit(temporaryPath, finalPath);
            }
            catch
            {
                LocalStore.DeleteQuietly(temporaryPath);
                throw;
            }
        }

        return ValueTask.FromResult(digest);
    }

    public IDirectoryPutter CreatePutter() => new ValidatingPutter(this);

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
