using System.Diagnostics;
using System.Globalization;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Fuse;

namespace TvixFuseBuild.Bench.Scenarios;

/// <summary>
/// What a build pays before its command sees its inputs: from checking the inputs and calling
/// <see cref="CastoreMount.MountAsync"/> to the first successful stat of an input's file through the mount. 10 inputs
/// of a busybox-like shape (bin/ with 400 applet symlinks and the binary) in a local store. "before" is main's way (every
/// input's directory read and decoded before the mount, every worker started with it), "after" the lazy one
/// (existence checked with a stat of the directory's file, one worker started, more when all are busy). In-process,
/// alternating, after a warm-up of each; medians.
/// </summary>
internal sealed class MountBench : IBenchScenario
{
    public const string OnceArgument = "--mount-once";

    private const int Inputs = 10;

    public string Name => "mount";

    public string Description => "FUSE mount to the first answered lookup, 10 inputs: main's eager way vs lazy, and the NativeAOT tool's mount from its process start";

    public async Task<IReadOnlyList<BenchResult>> RunAsync(BenchContext context, CancellationToken cancellationToken)
    {
        if (Environment.UserName != "root")
        {
            throw new InvalidOperationException("the mount benchmark needs root (it mounts)");
        }

        await using var store = CastoreStore.Open("local://" + Path.Combine(context.WorkDir, "store"));
        var nodes = await CreateInputsAsync(store, cancellationToken);
        string mountpoint = Path.Combine(context.WorkDir, "mnt");
        Directory.CreateDirectory(mountpoint);
        string probe = Path.Combine(mountpoint, "input-9", "bin", "busybox");

        await MeasureAsync(store, nodes, mountpoint, probe, eager: true, cancellationToken);
        await MeasureAsync(store, nodes, mountpoint, probe, eager: false, cancellationToken);
        var before = new List<Sample>();
        var after = new List<Sample>();
        int repetitions = context.Quick ? 5 : 31;
        for (int i = 0; i < repetitions; i++)
        {
            before.Add(await MeasureAsync(store, nodes, mountpoint, probe, eager: true, cancellationToken));
            after.Add(await MeasureAsync(store, nodes, mountpoint, probe, eager: false, cancellationToken));
        }

        // Cold: each mount the first in a fresh process (JIT, first thread starts), as in a build.
        var coldBefore = new List<Sample>();
        var coldAfter = new List<Sample>();
        string nodesFile = Path.Combine(context.WorkDir, "nodes");
        await File.WriteAllLinesAsync(nodesFile, nodes.OfType<DirectoryNode>().Select(n => $"{n.Name} {n.Digest} {n.Size}"), cancellationToken);
        for (int i = 0; i < (context.Quick ? 3 : 11); i++)
        {
            coldBefore.Add(RunOnce(context.WorkDir, nodesFile, eager: true));
            coldAfter.Add(RunOnce(context.WorkDir, nodesFile, eager: false));
        }

        double cb = Median(coldBefore, s => s.Total), ca = Median(coldAfter, s => s.Total);
        double b = Median(before, s => s.Total), a = Median(after, s => s.Total);
        List<BenchResult> rows =
        [
            new BenchResult($"mount to first answered lookup, {Inputs} inputs, first in a fresh process", Measure.Time(ca), Measure.Time(cb), "main's eager mount", cb / ca, null, null,
                $"after: {Parts(coldAfter)}; before: {Parts(coldBefore)}; {coldBefore.Count} alternating processes"),
            new BenchResult($"mount to first answered lookup, {Inputs} inputs, warm (same process)", Measure.Time(a), Measure.Time(b), "main's eager mount", b / a, null, null,
                $"after: {Parts(after)}; before: {Parts(before)}; {repetitions} alternating runs"),
        ];

        // The same with the NativeAOT tool (what a build runs), from its process start, beside a NativeAOT hello world's
        // whole process: the difference is what the mount costs.
        if (Environment.GetEnvironmentVariable("TVIX_FUSE_BUILD_NATIVE") is { Length: > 0 } native &&
            Environment.GetEnvironmentVariable("TVIX_BENCH_HELLO_AOT") is { Length: > 0 } hello)
        {
            string toolNodes = Path.Combine(context.WorkDir, "nodes.tool");
            await File.WriteAllLinesAsync(
                toolNodes, nodes.OfType<DirectoryNode>().Select(n => $"{n.Name}\tdirectory\t{n.Digest}\t{n.Size}"), cancellationToken);
            string[] arguments = ["--store", "local://" + Path.Combine(context.WorkDir, "store"), "mount", mountpoint, "--nodes", toolNodes];
            NativeFirstLookup(native, arguments, probe);
            var tool = new List<double>();
            var helloTimes = new List<double>();
            for (int i = 0; i < (context.Quick ? 3 : 21); i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                tool.Add(NativeFirstLookup(native, arguments, probe));
                helloTimes.Add(Measure.Process(hello, [], "/dev/null"));
            }

            double t = tool.Order().ElementAt(tool.Count / 2), h = helloTimes.Order().ElementAt(helloTimes.Count / 2);
            rows.Add(new BenchResult(
                $"NativeAOT `tvix-fuse-build mount --nodes`, {Inputs} inputs: process start to the first answered lookup", Measure.Time(t), Measure.Time(h),
                "NativeAOT hello world, whole process", h / t, null, null,
                $"(the mount's part, ours minus the hello world's process: {Measure.Time(t - h)}; medians of {tool.Count} interleaved runs)"));
        }

        return rows;
    }

