namespace TvixFuseBuild.Castore.Stores;

/// <summary>
/// A closure putter for stores that can store single directories: validates leaves to root, holds the closure until
/// it is known to be valid, then stores it leaves first so that no reader ever sees a parent before its children.
/// </summary>
public sealed class ValidatingPutter(IDirectoryService target) : IDirectoryPutter
{
    private readonly LeavesToRootValidator _validator = new();
    private bool _closed;

    public ValueTask PutAsync(CastoreDirectory directory, CancellationToken cancellationToken = default)
    {
        if (_closed)
        {
            ThrowHelper.ThrowInvalidOperation("the closure was already closed");
        }

        _validator.Add(directory);
        return ValueTask.CompletedTask;
    }

    public async ValueTask<B3Digest> CloseAsync(CancellationToken cancellationToken = default)
    {
        if (_closed)
        {
            ThrowHelper.ThrowInvalidOperation("the closure was already closed");
        }

        _closed = true;
        var root = _validator.Finish();
        foreach (var directory in _validator.Directories)
        {
            await target.PutAsync(directory, cancellationToken).ConfigureAwait(false);
        }

        return root.Digest;
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;
}
