using System.Collections.Concurrent;
using TvixFuseBuild.Castore;

namespace TvixFuseBuild.Fuse.CastoreFs;

/// <summary>
/// The inodes the kernel holds, by node id, with the kernel's lookup counts: every LOOKUP reply and every
/// READDIRPLUS entry with a node id counts one, FORGET takes them back, and an inode whose count drops to zero is
/// freed. Reads are lock-free; creating and forgetting take one short lock.
/// </summary>
internal sealed class InodeTable
{
    private readonly ConcurrentDictionary<ulong, Inode> _byId = new();
    private readonly Lock _gate = new();
    private readonly Action<string> _log;

    public InodeTable(Inode root, Action<string> log)
    {
        Root = root;
        _log = log;
        _byId[root.Id] = root;
    }

    public Inode Root { get; }

    /// <summary>Live inodes, the root included.</summary>
    public int Count => _byId.Count;

    public Inode? Get(ulong id) => _byId.TryGetValue(id, out var inode) ? inode : null;

    /// <summary>The live inode with <paramref name="node"/>'s identity, counting one lookup; null if there is none.</summary>
    public Inode? TryAcquire(Node node, ulong preferredId)
    {
        lock (_gate)
        {
            for (ulong id = preferredId; _byId.TryGetValue(id, out var inode); id = Inode.NextProbe(id))
            {
                if (inode.Matches(node))
                {
                    inode.Lookups++;
                    return inode;
                }
            }

            return null;
        }
    }

    /// <summary>
    /// The live inode with <paramref name="node"/>'s identity, or a new one (a directory needs its
    /// <paramref name="listing"/>); counts one lookup.
    /// </summary>
    public Inode Acquire(Node node, ulong preferredId, DirectoryListing? listing)
    {
        lock (_gate)
        {
            ulong id = preferredId;
            while (_byId.TryGetValue(id, out var inode))
            {
                if (inode.Matches(node))
                {
                    inode.Lookups++;
                    return inode;
                }

                id = Inode.NextProbe(id);
            }

            var created = Inode.Create(id, node, listing);
            created.Lookups = 1;
            _byId[id] = created;
            return created;
        }
    }

    /// <summary>Takes back lookups: the kernel forgot them, or the reply that counted them never reached it.</summary>
    public void Forget(ulong id, ulong count)
    {
        if (id == Root.Id)
        {
            return;
        }

        Inode? freed = null;
        lock (_gate)
        {
            if (!_byId.TryGetValue(id, out var inode))
            {
                _log($"FORGET of unknown node {id}");
                return;
            }

            inode.Lookups -= (long)Math.Min(count, long.MaxValue);
            if (inode.Lookups <= 0)
            {
                if (inode.Lookups < 0)
                {
                    _log($"node {id} forgotten more often than looked up ({inode.Lookups})");
                }

                _byId.TryRemove(id, out _);
                freed = inode;
            }
        }

        if (freed is not null)
        {
            CastoreFileSystem.CloseOpenFile(freed, channel: null);
        }
    }

    public IEnumerable<Inode> All => _byId.Values;
}
