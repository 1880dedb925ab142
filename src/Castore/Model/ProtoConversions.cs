using Google.Protobuf;
using SnixV1 = Snix.Castore.V1;
using TvixV1 = Tvix.Castore.V1;

namespace TvixFuseBuild.Castore;

/// <summary>Conversions between the model and the generated tvix.castore.v1 / snix.castore.v1 messages.</summary>
public static class ProtoConversions
{
    public static TvixV1.Directory ToTvixProto(this CastoreDirectory directory) =>
        TvixV1.Directory.Parser.ParseFrom(directory.GetEncoding());

    public static SnixV1.Directory ToSnixProto(this CastoreDirectory directory) =>
        SnixV1.Directory.Parser.ParseFrom(directory.GetEncoding());

    /// <summary>Validates and converts; throws <see cref="DirectoryValidationException"/>.</summary>
    public static CastoreDirectory ToModel(this TvixV1.Directory directory) => CastoreDirectory.Decode(directory.ToByteArray());

    public static CastoreDirectory ToModel(this SnixV1.Directory directory) => CastoreDirectory.Decode(directory.ToByteArray());

    public static TvixV1.Node ToTvixProto(this Node node) => node switch
    {
        DirectoryNode d => new TvixV1.Node
        {
            Directory = new TvixV1.DirectoryNode { Name = Bytes(d.Name.Span), Digest = Digest(d.Digest), Size = d.Size },
        },
        FileNode f => new TvixV1.Node
        {
            File = new TvixV1.FileNode { Name = Bytes(f.Name.Span), Digest = Digest(f.Digest), Size = f.Size, Executable = f.Executable },
        },
        SymlinkNode s => new TvixV1.Node
        {
            Symlink = new TvixV1.SymlinkNode { Name = Bytes(s.Name.Span), Target = Bytes(s.Target.Span) },
        },
        _ => throw new ArgumentOutOfRangeException(nameof(node)),
    };

    public static SnixV1.Entry ToSnixProto(this Node node) => node switch
    {
        DirectoryNode d => new SnixV1.Entry
        {
            Directory = new SnixV1.DirectoryEntry { Name = Bytes(d.Name.Span), Digest = Digest(d.Digest), Size = d.Size },
        },
        FileNode f => new SnixV1.Entry
        {
            File = new SnixV1.FileEntry { Name = Bytes(f.Name.Span), Digest = Digest(f.Digest), Size = f.Size, Executable = f.Executable },
        },
        SymlinkNode s => new SnixV1.Entry
        {
            Symlink = new SnixV1.SymlinkEntry { Name = Bytes(s.Name.Span), Target = Bytes(s.Target.Span) },
        },
        _ => throw new ArgumentOutOfRangeException(nameof(node)),
    };

    /// <summary>
    /// Validates and converts a Node message. With <paramref name="allowEmptyName"/> an empty name is accepted
    /// (anonymous nodes); otherwise the name must be a valid <see cref="PathComponent"/>.
    /// Throws <see cref="DirectoryValidationException"/> naming what is wrong.
    /// </summary>
    public static Node ToModel(this TvixV1.Node node, bool allowEmptyName = false) => node.NodeCase switch
    {
        TvixV1.Node.NodeOneofCase.Directory => MakeDirectory(node.Directory.Name, node.Directory.Digest, node.Directory.Size, allowEmptyName),
        TvixV1.Node.NodeOneofCase.File => MakeFile(node.File.Name, node.File.Digest, node.File.Size, node.File.Executable, allowEmptyName),
        TvixV1.Node.NodeOneofCase.Symlink => MakeSymlink(node.Symlink.Name, node.Symlink.Target, allowEmptyName),
        _ => throw NoNodeSet(),
    };

    public static Node ToModel(this SnixV1.Entry entry, bool allowEmptyName = false) => entry.NodeCase switch
    {
        SnixV1.Entry.NodeOneofCase.Directory => MakeDirectory(entry.Directory.Name, entry.Directory.Digest, entry.Directory.Size, allowEmptyName),
        SnixV1.Entry.NodeOneofCase.File => MakeFile(entry.File.Name, entry.File.Digest, entry.File.Size, entry.File.Executable, allowEmptyName),
        SnixV1.Entry.NodeOneofCase.Symlink => MakeSymlink(entry.Symlink.Name, entry.Symlink.Target, allowEmptyName),
        _ => throw NoNodeSet(),
    };

    public static ByteString ToByteString(this B3Digest digest) => Digest(digest);

    /// <summary>Converts 32 bytes to a digest; throws <see cref="ArgumentException"/> naming the wrong length.</summary>
    public static B3Digest ToB3Digest(this ByteString bytes) => new(bytes.Span);

    private static DirectoryValidationException NoNodeSet() => new(DirectoryErrorKind.NoNodeSet, "no node set");

    private static PathComponent Name(ByteString name, bool allowEmpty) =>
        allowEmpty && name.IsEmpty ? PathComponent.Empty : NodeFactory.Name(name.Span);

    private static DirectoryNode MakeDirectory(ByteString name, ByteString digest, ulong size, bool allowEmptyName)
    {
        var n = Name(name, allowEmptyName);
        return new DirectoryNode(n, NodeFactory.Digest(n, digest.Span), size);
    }

    private static FileNode MakeFile(ByteString name, ByteString digest, ulong size, bool executable, bool allowEmptyName)
    {
        var n = Name(name, allowEmptyName);
        return new FileNode(n, NodeFactory.Digest(n, digest.Span), size, executable);
    }

    private static SymlinkNode MakeSymlink(ByteString name, ByteString target, bool allowEmptyName)
    {
        var n = Name(name, allowEmptyName);
        return new SymlinkNode(n, NodeFactory.Target(n, target.Span));
    }

    private static ByteString Bytes(ReadOnlySpan<byte> bytes) => bytes.IsEmpty ? ByteString.Empty : ByteString.CopyFrom(bytes);

    private static ByteString Digest(B3Digest digest)
    {
        Span<byte> bytes = stackalloc byte[B3Digest.Length];
        digest.CopyTo(bytes);
        return ByteString.CopyFrom(bytes);
    }
}
