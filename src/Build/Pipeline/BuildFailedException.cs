using TvixFuseBuild.Sandbox;

namespace TvixFuseBuild.Build.Pipeline;

/// <summary>The build ran and failed: the command's exit status or signal, a timeout, or a missing output.</summary>
/// <param name="logTail">The end of the log when there is no <paramref name="sandbox"/> to take it from (a remote build's).</param>
public sealed class BuildFailedException(string reason, SandboxResult? sandbox, string? keptDirectory, string? logTail = null) : Exception(reason)
{
    /// <summary>What the sandbox reported, when the command ran.</summary>
    public SandboxResult? Sandbox { get; } = sandbox;

    /// <summary>The build directory, when it was kept for inspection.</summary>
    public string? KeptDirectory { get; } = keptDirectory;

    /// <summary>The last <paramref name="count"/> lines of the build's log (empty when it printed nothing).</summary>
    public IReadOnlyList<string> LastLogLines(int count)
    {
        string tail = Sandbox?.LogTail ?? logTail ?? "";
        if (tail.Length == 0)
        {
            return [];
        }

        var lines = tail.TrimEnd('\n').Split('\n');
        return lines.Length <= count ? lines : lines[^count..];
    }
}
