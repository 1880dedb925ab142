using System.CommandLine;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Transfer;

namespace TvixFuseBuild.Tool.Commands;

internal static class ExportCommand
{
    public static Command Create()
    {
        var operands = new Argument<string[]>("DIGEST[/PATH] DEST")
        {
            Description = "What to export (a directory or blob digest, blake3-... or hex, optionally with a path inside a directory) " +
                          "and where to put it (must not exist yet, except a character device or FIFO, which receives a file's bytes). With --nodes, only DEST.",
            Arity = new ArgumentArity(1, 2),
        };
        var nodes = new Option<string?>("--nodes")
        {
            Description = "Export every node of FILE (as printed by 'import --json') into the existing directory DEST, each under its name.",
            HelpName = "FILE",
        };
        var executable = new Option<bool>("--executable") { Description = "When DIGEST is a blob: make the file executable." };
        var writable = new Option<bool>("--writable") { Description = "Give the owner write permission (0644/0755 instead of 0444/0555)." };
        var command = new Command("export", "Materialize store content at a host path: directories, files with their modes, symlinks as symlinks.")
        {
            operands,
            nodes,
            executable,
            writable,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            string? nodesFile = parse.GetValue(nodes);
            string[] given = parse.GetValue(operands)!;
            if (given.Length != (nodesFile is null ? 2 : 1))
            {
                throw new UsageException("usage: export DIGEST[/PATH] DEST, or export --nodes FILE DEST");
            }

            string? reference = nodesFile is null ? given[0] : null;
            string dest = given[^1];

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
