using TvixFuseBuild.Sandbox;

namespace TvixFuseBuild.Build.Pipeline;

/// <summary>The build ran and failed: the command's exit status or signal, a timeout, or a missing output.</summary>
public sealed class BuildFailedException(string reason, SandboxResult? sandbox, string? keptDirectory) : Exception(reason)
{
    /// <summary>What the sandbox reported, when the command ran.</summary>
    public SandboxResult? Sandbox { get; } = sandbox;

    /// <summary>The build directory, when it was kept for inspection.</summary>
    public string? KeptDirectory { get; } = keptDirectory;

    /// <summary>The last <paramref name="count"/> lines of the build's log (empty when it printed nothing).</summary>
    public IReadOnlyList<string> LastLogLines(int count)
    {
        if (Sandbox is null || Sandbox.LogTail.Length == 0)
        {
            return [];
        }

        var lines = Sandbox.LogTail.TrimEnd('\n').Split('\n');
        return lines.Length <= count ? lines : lines[^count..];
    }
}
