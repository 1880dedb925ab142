using System.Collections.Immutable;
using TvixFuseBuild.Castore.Hashing;

namespace TvixFuseBuild.Castore;

/// <summary>
/// A castore Directory object: three lists of nodes (directories, files, symlinks), each sorted by name, no name twice.
/// An instance is always valid; every way of making one validates. Its digest is the BLAKE3 of its canonical encoding.
/// </summary>
public sealed partial class CastoreDirectory : IEquatable<CastoreDirectory>
{
    private readonly ImmutableArray<DirectoryNode> _directories;
    private readonly ImmutableArray<FileNode> _files;
    private readonly ImmutableArray<SymlinkNode> _symlinks;
    private byte[]? _encoding;
    private B3Digest? _digest;

    public static CastoreDirectory Empty { get; } = new([], [], [], 0);

    /// <summary>Creates a directory from three lists, each already sorted by name; validates everything.</summary>
    public CastoreDirectory(
        IEnumerable<DirectoryNode> directories, IEnumerable<FileNode> files, IEnumerable<SymlinkNode> symlinks)
    {
        _directories = [.. directories];
        _files = [.. files];
        _symlinks = [.. symlinks];
        Size = Validate(_directories, _files, _symlinks);
    }

    private CastoreDirectory(
        ImmutableArray<DirectoryNode> directories, ImmutableArray<FileNode> files, ImmutableArray<SymlinkNode> symlinks, ulong size)
    {
        _directories = directories;
        _files = files;
        _symlinks = symlinks;
        Size = size;
    }

    /// <summary>Creates a directory from nodes in any order; sorts them and validates everything.</summary>
    public static CastoreDirectory FromNodes(IEnumerable<Node> nodes)
    {
        var directories = ImmutableArray.CreateBuilder<DirectoryNode>();
        var files = ImmutableArray.CreateBuilder<FileNode>();
        var symlinks = ImmutableArray.CreateBuilder<SymlinkNode>();
        foreach (var node in nodes)
        {
            switch (node)
            {
                case DirectoryNode d: directories.Add(d); break;
                case FileNode f: files.Add(f); break;
                case SymlinkNode s: symlinks.Add(s); break;
            }
        }

        directories.Sort(static (a, b) => a.Name.CompareTo(b.Name));
        files.Sort(static (a, b) => a.Name.CompareTo(b.Name));
        symlinks.Sort(static (a, b) => a.Name.CompareTo(b.Name));
        var d2 = directories.ToImmutable();
        var f2 = files.ToImmutable();
        var s2 = symlinks.ToImmutable();
        return new CastoreDirectory(d2, f2, s2, Validate(d2, f2, s2));
    }

    public IReadOnlyList<DirectoryNode> Directories => _directories;

    public IReadOnlyList<FileNode> Files => _files;

    public IReadOnlyList<SymlinkNode> Symlinks => _symlinks;

    /// <summary>Number of entries in all three lists.</summary>
    public int Count => _directories.Length + _files.Length + _symlinks.Length;

    /// <summary>
    /// The size recorded in a DirectoryNode pointing here, in the form tvix and snix ingestion write and their
    /// servers check: 2 × entries + the sizes of the child directories.
    /// </summary>
    public ulong Size { get; }

    /// <summary>The size as the .proto comment describes it: entries + the sizes of the child directories.</summary>
    public ulong SpecSize => Size - (ulong)Count;

    /// <summary>True when <paramref name="size"/> is this directory's size in either accepted form.</summary>
    public bool IsAcceptableSize(ulong size) => size == Size || size == SpecSize;

    public B3Digest Digest => _digest ??= Blake3.Hash(GetEncoding());

    /// <summary>Every entry, merged across the three lists in name order (the order of a directory listing).</summary>
    public IEnumerable<Node> Entries
    {
        get
        {
            int d = 0, f = 0, s = 0;
            while (d < _directories.Length || f < _files.Length || s < _symlinks.Length)
            {
                Node? next = null;
                if (d < _directories.Length)
                {
                    next = _directories[d];
                }

                if (f < _files.Length && (next is null || _files[f].Name < next.Name))
                {
                    next = _files[f];
                }

                if (s < _symlinks.Length && (next is null || _symlinks[s].Name < next.Name))
                {
                    next = _symlinks[s];
                }

                switch (next)
                {
                    case DirectoryNode: d++; break;
                    case FileNode: f++; break;
                    default: s++; break;
                }

                yield return next!;
            }
        }
    }

