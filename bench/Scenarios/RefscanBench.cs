using System.Diagnostics;
using System.Text;
using TvixFuseBuild.Build.Refscan;

namespace TvixFuseBuild.Bench.Scenarios;

/// <summary>
/// Reference scanning of a ~600 MB tree (a copy of /usr/share/dotnet) for 1,000 random Nix hashes, some planted in a
/// few files: our scanner next to <c>rg -a -F -o -f needles TREE</c>, both warm (the tree is in the page cache, so
/// this measures the scanners, not the disk), runs interleaved, medians reported.
/// </summary>
internal sealed partial class RefscanBench : IBenchScenario
{
    private const int NeedleCount = 1000;
    private const int Planted = 24;

    public string Name => "refscan";

    public string Description => "scan a ~600 MB tree for 1,000 Nix hashes: ours vs rg -a -F -o -f (warm page cache)";

    public Task<IReadOnlyList<BenchResult>> RunAsync(BenchContext context, CancellationToken cancellationToken)
    {
        string tree = Path.Combine(context.WorkDir, "tree");
        string needlesFile = Path.Combine(context.WorkDir, "needles");
        long bytes = CopyTree("/usr/share/dotnet", tree, context.Quick ? 60L << 20 : long.MaxValue);
        var random = new Random(42);
        var needles = Enumerable.Range(0, NeedleCount).Select(_ => RandomNixHash(random)).ToArray();
        File.WriteAllText(needlesFile, string.Concat(needles.Select(n => n + "\n")));
        var planted = Plant(tree, needles, random);
        Console.WriteLine($"  tree: {bytes / 1e6:0} MB in {Directory.EnumerateFiles(tree, "*", SearchOption.AllDirectories).Count()} files; {NeedleCount} needles, {planted.Count} planted");

        string tool = Environment.GetEnvironmentVariable("TVIX_FUSE_BUILD_TOOL") ?? throw new InvalidOperationException("TVIX_FUSE_BUILD_TOOL is not set (run through scripts/bench)");
        // The NativeAOT tool (what scripts/install installs on linux-x64), which scans with its kernels library.
        string? native = Environment.GetEnvironmentVariable("TVIX_FUSE_BUILD_NATIVE") is { Length: > 0 } n ? n : null;
        var set = NeedleSet.FromStrings(needles);
        var all = new ReferenceScanner(set);
        var one = new ReferenceScanner(set, new ReferenceScanOptions { MaxDegreeOfParallelism = 1 });

        // How files are read, one thread: every file mapped (MAP_POPULATE), every file read with pread through a
        // reused 1 MiB buffer. The default (above) is one of the two, or a mix by size.
        var oneMapped = new ReferenceScanner(set, new ReferenceScanOptions { MaxDegreeOfParallelism = 1, ReadBelow = 0 });
        var oneRead = new ReferenceScanner(set, new ReferenceScanOptions { MaxDegreeOfParallelism = 1, ReadBelow = int.MaxValue });
        Check("in-process scanner, all mapped", oneMapped.ScanPath(tree).Select(i => needles[i]), planted);
        Check("in-process scanner, all read", oneRead.ScanPath(tree).Select(i => needles[i]), planted);

        // Correctness first, and warm-up: every scanner must report exactly the planted needles.
        Check("in-process scanner", all.ScanPath(tree).Select(i => needles[i]), planted);
        Check("tvix-fuse-build refscan", ParseOurs(RunTool(tool, needlesFile, tree, threads: null)), planted);
        if (native is not null)
        {
            Check("tvix-fuse-build refscan (NativeAOT)", ParseOurs(RunTool(native, needlesFile, tree, threads: null)), planted);
        }

        Check("rg", ParseRg(RunRg(needlesFile, tree, oneThread: false)), planted);

        int reps = context.Repetitions;
        var wall = new Dictionary<string, List<double>>();
        var cpu = new Dictionary<string, List<double>>();
        void Time(string key, bool child, Action action)
        {
            cancellationToken.ThrowIfCancellationRequested();
            double cpu0 = CpuTime.Seconds(child);
            var sw = Stopwatch.StartNew();
            action();
            (wall.TryGetValue(key, out var w) ? w : wall[key] = []).Add(sw.Elapsed.TotalSeconds);
            (cpu.TryGetValue(key, out var c) ? c : cpu[key] = []).Add(CpuTime.Seconds(child) - cpu0);
        }

        // Interleaved, so that the load of the machine (other builds) falls on every contender alike.
        for (int r = 0; r < reps; r++)
        {
            Time("cli", child: true, () => RunTool(tool, needlesFile, tree, threads: null));
            Time("rg", child: true, () => RunRg(needlesFile, tree, oneThread: false));
            Time("api", child: false, () => all.ScanPath(tree));
            Time("cli1", child: true, () => RunTool(tool, needlesFile, tree, threads: 1));
            if (native is not null)
            {
                Time("native", child: true, () => RunTool(native, needlesFile, tree, threads: null));
                Time("native1", child: true, () => RunTool(native, needlesFile, tree, threads: 1));
            }

            Time("rg1", child: true, () => RunRg(needlesFile, tree, oneThread: true));
            Time("api1", child: false, () => one.ScanPath(tree));
            Time("api1map", child: false, () => oneMapped.ScanPath(tree));
            Time("api1read", child: false, () => oneRead.ScanPath(tree));
        }

        static double Median(List<double> values)
        {
            var sorted = values.Order().ToList();
            return sorted[sorted.Count / 2];
        }

        string PeerName(string peer) => peer == "rg1" ? "rg -j1" : "rg";

        // Wall-clock throughput: what a user waits for.
        BenchResult Wall(string name, string ours, string peer)
        {
            double o = Median(wall[ours]), p = Median(wall[peer]);
            return new BenchResult(name, Measure.Rate(bytes, o), Measure.Rate(bytes, p), PeerName(peer), p / o, ">= 5x rg", p / o >= 5,
                $"(wall, median of {reps}: ours {Measure.Time(o)}, rg {Measure.Time(p)})");
        }

        // Bytes per CPU-second (user + system, all threads): the per-core figure, fair on a loaded machine.
        BenchResult PerCore(string name, string ours, string peer)
        {
            double o = Median(cpu[ours]), p = Median(cpu[peer]);
            double rate = bytes / o;
            return new BenchResult(name, $"{rate / 1e9:0.00} GB/CPU-s", $"{bytes / p / 1e9:0.00} GB/CPU-s", PeerName(peer), p / o,
                ">= 5x rg and >= 2 GB/s per core", p / o >= 5 && rate >= 2e9, $"(CPU time, median of {reps}: ours {Measure.Time(o)}, rg {Measure.Time(p)})");
        }

        int cores = Environment.ProcessorCount;
        List<BenchResult> rows =
        [
            Wall($"tvix-fuse-build refscan, {cores} threads, whole process", "cli", "rg"),
            Wall("tvix-fuse-build refscan -j 1, whole process", "cli1", "rg1"),
            PerCore($"tvix-fuse-build refscan, {cores} threads, whole process, per CPU-second", "cli", "rg"),
            PerCore("tvix-fuse-build refscan -j 1, whole process, per CPU-second", "cli1", "rg1"),
            Wall($"ReferenceScanner.ScanPath, {cores} threads, in process", "api", "rg"),
            PerCore("ReferenceScanner.ScanPath, 1 thread, in process, per CPU-second", "api1", "rg1"),
            PerCore("ReferenceScanner.ScanPath, 1 thread, every file mapped (MAP_POPULATE), per CPU-second", "api1map", "rg1"),
            PerCore("ReferenceScanner.ScanPath, 1 thread, every file read (pread, 1 MiB buffer), per CPU-second", "api1read", "rg1"),
        ];
        if (native is not null)
        {
            rows.InsertRange(4,
            [
                Wall($"NativeAOT tvix-fuse-build refscan, {cores} threads, whole process", "native", "rg"),
                Wall("NativeAOT tvix-fuse-build refscan -j 1, whole process", "native1", "rg1"),
                PerCore($"NativeAOT tvix-fuse-build refscan, {cores} threads, whole process, per CPU-second", "native", "rg"),
                PerCore("NativeAOT tvix-fuse-build refscan -j 1, whole process, per CPU-second", "native1", "rg1"),
            ]);
        }

        return Task.FromResult<IReadOnlyList<BenchResult>>(rows);
    }