    /// <summary>Starts the tool's mount and stats <paramref name="probe"/> until it answers; the time from the start to then.</summary>
    private static double NativeFirstLookup(string tool, string[] arguments, string probe)
    {
        var start = new ProcessStartInfo(tool, arguments) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        var clock = Stopwatch.StartNew();
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"cannot start {tool}");
        while (!File.Exists(probe))
        {
            if (process.HasExited)
            {
                throw new InvalidOperationException($"{tool} mount exited ({process.ExitCode}): {process.StandardError.ReadToEnd()}");
            }

            if (clock.Elapsed > TimeSpan.FromSeconds(30))
            {
                process.Kill();
                throw new InvalidOperationException($"{tool} mount: {probe} did not appear in 30 s");
            }
        }

        double elapsed = clock.Elapsed.TotalSeconds;
        // SIGTERM, the tool's own way out (it unmounts); SIGKILL would leave the detaching to its watchdog.
        using (var term = Process.Start("kill", ["-TERM", process.Id.ToString(CultureInfo.InvariantCulture)]))
        {
            term.WaitForExit();
        }

        if (!process.WaitForExit(TimeSpan.FromSeconds(30)))
        {
            process.Kill();
            throw new InvalidOperationException($"{tool} mount did not stop within 30 s of SIGTERM");
        }

