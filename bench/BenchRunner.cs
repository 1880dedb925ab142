using System.Diagnostics;
using System.Reflection;

namespace TvixFuseBuild.Bench;

/// <summary>A named benchmark: measures our figure and its peer's in the same run and reports ratios.</summary>
internal interface IBenchScenario
{
    /// <summary>The name given on the command line: <c>scripts/bench NAME</c>.</summary>
    string Name { get; }

    string Description { get; }

    /// <summary>Runs the scenario; returns the rows to print and record.</summary>
    Task<IReadOnlyList<BenchResult>> RunAsync(BenchContext context, CancellationToken cancellationToken);
}

/// <summary>One compared figure. Ratio = ours / peer for throughputs, peer / ours for times, so above 1 means we win.</summary>
internal sealed record BenchResult(string Case, string Ours, string Peer, string PeerName, double Ratio, string? Target, bool? TargetMet, string? Note = null);

internal sealed class BenchContext(string workDir, string repoRoot, bool quick)
{
    /// <summary>A scratch directory for this run, removed afterwards.</summary>
    public string WorkDir { get; } = workDir;

    public string RepoRoot { get; } = repoRoot;

    /// <summary>Smaller inputs and fewer repetitions (for smoke runs in tests).</summary>
    public bool Quick { get; } = quick;

    public int Repetitions => Quick ? 1 : 5;
}

internal static class BenchRunner
{
    public static int Run(string[] args)
    {
        var scenarios = Assembly.GetExecutingAssembly().GetTypes()
            .Where(t => typeof(IBenchScenario).IsAssignableFrom(t) && t is { IsAbstract: false, IsInterface: false })
            .Select(t => (IBenchScenario)Activator.CreateInstance(t)!)
            .OrderBy(s => s.Name, StringComparer.Ordinal)
            .ToList();

        bool quick = args.Contains("--quick");
        string? markdown = ArgValue(args, "--markdown");
        var names = args.Where(a => !a.StartsWith("--", StringComparison.Ordinal) && a != markdown).ToList();
        if (names.Count == 0 || names.Contains("help"))
        {
            Console.WriteLine("usage: scripts/bench NAME... [--quick] [--markdown FILE]");
            foreach (var s in scenarios)
            {
                Console.WriteLine($"  {s.Name,-10} {s.Description}");
            }

            return names.Count == 0 ? 2 : 0;
        }

        var selected = names.Contains("all") ? scenarios : new List<IBenchScenario>();
        foreach (var name in names.Where(n => n != "all"))
        {
            var scenario = scenarios.FirstOrDefault(s => s.Name == name);
            if (scenario is null)
            {
                Console.Error.WriteLine($"bench: unknown benchmark '{name}'; known: {string.Join(", ", scenarios.Select(s => s.Name))}");
                return 2;
            }

            selected.Add(scenario);
        }

        string repoRoot = FindRepoRoot();
        using var cts = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            cts.Cancel();
        };

        var lines = new List<string>();
        foreach (var scenario in selected)
        {
            string workDir = Directory.CreateTempSubdirectory($"tvix-fuse-bench-{scenario.Name}-").FullName;
            try
            {
                Console.WriteLine($"== {scenario.Name}: {scenario.Description}");
                var results = scenario.RunAsync(new BenchContext(workDir, repoRoot, quick), cts.Token).GetAwaiter().GetResult();
                lines.AddRange(Format(scenario, results));
            }
            finally
            {
                TryDelete(workDir);
            }
        }

        foreach (var line in lines)
        {
            Console.WriteLine(line);
        }

        if (markdown is not null)
        {
            File.AppendAllLines(markdown, lines);
        }

        return 0;
    }

    private static IEnumerable<string> Format(IBenchScenario scenario, IReadOnlyList<BenchResult> results)
    {
        yield return string.Empty;
        yield return $"### {scenario.Name} ({DateTime.UtcNow:yyyy-MM-dd}, {Environment.ProcessorCount} cores)";
        yield return string.Empty;
        yield return "| case | ours | peer | ratio (>1: we win) | target | met |";
        yield return "|---|---|---|---|---|---|";
        foreach (var r in results)
        {
            string met = r.TargetMet switch { true => "yes", false => "**no**", null => "" };
            yield return $"| {r.Case} | {r.Ours} | {r.PeerName}: {r.Peer} | {r.Ratio:0.00}x | {r.Target ?? ""} | {met} |" +
                (r.Note is null ? "" : $" {r.Note}");
        }
    }

    private static string? ArgValue(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    private static string FindRepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "TvixFuseBuild.sln")))
        {
            dir = dir.Parent;
        }

        return dir?.FullName ?? Directory.GetCurrentDirectory();
    }

    internal static void TryDelete(string path)
    {
        try
        {
            Directory.Delete(path, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}

/// <summary>Timing helpers shared by scenarios.</summary>
internal static class Measure
{
    /// <summary>Runs <paramref name="action"/> <paramref name="repetitions"/> times; returns the median seconds.</summary>
    public static double Median(int repetitions, Action action)
    {
        var times = new List<double>();
        for (int i = 0; i < repetitions; i++)
        {
            var sw = Stopwatch.StartNew();
            action();
            times.Add(sw.Elapsed.TotalSeconds);
        }

        times.Sort();
        return times[times.Count / 2];
    }

    /// <summary>Runs a process to completion, failing loudly on a non-zero exit; returns wall seconds.</summary>
    public static double Process(
        string fileName, IEnumerable<string> arguments, string? stdoutFile = null, IReadOnlyDictionary<string, string>? environment = null)
    {
        var psi = new ProcessStartInfo(fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in arguments)
        {
            psi.ArgumentList.Add(a);
        }

        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            psi.Environment[key] = value;
        }

        var sw = Stopwatch.StartNew();
        using var p = System.Diagnostics.Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {fileName}");
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        p.WaitForExit();
        double seconds = sw.Elapsed.TotalSeconds;
        if (p.ExitCode != 0)
        {
            throw new InvalidOperationException($"{fileName} {string.Join(' ', psi.ArgumentList)} exited {p.ExitCode}: {stderr.Result}");
        }

        if (stdoutFile is not null)
        {
            File.WriteAllText(stdoutFile, stdout.Result);
        }

        return seconds;
    }

    public static void DropCaches()
    {
        // Cold-cache figures need root; without it the numbers are warm and say so.
        try
        {
            System.Diagnostics.Process.Start("sync")?.WaitForExit();
            File.WriteAllText("/proc/sys/vm/drop_caches", "3");
        }
        catch (UnauthorizedAccessException)
        {
        }
        catch (IOException)
        {
        }
    }

    public static string Rate(double bytes, double seconds) => $"{bytes / seconds / 1e9:0.00} GB/s";

    public static string Time(double seconds) => seconds < 1 ? $"{seconds * 1000:0.0} ms" : $"{seconds:0.00} s";
}
