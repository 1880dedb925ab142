
namespace TvixFuseBuild.Bench.Scenarios;

/// <summary>
/// Importing a real tree (a copy of /usr/share/dotnet: ~600 MB in ~5,000 files) into the local store, against hashing
/// the same files with b3sum. Fresh: an empty store, every blob written. Again: everything already present, so the
/// import only hashes. Both through the real tool, start-up included, files warm in the page cache.
/// </summary>
internal sealed class ImportBench : IBenchScenario
{
    public string Name => "import";

    public string Description => "tvix-fuse-build import of a /usr/share/dotnet copy vs b3sum over the same files";

    public Task<IReadOnlyList<BenchResult>> RunAsync(BenchContext context, CancellationToken cancellationToken)
    {
        string tree = Path.Combine(context.WorkDir, "dotnet");
        BenchData.CopyTree(context.Quick ? "/usr/share/dotnet/shared" : "/usr/share/dotnet", tree);
        var files = Directory.EnumerateFiles(tree, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 })
            .Where(f => new FileInfo(f).LinkTarget is null).ToList();
        long bytes = files.Sum(f => new FileInfo(f).Length);
        string fileList = Path.Combine(context.WorkDir, "files.txt");
        File.WriteAllText(fileList, string.Join('\0', files));

        // Warm the page cache so both sides read from memory.
        Measure.Process("b3sum", ["--no-names", .. files.Take(1)]);
        Measure.Process("sh", ["-c", $"xargs -0 cat < {fileList} > /dev/null"]);

        var fresh = new List<double>();
        var again = new List<double>();
        var peer = new List<double>();
        for (int i = 0; i < context.Repetitions; i++)
        {
            string store = Path.Combine(context.WorkDir, $"store-{i}");
            peer.Add(Measure.Process("sh", ["-c", $"xargs -0 b3sum < {fileList} > /dev/null"]));
            fresh.Add(Measure.Process("dotnet", [BenchData.Tool, "--store", "local://" + store, "import", tree]));
            again.Add(Measure.Process("dotnet", [BenchData.Tool, "--store", "local://" + store, "import", tree]));
            BenchData.RemoveTree(store);
        }

        double b3 = BenchData.Median(peer);
        double f = BenchData.Median(fresh);
        double a = BenchData.Median(again);
        string size = $"{files.Count} files, {bytes / 1e6:0} MB";
        return Task.FromResult<IReadOnlyList<BenchResult>>(
        [
            new BenchResult($"import into an empty store ({size})", Measure.Time(f), Measure.Time(b3), "b3sum", b3 / f, null, null, "writes every blob"),
            new BenchResult($"import again, all blobs present ({size})", Measure.Time(a), Measure.Time(b3), "b3sum", b3 / a, null, null, "hash only"),
        ]);
    }
}

/// <summary>Shared helpers for benchmark data sets.</summary>
internal static class BenchData
{
    /// <summary>The tool to measure: TVIX_FUSE_BUILD_TOOL (set by scripts/bench) or the Release build in the repo.</summary>
    public static string Tool =>
        Environment.GetEnvironmentVariable("TVIX_FUSE_BUILD_TOOL") is { Length: > 0 } tool
            ? tool
            : throw new InvalidOperationException("TVIX_FUSE_BUILD_TOOL is not set; run benchmarks through scripts/bench");

    /// <summary>The NativeAOT tool, when scripts/bench published it (TVIX_FUSE_BUILD_NATIVE); null otherwise.</summary>
    public static string? NativeTool =>
        Environment.GetEnvironmentVariable("TVIX_FUSE_BUILD_NATIVE") is { Length: > 0 } native && File.Exists(native) ? native : null;

    /// <summary>The program and arguments running the tool: the NativeAOT executable, or <c>dotnet</c> with the framework-dependent one.</summary>
    public static (string Program, string[] Arguments) ToolCommand(bool native, params string[] arguments) =>
        native ? (NativeTool ?? throw new InvalidOperationException("TVIX_FUSE_BUILD_NATIVE is not set"), arguments) : ("dotnet", [Tool, .. arguments]);

    public static void CopyTree(string source, string destination)
    {
        Measure.Process("cp", ["-a", source, destination]);
    }

    public static void RemoveTree(string path)
    {
        Measure.Process("chmod", ["-R", "u+rwX", path]);
        Measure.Process("rm", ["-rf", path]);
    }

    public static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted[sorted.Count / 2];
    }
}
