using System.Buffers.Binary;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Hashing;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Fuse.CastoreFs;

/// <summary>What an inode is. Part of its identity: a file and an executable with the same bytes are two inodes.</summary>
internal enum InodeKind : byte
{
    Directory = 0,
    File = 1,
    Executable = 2,
    Symlink = 3,
}

/// <summary>
/// One inode the kernel knows about: identified by its content (kind + digest, or the symlink target), so identical
/// content anywhere in the tree is one inode. Lives from the first lookup the kernel makes until it forgets them all.
/// </summary>
internal sealed class Inode
{
    private Inode(ulong id, InodeKind kind, B3Digest digest, ulong size, byte[]? target, DirectoryListing? listing)
    {
        Id = id;
        Kind = kind;
        Digest = digest;
        Size = size;
        Target = target;
        Listing = listing;
    }

    public ulong Id { get; }

    public InodeKind Kind { get; }

    /// <summary>The blob's digest for files, the Directory's for directories (default for the synthetic root).</summary>
    public B3Digest Digest { get; }

    /// <summary>A file's size in bytes (from its node).</summary>
    public ulong Size { get; }

    public byte[]? Target { get; }

    /// <summary>A directory's contents; every directory inode has them (they are fetched before it is created).</summary>
    public DirectoryListing? Listing { get; }

    /// <summary>Lookups the kernel holds (guarded by the inode table's lock).</summary>
    internal long Lookups { get; set; }

    // Open-file state, guarded by lock (this): one reader per inode, shared by its open files.
    internal IBlobReader? Reader { get; set; }

    internal int OpenCount { get; set; }

    /// <summary>The passthrough backing id registered for <see cref="Reader"/>'s file, 0 when none.</summary>
    internal int BackingId { get; set; }

    public bool IsDirectory => Kind == InodeKind.Directory;

    public static Inode CreateRoot(DirectoryListing listing) =>
        new(Abi.FuseConstants.RootId, InodeKind.Directory, listing.Digest ?? default, 0, null, listing);

    public static Inode Create(ulong id, Node node, DirectoryListing? listing) => node switch
    {
        DirectoryNode d => new Inode(id, InodeKind.Directory, d.Digest, 0, null, listing ?? throw new ArgumentNullException(nameof(listing))),
        FileNode f => new Inode(id, f.Executable ? InodeKind.Executable : InodeKind.File, f.Digest, f.Size, null, null),
        SymlinkNode s => new Inode(id, InodeKind.Symlink, default, 0, s.Target.Span.ToArray(), null),
        _ => throw new ArgumentException($"unknown node type {node.GetType().Name}", nameof(node)),
    };

    public static InodeKind KindOf(Node node) => node switch
    {
        DirectoryNode => InodeKind.Directory,
        FileNode { Executable: true } => InodeKind.Executable,
        FileNode => InodeKind.File,
        _ => InodeKind.Symlink,
    };

    /// <summary>True when <paramref name="node"/> has this inode's identity.</summary>
    public bool Matches(Node node) => node switch
    {
        DirectoryNode d => Kind == InodeKind.Directory && Digest == d.Digest,
        FileNode f => Kind == (f.Executable ? InodeKind.Executable : InodeKind.File) && Digest == f.Digest,
        SymlinkNode s => Kind == InodeKind.Symlink && s.Target.Span.SequenceEqual(Target),
        _ => false,
    };

    /// <summary>
    /// The node id content with this identity gets unless another identity already holds it: 62 bits of the digest
    /// (BLAKE3 of the target for symlinks) with the kind in the low two bits. Deterministic, so READDIR can report the
    /// same d_ino that a later LOOKUP gives, without allocating anything.
    /// </summary>
    public static ulong PreferredId(Node node)
    {
        Span<byte> bytes = stackalloc byte[B3Digest.Length];
        switch (node)
        {
            case DirectoryNode d:
                d.Digest.CopyTo(bytes);
                break;
            case FileNode f:
                f.Digest.CopyTo(bytes);
                break;
            case SymlinkNode s:
                Blake3.Hash(s.Target.Span).CopyTo(bytes);
                break;
        }

        return Tag(BinaryPrimitives.ReadUInt64LittleEndian(bytes), KindOf(node));
    }

    /// <summary>Keeps ids positive as signed 64-bit numbers and clear of 0 (none) and 1 (the root).</summary>
    private static ulong Tag(ulong bits, InodeKind kind)
    {
        ulong id = (bits & 0x7FFF_FFFF_FFFF_FFFCUL) | (ulong)kind;
        return id < 4 ? id + 4 : id;
    }

    /// <summary>The next id to try when <paramref name="id"/> is held by other content; keeps the kind bits.</summary>
    public static ulong NextProbe(ulong id)
    {
        ulong next = (id + 4) & 0x7FFF_FFFF_FFFF_FFFFUL;
        return next < 4 ? next + 4 : next;
    }
}
