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
            results.AddRange(NativeToolKernels(context, context.Quick ? 50 : 400));
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

    /// <summary>
    /// The NativeAOT tool's kernels (src/Kernels: ILC compiles the tool itself for the x86-64 baseline, so it hashes with
    /// these libraries at the CPU's width) against this machine's JIT-compiled and precompiled kernels, the JIT's best:
    /// BLAKE3's hash_many over 1 MiB of whole chunks in memory, one thread, best of the interleaved rounds (probe's
    /// <c>hash-many</c>). A row per library level the CPU runs.
    /// </summary>
    private static IEnumerable<BenchResult> NativeToolKernels(BenchContext context, int rounds)
    {
        string probe = Path.Combine(context.RepoRoot, "tests", "Blake3JitProbe", "bin", "Release", "net10.0", "TvixFuseBuild.Blake3JitProbe.dll");
        string libraries = Path.Combine(context.RepoRoot, "src", "Kernels", "bin", "Release", "publish");
        int level = SimdKernelLibraryLevel(probe);
        var arguments = new List<string> { probe, "hash-many", "1048576", rounds.ToString(System.Globalization.CultureInfo.InvariantCulture) };
        for (int l = level; l >= 3; l--)
        {
            string path = Path.Combine(libraries, $"tvix-kernels-x86-64-v{l}.so");
            if (!File.Exists(path))
            {
                throw new InvalidOperationException($"{path} is missing; scripts/bench publishes it");
            }

            arguments.Add($"{path}:{l}");
        }

        var psi = new ProcessStartInfo("dotnet", arguments) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        using var process = Process.Start(psi) ?? throw new InvalidOperationException("cannot start dotnet");
        var stderr = process.StandardError.ReadToEndAsync();
        string[] lines = process.StandardOutput.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        process.WaitForExit();
        if (process.ExitCode != 0 || lines.Length < 2)
        {
            throw new InvalidOperationException($"{probe} hash-many failed ({process.ExitCode}): {string.Join('\n', lines)}{stderr.Result}");
        }

        // "own Vector512: 6.03 GB/s", then "tvix-kernels-x86-64-v4.so: 5.78 GB/s" per library.
        static (string Name, double Rate) Parse(string line) =>
            (line[..line.LastIndexOf(':')], double.Parse(line[(line.LastIndexOf(':') + 1)..].Replace("GB/s", "", StringComparison.Ordinal), System.Globalization.CultureInfo.InvariantCulture));
        var own = Parse(lines[0]);
        foreach (string line in lines.Skip(1))
        {
            var library = Parse(line);
            double ratio = library.Rate / own.Rate;
            string name = $"NativeAOT tool's kernels, `{library.Name}`, vs the JIT's ({own.Name}): BLAKE3 hash_many, 1 MiB in memory, 1 thread";
            Console.WriteLine($"  {name}: {library.Rate:0.00} GB/s vs {own.Rate:0.00} GB/s, {ratio:0.00}x");
            bool widest = line == lines[1];
            yield return new BenchResult(
                name, $"{library.Rate:0.00} GB/s", $"{own.Rate:0.00} GB/s", "JIT", ratio,
                widest ? ">= 0.95x (level with the JIT's best, issue 16)" : null, widest ? ratio >= 0.95 : null,
                $"(best of {rounds} interleaved rounds; the widest library is the one the tool loads here)");
        }
    }

    /// <summary>The x86-64 level the kernels libraries run at here (SimdKernelLibrary's check), from the probe.</summary>
    private static int SimdKernelLibraryLevel(string probe)
    {
        var psi = new ProcessStartInfo("dotnet", [probe, "x86-level"]) { RedirectStandardOutput = true, UseShellExecute = false };
        using var process = Process.Start(psi) ?? throw new InvalidOperationException("cannot start dotnet");
        string output = process.StandardOutput.ReadToEnd().Trim();
        process.WaitForExit();
        return int.Parse(output, System.Globalization.CultureInfo.InvariantCulture);
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
