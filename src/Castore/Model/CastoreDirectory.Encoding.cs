using System.Collections.Immutable;

namespace TvixFuseBuild.Castore;

// The canonical protobuf encoding: fields in number order, defaults omitted, lists in order, nothing unknown.
public sealed partial class CastoreDirectory
{
    private const int FieldDirectories = 1;
    private const int FieldFiles = 2;
    private const int FieldSymlinks = 3;
    private const int FieldName = 1;
    private const int FieldDigest = 2;
    private const int FieldTarget = 2;
    private const int FieldSize = 3;
    private const int FieldExecutable = 4;

    /// <summary>The canonical encoding. The returned array is shared: do not modify it.</summary>
    public ReadOnlySpan<byte> Encoding => GetEncoding();

    internal byte[] GetEncoding()
    {
        if (_encoding is { } cached)
        {
            return cached;
        }

        var bytes = new byte[EncodedLength()];
        var writer = new ProtoWriter(bytes);
        foreach (var d in _directories)
        {
            writer.WriteLengthPrefix(FieldDirectories, DirectoryNodeLength(d));
            WriteName(ref writer, d.Name);
            writer.WriteDigestField(FieldDigest, d.Digest);
            if (d.Size != 0)
            {
                writer.WriteTag(FieldSize, ProtoWire.WireVarint);
                writer.WriteVarint(d.Size);
            }
        }

        foreach (var f in _files)
        {
            writer.WriteLengthPrefix(FieldFiles, FileNodeLength(f));
            WriteName(ref writer, f.Name);
            writer.WriteDigestField(FieldDigest, f.Digest);
            if (f.Size != 0)
            {
                writer.WriteTag(FieldSize, ProtoWire.WireVarint);
                writer.WriteVarint(f.Size);
            }

            if (f.Executable)
            {
                writer.WriteTag(FieldExecutable, ProtoWire.WireVarint);
                writer.WriteVarint(1);
            }
        }

        foreach (var s in _symlinks)
        {
            writer.WriteLengthPrefix(FieldSymlinks, SymlinkNodeLength(s));
            WriteName(ref writer, s.Name);
            writer.WriteBytesField(FieldTarget, s.Target.Span);
        }

        return _encoding = bytes;
    }

    private static void WriteName(ref ProtoWriter writer, PathComponent name)
    {
        if (!name.IsEmpty)
        {
            writer.WriteBytesField(FieldName, name.Span);
        }
    }

    private int EncodedLength()
    {
        int length = 0;
        foreach (var d in _directories)
        {
            length += ProtoWire.LengthDelimitedFieldLength(DirectoryNodeLength(d));
        }

        foreach (var f in _files)
        {
            length += ProtoWire.LengthDelimitedFieldLength(FileNodeLength(f));
        }

        foreach (var s in _symlinks)
        {
            length += ProtoWire.LengthDelimitedFieldLength(SymlinkNodeLength(s));
        }

        return length;
    }

    private static int NameLength(PathComponent name) =>
        name.IsEmpty ? 0 : ProtoWire.LengthDelimitedFieldLength(name.Length);

    private static int DirectoryNodeLength(DirectoryNode d) =>
        NameLength(d.Name) + ProtoWire.LengthDelimitedFieldLength(B3Digest.Length) +
        (d.Size == 0 ? 0 : 1 + ProtoWire.VarintLength(d.Size));

    private static int FileNodeLength(FileNode f) =>
        NameLength(f.Name) + ProtoWire.LengthDelimitedFieldLength(B3Digest.Length) +
        (f.Size == 0 ? 0 : 1 + ProtoWire.VarintLength(f.Size)) + (f.Executable ? 2 : 0);

    private static int SymlinkNodeLength(SymlinkNode s) =>
        NameLength(s.Name) + ProtoWire.LengthDelimitedFieldLength(s.Target.Length);

    /// <summary>
    /// Decodes a protobuf Directory message (canonical or not; unknown fields are ignored, as tvix does) and validates it.
    /// Throws <see cref="DirectoryValidationException"/> for malformed bytes or an invalid directory.
    /// </summary>
    public static CastoreDirectory Decode(ReadOnlySpan<byte> bytes)
    {
        var directories = ImmutableArray.CreateBuilder<DirectoryNode>();
        var files = ImmutableArray.CreateBuilder<FileNode>();
        var symlinks = ImmutableArray.CreateBuilder<SymlinkNode>();
        var reader = new ProtoReader(bytes);
        while (!reader.AtEnd)
        {
            if (!reader.TryReadTag(out int field, out int wireType))
            {
                throw Malformed();
            }

            if (field is FieldDirectories or FieldFiles or FieldSymlinks && wireType == ProtoWire.WireLengthDelimited)
            {
                if (!reader.TryReadLengthDelimited(out var entry))
                {
                    throw Malformed();
                }

                switch (field)
                {
                    case FieldDirectories: directories.Add(DecodeDirectoryNode(entry)); break;
                    case FieldFiles: files.Add(DecodeFileNode(entry)); break;
                    default: symlinks.Add(DecodeSymlinkNode(entry)); break;
                }
            }
            else if (!reader.TrySkip(wireType))
            {
                throw Malformed();
            }
        }

        var d = directories.ToImmutable();
        var f = files.ToImmutable();
        var s = symlinks.ToImmutable();
        return new CastoreDirectory(d, f, s, Validate(d, f, s));
    }

