using System.Text.Json.Nodes;

namespace TvixFuseBuild.Bench.Scenarios;

/// <summary>
/// Start-up of the NativeAOT tool, whole process: <c>--help</c>, <c>--version</c> and a build answered from the result
/// cache, each against a NativeAOT hello world started the same way (Process.Start, output read to the end), all
/// interleaved. The framework-dependent (ReadyToRun) tool's <c>--help</c> is measured alongside for comparison.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
internal sealed class StartupBench : IBenchScenario
{
    public string Name => "startup";

    public string Description => "NativeAOT tool start-up: --help, --version, a result-cache hit vs a NativeAOT hello world";

    public Task<IReadOnlyList<BenchResult>> RunAsync(BenchContext context, CancellationToken cancellationToken)
    {
        string native = Variable("TVIX_FUSE_BUILD_NATIVE");
        string hello = Variable("TVIX_BENCH_HELLO_AOT");
        string root = context.WorkDir;
        File.SetUnixFileMode(root, (UnixFileMode)0x1ED);
        var tree = BusyboxTree.Create(Path.Combine(root, "tree"), 1);
        string store = "local://" + Path.Combine(root, "store");
        var environment = new Dictionary<string, string> { ["XDG_DATA_HOME"] = Path.Combine(root, "data"), ["CI"] = "true" };

        string nodesFile = Path.Combine(root, "nodes.json");
        Measure.Process(native, ["--store", store, "import", "--json", Path.Combine(tree.Inputs, BusyboxTree.BusyboxName)], nodesFile, environment);
        var request = new JsonObject
        {
            ["inputs"] = JsonNode.Parse(File.ReadAllText(nodesFile))!.AsArray().DeepClone(),
            ["commandArgs"] = new JsonArray($"/nix/store/{BusyboxTree.BusyboxName}/bin/busybox", "true"),
            ["workingDir"] = "build",
            ["scratchPaths"] = new JsonArray("build", "nix/store"),
            ["inputsDir"] = "nix/store",
            ["environmentVars"] = new JsonArray(new JsonObject { ["key"] = "PATH", ["value"] = Convert.ToBase64String("/path-not-set"u8) }),
        };
        string requestFile = Path.Combine(root, "request.json");
        File.WriteAllText(requestFile, request.ToJsonString());
        string[] build = ["--store", store, "build", "--quiet", "--out", Path.Combine(root, "reply.json"), requestFile];

        var runs = new (string Name, Func<double> Run, List<double> Times)[]
        {
            ("hello", () => Measure.Process(hello, [], environment: environment), []),
            ("help", () => Measure.Process(native, ["--help"], environment: environment), []),
            ("version", () => Measure.Process(native, ["--version"], environment: environment), []),
            ("cached", () => Measure.Process(native, build, environment: environment), []),
            ("jit help", () => Measure.Process("dotnet", [BenchData.Tool, "--help"], environment: environment), []),
        };

        // Warm-up: page cache, and the first build fills the result cache.
        foreach (var run in runs)
        {
            run.Run();
        }

        int repetitions = context.Quick ? 3 : 21;
        for (int i = 0; i < repetitions; i++)
        {
            foreach (var run in runs)
            {
                cancellationToken.ThrowIfCancellationRequested();
                run.Times.Add(run.Run());
            }
        }

        double h = BenchData.Median(runs[0].Times);
        BenchResult Row(int i, string name, string? target, double? limit)
        {
            double ours = BenchData.Median(runs[i].Times);
            return new BenchResult(
                name, Measure.Time(ours), Measure.Time(h), "NativeAOT hello world", h / ours, target, limit is { } l ? ours <= l * h : null,
                $"(wall, median of {repetitions} interleaved runs; ours/hello {ours / h:0.00}x)");
        }

        return Task.FromResult<IReadOnlyList<BenchResult>>(
        [
            Row(1, "tvix-fuse-build --help, NativeAOT", ">= 0.67x (within 1.5x)", 1.5),
            Row(2, "tvix-fuse-build --version, NativeAOT", ">= 0.67x (within 1.5x)", 1.5),
            Row(3, "build answered from the result cache, whole process, NativeAOT", ">= 0.33x (within 3x)", 3),
            Row(4, "tvix-fuse-build --help, framework-dependent (ReadyToRun, dotnet exec)", null, null),
        ]);
    }

    private static string Variable(string name) =>
        Environment.GetEnvironmentVariable(name) is { Length: > 0 } value
            ? value
            : throw new InvalidOperationException($"{name} is not set; run benchmarks through scripts/bench");
}
