using System.Runtime.CompilerServices;

namespace TvixFuseBuild.Castore.Stores;

/// <summary>Breadth-first closure walk over a store that can only get one directory at a time.</summary>
internal static class DirectoryTraversal
{
    public static async IAsyncEnumerable<CastoreDirectory> GetRecursiveAsync(
        IDirectoryService service, B3Digest root, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var queue = new Queue<(B3Digest Digest, B3Digest? Parent)>();
        var seen = new HashSet<B3Digest> { root };
        queue.Enqueue((root, null));
        while (queue.TryDequeue(out var item))
        {
            var directory = await service.GetAsync(item.Digest, cancellationToken).ConfigureAwait(false)
                ?? throw new ObjectNotFoundException(item.Parent is null
                    ? $"directory {item.Digest} not found"
                    : $"directory {item.Digest} (in the closure of {root}) not found");
            foreach (var child in directory.Directories)
            {
                if (seen.Add(child.Digest))
                {
                    queue.Enqueue((child.Digest, item.Digest));
                }
            }

            yield return directory;
        }
    }
}
