using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Fuse.Abi;
using TvixFuseBuild.Native;
using TvixFuseBuild.Fuse.Session;

namespace TvixFuseBuild.Fuse.CastoreFs;

/// <summary>Settings of the castore filesystem (the public face is <see cref="CastoreMountOptions"/>).</summary>
internal sealed record CastoreFsOptions
{
    public bool ListRoot { get; init; } = true;

    public uint Uid { get; init; }

    public uint Gid { get; init; }

    /// <summary>How long the kernel may cache entries and attributes (negative entries too): content never changes.</summary>
    public TimeSpan CacheTimeout { get; init; } = TimeSpan.FromDays(365);

    /// <summary>st_blksize: the I/O size tools such as cat and cp use for their buffers.</summary>
    public uint BlockSize { get; init; } = 4096;

    /// <summary>Hand blobs stored as whole local files to the kernel (FUSE passthrough) when it allows.</summary>
    public bool Passthrough { get; init; }

    /// <summary>Blobs kept open for READs without OPEN (zero-message open); beyond it the oldest unused are closed.</summary>
    public int MaxLazyReaders { get; init; } = 1024;

    public Action<string> Log { get; init; } = static _ => { };
}

/// <summary>
/// The read-only castore filesystem: the root is a set of named nodes (or the entries of one Directory); a directory
/// is fetched from the store when it is looked up (its attributes report its entry count), a blob is opened when its
/// file is opened, and only the byte ranges read are read. Identical content shares an inode. Every store failure is
/// EIO for that access and a log line, never wrong bytes.
/// </summary>
internal sealed partial class CastoreFileSystem : FuseFileSystem
{
    public const string BlobDigestXAttr = "user.tvix.castore.blob.digest";
    public const string DirectoryDigestXAttr = "user.tvix.castore.directory.digest";

    private readonly IBlobService _blobs;
    private readonly IDirectoryService _directories;
    private readonly CastoreFsOptions _options;
    private readonly InodeTable _inodes;
    private readonly ulong _timeoutSeconds;
    private readonly uint _timeoutNanoseconds;
    private FuseSession? _session;
    private volatile bool _passthrough;
    private bool _zeroMessageOpen;

    public CastoreFileSystem(DirectoryListing root, IBlobService blobs, IDirectoryService directories, CastoreFsOptions options)
    {
        _blobs = blobs;
        _directories = directories;
        _options = options;
        _inodes = new InodeTable(Inode.CreateRoot(root), options.Log);
        _timeoutSeconds = (ulong)Math.Max(0, (long)options.CacheTimeout.TotalSeconds);
        _timeoutNanoseconds = (uint)(options.CacheTimeout.Ticks % TimeSpan.TicksPerSecond * 100);
    }

    internal InodeTable Inodes => _inodes;

    /// <summary>True while blobs with a backing file are opened in passthrough mode.</summary>
    public bool PassthroughActive => _passthrough;

    public override void OnInit(FuseSession session, FuseConnectionInfo connection)
    {
        _session = session;
        _passthrough = _options.Passthrough && connection.Passthrough;
        _zeroMessageOpen = connection.NoOpen && !_passthrough;
    }

    private void Log(string message) => _options.Log(message);

    /// <summary>Fetches and checks a directory; null (with a log line) when the store lacks it or fails.</summary>
    private async ValueTask<DirectoryListing?> FetchDirectoryAsync(FuseRequestContext request, DirectoryNode node)
    {
        CastoreDirectory? directory;
        try
        {
            directory = await request.Track(_directories.GetAsync(node.Digest, request.Token)).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            Log($"directory {node.Digest} ({node.Name.ToQuotedString()}): {FuseSession.Describe(e)}");
            return null;
        }

        if (directory is null)
        {
            Log($"directory {node.Digest} ({node.Name.ToQuotedString()}) is not in the store");
            return null;
        }

        return new DirectoryListing(directory, node.Digest);
    }

