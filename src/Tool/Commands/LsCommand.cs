using System.CommandLine;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Tool.Commands;

internal static class LsCommand
{
    public static Command Create()
    {
        var target = new Argument<string>("DIGEST[/PATH]") { Description = "A directory or blob digest, optionally with a path inside." };
        var recursive = new Option<bool>("--recursive", "-R") { Description = "List subdirectories too." };
        var command = new Command("ls", "List store content like 'ls -l': MODE SIZE DIGEST-or-TARGET NAME.")
        {
            target,
            recursive,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            await using var store = StoreSelection.Open(parse);
            var reference = StoreReference.Parse(parse.GetValue(target)!);
            var node = await reference.ResolveAsync(store, cancellationToken);
            if (node is DirectoryNode directory)
            {
                await ListAsync(store, directory, "", parse.GetValue(recursive), cancellationToken);
            }
            else
            {
                Console.WriteLine(Line(node, reference.Path.Length > 0 ? reference.Path[^1] : reference.Digest.ToString()));
            }

            return ToolConsole.Ok;
        });
        return command;
    }

    private static async Task ListAsync(CastoreStore store, DirectoryNode node, string prefix, bool recursive, CancellationToken cancellationToken)
    {
        var directory = await store.Directories.GetAsync(node.Digest, cancellationToken)
            ?? throw new ObjectNotFoundException($"directory {node.Digest} not found in {store.Address}");
        foreach (var entry in directory.Entries)
        {
            Console.WriteLine(Line(entry, prefix + entry.Name));
        }

        if (recursive)
        {
            foreach (var sub in directory.Directories)
            {
                await ListAsync(store, sub, $"{prefix}{sub.Name}/", recursive, cancellationToken);
            }
        }
    }

    // Names and targets are escaped: a name may hold any byte but '/' and NUL, terminal escapes included.
    private static string Line(Node node, string name) => node switch
    {
        DirectoryNode d => $"dr-xr-xr-x {d.Size,12} {d.Digest} {ToolText.Escape(name)}/",
        FileNode { Executable: true } f => $"-r-xr-xr-x {f.Size,12} {f.Digest} {ToolText.Escape(name)}",
        FileNode f => $"-r--r--r-- {f.Size,12} {f.Digest} {ToolText.Escape(name)}",
        SymlinkNode s => $"lrwxrwxrwx {s.Target.Length,12} {ToolText.Escape(name)} -> {ToolText.Escape(s.Target.ToString())}",
        _ => throw new ArgumentOutOfRangeException(nameof(node)),
    };
}