    internal static string RandomNixHash(Random random) =>
        string.Create(NeedleSet.NixHashLength, random, static (chars, r) =>
        {
            for (int i = 0; i < chars.Length; i++)
            {
                chars[i] = NeedleSet.NixBase32Alphabet[r.Next(32)];
            }
        });

    /// <summary>Copies regular files and directories (up to <paramref name="limit"/> bytes); returns the bytes copied.</summary>
    internal static long CopyTree(string source, string destination, long limit)
    {
        long total = 0;
        foreach (string file in Directory.EnumerateFiles(source, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.ReparsePoint }).Order(StringComparer.Ordinal))
        {
            long length = new FileInfo(file).Length;
            if (total + length > limit)
            {
                continue;
            }

            string target = Path.Combine(destination, Path.GetRelativePath(source, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
            total += length;
        }

        return total;
    }

    /// <summary>Overwrites bytes in a few files of the copy with some of the needles (a few in the middle of big binaries, one across a 64 MiB line if a file is big enough).</summary>
    internal static HashSet<string> Plant(string tree, string[] needles, Random random)
    {
        var files = Directory.EnumerateFiles(tree, "*", SearchOption.AllDirectories)
            .Select(f => (Path: f, Length: new FileInfo(f).Length))
            .Where(f => f.Length > 4096)
            .OrderBy(f => f.Path, StringComparer.Ordinal)
            .ToList();
        var planted = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < Planted; i++)
        {
            var (path, length) = files[random.Next(files.Count)];
            string needle = needles[random.Next(needles.Length)];
            long offset = i == 0 && length > (64L << 20) + 64 ? (64L << 20) - 10 : random.NextInt64(0, length - needle.Length);
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Write);
            stream.Position = offset;
            stream.Write(Encoding.ASCII.GetBytes(needle));
            planted.Add(needle);
        }

