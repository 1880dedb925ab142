using TvixFuseBuild.Fuse;

namespace TvixFuseBuild.Tool;

/// <summary>Sub-commands the tool runs of itself (inside namespaces, or as helpers), never typed by users.</summary>
internal static class HiddenEntryPoints
{
    /// <summary>The watchdog that detaches a <c>mount</c> whose process died (<see cref="CastoreMount.RunWatchdog"/>).</summary>
    public const string MountWatchdog = "__mount-watchdog";

    public static bool TryRun(string[] args, out int exitCode)
    {
        switch (args[0])
        {
            case MountWatchdog:
                exitCode = CastoreMount.RunWatchdog(args[1..], static line => Console.Error.WriteLine($"{ToolConsole.Name}: mount: {line}"));
                return true;
            default:
                exitCode = 0;
                return false;
        }
    }

    /// <summary>
    /// The command line that runs this tool again with <paramref name="entryPoint"/>: the executable itself (apphost or
    /// NativeAOT), or the dotnet host and the tool's assembly when started as <c>dotnet TvixFuseBuild.Tool.dll</c>.
    /// </summary>
    public static IReadOnlyList<string> Self(string entryPoint)
    {
        string executable = Environment.ProcessPath ?? throw new InvalidOperationException("the tool's own executable is unknown");
        return Path.GetFileNameWithoutExtension(executable) == "dotnet"
            ? [executable, Path.GetFullPath(Environment.GetCommandLineArgs()[0]), entryPoint]
            : [executable, entryPoint];
    }
}
