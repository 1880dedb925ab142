using TvixFuseBuild.Castore;

namespace TvixFuseBuild.Fuse.CastoreFs;

/// <summary>A directory's entries in listing order (by name, across the three lists), fetched once per inode.</summary>
internal sealed class DirectoryListing
{
    public DirectoryListing(CastoreDirectory directory, B3Digest? digest)
    {
        Directory = directory;
        Digest = digest;
        Entries = [.. directory.Entries];
        Ids = new ulong[Entries.Length];
        for (int i = 0; i < Entries.Length; i++)
        {
            Ids[i] = Inode.PreferredId(Entries[i]);
        }

        Subdirectories = directory.Directories.Count;
    }

    public CastoreDirectory Directory { get; }

    /// <summary>The Directory's digest; null for a root made of a set of nodes.</summary>
    public B3Digest? Digest { get; }

    public Node[] Entries { get; }

    /// <summary>Each entry's preferred node id (its d_ino in READDIR).</summary>
    public ulong[] Ids { get; }

    public int Subdirectories { get; }
}
