using System.CommandLine;

namespace TvixFuseBuild.Tool.Commands;

/// <summary>Every user-facing sub-command, in the order --help lists them.</summary>
internal static class CommandCatalog
{
    public static IEnumerable<Command> All()
    {
        yield return BuildCommand.Create();
        yield return RunCommand.Create();
        yield return ImportCommand.Create();
        yield return ExportCommand.Create();
        yield return LsCommand.Create();
        yield return CatCommand.Create();
        yield return MountCommand.Create();
        yield return RefscanCommand.Create();
        yield return ServeCommand.Create();
        yield return GcCommand.Create();
        yield return RootsCommand.Create();
        yield return StoreInfoCommand.Create();
    }
}