    /// <summary>Finds an entry by name (binary search in each list), or null.</summary>
    public Node? Find(ReadOnlySpan<byte> name)
    {
        int i = Search(_directories.AsSpan(), name);
        if (i >= 0)
        {
            return _directories[i];
        }

        i = Search(_files.AsSpan(), name);
        if (i >= 0)
        {
            return _files[i];
        }

        i = Search(_symlinks.AsSpan(), name);
        return i >= 0 ? _symlinks[i] : null;
    }

    public Node? Find(string name) => Find(System.Text.Encoding.UTF8.GetBytes(name));

    private static int Search<T>(ReadOnlySpan<T> nodes, ReadOnlySpan<byte> name)
        where T : Node
    {
        int lo = 0, hi = nodes.Length - 1;
        while (lo <= hi)
        {
            int mid = lo + ((hi - lo) >> 1);
            int c = nodes[mid].Name.Span.SequenceCompareTo(name);
            if (c == 0)
            {
                return mid;
            }

            if (c < 0)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }

        return -1;
    }

    /// <summary>Checks sorting, duplicates, names and size overflow; returns the wire size.</summary>
    private static ulong Validate(
        ImmutableArray<DirectoryNode> directories, ImmutableArray<FileNode> files, ImmutableArray<SymlinkNode> symlinks)
    {
        // tvix checks files, then directories, then symlinks; the first failure wins.
        CheckList(files.AsSpan());
        CheckList(directories.AsSpan());
        CheckList(symlinks.AsSpan());
        CheckNoNameInTwoLists(directories, files, symlinks);

        ulong size = 0;
        try
        {
            checked
            {
                size = 2 * (ulong)(directories.Length + files.Length + symlinks.Length);
                foreach (var d in directories)
                {
                    size += d.Size;
                }
            }
        }
        catch (OverflowException)
        {
            throw new DirectoryValidationException(DirectoryErrorKind.SizeOverflow, "Total size exceeds u64::MAX");
        }

        return size;
    }

    private static void CheckList<T>(ReadOnlySpan<T> nodes)
        where T : Node
    {
        for (int i = 0; i < nodes.Length; i++)
        {
            var name = nodes[i].Name;
            if (name.IsEmpty)
            {
                throw new DirectoryValidationException(DirectoryErrorKind.InvalidName, "invalid name: \"\"");
            }

            if (i > 0)
            {
                int c = name.CompareTo(nodes[i - 1].Name);
                if (c < 0)
                {
                    throw new DirectoryValidationException(DirectoryErrorKind.WrongSorting, $"{name.ToQuotedString()} is not sorted");
                }

                if (c == 0)
                {
                    throw DuplicateName(name);
                }
            }
        }
    }

    private static void CheckNoNameInTwoLists(
        ImmutableArray<DirectoryNode> directories, ImmutableArray<FileNode> files, ImmutableArray<SymlinkNode> symlinks)
    {
        if ((directories.Length == 0 ? 1 : 0) + (files.Length == 0 ? 1 : 0) + (symlinks.Length == 0 ? 1 : 0) >= 2)
        {
            return;
        }

        // Three-way merge over lists already known to be strictly sorted: an equal neighbour is a duplicate.
        int d = 0, f = 0, s = 0;
        PathComponent? previous = null;
        while (d < directories.Length || f < files.Length || s < symlinks.Length)
        {
            PathComponent next = default;
            int which = -1;
            if (d < directories.Length)
            {
                next = directories[d].Name;
                which = 0;
            }

            if (f < files.Length && (which < 0 || files[f].Name < next))
            {
                next = files[f].Name;
                which = 1;
            }

            if (s < symlinks.Length && (which < 0 || symlinks[s].Name < next))
            {
                next = symlinks[s].Name;
                which = 2;
            }

            if (previous is { } p && p == next)
            {
                throw DuplicateName(next);
            }

            previous = next;
            switch (which)
            {
                case 0: d++; break;
                case 1: f++; break;
                default: s++; break;
            }
        }
    }

    private static DirectoryValidationException DuplicateName(PathComponent name) =>
        new(DirectoryErrorKind.DuplicateName, $"{name.ToQuotedString()} is a duplicate name");

    public bool Equals(CastoreDirectory? other) =>
        other is not null && (ReferenceEquals(this, other) || GetEncoding().AsSpan().SequenceEqual(other.GetEncoding()));

    public override bool Equals(object? obj) => Equals(obj as CastoreDirectory);

    public override int GetHashCode() => Digest.GetHashCode();

    public override string ToString() => $"{Digest} ({Count} entries)";
}
