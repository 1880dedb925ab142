using System.Diagnostics;
using System.Text.Json;
using TvixFuseBuild.Sandbox;

namespace TvixFuseBuild.Bench.Scenarios;

/// <summary>
/// A static <c>busybox true</c> in the full sandbox with 10 and 1,000 inputs bound read-only into a writable
/// nix/store, against bwrap and runc doing the same (one read-only bind per input). Runs are interleaved; medians.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
internal sealed class SandboxBench : IBenchScenario
{
    public string Name => "sandbox";

    public string Description => "busybox true in the sandbox, 10 and 1,000 inputs, vs bwrap and runc";

    public async Task<IReadOnlyList<BenchResult>> RunAsync(BenchContext context, CancellationToken cancellationToken)
    {
        var results = new List<BenchResult>();
        string root = context.WorkDir;
        File.SetUnixFileMode(root, (UnixFileMode)0x1ED); // the root-mode build user must reach the trees
        int repetitions = context.Quick ? 3 : 11;
        var native = InitLauncher.Get();
        var managed = InitLauncher.GetManaged();

        foreach (int n in new[] { 10, 1000 })
        {
            var tree = BusyboxTree.Create(Path.Combine(root, $"n{n}"), n);
            var spec = tree.Spec();
            string bundle = tree.RuncBundle();

            // Warm up each once (page cache, JIT of the caller, runc's first cgroup).
            await RunOursAsync(spec, native, cancellationToken);
            await RunOursAsync(spec, managed, cancellationToken);
            RunBwrap(tree);
            RunRunc(bundle);

            var ours = new List<double>();
            var oursManaged = new List<double>();
            var bwrap = new List<double>();
            var runc = new List<double>();
            var setups = new List<double>();
            var oursCpu = new List<double>();
            var callerCpu = new List<double>();
            var runcCpu = new List<double>();
            for (int i = 0; i < repetitions; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var cpu = Cpu.Start(includeSelf: true);
                double self = Environment.CpuUsage.TotalTime.TotalSeconds;
                var sw = Stopwatch.StartNew();
                var result = await RunOursAsync(spec, native, cancellationToken);
                ours.Add(sw.Elapsed.TotalSeconds);
                callerCpu.Add(Environment.CpuUsage.TotalTime.TotalSeconds - self);
                oursCpu.Add(cpu.Stop());
                setups.Add(result.SetupTime.TotalSeconds);

                sw.Restart();
                await RunOursAsync(spec, managed, cancellationToken);
                oursManaged.Add(sw.Elapsed.TotalSeconds);

                bwrap.Add(Time(() => RunBwrap(tree))); // its CPU is not measurable this way: bwrap does not reap its namespace child

                cpu = Cpu.Start(includeSelf: false);
                runc.Add(Time(() => RunRunc(bundle)));
                runcCpu.Add(cpu.Stop());
            }

            double o = Median(ours), m = Median(oursManaged), b = Median(bwrap), r = Median(runc);
            string cpuNote = $"CPU (user+sys, whole process tree): ours {Measure.Time(Median(oursCpu))} (of which the caller's process {Measure.Time(Median(callerCpu))}), " +
                $"runc {Measure.Time(Median(runcCpu))}";
            string note = $"(setup until the command started: {Measure.Time(Median(setups))}; {cpuNote}; {repetitions} interleaved runs, medians)";
            // Issue 16: with 10 inputs no slower than runc and within 2x of bwrap; with 1,000 still at least 2x runc.
            results.Add(n == 10
                ? new BenchResult($"busybox true, {n} inputs", Measure.Time(o), Measure.Time(r), "runc", r / o, "no slower than runc", r / o >= 1.0, note)
                : new BenchResult($"busybox true, {n} inputs", Measure.Time(o), Measure.Time(r), "runc", r / o, ">= 2x runc", r / o >= 2.0, note));
            results.Add(n == 10
                ? new BenchResult($"busybox true, {n} inputs", Measure.Time(o), Measure.Time(b), "bwrap", b / o, "within 2x of bwrap (>= 0.5x)", b / o >= 0.5)
                : new BenchResult($"busybox true, {n} inputs", Measure.Time(o), Measure.Time(b), "bwrap", b / o, null, null));
            results.Add(new BenchResult($"busybox true, {n} inputs", Measure.Time(o), Measure.Time(m), "ours, managed init (dotnet exec)", m / o, null, null));
        }

        // Where our time goes: the pieces measured on their own.
        var launcherPieces = Breakdown(native, managed, repetitions);
        results.Add(new BenchResult("breakdown", launcherPieces, "", "-", 1, null, null));
        return results;
    }