    public override async ValueTask LookupAsync(FuseRequestContext request, ulong parent)
    {
        var directory = _inodes.Get(parent);
        if (directory?.Listing is not { } listing)
        {
            request.ReplyError(directory is null ? Errno.ENOENT : Errno.ENOTDIR);
            return;
        }

        var node = listing.Directory.Find(request.Name);
        if (node is null)
        {
            // A negative entry: the kernel caches the name's absence as long as any other entry.
            request.Reply(new FuseEntryOut { EntryValid = _timeoutSeconds, EntryValidNsec = _timeoutNanoseconds });
            return;
        }

        ulong preferredId = Inode.PreferredId(node);
        var inode = _inodes.TryAcquire(node, preferredId);
        if (inode is null)
        {
            DirectoryListing? childListing = null;
            if (node is DirectoryNode childDirectory)
            {
                childListing = await FetchDirectoryAsync(request, childDirectory).ConfigureAwait(false);
                if (childListing is null)
                {
                    request.ReplyError(Errno.EIO);
                    return;
                }
            }

            inode = _inodes.Acquire(node, preferredId, childListing);
        }

        var entry = new FuseEntryOut();
        FillEntry(ref entry, inode);
        if (!request.Reply(entry))
        {
            _inodes.Forget(inode.Id, 1);
        }
    }

    public override void Forget(ulong nodeId, ulong count) => _inodes.Forget(nodeId, count);

    public override ValueTask GetAttrAsync(FuseRequestContext request, ulong nodeId)
    {
        var inode = _inodes.Get(nodeId);
        if (inode is null)
        {
            request.ReplyError(Errno.ENOENT);
            return default;
        }

        var reply = new FuseAttrOut { AttrValid = _timeoutSeconds, AttrValidNsec = _timeoutNanoseconds };
        FillAttr(ref reply.Attr, inode);
        request.Reply(reply);
        return default;
    }

    public override ValueTask ReadLinkAsync(FuseRequestContext request, ulong nodeId)
    {
        var inode = _inodes.Get(nodeId);
        if (inode?.Target is { } target)
        {
            request.ReplyBytes(target);
        }
        else
        {
            request.ReplyError(inode is null ? Errno.ENOENT : Errno.EINVAL);
        }

        return default;
    }

    public override void StatFs(FuseRequestContext request, ulong nodeId)
    {
        var reply = new FuseStatFsOut();
        reply.St.BSize = 4096;
        reply.St.FrSize = 4096;
        reply.St.NameLen = PathComponent.MaxLength;
        reply.St.Files = (ulong)_inodes.Count;
        request.Reply(reply);
    }

    public override ValueTask AccessAsync(FuseRequestContext request, ulong nodeId, uint mask)
    {
        var inode = _inodes.Get(nodeId);
        if (inode is null)
        {
            request.ReplyError(Errno.ENOENT);
        }
        else if ((mask & FuseConstants.W_OK) != 0)
        {
            request.ReplyError(Errno.EROFS);
        }
        else if ((mask & FuseConstants.X_OK) != 0 && inode.Kind == InodeKind.File)
        {
            request.ReplyError(Errno.EACCES);
        }
        else
        {
            request.ReplyEmpty();
        }

        return default;
    }

    public override void OnDestroy()
    {
        foreach (var inode in _inodes.All)
        {
            CloseOpenFile(inode, channel: null);
        }
    }

    private void FillEntry(ref FuseEntryOut entry, Inode inode)
    {
        entry.NodeId = inode.Id;
        entry.EntryValid = _timeoutSeconds;
        entry.EntryValidNsec = _timeoutNanoseconds;
        entry.AttrValid = _timeoutSeconds;
        entry.AttrValidNsec = _timeoutNanoseconds;
        FillAttr(ref entry.Attr, inode);
    }

    private void FillAttr(ref FuseAttr attr, Inode inode)
    {
        attr.Ino = inode.Id;
        attr.Uid = _options.Uid;
        attr.Gid = _options.Gid;

        // mtime 1: the Nix store's convention for "no meaningful time".
        attr.ATime = 1;
        attr.MTime = 1;
        attr.CTime = 1;
        attr.BlkSize = _options.BlockSize;
        switch (inode.Kind)
        {
            case InodeKind.Directory:
                var listing = inode.Listing!;
                attr.Mode = FuseConstants.S_IFDIR | 0x16D; // 0555
                attr.Size = (ulong)listing.Entries.Length;
                attr.NLink = (uint)(2 + listing.Subdirectories);
                break;
            case InodeKind.File:
            case InodeKind.Executable:
                attr.Mode = FuseConstants.S_IFREG | (inode.Kind == InodeKind.Executable ? 0x16Du : 0x124u); // 0555 / 0444
                attr.Size = inode.Size;
                attr.NLink = 1;

                // 512-byte units of whole 4 KiB blocks, as ext4 and tmpfs allocate.
                attr.Blocks = (inode.Size + 4095) / 4096 * 8;
                break;
            default:
                attr.Mode = FuseConstants.S_IFLNK | 0x1FF; // 0777
                attr.Size = (ulong)inode.Target!.Length;
                attr.NLink = 1;
                break;
        }
    }
}
