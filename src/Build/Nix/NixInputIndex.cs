using System.Globalization;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Transfer;

namespace TvixFuseBuild.Build.Nix;

/// <summary>
/// Which castore node holds each Nix store path already imported: one small file per store path, keyed by its base
/// name and holding its NAR hash (from the Nix database) and the node. A path is imported again only when its NAR hash
/// changed or its node is no longer in the castore.
/// </summary>
public sealed class NixInputIndex(string directory)
{
    public string Directory { get; } = directory;

    /// <summary><c>$XDG_DATA_HOME/tvix-fuse-build/nix-inputs</c> (next to the default local store).</summary>
    public static NixInputIndex Default => new(Path.Combine(Path.GetDirectoryName(Castore.Stores.Local.LocalStore.DefaultRoot)!, "nix-inputs"));

    /// <summary>The castore node of each store path (with its NAR hash), importing those not imported yet. Returns how many were imported.</summary>
    public async Task<(List<(string StorePath, Node Node)> Nodes, int Imported)> GetNodesAsync(
        IReadOnlyList<string> storePaths, IReadOnlyList<string> narHashes, CastoreStore store, CancellationToken cancellationToken)
    {
        var nodes = new List<(string, Node)>(storePaths.Count);
        int imported = 0;
        for (int i = 0; i < storePaths.Count; i++)
        {
            string path = storePaths[i];
            string baseName = NixStorePaths.TryBaseName(path, out string? b) ? b : throw new FormatException($"{path} is not a Nix store path");
            var name = PathComponent.Create(baseName);
            string entry = Path.Combine(Directory, baseName);
            var node = Read(entry, narHashes[i], name);
            if (node is null || !await PresentAsync(node, store, cancellationToken).ConfigureAwait(false))
            {
                node = await HostImporter.ImportAsync(path, name, store.Blobs, store.Directories, cancellationToken: cancellationToken).ConfigureAwait(false);
                Write(entry, narHashes[i], node);
                imported++;
            }

            nodes.Add((path, node));
        }

        return (nodes, imported);
    }

    private static async Task<bool> PresentAsync(Node node, CastoreStore store, CancellationToken cancellationToken) => node switch
    {
        DirectoryNode d => await store.Directories.GetAsync(d.Digest, cancellationToken).ConfigureAwait(false) is not null,
        FileNode f => await store.Blobs.HasAsync(f.Digest, cancellationToken).ConfigureAwait(false),
        _ => true,
    };

    private static Node? Read(string entry, string narHash, PathComponent name)
    {
        string[] lines;
        try
        {
            lines = File.ReadAllLines(entry);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return null;
        }

        if (lines.Length != 2 || lines[0] != narHash)
        {
            return null;
        }

        string[] fields = lines[1].Split('\t');
        try
        {
            return fields switch
            {
                ["directory", var digest, var size] => new DirectoryNode(name, B3Digest.Parse(digest), ulong.Parse(size, CultureInfo.InvariantCulture)),
                ["file", var digest, var size, var executable] => new FileNode(name, B3Digest.Parse(digest), ulong.Parse(size, CultureInfo.InvariantCulture), executable == "1"),
                ["symlink", var target] => new SymlinkNode(name, SymlinkTarget.Create(Convert.FromBase64String(target))),
                _ => null,
            };
        }
        catch (Exception e) when (e is FormatException or OverflowException or CastoreException)
        {
            return null;
        }
    }

    private void Write(string entry, string narHash, Node node)
    {
        System.IO.Directory.CreateDirectory(Directory);
        string line = node switch
        {
            DirectoryNode d => $"directory\t{d.Digest}\t{d.Size}",
            FileNode f => $"file\t{f.Digest}\t{f.Size}\t{(f.Executable ? 1 : 0)}",
            SymlinkNode s => $"symlink\t{Convert.ToBase64String(s.Target.Span)}",
            _ => throw new ArgumentOutOfRangeException(nameof(node)),
        };
        string temporary = $"{entry}.{Environment.ProcessId}.{Random.Shared.Next():x8}.tmp";
        File.WriteAllText(temporary, $"{narHash}\n{line}\n");
        File.Move(temporary, entry, overwrite: true);
    }
}
