using System.Text;
using TvixFuseBuild.Fuse.Abi;
using TvixFuseBuild.Native;
using TvixFuseBuild.Fuse.Session;

namespace TvixFuseBuild.Fuse.CastoreFs;

// Extended attributes: a file's blob digest and a directory's Directory digest, as "blake3-<base64>".
internal sealed partial class CastoreFileSystem
{
    private static readonly byte[] BlobDigestName = Encoding.ASCII.GetBytes(BlobDigestXAttr);
    private static readonly byte[] DirectoryDigestName = Encoding.ASCII.GetBytes(DirectoryDigestXAttr);

    /// <summary>The one attribute an inode has (name, NUL-less), or an empty span.</summary>
    private static ReadOnlySpan<byte> XAttrName(Inode inode) => inode.Kind switch
    {
        InodeKind.File or InodeKind.Executable => BlobDigestName,
        InodeKind.Directory when inode.Listing!.Digest is not null => DirectoryDigestName,
        _ => default,
    };

    public override ValueTask GetXAttrAsync(FuseRequestContext request, ulong nodeId, int size)
    {
        var inode = _inodes.Get(nodeId);
        if (inode is null)
        {
            request.ReplyError(Errno.ENOENT);
            return default;
        }

        var name = XAttrName(inode);
        if (name.IsEmpty || !request.Name.SequenceEqual(name))
        {
            request.ReplyError(Errno.ENODATA);
            return default;
        }

        Span<byte> value = stackalloc byte[64];
        int length = Encoding.ASCII.GetBytes(inode.Digest.ToString(), value);
        ReplySized(request, value[..length], size);
        return default;
    }

    public override ValueTask ListXAttrAsync(FuseRequestContext request, ulong nodeId, int size)
    {
        var inode = _inodes.Get(nodeId);
        if (inode is null)
        {
            request.ReplyError(Errno.ENOENT);
            return default;
        }

        var name = XAttrName(inode);
        Span<byte> list = stackalloc byte[64];
        int length = 0;
        if (!name.IsEmpty)
        {
            name.CopyTo(list);
            list[name.Length] = 0;
            length = name.Length + 1;
        }

        ReplySized(request, list[..length], size);
        return default;
    }

    /// <summary>The xattr convention: size 0 asks for the length, a too small size is ERANGE.</summary>
    private static void ReplySized(FuseRequestContext request, ReadOnlySpan<byte> value, int size)
    {
        if (size == 0)
        {
            request.Reply(new FuseGetXAttrOut { Size = (uint)value.Length });
        }
        else if (size < value.Length)
        {
            request.ReplyError(Errno.ERANGE);
        }
        else
        {
            request.ReplyBytes(value);
        }
    }
}
