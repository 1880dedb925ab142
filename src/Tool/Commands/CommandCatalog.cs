using System.CommandLine;

namespace TvixFuseBuild.Tool.Commands;

/// <summary>Every user-facing sub-command, in the order --help lists them.</summary>
internal static class CommandCatalog
{
    public static IEnumerable<Command> All()
    {
        yield return RefscanCommand.Create();
    }
}
