using System.Diagnostics;
using TvixFuseBuild.Build.Refscan;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Transfer;

namespace TvixFuseBuild.Bench.Scenarios;

/// <summary>
/// A build output's ingest with its reference scan (names, targets, contents): in one pass (the import hands what it
/// reads to the scan, as builds do now) next to two passes side by side (import and a separate tree scan, as builds
/// did before). A ~600 MB tree (a copy of /usr/share/dotnet), 1,000 needles, warm page cache, blobs already stored.
/// </summary>
internal sealed class IngestBench : IBenchScenario
{
    public string Name => "ingest";

    public string Description => "ingest + reference scan of a ~600 MB output: one pass vs import and scan side by side";

    public async Task<IReadOnlyList<BenchResult>> RunAsync(BenchContext context, CancellationToken cancellationToken)
    {
        string tree = Path.Combine(context.WorkDir, "tree");
        long bytes = RefscanBench.CopyTree("/usr/share/dotnet", tree, context.Quick ? 60L << 20 : long.MaxValue);
        var random = new Random(42);
        var needles = Enumerable.Range(0, 1000).Select(_ => RefscanBench.RandomNixHash(random)).ToArray();
        RefscanBench.Plant(tree, needles, random);
        var scanner = ReferenceScanner.ForNeedles(needles);
        var walker = ReferenceScanner.ForNeedles(needles, new ReferenceScanOptions { IncludeNames = true });
        await using var store = CastoreStore.Open("local://" + Path.Combine(context.WorkDir, "store"));
        var name = PathComponent.Create("out");

        async Task<int[]> OnePass()
        {
            var scan = new ImportReferenceScan(scanner);
            await HostImporter.ImportAsync(tree, name, store.Blobs, store.Directories, new ImportOptions { Observer = scan }, cancellationToken: cancellationToken);
            return scan.Found.ToArray();
        }

        async Task<int[]> TwoPasses()
        {
            var scan = Task.Run(() => walker.ScanPath(tree, cancellationToken), cancellationToken);
            await HostImporter.ImportAsync(tree, name, store.Blobs, store.Directories, cancellationToken: cancellationToken);
            return (await scan).ToArray();
        }

        // Warm-up (stores the blobs), and both must find the same needles.
        var a = await OnePass();
        var b = await TwoPasses();
        if (!a.SequenceEqual(b) || a.Length == 0)
        {
            throw new InvalidOperationException($"one pass found {a.Length} needles, two passes {b.Length}");
        }

        var one = new List<double>();
        var two = new List<double>();
        for (int r = 0; r < (context.Quick ? 3 : 7); r++)
        {
            var sw = Stopwatch.StartNew();
            await OnePass();
            one.Add(sw.Elapsed.TotalSeconds);
            sw.Restart();
            await TwoPasses();
            two.Add(sw.Elapsed.TotalSeconds);
        }

        double o = BenchData.Median(one), t = BenchData.Median(two);
        return
        [
            new BenchResult($"{bytes / 1e6:0} MB output, {a.Length} needles found", $"{Measure.Time(o)} ({Measure.Rate(bytes, o)})",
                $"{Measure.Time(t)} ({Measure.Rate(bytes, t)})", "import + scan side by side", t / o, null, null),
        ];
    }
}
