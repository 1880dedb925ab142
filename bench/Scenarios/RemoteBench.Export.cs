namespace TvixFuseBuild.Bench.Scenarios;

/// <summary>
/// <c>export</c> of a large tree from a served store: <c>tvix-fuse-build serve</c> on a unix socket, and
/// <c>tvix-fuse-build --store grpc+unix://… export</c> in its own process, with no cache (every byte over the socket)
/// and with an empty cache (the CLI's default way: fetched into the cache, then copied out), against the same export
/// straight from the local store. With a baseline build (<c>--baseline COMMIT</c> or TVIX_FUSE_BUILD_BASELINE_TOOL) the
/// uncached export of that build runs too, against its own serve over the same store, in the same rounds.
/// </summary>
internal sealed partial class RemoteBench
{
    private const int ExportFiles = 800; // about 400 MB: large enough that process start-up does not dominate, also with --quick

    private static IEnumerable<BenchResult> ExportOverRemote(BenchContext context, CancellationToken cancellationToken)
    {
        string root = Path.Combine(context.WorkDir, "export");
        Directory.CreateDirectory(root);
        File.SetUnixFileMode(root, (UnixFileMode)0x1ED);
        string tree = Path.Combine(root, "tree");
        long bytes = WriteExportTree(tree, files: ExportFiles);
        string store = "local://" + Path.Combine(root, "store");
        string socket = Path.Combine(root, "serve.sock");
        var environment = new Dictionary<string, string> { ["XDG_DATA_HOME"] = Path.Combine(root, "data"), ["CI"] = "true" };
        string nodes = Path.Combine(root, "nodes.json");
        Measure.Process("dotnet", [BenchData.Tool, "--store", store, "import", "--json", tree], nodes);

        using var server = Served.Start(BenchData.Tool, store, socket, environment);
        string? baselineTool = BaselineTool;
        using var baselineServer = baselineTool is null ? null : Served.Start(baselineTool, store, Path.Combine(root, "old.sock"), environment);
        int run = 0;
        double Export(string tool, string storeAddress)
        {
            string destination = Path.Combine(root, $"out-{run++}");
            Directory.CreateDirectory(destination);
            try
            {
                return Measure.Process("dotnet", [tool, "--store", storeAddress, "export", "--writable", "--nodes", nodes, destination], environment: environment);
            }
            finally
            {
                Directory.Delete(destination, recursive: true);
            }
        }

        var uncached = new List<double>();
        var cached = new List<double>();
        var local = new List<double>();
        var baseline = new List<double>();
        Export(BenchData.Tool, store); // warm the page cache and the local store's verification
        int repetitions = context.Quick ? 3 : 5;
        for (int i = 0; i < repetitions; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            uncached.Add(Export(BenchData.Tool, $"grpc+unix://{socket}?cache=none"));
            cached.Add(Export(BenchData.Tool, $"grpc+unix://{socket}?cache={Path.Combine(root, $"cache-{i}")}"));
            local.Add(Export(BenchData.Tool, store));
            if (baselineTool is not null)
            {
                baseline.Add(Export(baselineTool, baselineServer!.Address("cache=none")));
            }

            Console.WriteLine(
                $"   rep {i + 1}: remote {Rate(bytes, uncached[^1])}, remote into a cache {Rate(bytes, cached[^1])}, local {Rate(bytes, local[^1])}" +
                (baselineTool is null ? "" : $", baseline build remote {Rate(bytes, baseline[^1])}"));
        }

        double u = BenchData.Median(uncached), c = BenchData.Median(cached), l = BenchData.Median(local);
        string what = $"export of {bytes >> 20} MiB in {ExportFiles} files";
        var results = new List<BenchResult>
        {
            new($"{what} from a served store (grpc+unix, no cache)", Rate(bytes, u), Rate(bytes, l), "export from the local store", l / u,
                ">= 100 MB/s (4x the 25 MB/s of issue 13)", bytes / u >= 100e6,
                "whole processes; many blobs in flight, the directories fetched in one call"),
            new($"{what} from a served store into an empty cache", Rate(bytes, c), Rate(bytes, l), "export from the local store", l / c, null, null,
                "each blob verified into the cache, then copied out"),
        };
        if (baseline.Count > 0)
        {
            double b = BenchData.Median(baseline);
            results.Add(new($"{what} from a served store, this build vs the baseline build", Rate(bytes, u), Rate(bytes, b), "baseline build (its serve and client)", b / u, null, null,
                "same store, same rounds, no cache"));
        }

        return results;
    }

    /// <summary>Files of 4 KiB to 1 MiB (random, fixed seed) in 20 directories; returns the bytes written.</summary>
    private static long WriteExportTree(string tree, int files)
    {
        var random = new Random(7);
        byte[] buffer = new byte[1 << 20];
        long total = 0;
        for (int i = 0; i < files; i++)
        {
            string directory = Path.Combine(tree, $"d{i % 20:00}");
            Directory.CreateDirectory(directory);
            int size = random.Next(4 << 10, 1 << 20);
            random.NextBytes(buffer.AsSpan(0, size));
            File.WriteAllBytes(Path.Combine(directory, $"f{i:0000}"), buffer.AsSpan(0, size).ToArray());
            total += size;
        }

        return total;
    }
}
