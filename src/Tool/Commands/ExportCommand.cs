using System.CommandLine;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Transfer;

namespace TvixFuseBuild.Tool.Commands;

internal static class ExportCommand
{
    public static Command Create()
    {
        var source = new Argument<string?>("DIGEST[/PATH]")
        {
            Description = "What to export: a directory or blob digest (blake3-... or hex), optionally with a path inside a directory.",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var destination = new Argument<string>("DEST") { Description = "Where to put it; must not exist yet." };
        var nodes = new Option<string?>("--nodes")
        {
            Description = "Export every node of FILE (as printed by 'import --json') into the existing directory DEST, each under its name.",
            HelpName = "FILE",
        };
        var executable = new Option<bool>("--executable") { Description = "When DIGEST is a blob: make the file executable." };
        var writable = new Option<bool>("--writable") { Description = "Give the owner write permission (0644/0755 instead of 0444/0555)." };
        var command = new Command("export", "Materialize store content at a host path: directories, files with their modes, symlinks as symlinks.")
        {
            source,
            destination,
            nodes,
            executable,
            writable,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            string? nodesFile = parse.GetValue(nodes);
            string? reference = parse.GetValue(source);
            string dest = parse.GetValue(destination)!;
            if ((nodesFile is null) == (reference is null))
            {
                throw new UsageException("export needs exactly one of DIGEST[/PATH] or --nodes FILE");
            }

            var options = new ExportOptions { Writable = parse.GetValue(writable) };
            await using var store = StoreSelection.Open(parse);
            if (nodesFile is not null)
            {
                if (!Directory.Exists(dest))
                {
                    throw new UsageException($"with --nodes, DEST must be an existing directory: {dest}");
                }

                string text = ReadText(nodesFile);
                foreach (var node in NodeText.ParseJson(text, nodesFile))
                {
                    await HostExporter.ExportAsync(node, store, Path.Combine(dest, node.Name.ToString()), options, cancellationToken);
                }

                return ToolConsole.Ok;
            }

            var resolved = await StoreReference.Parse(reference!).ResolveAsync(store, cancellationToken);
            if (resolved is FileNode file && parse.GetValue(executable))
            {
                resolved = file with { Executable = true };
            }

            await HostExporter.ExportAsync(resolved, store, dest, options, cancellationToken);
            return ToolConsole.Ok;
        });
        return command;
    }

    internal static string ReadText(string path)
    {
        try
        {
            return path == "-" ? Console.In.ReadToEnd() : File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"cannot read {path}: {e.Message}");
        }
    }
}