        return elapsed;
    }

    private static Sample RunOnce(string work, string nodesFile, bool eager)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true };
        foreach (string argument in new[] { typeof(MountBench).Assembly.Location, OnceArgument, work, nodesFile, eager ? "eager" : "lazy" })
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start) ?? throw new InvalidOperationException("cannot start the bench's child");
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"the bench's cold mount failed (exit {process.ExitCode}): {output}");
        }

        double[] f = output.Trim().Split(' ').Select(f => double.Parse(f, CultureInfo.InvariantCulture)).ToArray();
        return new Sample(f[0], f[1], f[2], f[3], f[4], f[5], (int)f[6]);
    }

    /// <summary>The child: one mount of the inputs listed in the nodes file, its figures printed on one line.</summary>
    public static async Task<int> OnceAsync(string[] args)
    {
        string work = args[0];
        var nodes = File.ReadAllLines(args[1]).Select(line => line.Split(' '))
            .Select(f => (Node)new DirectoryNode(f[0], B3Digest.Parse(f[1]), ulong.Parse(f[2]))).ToList();
        await using var store = CastoreStore.Open("local://" + Path.Combine(work, "store"));
        string mountpoint = Path.Combine(work, "mnt");
        var sample = await MeasureAsync(store, nodes, mountpoint, Path.Combine(mountpoint, "input-9", "bin", "busybox"), args[2] == "eager", default);
        Console.WriteLine(FormattableString.Invariant(
            $"{sample.Total} {sample.Check} {sample.Mount} {sample.Workers} {sample.Init} {sample.Lookup} {sample.WorkerCount}"));
        return 0;
    }

    private static string Parts(List<Sample> samples) =>
        $"check inputs {Ms(Median(samples, s => s.Check))}, mount(2) {Ms(Median(samples, s => s.Mount))}, " +
        $"start workers {Ms(Median(samples, s => s.Workers))} ({samples[^1].WorkerCount} running at the end), " +
        $"INIT {Ms(Median(samples, s => s.Init))}, first lookup {Ms(Median(samples, s => s.Lookup))}, " +
        $"the rest of MountAsync (stale-mount scan, setting up) {Ms(Median(samples, s => s.Total - s.Check - s.Mount - s.Workers - s.Init - s.Lookup))}";

    private static string Ms(double seconds) => $"{seconds * 1000:0.00} ms";

    private static async Task<Sample> MeasureAsync(
        CastoreStore store, IReadOnlyList<Node> nodes, string mountpoint, string probe, bool eager, CancellationToken cancellationToken)
    {
        long start = Stopwatch.GetTimestamp();
        foreach (var node in nodes.OfType<DirectoryNode>())
        {
            bool present = eager
                ? await store.Directories.GetAsync(node.Digest, cancellationToken) is not null
                : await store.Directories.HasAsync(node.Digest, cancellationToken);
            if (!present)
            {
                throw new InvalidOperationException($"input {node.Name} is missing from the bench store");
            }
        }

        double check = Stopwatch.GetElapsedTime(start).TotalSeconds;
        await using var mount = await CastoreMount.MountAsync(
            mountpoint, nodes, store, new CastoreMountOptions { EagerWorkers = eager }, cancellationToken);
        double mounted = Stopwatch.GetElapsedTime(start).TotalSeconds;
        if (!File.Exists(probe))
        {
            throw new InvalidOperationException($"{probe} is not visible through the mount");
        }

        double total = Stopwatch.GetElapsedTime(start).TotalSeconds;
        var timings = mount.Timings;
        return new Sample(total, check, timings.Mount.TotalSeconds, timings.StartWorkers.TotalSeconds, timings.Init.TotalSeconds,
            total - mounted, mount.WorkerCount);
    }

    private static async Task<IReadOnlyList<Node>> CreateInputsAsync(CastoreStore store, CancellationToken cancellationToken)
    {
        var nodes = new List<Node>();
        for (int i = 0; i < Inputs; i++)
        {
            byte[] content = new byte[64 * 1024];
            Random.Shared.NextBytes(content);
            B3Digest digest;
            await using (var writer = store.Blobs.OpenWrite())
            {
                await writer.WriteAsync(content, cancellationToken);
                digest = await writer.CompleteAsync(cancellationToken);
            }

            var bin = new List<Node> { new FileNode("busybox", digest, (ulong)content.Length, true) };
            for (int j = 0; j < 400; j++)
            {
                bin.Add(new SymlinkNode($"applet-{j:000}", SymlinkTarget.Create("busybox")));
            }

            var binDirectory = CastoreDirectory.FromNodes(bin);
            await store.Directories.PutAsync(binDirectory, cancellationToken);
            var top = CastoreDirectory.FromNodes([new DirectoryNode("bin", binDirectory.Digest, binDirectory.Size)]);
            await store.Directories.PutAsync(top, cancellationToken);
            nodes.Add(new DirectoryNode($"input-{i}", top.Digest, top.Size));
        }

        return nodes;
    }

    private static double Median(List<Sample> samples, Func<Sample, double> field)
    {
        var sorted = samples.Select(field).Order().ToList();
        return sorted[sorted.Count / 2];
    }

    private readonly record struct Sample(double Total, double Check, double Mount, double Workers, double Init, double Lookup, int WorkerCount);
}