        return planted;
    }

    private static void Check(string who, IEnumerable<string> found, HashSet<string> planted)
    {
        var set = found.ToHashSet(StringComparer.Ordinal);
        if (!set.SetEquals(planted))
        {
            throw new InvalidOperationException(
                $"{who} found {set.Count} needles, {planted.Count} were planted: missing [{string.Join(' ', planted.Except(set))}], extra [{string.Join(' ', set.Except(planted))}]");
        }
    }

    private static string RunTool(string tool, string needles, string tree, int? threads)
    {
        var output = Path.GetTempFileName();
        try
        {
            // A .dll is the framework-dependent tool (through dotnet); anything else the NativeAOT executable.
            bool managed = tool.EndsWith(".dll", StringComparison.Ordinal);
            List<string> args = managed ? [tool, "refscan", "--needles", needles, tree] : ["refscan", "--needles", needles, tree];
            if (threads is int t)
            {
                args.AddRange(["-j", t.ToString()]);
            }

            Measure.Process(managed ? "dotnet" : tool, args, output);
            return File.ReadAllText(output);
        }
        finally
        {
            File.Delete(output);
        }
    }

    private static IEnumerable<string> ParseOurs(string output) =>
        output.Split('\n', StringSplitOptions.RemoveEmptyEntries).SelectMany(line => line[(line.LastIndexOf(':') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries));

    private static string RunRg(string needles, string tree, bool oneThread)
    {
        var output = Path.GetTempFileName();
        try
        {
            List<string> args = ["-a", "-F", "-o", "-f", needles, tree];
            if (oneThread)
            {
                args.Insert(0, "-j1");
            }

            Measure.Process("rg", args, output);
            return File.ReadAllText(output);
        }
        finally
        {
            File.Delete(output);
        }
    }

    // rg -o prints "path:match" per match.
    private static IEnumerable<string> ParseRg(string output) =>
        output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(line => line[(line.LastIndexOf(':') + 1)..]);

    /// <summary>CPU seconds (user + system) from getrusage: of this process, or of the children it has waited for.</summary>
    private static unsafe partial class CpuTime
    {
        private const int RusageSelf = 0;
        private const int RusageChildren = -1;

        public static double Seconds(bool children)
        {
            // struct rusage starts with two struct timevals (user, system); 144 bytes in all on 64-bit Linux.
            long* usage = stackalloc long[18];
            if (GetRUsage(children ? RusageChildren : RusageSelf, usage) != 0)
            {
                throw new InvalidOperationException("getrusage failed");
            }

            return usage[0] + (usage[1] / 1e6) + usage[2] + (usage[3] / 1e6);
        }

        [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "getrusage")]
        private static partial int GetRUsage(int who, long* usage);
    }
}
