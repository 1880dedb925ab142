using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using TvixFuseBuild.Build.Pipeline;
using TvixFuseBuild.Sandbox;

namespace TvixFuseBuild.Build.Service;

/// <summary>
/// The one wording of a failed build, wherever it ran: for people (the CLI, the MSBuild log) and for the gRPC status
/// that carries it from a builder to its client, which turns it back into the same <see cref="BuildFailedException"/>.
/// </summary>
public static class BuildFailureText
{
    /// <summary>How many of the log's last lines a failure shows.</summary>
    public const int LogLines = 25;

    /// <summary>The grpc-message budget: the text is cut (oldest log lines first) to stay under common clients' 8 KiB metadata limit.</summary>
    public const int MaxStatusDetailLength = 4096;

    private const string Head = "build failed: ";
    private const string LogHeadPrefix = "last ";
    private const string LogHeadSuffix = " lines of the log:";
    private const int MaxLogLineLength = 300;

    /// <summary>The first line: <c>build failed: REASON</c>.</summary>
    public static string Headline(BuildFailedException failure) => Head + failure.Message;

    /// <summary>
    /// What follows the headline, a line each: the last lines of the log (indented) or that it printed nothing, and
    /// where the build directory was kept.
    /// </summary>
    public static IReadOnlyList<string> Details(BuildFailedException failure, int logLines = LogLines)
    {
        var details = new List<string>();
        var tail = failure.LastLogLines(logLines);
        if (tail.Count > 0)
        {
            details.Add(tail.Count == 1 ? "the last line of its log:" : $"the last {tail.Count} lines of its log:");
            details.AddRange(tail.Select(l => "  " + l));
        }
        else
        {
            details.Add("it printed nothing");
        }

        if (failure.KeptDirectory is { } kept)
        {
            details.Add($"the build directory is kept at {kept}");
        }

        return details;
    }

    /// <summary>
    /// The detail of the INTERNAL status a builder answers a failed build with: <c>build failed: REASON</c>, then the
    /// last log lines, each cut to a sane length, the oldest dropped until the text fits <paramref name="maxLength"/>
    /// once percent-encoded (as grpc-message is).
    /// </summary>
    public static string StatusDetail(BuildFailedException failure, int logLines = LogLines, int maxLength = MaxStatusDetailLength)
    {
        string head = Headline(failure);
        var lines = failure.LastLogLines(logLines)
            .Select(l => l.Length <= MaxLogLineLength ? l : string.Concat(l.AsSpan(0, MaxLogLineLength), "…"))
            .ToList();
        while (true)
        {
            string detail = lines.Count == 0 ? head : $"{head}\n{LogHeadPrefix}{lines.Count}{LogHeadSuffix}\n{string.Join('\n', lines)}";
            if (lines.Count == 0 || EncodedLength(detail) <= maxLength)
            {
                return detail;
            }

            lines.RemoveAt(0);
        }
    }

    /// <summary>
    /// The failure a builder's status detail describes (as <see cref="StatusDetail"/> writes it), carrying the log's
    /// last lines; null when <paramref name="detail"/> is not a build failure.
    /// </summary>
    public static BuildFailedException? FromStatusDetail(string detail)
    {
        if (!detail.StartsWith(Head, StringComparison.Ordinal))
        {
            return null;
        }

        var lines = detail.Split('\n');
        int logStart = Array.FindIndex(lines, 1, l => l.StartsWith(LogHeadPrefix, StringComparison.Ordinal) && l.EndsWith(LogHeadSuffix, StringComparison.Ordinal));
        string reason = string.Join('\n', lines[..(logStart < 0 ? lines.Length : logStart)])[Head.Length..];
        string tail = logStart < 0 ? "" : string.Join('\n', lines[(logStart + 1)..]) + "\n";
        return new BuildFailedException(reason, OutcomeOf(reason, tail), keptDirectory: null, logTail: tail);
    }

    /// <summary>
    /// How the command ended, read back from the reason as <see cref="BuildRunner"/> words it (a builder of ours), so
    /// that whoever looks at <see cref="BuildFailedException.Sandbox"/> (exit codes, error codes) sees what a local run
    /// shows; null for a reason worded otherwise (another builder).
    /// </summary>
    private static SandboxResult? OutcomeOf(string reason, string tail)
    {
        var match = Regex.Match(reason, @"^the command (?:exited with status (?<status>\d+)|was killed by signal (?<signal>\d+)|(?<timeout>timed out and was killed)|(?<silence>printed nothing for too long and was killed)|(?<log>wrote more log than allowed and was killed)|(?<missing>succeeded but did not produce the output))");
        if (!match.Success)
        {
            return null;
        }

        return match switch
        {
            _ when match.Groups["status"].Success => new SandboxResult { Outcome = SandboxOutcome.Exited, ExitCode = int.Parse(match.Groups["status"].Value, CultureInfo.InvariantCulture), LogTail = tail },
            _ when match.Groups["signal"].Success => new SandboxResult { Outcome = SandboxOutcome.Signaled, Signal = int.Parse(match.Groups["signal"].Value, CultureInfo.InvariantCulture), LogTail = tail },
            _ when match.Groups["timeout"].Success => new SandboxResult { Outcome = SandboxOutcome.TimedOut, LogTail = tail },
            _ when match.Groups["silence"].Success => new SandboxResult { Outcome = SandboxOutcome.SilenceTimedOut, LogTail = tail },
            _ when match.Groups["log"].Success => new SandboxResult { Outcome = SandboxOutcome.LogLimitExceeded, LogTail = tail },
            _ => new SandboxResult { Outcome = SandboxOutcome.Exited, ExitCode = 0, LogTail = tail },
        };
    }

    /// <summary>The length of <paramref name="text"/> percent-encoded as grpc-message: UTF-8, bytes outside printable ASCII and '%' as %XX.</summary>
    private static int EncodedLength(string text)
    {
        int length = 0;
        foreach (byte b in Encoding.UTF8.GetBytes(text))
        {
            length += b is < 0x20 or > 0x7E or (byte)'%' ? 3 : 1;
        }

        return length;
    }
}
