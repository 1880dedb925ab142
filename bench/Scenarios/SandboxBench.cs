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
    private const string BusyboxName = "0000000000000000000000000000000b-busybox";

    public string Name => "sandbox";

    public string Description => "busybox true in the sandbox, 10 and 1,000 inputs, vs bwrap and runc";

    public async Task<IReadOnlyList<BenchResult>> RunAsync(BenchContext context, CancellationToken cancellationToken)
    {
        var results = new List<BenchResult>();
        string root = context.WorkDir;
        File.SetUnixFileMode(root, (UnixFileMode)0x1ED); // the root-mode build user must reach the trees
        int repetitions = context.Quick ? 3 : 11;

        foreach (int n in new[] { 10, 1000 })
        {
            var tree = Tree.Create(Path.Combine(root, $"n{n}"), n);
            var spec = tree.Spec();
            string bundle = tree.RuncBundle();

            // Warm up each once (page cache, JIT of the caller, runc's first cgroup).
            await RunOursAsync(spec, cancellationToken);
            RunBwrap(tree);
            RunRunc(bundle);

            var ours = new List<double>();
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
                var result = await RunOursAsync(spec, cancellationToken);
                ours.Add(sw.Elapsed.TotalSeconds);
                callerCpu.Add(Environment.CpuUsage.TotalTime.TotalSeconds - self);
                oursCpu.Add(cpu.Stop());
                setups.Add(result.SetupTime.TotalSeconds);

                bwrap.Add(Time(() => RunBwrap(tree))); // its CPU is not measurable this way: bwrap does not reap its namespace child

                cpu = Cpu.Start(includeSelf: false);
                runc.Add(Time(() => RunRunc(bundle)));
                runcCpu.Add(cpu.Stop());
            }

            double o = Median(ours), b = Median(bwrap), r = Median(runc);
            string cpuNote = $"CPU (user+sys, whole process tree): ours {Measure.Time(Median(oursCpu))} (of which the caller's process {Measure.Time(Median(callerCpu))}), " +
                $"runc {Measure.Time(Median(runcCpu))}";
            string note = $"(setup until the command started: {Measure.Time(Median(setups))}; {cpuNote}; {repetitions} interleaved runs, medians)";
            results.Add(new BenchResult($"busybox true, {n} inputs", Measure.Time(o), Measure.Time(r), "runc", r / o, "no slower than runc", r / o >= 1.0, note));
            results.Add(new BenchResult($"busybox true, {n} inputs", Measure.Time(o), Measure.Time(b), "bwrap", b / o, null, null));
        }

        // Where our time goes: the pieces measured on their own.
        var launcherPieces = Breakdown(repetitions);
        results.Add(new BenchResult("breakdown", launcherPieces, "", "-", 1, null, null));
        return results;
    }

    private static async Task<SandboxResult> RunOursAsync(SandboxSpec spec, CancellationToken cancellationToken)
    {
        var result = await SandboxRunner.RunAsync(spec, null, cancellationToken);
        if (!result.Succeeded)
        {
            throw new InvalidOperationException($"sandbox: {result}: {result.LogTail}");
        }

        return result;
    }

    private static void RunBwrap(Tree tree) => Measure.Process("bwrap", tree.BwrapArgumentList());

    private static void RunRunc(string bundle) =>
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
    /// The launcher's own command line twice: once running /bin/true instead of the init (namespaces only), once
    /// running the init with its stdin closed (it starts, loads what it needs, reads EOF and exits).
    /// </summary>
    private static string Breakdown(int repetitions)
    {
        var psi = InitLauncher.Get().CreateStartInfo(network: false, []);
        var args = psi.ArgumentList.ToList();
        int program = args.LastIndexOf("--") + 1;
        var unshareOnly = args.Take(program).Append("/bin/true").ToList();
        var unshareTrue = new List<double>();
        var unshareInit = new List<double>();
        for (int i = 0; i < repetitions; i++)
        {
            unshareTrue.Add(Time(() => Run(psi, unshareOnly, expectZero: true)));
            unshareInit.Add(Time(() => Run(psi, args, expectZero: false)));
        }

        return $"{Path.GetFileName(psi.FileName)} + unshare + /bin/true: {Measure.Time(Median(unshareTrue))}; " +
               $"the same + .NET init start-up to Main and back (stdin closed): {Measure.Time(Median(unshareInit))}";
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
    private sealed class Tree
    {
        private Tree(string root, List<string> names)
        {
            Root = root;
            Names = names;
        }

        public string Root { get; }

        public List<string> Names { get; }

        public string Inputs => Path.Combine(Root, "inputs");

        public string Store => Path.Combine(Root, "store");

        public string Build => Path.Combine(Root, "build");

        public static Tree Create(string root, int n)
        {
            Directory.CreateDirectory(Path.Combine(root, "inputs", BusyboxName, "bin"));
            File.Copy("/bin/busybox", Path.Combine(root, "inputs", BusyboxName, "bin", "busybox"));
            var names = new List<string> { BusyboxName };
            for (int i = 1; i < n; i++)
            {
                string name = $"{i:D32}-input";
                Directory.CreateDirectory(Path.Combine(root, "inputs", name));
                File.WriteAllText(Path.Combine(root, "inputs", name, "file"), name);
                names.Add(name);
            }

            Directory.CreateDirectory(Path.Combine(root, "store"));
            Directory.CreateDirectory(Path.Combine(root, "build"));
            Directory.CreateDirectory(Path.Combine(root, "rootfs"));
            Directory.CreateDirectory(Path.Combine(root, "runc-store"));
            Directory.CreateDirectory(Path.Combine(root, "runc-build"));
            return new Tree(root, names);
        }

        public SandboxSpec Spec() => new()
        {
            Command = [$"/nix/store/{BusyboxName}/bin/busybox", "true"],
            Environment = new Dictionary<string, string> { ["PATH"] = "/path-not-set" },
            WorkingDirectory = "/build",
            ScratchPaths = new Dictionary<string, string> { ["nix/store"] = Store, ["build"] = Build },
            InputsHostDirectory = Inputs,
            InputsDir = "nix/store",
            InputNames = Names,
        };

        public List<string> BwrapArgumentList()
        {
            var args = new List<string>
            {
                "--unshare-all", "--uid", "1000", "--gid", "100", "--hostname", "localhost", "--die-with-parent",
                "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--clearenv", "--setenv", "PATH", "/path-not-set",
                "--bind", Store, "/nix/store",
            };
            foreach (var name in Names)
            {
                args.Add("--ro-bind");
                args.Add(Path.Combine(Inputs, name));
                args.Add("/nix/store/" + name);
            }

            args.AddRange(["--bind", Build, "/build", "--chdir", "/build", "--", $"/nix/store/{BusyboxName}/bin/busybox", "true"]);
            return args;
        }

        /// <summary>An OCI bundle: uid 1000/gid 100, no capabilities, per-input read-only binds into a writable nix/store.</summary>
        public string RuncBundle()
        {
            string bundle = Root;
            var mounts = new List<object>
            {
                new { destination = "/proc", type = "proc", source = "proc", options = new[] { "nosuid", "noexec", "nodev" } },
                new { destination = "/dev", type = "tmpfs", source = "tmpfs", options = new[] { "nosuid", "strictatime", "mode=755", "size=65536k" } },
                new { destination = "/dev/pts", type = "devpts", source = "devpts", options = new[] { "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620" } },
                new { destination = "/dev/shm", type = "tmpfs", source = "shm", options = new[] { "nosuid", "noexec", "nodev", "mode=1777", "size=65536k" } },
                new { destination = "/tmp", type = "tmpfs", source = "tmpfs", options = new[] { "nosuid", "nodev", "mode=1777" } },
                new { destination = "/nix/store", type = "bind", source = Path.Combine(Root, "runc-store"), options = new[] { "rbind", "nosuid", "nodev" } },
            };
            foreach (var name in Names)
            {
                mounts.Add(new { destination = "/nix/store/" + name, type = "bind", source = Path.Combine(Inputs, name), options = new[] { "rbind", "ro", "nosuid", "nodev" } });
            }

            mounts.Add(new { destination = "/build", type = "bind", source = Path.Combine(Root, "runc-build"), options = new[] { "rbind", "nosuid", "nodev" } });
            var config = new Dictionary<string, object>
            {
                ["ociVersion"] = "1.0.2",
                ["process"] = new
                {
                    terminal = false,
                    user = new { uid = 1000, gid = 100 },
                    args = new[] { $"/nix/store/{BusyboxName}/bin/busybox", "true" },
                    env = new[] { "PATH=/path-not-set" },
                    cwd = "/build",
                    noNewPrivileges = true,
                    capabilities = new { bounding = Array.Empty<string>(), effective = Array.Empty<string>(), permitted = Array.Empty<string>() },
                },
                ["root"] = new { path = Path.Combine(Root, "rootfs"), @readonly = true },
                ["hostname"] = "localhost",
                ["mounts"] = mounts,
                ["linux"] = new
                {
                    // No user namespace: runc 1.1 passes the bind sources of a user-namespaced container in one netlink
                    // message, which cannot hold 1,000 of them ("cannot serialize bytemsg ... larger than UINT16_MAX").
                    // Rootful runc also skips the user namespace setup, so it is the faster peer.
                    namespaces = new[] { "pid", "network", "ipc", "uts", "mount" }.Select(t => new { type = t }).ToArray(),
                    maskedPaths = new[] { "/proc/kcore", "/proc/keys", "/proc/timer_list" },
                    readonlyPaths = new[] { "/proc/sys", "/proc/sysrq-trigger" },
                },
            };
            File.WriteAllText(Path.Combine(bundle, "config.json"), JsonSerializer.Serialize(config));
            foreach (var dir in new[] { "proc", "dev", "tmp", "nix/store", "build" })
            {
                Directory.CreateDirectory(Path.Combine(Root, "rootfs", dir));
            }

            foreach (var dir in new[] { "runc-store", "runc-build" })
            {
                Measure.Process("chown", ["1000:100", Path.Combine(Root, dir)]);
            }

            return bundle;
        }
    }
}
