using System.Diagnostics;
using System.Globalization;
using TvixFuseBuild.Castore;

namespace TvixFuseBuild.Bench.Scenarios;

/// <summary>
/// Whole processes, this build against a baseline build (<c>scripts/bench remote --baseline COMMIT</c>, or
/// TVIX_FUSE_BUILD_BASELINE_TOOL): each build's <c>serve</c> on its own unix socket over the same local store, and each
/// build's client against its own server, alternating within every repetition. CPU is counted for both processes: the
/// server's from /proc/PID/stat around the client's run, the client's from this process's reaped-children times.
/// </summary>
internal sealed partial class RemoteBench
{
    private const double ClockTicks = 100; // USER_HZ: what /proc/*/stat counts in on Linux

    /// <summary>The baseline build's TvixFuseBuild.Tool.dll, when one is given.</summary>
    private static string? BaselineTool =>
        Environment.GetEnvironmentVariable("TVIX_FUSE_BUILD_BASELINE_TOOL") is { Length: > 0 } tool
            ? File.Exists(tool) ? tool : throw new InvalidOperationException($"TVIX_FUSE_BUILD_BASELINE_TOOL: {tool} does not exist")
            : null;

    /// <summary>
    /// <c>cat</c> of the large blob through <c>--store grpc+unix://…?cache=none</c> (the server lists 1 MiB chunks; the
    /// client verifies each and the whole), stdout to /dev/null: the most direct whole-process read the CLI offers.
    /// </summary>
    private static IEnumerable<BenchResult> CatOverProcesses(BenchContext context, B3Digest digest, long size, CancellationToken cancellationToken)
    {
        string root = Path.Combine(context.WorkDir, "cat");
        Directory.CreateDirectory(root);
        string store = "local://" + Path.Combine(context.WorkDir, "store");
        var environment = new Dictionary<string, string> { ["XDG_DATA_HOME"] = Path.Combine(root, "data"), ["CI"] = "true" };
        string? baselineTool = BaselineTool;

        using var server = Served.Start(BenchData.Tool, store, Path.Combine(root, "new.sock"), environment);
        using var baselineServer = baselineTool is null ? null : Served.Start(baselineTool, store, Path.Combine(root, "old.sock"), environment);
        ProcessRun Cat(string tool, string address, Served? through) =>
            RunToNull(tool, ["--store", address, "cat", digest.ToString()], environment, through);

        // Warm-up: the page cache, each server's chunk list of the blob, the local store's verification.
        Cat(BenchData.Tool, server.Address("cache=none"), server);
        Cat(BenchData.Tool, store, null);
        if (baselineServer is not null)
        {
            Cat(baselineTool!, baselineServer.Address("cache=none"), baselineServer);
        }

        var ours = new List<ProcessRun>();
        var baseline = new List<ProcessRun>();
        var local = new List<ProcessRun>();
        int repetitions = context.Quick ? 3 : 7;
        for (int i = 0; i < repetitions; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            // Alternate which build goes first, so that neither always follows the other's page-cache and CPU state.
            if (baselineServer is not null && i % 2 == 1)
            {
                baseline.Add(Cat(baselineTool!, baselineServer.Address("cache=none"), baselineServer));
            }

            ours.Add(Cat(BenchData.Tool, server.Address("cache=none"), server));
            if (baselineServer is not null && i % 2 == 0)
            {
                baseline.Add(Cat(baselineTool!, baselineServer.Address("cache=none"), baselineServer));
            }

            local.Add(Cat(BenchData.Tool, store, null));
            Console.WriteLine(
                $"   cat rep {i + 1}: this build {ours[^1].Describe(size)}" +
                (baseline.Count > 0 ? $", baseline {baseline[^1].Describe(size)}" : "") + $", local store {local[^1].Describe(size)}");
        }

        string what = $"cat of a {size >> 20} MiB blob over grpc+unix, whole processes (serve + client, no cache)";
        var o = ProcessRun.Medians(ours);
        var l = ProcessRun.Medians(local);
        var results = new List<BenchResult>
        {
            new($"{what}, this build", Rate(size, o.Wall), Rate(size, l.Wall), "cat from the local store", l.Wall / o.Wall, null, null,
                $"1 MiB chunks, each verified, and the whole blob; CPU per GiB: {o.CpuPerGiB(size)} vs {l.CpuPerGiB(size)}"),
        };
        if (baseline.Count > 0)
        {
            var b = ProcessRun.Medians(baseline);
            results.Add(new($"{what}, this build vs the baseline", Rate(size, o.Wall), Rate(size, b.Wall), "baseline build (its serve and client)",
                b.Wall / o.Wall, "MB/s no worse than the baseline (>= 0.95x: run-to-run noise)", b.Wall / o.Wall >= 0.95,
                $"{repetitions} alternating runs, medians"));
            results.Add(new($"{what}: CPU per GiB, both processes, this build vs the baseline", o.CpuPerGiB(size), b.CpuPerGiB(size), "baseline build",
                b.TotalCpu / o.TotalCpu, "CPU per GiB no worse than the baseline (>= 0.95x)", b.TotalCpu / o.TotalCpu >= 0.95,
                $"client {o.ClientCpu / (size / (double)(1L << 30)):0.00} s + server {o.ServerCpu / (size / (double)(1L << 30)):0.00} s per GiB; " +
                $"baseline client {b.ClientCpu / (size / (double)(1L << 30)):0.00} s + server {b.ServerCpu / (size / (double)(1L << 30)):0.00} s"));
        }

        return results;
    }

