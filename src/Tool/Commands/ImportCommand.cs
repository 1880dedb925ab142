using System.CommandLine;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Transfer;

namespace TvixFuseBuild.Tool.Commands;

internal static class ImportCommand
{
    public static Command Create()
    {
        var paths = new Argument<string[]>("PATH")
        {
            Description = "Files, directories or symlinks to import (symlinks are stored, not followed).",
            Arity = ArgumentArity.OneOrMore,
        };
        var json = new Option<bool>("--json") { Description = "Print the nodes as a JSON array of tvix.castore.v1.Node (protobuf JSON)." };
        var root = new Option<string?>("--root")
        {
            Description = "Make the imported node garbage-collection root NAME (see 'root'; an existing NAME is replaced) before the import lets go of it; one PATH only.",
            HelpName = "NAME",
        };
        var command = new Command("import", "Import host paths into the store and print their nodes: NAME KIND DIGEST SIZE.")
        {
            paths,
            json,
            root,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            string? rootName = parse.GetValue(root);
            if (rootName is not null && parse.GetValue(paths)!.Length != 1)
            {
                throw new UsageException("--root names one node: import one PATH with it");
            }

            await using var store = StoreSelection.Open(parse);
            var local = rootName is null ? null : GcCommand.RequireLocal(store, "import --root");

            // What was imported stays in use until it is printed (and rooted): a garbage collection meanwhile keeps it.
            using var tempRoots = store.CreateTempRoots();
            var nodes = new List<Node>();
            foreach (string path in parse.GetValue(paths)!)
            {
                var latest = new ImportProgress(0, 0, 0, 0, true);
                var progress = new Progress<ImportProgress>(p => latest = p);
                var import = HostImporter.ImportAsync(
                    path, store, new ImportOptions { TempRoots = tempRoots }, progress: progress, cancellationToken: cancellationToken);
                var node = await ProgressDisplay.RunAsync(import, () => latest.Scanning
                    ? ($"scanning {path}: {latest.FilesTotal} files", 0, 1)
                    : ($"importing {path}: {latest.FilesDone}/{latest.FilesTotal} files, {ProgressDisplay.Bytes(latest.BytesDone)}", latest.BytesDone, latest.BytesTotal));
                nodes.Add(node);
                if (local is not null)
                {
                    var digest = node switch
                    {
                        DirectoryNode d => d.Digest,
                        FileNode f => f.Digest,
                        _ => throw new UsageException($"--root: {path} is a symlink, which is no object to keep"),
                    };
                    await local.Roots.AddAsync(rootName!, digest, replace: true, cancellationToken);
                }

                if (!parse.GetValue(json))
                {
                    Console.WriteLine(NodeText.Line(node));
                }
            }

            if (parse.GetValue(json))
            {
                Console.WriteLine(NodeText.JsonArray(nodes));
            }

            return ToolConsole.Ok;
        });
        return command;
    }
}
