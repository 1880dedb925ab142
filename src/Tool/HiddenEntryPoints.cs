namespace TvixFuseBuild.Tool;

/// <summary>Sub-commands the tool runs of itself (inside namespaces), never typed by users.</summary>
internal static class HiddenEntryPoints
{
    public static bool TryRun(string[] args, out int exitCode)
    {
        switch (args[0])
        {
            default:
                exitCode = 0;
                return false;
        }
    }
}
