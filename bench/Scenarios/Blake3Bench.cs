using System.Diagnostics;
using System.Runtime.InteropServices;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Hashing;

namespace TvixFuseBuild.Bench.Scenarios;

/// <summary>
/// <c>scripts/bench blake3</c>: our BLAKE3 against b3sum on 1 GiB of random bytes, kept in /dev/shm so neither side
/// waits for a disk. Runs alternate ours/peer; figures are medians. Wall-clock ratios are the figures; CPU-time
/// ratios are noted too, since on a shared machine they are the steadier of the two.
/// </summary>
internal sealed partial class Blake3Bench : IBenchScenario
{
    public string Name => "blake3";

    public string Description => "BLAKE3 throughput vs b3sum: 1 GiB on one thread, and a 1 GiB file with all cores; first-hash latency precompiled vs JIT";

    public Task<IReadOnlyList<BenchResult>> RunAsync(BenchContext context, CancellationToken cancellationToken)
    {
        long size = context.Quick ? 64L << 20 : 1L << 30;
        int repetitions = context.Quick ? 1 : 7;
        string b3sum = FindB3sum();
        string path = TempFilePath(context, size);
        try
        {
            Console.WriteLine($"  preparing {size >> 20} MiB of random bytes in {path}");
            byte[] data = GC.AllocateUninitializedArray<byte>((int)size, pinned: true);
            new Random(42).NextBytes(data);
            File.WriteAllBytes(path, data);

            // Both sides must agree before their speeds mean anything.
            string ours = Blake3.Hash(data).ToHex();
            string theirs = RunB3sum(b3sum, ["--num-threads", "1", path]).Output;
            if (ours != theirs)
            {
                throw new InvalidOperationException($"BLAKE3 disagrees with b3sum on {path}: ours {ours}, b3sum {theirs}");
            }

            string amount = size >= 1L << 30 ? $"{size >> 30} GiB" : $"{size >> 20} MiB";
            var results = new List<BenchResult>
            {
                Compare(
                    $"{amount} in memory, 1 thread (`Blake3.Hash`) vs `b3sum --num-threads 1` on the file", size, repetitions, cancellationToken,
                    () => Blake3.Hash(data), () => RunB3sum(b3sum, ["--num-threads", "1", path]), "b3sum --num-threads 1", 0.7),
                Compare(
                    $"{amount} file, all {Environment.ProcessorCount} cores (`Blake3.HashFile`) vs `b3sum`", size, repetitions, cancellationToken,
                    () => Blake3.HashFile(path), () => RunB3sum(b3sum, [path]), "b3sum", 0.7),
                Compare(
                    $"{amount} file, 1 thread (`HashFile(parallel: false)`) vs `b3sum --num-threads 1`", size, repetitions, cancellationToken,
                    () => HashFileSerial(path), () => RunB3sum(b3sum, ["--num-threads", "1", path]), "b3sum --num-threads 1", null),
            };
            results.Add(FirstHash(context, context.Quick ? 3 : 11, cancellationToken));
            return Task.FromResult<IReadOnlyList<BenchResult>>(results);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static BenchResult Compare(
        string name, long bytes, int repetitions, CancellationToken cancellationToken,
        Func<B3Digest> ours, Func<(double Seconds, double CpuSeconds, string Output)> peer, string peerName, double? target)
    {
        ours();
        peer();
        var oursWall = new List<double>();
        var oursCpu = new List<double>();
        var peerWall = new List<double>();
        var peerCpu = new List<double>();
        for (int i = 0; i < repetitions; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            double cpu0 = ProcessCpuSeconds();
            var sw = Stopwatch.StartNew();
            ours();
            oursWall.Add(sw.Elapsed.TotalSeconds);
            oursCpu.Add(ProcessCpuSeconds() - cpu0);

            var (seconds, cpuSeconds, _) = peer();
            peerWall.Add(seconds);
            peerCpu.Add(cpuSeconds);
        }

        double ourTime = Median(oursWall), peerTime = Median(peerWall);
        double ratio = peerTime / ourTime;
        double cpuRatio = Median(peerCpu) / Median(oursCpu);
        Console.WriteLine($"  {name}: ours {Measure.Rate(bytes, ourTime)}, {peerName} {Measure.Rate(bytes, peerTime)}, {ratio:0.00}x (CPU time {cpuRatio:0.00}x)");
        return new BenchResult(
            name, Measure.Rate(bytes, ourTime), Measure.Rate(bytes, peerTime), peerName, ratio,
            target is null ? null : $">= {target:0.0}x", target is null ? null : ratio >= target,
            $"(CPU time: ours {Measure.Rate(bytes, Median(oursCpu))}, peer {Measure.Rate(bytes, Median(peerCpu))}, {cpuRatio:0.00}x; {repetitions} alternating runs)");
    }

    /// <summary>
    /// The first hash of 1 MiB in a fresh process (tests/Blake3JitProbe), with the precompiled BLAKE3 code against the
    /// same probe run with <c>DOTNET_ReadyToRun=0</c>, where the JIT compiles everything at first use as it compiled the
    /// kernels before they were precompiled. Also counts the methods of the hashing namespace the JIT compiled.
    /// </summary>
    private static BenchResult FirstHash(BenchContext context, int repetitions, CancellationToken cancellationToken)
    {
        string probe = Path.Combine(context.RepoRoot, "tests", "Blake3JitProbe", "bin", "Release", "net10.0", "TvixFuseBuild.Blake3JitProbe.dll");
        if (!File.Exists(probe))
        {
            throw new InvalidOperationException($"{probe} is missing; scripts/bench builds it");
        }

        var ours = new List<double>();
        var jit = new List<double>();
        int oursJitted = 0, jitJitted = 0;
        for (int i = 0; i < repetitions; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            (double microseconds, int jitted) = RunProbe(probe, null);
            ours.Add(microseconds);
            oursJitted = Math.Max(oursJitted, jitted);
            (microseconds, jitted) = RunProbe(probe, "0");
            jit.Add(microseconds);
            jitJitted = Math.Max(jitJitted, jitted);
        }

        double oursMs = Median(ours) / 1000, jitMs = Median(jit) / 1000;
        double ratio = jitMs / oursMs;
        string name = "first hash of 1 MiB in a fresh process (`Blake3.Hash`), precompiled vs all JIT (`DOTNET_ReadyToRun=0`)";
        Console.WriteLine($"  {name}: ours {oursMs:0.00} ms ({oursJitted} BLAKE3 methods JIT-compiled), JIT {jitMs:0.00} ms ({jitJitted}), {ratio:0.0}x");
        return new BenchResult(
            name, $"{oursMs:0.00} ms", $"{jitMs:0.00} ms", "JIT", ratio, "0 BLAKE3 methods JIT-compiled", oursJitted == 0,
            $"(BLAKE3 methods JIT-compiled during the hash: ours {oursJitted}, JIT {jitJitted}; medians of {repetitions} alternating runs, " +
            "time of the `Blake3.Hash` call only)");
    }

    private static (double Microseconds, int Jitted) RunProbe(string probe, string? readyToRun)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(probe);
        if (readyToRun is not null)
        {
            psi.Environment["DOTNET_ReadyToRun"] = readyToRun;
        }

        using var process = Process.Start(psi) ?? throw new InvalidOperationException("cannot start dotnet");
        var stderr = process.StandardError.ReadToEndAsync();
        string[] lines = process.StandardOutput.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        process.WaitForExit();
        string? elapsed = lines.FirstOrDefault(l => l.StartsWith("elapsed_us ", StringComparison.Ordinal));
        if (process.ExitCode != 0 || elapsed is null)
        {
            throw new InvalidOperationException($"{probe} failed ({process.ExitCode}): {string.Join('\n', lines)}{stderr.Result}");
        }

        int jitted = lines.Count(l => l.StartsWith("jit TvixFuseBuild.Castore.Hashing.", StringComparison.Ordinal));
        return (double.Parse(elapsed["elapsed_us ".Length..], System.Globalization.CultureInfo.InvariantCulture), jitted);
    }

    private static B3Digest HashFileSerial(string path)
    {
        using var file = File.OpenHandle(path);
        return Blake3.HashFile(file, RandomAccess.GetLength(file), parallel: false);
    }

    private static (double Seconds, double CpuSeconds, string Output) RunB3sum(string b3sum, string[] arguments)
    {
        string output = Path.GetTempFileName();
        try
        {
            double cpu0 = ChildrenCpuSeconds();
            double seconds = Measure.Process(b3sum, ["--no-names", .. arguments], output);
            return (seconds, ChildrenCpuSeconds() - cpu0, File.ReadAllText(output).Trim());
        }
        finally
        {
            File.Delete(output);
        }
    }

    private static string TempFilePath(BenchContext context, long size)
    {
        // /dev/shm keeps the file in memory, as the in-memory buffer is; without room there, the scratch directory.
        const string shm = "/dev/shm";
        bool roomInShm = Directory.Exists(shm) && new DriveInfo(shm).AvailableFreeSpace > 2 * size;
        return Path.Combine(roomInShm ? shm : context.WorkDir, $"tvix-fuse-bench-blake3-{Environment.ProcessId}.bin");
    }

    private static string FindB3sum()
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, "b3sum");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new InvalidOperationException("b3sum is not installed; scripts/setup installs it");
    }

    private static double Median(List<double> values)
    {
        values.Sort();
        return values[values.Count / 2];
    }

    private static double ProcessCpuSeconds() => Rusage(RusageSelf);

    // Children are counted once waited for, which Process.WaitForExit has done.
    private static double ChildrenCpuSeconds() => Rusage(RusageChildren);

    private const int RusageSelf = 0;
    private const int RusageChildren = -1;

    private static double Rusage(int who)
    {
        if (GetRusage(who, out var usage) != 0)
        {
            throw new InvalidOperationException($"getrusage failed: errno {Marshal.GetLastPInvokeError()}");
        }

        return usage.UserSeconds + (usage.UserMicroseconds / 1e6) + usage.SystemSeconds + (usage.SystemMicroseconds / 1e6);
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct RUsage
    {
        public long UserSeconds;
        public long UserMicroseconds;
        public long SystemSeconds;
        public long SystemMicroseconds;
        private unsafe fixed long _rest[14];
    }

    [LibraryImport("libc", EntryPoint = "getrusage", SetLastError = true)]
    private static partial int GetRusage(int who, out RUsage usage);
}