    private static DirectoryNode DecodeDirectoryNode(ReadOnlySpan<byte> entry)
    {
        ReadOnlySpan<byte> name = default, digest = default;
        ulong size = 0;
        var reader = new ProtoReader(entry);
        while (!reader.AtEnd)
        {
            if (!reader.TryReadTag(out int field, out int wireType))
            {
                throw Malformed();
            }

            bool ok = (field, wireType) switch
            {
                (FieldName, ProtoWire.WireLengthDelimited) => reader.TryReadLengthDelimited(out name),
                (FieldDigest, ProtoWire.WireLengthDelimited) => reader.TryReadLengthDelimited(out digest),
                (FieldSize, ProtoWire.WireVarint) => reader.TryReadVarint(out size),
                _ => reader.TrySkip(wireType),
            };
            if (!ok)
            {
                throw Malformed();
            }
        }

        var n = NodeFactory.Name(name);
        return new DirectoryNode(n, NodeFactory.Digest(n, digest), size);
    }

    private static FileNode DecodeFileNode(ReadOnlySpan<byte> entry)
    {
        ReadOnlySpan<byte> name = default, digest = default;
        ulong size = 0, executable = 0;
        var reader = new ProtoReader(entry);
        while (!reader.AtEnd)
        {
            if (!reader.TryReadTag(out int field, out int wireType))
            {
                throw Malformed();
            }

            bool ok = (field, wireType) switch
            {
                (FieldName, ProtoWire.WireLengthDelimited) => reader.TryReadLengthDelimited(out name),
                (FieldDigest, ProtoWire.WireLengthDelimited) => reader.TryReadLengthDelimited(out digest),
                (FieldSize, ProtoWire.WireVarint) => reader.TryReadVarint(out size),
                (FieldExecutable, ProtoWire.WireVarint) => reader.TryReadVarint(out executable),
                _ => reader.TrySkip(wireType),
            };
            if (!ok)
            {
                throw Malformed();
            }
        }

        var n = NodeFactory.Name(name);
        return new FileNode(n, NodeFactory.Digest(n, digest), size, executable != 0);
    }

    private static SymlinkNode DecodeSymlinkNode(ReadOnlySpan<byte> entry)
    {
        ReadOnlySpan<byte> name = default, target = default;
        var reader = new ProtoReader(entry);
        while (!reader.AtEnd)
        {
            if (!reader.TryReadTag(out int field, out int wireType))
            {
                throw Malformed();
            }

            bool ok = (field, wireType) switch
            {
                (FieldName, ProtoWire.WireLengthDelimited) => reader.TryReadLengthDelimited(out name),
                (FieldTarget, ProtoWire.WireLengthDelimited) => reader.TryReadLengthDelimited(out target),
                _ => reader.TrySkip(wireType),
            };
            if (!ok)
            {
                throw Malformed();
            }
        }

        var n = NodeFactory.Name(name);
        return new SymlinkNode(n, NodeFactory.Target(n, target));
    }

    private static DirectoryValidationException Malformed() =>
        new(DirectoryErrorKind.Malformed, "not a valid protobuf Directory message");
}

/// <summary>Builds model values from raw wire fields, reporting problems as tvix's DirectoryError kinds.</summary>
internal static class NodeFactory
{
    public static PathComponent Name(ReadOnlySpan<byte> name)
    {
        if (PathComponent.Validate(name) is { } error)
        {
            throw new DirectoryValidationException(DirectoryErrorKind.InvalidName, error);
        }

        return PathComponent.CreateUnchecked(name.ToArray());
    }

    public static B3Digest Digest(PathComponent name, ReadOnlySpan<byte> digest)
    {
        if (digest.Length != B3Digest.Length)
        {
            throw new DirectoryValidationException(
                DirectoryErrorKind.InvalidDigestLength,
                $"invalid node with name {name.ToQuotedString()}: invalid digest length: {digest.Length}");
        }

        return new B3Digest(digest);
    }

    public static SymlinkTarget Target(PathComponent name, ReadOnlySpan<byte> target)
    {
        if (SymlinkTarget.Validate(target) is { } error)
        {
            throw new DirectoryValidationException(
                DirectoryErrorKind.InvalidSymlinkTarget, $"invalid node with name {name.ToQuotedString()}: {error}");
        }

        return SymlinkTarget.CreateUnchecked(target.ToArray());
    }
}