    private static async Task<SandboxResult> RunOursAsync(SandboxSpec spec, InitLauncher launcher, CancellationToken cancellationToken)
    {
        var result = await SandboxRunner.RunAsync(spec, launcher, null, cancellationToken);
        if (!result.Succeeded)
        {
            throw new InvalidOperationException($"sandbox: {result}: {result.LogTail}");
        }

        return result;
    }

    private static void RunBwrap(BusyboxTree tree) => Measure.Process("bwrap", tree.BwrapArgumentList());

    internal static void RunRunc(string bundle) =>
        Measure.Process("runc", ["run", "--bundle", bundle, "tvix-bench-" + Guid.NewGuid().ToString("N")[..12]]);

    /// <summary>CPU time of this process (optionally) plus every descendant it reaped since <see cref="Start"/>.</summary>
    private readonly struct Cpu(bool includeSelf, double start)
    {
        public static Cpu Start(bool includeSelf) => new(includeSelf, Now(includeSelf));

        public double Stop() => Now(includeSelf) - start;

        private static unsafe double Now(bool includeSelf)
        {
            long* usage = stackalloc long[18]; // struct rusage: two timevals first
            getrusage(-1 /* RUSAGE_CHILDREN */, usage);
            double children = usage[0] + usage[1] / 1e6 + usage[2] + usage[3] / 1e6;
            return includeSelf ? children + Environment.CpuUsage.TotalTime.TotalSeconds : children;
        }

        [System.Runtime.InteropServices.DllImport("libc")]
        private static extern unsafe int getrusage(int who, long* usage);
    }

    private static double Time(Action action)
    {
        var sw = Stopwatch.StartNew();
        action();
        return sw.Elapsed.TotalSeconds;
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted[sorted.Count / 2];
    }

    /// <summary>
    /// The pieces of a start on their own: /bin/true started the same way (Process.Start with the three pipes: the floor
    /// of any sandbox this caller starts), then the native and the managed init with their stdin closed: each drops to
    /// the build user, enters the namespaces (clone, re-exec), reads EOF and exits: its start-up until it would read
    /// the plan, set up the root and exec the command.
    /// </summary>
    private static string Breakdown(InitLauncher native, InitLauncher managed, int repetitions)
    {
        using var user = BuildUser.Claim();
        var psi = native.CreateStartInfo(network: false, [], user, null, SandboxLimits.DefaultMaxProcesses);
        var managedPsi = managed.CreateStartInfo(network: false, [], user, null, SandboxLimits.DefaultMaxProcesses);
        var truePsi = new ProcessStartInfo("/bin/true");
        var processTrue = new List<double>();
        var nativeInit = new List<double>();
        var managedInit = new List<double>();
        for (int i = 0; i < repetitions; i++)
        {
            processTrue.Add(Time(() => Run(truePsi, [], expectZero: true)));
            nativeInit.Add(Time(() => Run(psi, [.. psi.ArgumentList], expectZero: false)));
            managedInit.Add(Time(() => Run(managedPsi, [.. managedPsi.ArgumentList], expectZero: false)));
        }

        return $"Process.Start of /bin/true: {Measure.Time(Median(processTrue))}; " +
               $"the native init entering the namespaces, starting and exiting (stdin closed): {Measure.Time(Median(nativeInit))}; " +
               $"the same with the managed init (dotnet exec): {Measure.Time(Median(managedInit))}";
    }

    private static void Run(ProcessStartInfo template, List<string> args, bool expectZero)
    {
        var psi = new ProcessStartInfo(template.FileName)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        args.ForEach(psi.ArgumentList.Add);
        psi.Environment.Clear();
        foreach (var (key, value) in template.Environment)
        {
            psi.Environment[key] = value;
        }

        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        p.StandardOutput.ReadToEnd();
        string error = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (expectZero && p.ExitCode != 0)
        {
            throw new InvalidOperationException($"{psi.FileName} exited {p.ExitCode}: {error}");
        }
    }

    /// <summary>A host tree: N top-level inputs plus busybox, a scratch store and build directory, an empty runc rootfs.</summary>
}
