using System.CommandLine;
using TvixFuseBuild.Tool.Commands;

namespace TvixFuseBuild.Tool;

internal static class Program
{
    public static int Main(string[] args)
    {
        // Hidden entry points run inside sandboxes and helpers; they must start fast, so they bypass the parser.
        if (args.Length > 0 && HiddenEntryPoints.TryRun(args, out int exitCode))
        {
            return exitCode;
        }

        return ToolConsole.Invoke(CreateRoot(CommandCatalog.For(args)), args);
    }

    /// <summary>The root command with the store options and <paramref name="commands"/> under it.</summary>
    internal static RootCommand CreateRoot(IEnumerable<Command> commands)
    {
        var root = new RootCommand(
            "tvix-fuse-build: run tvix/snix BuildRequests over lazily mounted castore inputs in a namespace sandbox.");
        root.Options.Add(StoreSelection.Store);
        root.Options.Add(StoreSelection.BlobServiceAddress);
        root.Options.Add(StoreSelection.DirectoryServiceAddress);
        root.Options.Add(StoreSelection.Offline);
        root.Options.Add(StoreSelection.GrpcTokenFile);
        foreach (var command in commands)
        {
            root.Subcommands.Add(command);
        }

        return root;
    }
}
