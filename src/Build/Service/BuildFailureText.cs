using System.Text;
using TvixFuseBuild.Build.Pipeline;

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
        string? tail = logStart < 0 ? null : string.Join('\n', lines[(logStart + 1)..]);
        return new BuildFailedException(reason, sandbox: null, keptDirectory: null, logTail: tail);
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
