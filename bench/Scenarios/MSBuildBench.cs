using System.Globalization;
using System.Text.RegularExpressions;

namespace TvixFuseBuild.Bench.Scenarios;

/// <summary>
/// The per-invocation cost of the <c>TvixBuild</c> task next to MSBuild's <c>Exec</c> running the same trivial command
/// (busybox sh writing an empty file), inside one real MSBuild build each: the package is packed from the Release
/// build of src/MSBuild into a private feed, a project calls each task N times (batching), and MSBuild's own
/// performance summary gives each task's total time and call count. Builds of the variants alternate round by round;
/// the figures are medians over the rounds of the time per call. Variants: the sandbox run every time (Rebuild), the
/// same request answered by the result cache, and the task in a separate task host process (TaskHostFactory).
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
internal sealed partial class MSBuildBench : IBenchScenario
{
    public string Name => "msbuild";

    public string Description => "TvixBuild task per invocation (trivial command) vs MSBuild's Exec of the same command";

    public Task<IReadOnlyList<BenchResult>> RunAsync(BenchContext context, CancellationToken cancellationToken)
    {
        string root = context.WorkDir;
        File.SetUnixFileMode(root, (UnixFileMode)0x1ED);
        string feed = Path.Combine(root, "feed");
        string project = Directory.CreateDirectory(Path.Combine(root, "project")).FullName;
        string tools = Path.Combine(root, "tools");
        Directory.CreateDirectory(Path.Combine(tools, "bin"));
        File.Copy("/bin/busybox", Path.Combine(tools, "bin", "busybox"));
        File.CreateSymbolicLink(Path.Combine(tools, "bin", "sh"), "busybox");
        string temp = Directory.CreateDirectory(Path.Combine(root, "tmp")).FullName;

        var environment = new Dictionary<string, string>
        {
            ["NUGET_PACKAGES"] = Path.Combine(root, "packages"),
            ["XDG_DATA_HOME"] = Path.Combine(root, "data"),
            ["TMPDIR"] = temp,
            ["DOTNET_CLI_USE_MSBUILD_SERVER"] = "0",
            ["MSBUILDDISABLENODEREUSE"] = "1",
            ["DOTNET_NOLOGO"] = "1",
        };

        // The package as users get it, from this checkout's Release build.
        string version = $"0.1.0-bench.{DateTime.UtcNow:yyyyMMddHHmmss}";
        string msbuildProject = Path.Combine(context.RepoRoot, "src", "MSBuild", "MSBuild.csproj");
        Measure.Process("dotnet", ["build", msbuildProject, "-c", "Release", "-nologo", "-v:q", "-nodeReuse:false"]);
        Measure.Process("dotnet", ["pack", msbuildProject, "--no-build", "-c", "Release", "-o", feed, $"-p:PackageVersion={version}", "-nologo", "-v:q"]);

        int calls = context.Quick ? 3 : 10;
        File.WriteAllText(Path.Combine(project, "nuget.config"), $"""
            <configuration><packageSources><clear /><add key="bench" value="{feed}" /></packageSources></configuration>
            """);
        File.WriteAllText(Path.Combine(root, "Directory.Build.props"), "<Project />");
        File.WriteAllText(Path.Combine(root, "Directory.Build.targets"), "<Project />");
        File.WriteAllText(Path.Combine(project, "Bench.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup><TargetFramework>net10.0</TargetFramework></PropertyGroup>
              <ItemGroup>
                <PackageReference Include="TvixFuseBuild.MSBuild" Version="{version}" PrivateAssets="all" />
                <Call Include="{string.Join(';', Enumerable.Range(1, calls))}" />
                <Tools Include="{tools}" Name="tools" />
              </ItemGroup>
              <Target Name="Tvix">
                <TvixBuild Name="bench" Command="sh" Arguments="-c;: &gt; &quot;$out&quot;" Inputs="@(Tools)"
                           OutputDirectory="$(MSBuildProjectDirectory)/out/tvix-%(Call.Identity)" Rebuild="$(Rebuild)" />
              </Target>
              <Target Name="Exec">
                <MakeDir Directories="$(MSBuildProjectDirectory)/out/exec" />
                <Exec Command="{tools}/bin/busybox sh -c ': &gt; out/exec/%(Call.Identity)'" />
              </Target>
            </Project>
            """);
        Measure.Process("dotnet", ["restore", project, "-nologo", "-v:q", "-nodeReuse:false"], environment: environment);

        // Each variant: one build process; the figure is the task's own time per call from MSBuild's summary.
        double Run(string target, string task, params string[] properties)
        {
            string summary = Path.Combine(root, "summary.txt");
            Measure.Process(
                "dotnet",
                ["msbuild", project, $"-t:{target}", "-restore:false", "-nodeReuse:false", "-nologo", "-v:q", "-clp:PerformanceSummary;NoSummary", .. properties],
                summary, environment);
            return PerCall(File.ReadAllText(summary), task, calls);
        }

        double Sandboxed() => Run("Tvix", "TvixBuild", "-p:Rebuild=true");
        double Cached() => Run("Tvix", "TvixBuild", "-p:Rebuild=false");
        double OutOfProcess() => Run("Tvix", "TvixBuild", "-p:Rebuild=true", "-p:TvixBuildOutOfProcess=true");
        double Exec() => Run("Exec", "Exec");

        // Warm-up: page cache, the store holding the tools, the result cache entry.
        Sandboxed();
        Cached();
        OutOfProcess();
        Exec();

        int rounds = context.Quick ? 1 : 7;
        var sandboxed = new List<double>();
        var cached = new List<double>();
        var outOfProcess = new List<double>();
        var exec = new List<double>();
        for (int i = 0; i < rounds; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            exec.Add(Exec());
            sandboxed.Add(Sandboxed());
            cached.Add(Cached());
            outOfProcess.Add(OutOfProcess());
        }

        double e = BenchData.Median(exec), s = BenchData.Median(sandboxed), c = BenchData.Median(cached), o = BenchData.Median(outOfProcess);
        string note = $"median of {rounds} builds x {calls} calls";
        return Task.FromResult<IReadOnlyList<BenchResult>>(
        [
            new BenchResult("TvixBuild per call, sandboxed (in the MSBuild node)", Measure.Time(s), Measure.Time(e), "Exec", e / s, null, null, note),
            new BenchResult("TvixBuild per call, from the result cache", Measure.Time(c), Measure.Time(e), "Exec", e / c, null, null, note),
            new BenchResult("TvixBuild per call, sandboxed, out of process (TaskHostFactory)", Measure.Time(o), Measure.Time(e), "Exec", e / o, null, null, note),
        ]);
    }

    /// <summary>Seconds per call of <paramref name="task"/> from MSBuild's "Task Performance Summary".</summary>
    private static double PerCall(string summary, string task, int calls)
    {
        const string Section = "Task Performance Summary:";
        int start = summary.IndexOf(Section, StringComparison.Ordinal);
        string tasks = start < 0 ? string.Empty : summary[(start + Section.Length)..];
        foreach (Match match in SummaryLine().Matches(tasks))
        {
            if (match.Groups["task"].Value == task)
            {
                int counted = int.Parse(match.Groups["calls"].Value, CultureInfo.InvariantCulture);
                if (counted != calls)
                {
                    throw new InvalidOperationException($"{task} ran {counted} times, not {calls}:\n{summary}");
                }

                return double.Parse(match.Groups["ms"].Value, CultureInfo.InvariantCulture) / 1000 / counted;
            }
        }

        throw new InvalidOperationException($"no figure for {task} in MSBuild's performance summary:\n{summary}");
    }

    [GeneratedRegex(@"^\s*(?<ms>\d+) ms\s+(?<task>\S+)\s+(?<calls>\d+) calls", RegexOptions.Multiline)]
    private static partial Regex SummaryLine();
}
