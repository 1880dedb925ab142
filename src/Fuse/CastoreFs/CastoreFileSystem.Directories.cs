using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Fuse.Abi;
using TvixFuseBuild.Native;
using TvixFuseBuild.Fuse.Session;

namespace TvixFuseBuild.Fuse.CastoreFs;

// Directories: listings come from the inode (fetched at lookup), so OPENDIR and READDIR never wait. The offset of an
// entry is its index + 1 in the order ".", "..", then the entries by name.
internal sealed partial class CastoreFileSystem
{
    private const FuseOpenFlags DirectoryOpenFlags = FuseOpenFlags.CacheDir | FuseOpenFlags.KeepCache;

    public override ValueTask OpenDirAsync(FuseRequestContext request, ulong nodeId, int flags)
    {
        var inode = _inodes.Get(nodeId);
        if (inode is null || !inode.IsDirectory)
        {
            request.ReplyError(inode is null ? Errno.ENOENT : Errno.ENOTDIR);
        }
        else if (nodeId == FuseConstants.RootId && !_options.ListRoot)
        {
            // As tvix (and kubo): the root's names can be looked up but not listed.
            request.ReplyError(Errno.EPERM);
        }
        else
        {
            request.Reply(new FuseOpenOut { Fh = nodeId, OpenFlags = DirectoryOpenFlags });
        }

        return default;
    }

    public override void ReleaseDir(FuseRequestContext request, ulong nodeId, ulong handle) => request.ReplyEmpty();

    public override ValueTask ReadDirAsync(FuseRequestContext request, ulong nodeId, ulong handle, long offset, int size, bool plus)
    {
        var inode = _inodes.Get(nodeId);
        if (inode?.Listing is not { } listing)
        {
            request.ReplyError(inode is null ? Errno.ENOENT : Errno.ENOTDIR);
            return default;
        }

        if (nodeId == FuseConstants.RootId && !_options.ListRoot)
        {
            request.ReplyError(Errno.EPERM);
            return default;
        }

        var buffer = request.Payload[..size];
        int written = 0;
        long total = 2L + listing.Entries.Length;
        for (long index = offset; index < total; index++)
        {
            ReadOnlySpan<byte> name;
            ulong ino;
            uint type;
            Node? node = null;
            if (index < 2)
            {
                name = index == 0 ? "."u8 : ".."u8;
                ino = index == 0 ? inode.Id : FuseConstants.RootId;
                type = FuseConstants.DT_DIR;
            }
            else
            {
                int i = (int)(index - 2);
                node = listing.Entries[i];
                name = node.Name.Span;
                ino = listing.Ids[i];
                type = node switch
                {
                    DirectoryNode => FuseConstants.DT_DIR,
                    FileNode => FuseConstants.DT_REG,
                    _ => FuseConstants.DT_LNK,
                };
            }

            int entrySize = plus ? FuseDirentPlus.EntrySize(name.Length) : FuseDirent.EntrySize(name.Length);
            if (written + entrySize > buffer.Length)
            {
                break;
            }

            var entry = buffer.Slice(written, entrySize);
            entry.Clear();
            int direntAt = 0;
            if (plus)
            {
                ref var entryOut = ref Unsafe.As<byte, FuseEntryOut>(ref MemoryMarshal.GetReference(entry));
                if (node is not null && AcquireForListing(node, listing.Ids[(int)(index - 2)]) is { } child)
                {
                    request.Scratch.Add(child.Id);
                    FillEntry(ref entryOut, child);
                    ino = child.Id;
                }

                direntAt = Unsafe.SizeOf<FuseEntryOut>();
            }

            ref var dirent = ref Unsafe.As<byte, FuseDirent>(ref entry[direntAt]);
            dirent.Ino = ino;
            dirent.Off = (ulong)(index + 1);
            dirent.NameLen = (uint)name.Length;
            dirent.Type = type;
            name.CopyTo(entry[(direntAt + Unsafe.SizeOf<FuseDirent>())..]);
            written += entrySize;
        }

        if (!request.ReplyPayload(written))
        {
            foreach (ulong id in request.Scratch)
            {
                _inodes.Forget(id, 1);
            }
        }

        return default;
    }

    /// <summary>
    /// The inode a READDIRPLUS entry reports (one lookup counted), or null to leave the entry without attributes:
    /// a directory nobody looked into yet is not fetched just because its parent was listed.
    /// </summary>
    private Inode? AcquireForListing(Node node, ulong preferredId) =>
        node is DirectoryNode ? _inodes.TryAcquire(node, preferredId) : _inodes.Acquire(node, preferredId, null);
}
