using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using TvixFuseBuild.Build.Pipeline;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Stores.Local;

namespace TvixFuseBuild.Tool.Commands;

/// <summary>
/// <c>gc [--dry-run] [--older-than DURATION] [--max-size SIZE] [--json]</c>: removes what no root, no running process
/// and no grace period keeps (see <see cref="GarbageCollector"/>).
/// </summary>
internal static class GcCommand
{
    public static Command Create()
    {
        var dryRun = new Option<bool>("--dry-run") { Description = "Report what would be removed; remove nothing." };
        var olderThan = new Option<string?>("--older-than")
        {
            Description = "Keep objects written more recently than this (and what they refer to), e.g. 0s, 30m, 12h, 7d, 2w. " +
                          "Default: 1h. It protects uploads to 'serve' that nothing refers to yet.",
            HelpName = "DURATION",
        };
        var maxSize = new Option<string?>("--max-size")
        {
            Description = "Remove unreachable objects, oldest first, only until the objects take at most SIZE (e.g. 500M, 10G; " +
                          "K, M, G, T are powers of 1024). Reachable and young objects are never removed, even if the store stays bigger.",
            HelpName = "SIZE",
        };
        var json = new Option<bool>("--json") { Description = "Print the report as one JSON object." };
        var command = new Command(
            "gc",
            "Remove store objects nothing needs: kept are the closures of explicit roots ('root'), of the build result cache's " +
            "outputs, of what running builds, mounts, imports and 'serve' use, and objects younger than --older-than. " +
            "Works on a local store, and is safe while other processes use it.")
        {
            dryRun,
            olderThan,
            maxSize,
            json,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var grace = parse.GetValue(olderThan) is { } d ? ParseDuration(d) : GcOptions.DefaultOlderThan;
            long? limit = parse.GetValue(maxSize) is { } s ? ParseSize(s) : null;
            await using var store = StoreSelection.Open(parse);
            var local = RequireLocal(store, "gc");
            var cache = ResultCache.Default;
            var latest = new GcProgress("starting", 0, 0);
            var options = new GcOptions
            {
                OlderThan = grace,
                MaxSize = limit,
                DryRun = parse.GetValue(dryRun),
                ExternalRoots = cache.AsGcRoots(removeStale: BelongsTo(cache, local)),
                Progress = new Progress<GcProgress>(p => latest = p),
                Waiting = () => Console.Error.WriteLine($"{ToolConsole.Name}: waiting for another garbage collection of {local.Root} to finish"),
            };
            var report = await ProgressDisplay.RunAsync(
                Task.Run(() => GarbageCollector.CollectAsync(local, options, cancellationToken), cancellationToken),
                () => ($"gc: {latest.Phase}" + (latest.Total > 0 ? $" ({latest.Done}/{latest.Total})" : ""), latest.Done, latest.Total));

            if (parse.GetValue(json))
            {
                WriteJson(report);
            }
            else
            {
                WriteText(report, grace, limit);
            }

            return ToolConsole.Ok;
        });
        return command;
    }

    /// <summary>The result cache is cleaned only with the store it sits next to: other stores do not hold its outputs.</summary>
    internal static bool BelongsTo(ResultCache cache, LocalStore store) =>
        string.Equals(Path.Combine(Path.GetDirectoryName(store.Root)!, "results"), Path.GetFullPath(cache.Directory), StringComparison.Ordinal);

    internal static LocalStore RequireLocal(CastoreStore store, string command) =>
        store.Local ?? throw new UsageException(
            $"{command} works on a local store, and {store.Address} is not one (a remote store's local cache is: name it with --store local:///PATH)");

    private static void WriteText(GcReport r, TimeSpan grace, long? limit)
    {
        string verb = r.DryRun ? "would remove" : "removed";
        Console.WriteLine(
            $"{verb} {Count(r.BlobsRemoved, "blob")} and {Count(r.DirectoriesRemoved, "directory", "directories")}, {ProgressDisplay.Bytes(r.BytesRemoved)}" +
            (r.StaleResultsRemoved > 0 ? $"; {Count(r.StaleResultsRemoved, "stale result-cache entry", "stale result-cache entries")}" : ""));
        var why = new List<string>();
        if (r.KeptReachable > 0)
        {
            why.Add($"{r.KeptReachable} reachable from roots");
        }

        if (r.KeptYoung > 0)
        {
            why.Add($"{r.KeptYoung} younger than {FormatDuration(grace)}");
        }

        if (r.KeptUnderMaxSize > 0)
        {
            why.Add($"{r.KeptUnderMaxSize} unreachable within --max-size");
        }

        Console.WriteLine(
            $"kept {Count(r.ObjectsKept, "object")}, {ProgressDisplay.Bytes(r.BytesKept)}" + (why.Count > 0 ? $": {string.Join(", ", why)}" : "") +
            (r.LiveTempRootFiles > 0 ? $"; {Count(r.LiveTempRootFiles, "running process", "running processes")} using the store" : ""));
        if (limit is { } max && r.BytesKept > max)
        {
            Console.WriteLine(
                $"the store is still {ProgressDisplay.Bytes(r.BytesKept)}, over --max-size {ProgressDisplay.Bytes(max)}: the rest is reachable or younger than {FormatDuration(grace)}");
        }
    }

    private static void WriteJson(GcReport r)
    {
        using var stream = Console.OpenStandardOutput();
        using (var writer = new Utf8JsonWriter(stream))
        {
            writer.WriteStartObject();
            writer.WriteBoolean("dryRun", r.DryRun);
            writer.WriteNumber("blobsRemoved", r.BlobsRemoved);
            writer.WriteNumber("directoriesRemoved", r.DirectoriesRemoved);
            writer.WriteNumber("bytesRemoved", r.BytesRemoved);
            writer.WriteNumber("objectsKept", r.ObjectsKept);
            writer.WriteNumber("bytesKept", r.BytesKept);
            writer.WriteNumber("keptReachable", r.KeptReachable);
            writer.WriteNumber("keptYoung", r.KeptYoung);
            writer.WriteNumber("keptUnderMaxSize", r.KeptUnderMaxSize);
            writer.WriteNumber("staleResultsRemoved", r.StaleResultsRemoved);
            writer.WriteNumber("liveTempRootFiles", r.LiveTempRootFiles);
            writer.WriteNumber("deadTempRootFiles", r.DeadTempRootFiles);
            writer.WriteEndObject();
        }

        stream.Write("\n"u8);
    }

    internal static string Count(long n, string one, string? many = null) => n == 1 ? $"1 {one}" : $"{n} {many ?? one + "s"}";

    /// <summary>NUMBER followed by s, m, h, d or w (0 alone is allowed).</summary>
    internal static TimeSpan ParseDuration(string text)
    {
        string t = text.Trim();
        if (t == "0")
        {
            return TimeSpan.Zero;
        }

        double unit = t.Length == 0 ? 0 : t[^1] switch
        {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 7 * 86400,
            _ => 0,
        };
        if (unit == 0 || !double.TryParse(t[..^1], NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double value) ||
            value * unit > TimeSpan.MaxValue.TotalSeconds / 2)
        {
            throw new UsageException($"--older-than: '{Elide(text)}' is not a duration: use a number and a unit, e.g. 0s, 90s, 30m, 12h, 7d, 2w");
        }

        return TimeSpan.FromSeconds(value * unit);
    }

    /// <summary>A size as the sandbox's limits take one (K, M, G, T: powers of 1024); anything else is a usage error.</summary>
    internal static long ParseSize(string text)
    {
        try
        {
            return Sandbox.SandboxLimits.ParseSize(text, "--max-size");
        }
        catch (FormatException e)
        {
            throw new UsageException(e.Message);
        }
    }

    internal static string FormatDuration(TimeSpan span) => span switch
    {
        { TotalSeconds: 0 } => "0s",
        { TotalSeconds: var s } when s % (7 * 86400) == 0 => $"{s / (7 * 86400)}w",
        { TotalSeconds: var s } when s % 86400 == 0 => $"{s / 86400}d",
        { TotalSeconds: var s } when s % 3600 == 0 => $"{s / 3600}h",
        { TotalSeconds: var s } when s % 60 == 0 => $"{s / 60}m",
        { TotalSeconds: var s } => $"{s.ToString(CultureInfo.InvariantCulture)}s",
    };

    private static string Elide(string text) => text.Length <= 40 ? text : string.Concat(text.AsSpan(0, 37), "...");
}