    /// <summary>
    /// Runs <c>dotnet TOOL ARGS</c> with stdout to /dev/null (a pipe would cost this process the copying); returns the
    /// wall time, the client's CPU and, when <paramref name="server"/> is given, the server's CPU meanwhile.
    /// </summary>
    private static ProcessRun RunToNull(string tool, IEnumerable<string> arguments, IReadOnlyDictionary<string, string> environment, Served? server)
    {
        var psi = new ProcessStartInfo("sh") { RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in (string[])["-c", "exec dotnet \"$@\" >/dev/null", "sh", tool, .. arguments])
        {
            psi.ArgumentList.Add(a);
        }

        foreach (var (key, value) in environment)
        {
            psi.Environment[key] = value;
        }

        double serverBefore = server?.CpuSeconds() ?? 0;
        double childrenBefore = ReapedChildrenCpu();
        var stopwatch = Stopwatch.StartNew();
        using var process = Process.Start(psi) ?? throw new InvalidOperationException("cannot start sh");
        var stderr = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        double wall = stopwatch.Elapsed.TotalSeconds;
        double client = ReapedChildrenCpu() - childrenBefore;
        double serverCpu = (server?.CpuSeconds() ?? 0) - serverBefore;
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{tool} {string.Join(' ', arguments)} exited {process.ExitCode}: {stderr.Result}");
        }

        return new ProcessRun(wall, client, serverCpu);
    }

    /// <summary>User + system seconds of this process's children that have been waited for (/proc/self/stat cutime, cstime).</summary>
    private static double ReapedChildrenCpu()
    {
        var fields = StatFields("/proc/self/stat");
        return (long.Parse(fields[13], CultureInfo.InvariantCulture) + long.Parse(fields[14], CultureInfo.InvariantCulture)) / ClockTicks;
    }

    /// <summary>The fields of a /proc/PID/stat after the command name (whose parentheses may hold spaces): [0] is the state.</summary>
    private static string[] StatFields(string path)
    {
        string text = File.ReadAllText(path);
        return text[(text.LastIndexOf(')') + 2)..].Split(' ');
    }

    /// <summary>One client run: wall seconds, the client's CPU seconds, the server's CPU seconds meanwhile.</summary>
    private readonly record struct ProcessRun(double Wall, double ClientCpu, double ServerCpu)
    {
        public double TotalCpu => ClientCpu + ServerCpu;

        public string Describe(long size) => $"{Rate(size, Wall)} (CPU {ClientCpu:0.00} + {ServerCpu:0.00} s)";

        public string CpuPerGiB(long size) => $"{TotalCpu / (size / (double)(1L << 30)):0.00} s CPU/GiB";

        public static ProcessRun Medians(List<ProcessRun> runs) => new(
            BenchData.Median([.. runs.Select(r => r.Wall)]),
            BenchData.Median([.. runs.Select(r => r.ClientCpu)]),
            BenchData.Median([.. runs.Select(r => r.ServerCpu)]));
    }

    /// <summary>A <c>tvix-fuse-build serve</c> of some build over a store, on a unix socket; killed when disposed.</summary>
    private sealed class Served : IDisposable
    {
        private readonly Process _process;

        private Served(Process process, string socket)
        {
            _process = process;
            Socket = socket;
        }

        public string Socket { get; }

        public static Served Start(string tool, string store, string socket, IReadOnlyDictionary<string, string> environment, params string[] extra) =>
            new(StartServer(tool, ["--store", store, "serve", "--listen", "unix:" + socket, .. extra], environment), socket);

        /// <summary>The store address of this server, with <paramref name="query"/> (e.g. <c>cache=none</c>).</summary>
        public string Address(string query) => $"grpc+unix://{Socket}?{query}";

        public double CpuSeconds()
        {
            var fields = StatFields($"/proc/{_process.Id}/stat");
            return (long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)) / ClockTicks;
        }

        public void Dispose()
        {
            _process.Kill(entireProcessTree: false); // SIGKILL is fine here: the server holds no mount, and its socket dir goes with the work dir
            _process.WaitForExit();
            _process.Dispose();
        }
    }
}
