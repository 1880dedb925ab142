namespace TvixFuseBuild.Castore;

public enum NodeKind
{
    Directory,
    File,
    Symlink,
}

/// <summary>
/// A named entry of the castore: a directory (by the digest of its Directory object), a file (by the digest of its
/// contents) or a symlink. The name is empty only where a node is anonymous (a snix build output, an import root
/// before it is named).
/// </summary>
public abstract record Node(PathComponent Name)
{
    public abstract NodeKind Kind { get; }

    /// <summary>The same node under another name.</summary>
    public abstract Node WithName(PathComponent name);

    /// <summary>"directory", "file", "executable" or "symlink".</summary>
    public abstract string KindDisplay { get; }
}

public sealed record DirectoryNode(PathComponent Name, B3Digest Digest, ulong Size) : Node(Name)
{
    public override NodeKind Kind => NodeKind.Directory;

    public override string KindDisplay => "directory";

    public override Node WithName(PathComponent name) => this with { Name = name };
}

public sealed record FileNode(PathComponent Name, B3Digest Digest, ulong Size, bool Executable) : Node(Name)
{
    public override NodeKind Kind => NodeKind.File;

    public override string KindDisplay => Executable ? "executable" : "file";

    public override Node WithName(PathComponent name) => this with { Name = name };
}

public sealed record SymlinkNode(PathComponent Name, SymlinkTarget Target) : Node(Name)
{
    public override NodeKind Kind => NodeKind.Symlink;

    public override string KindDisplay => "symlink";

    public override Node WithName(PathComponent name) => this with { Name = name };
}
