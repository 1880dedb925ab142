namespace TvixFuseBuild.Bench.Scenarios;

/// <summary>
/// Small Nix derivations built by Nix 2.8 (<c>nix-store --realise --check</c>: a real build in Nix's sandbox, its
/// output hashed and compared) and by <c>tvix-fuse-build drv --rebuild</c> (a real build in our sandbox over the
/// lazily mounted inputs, the output ingested and scanned), alternating, whole processes.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
internal sealed class NixBench : IBenchScenario
{
    private static readonly (string Case, string Attrs)[] Derivations =
    [
        ("trivial: one file", """name = "trivial"; args = [ "-c" "mkdir $out; echo hi > $out/f" ];"""),
        ("tree: 2,000 files and 500 symlinks", """name = "tree"; args = [ "-c" "mkdir $out; cd $out; for i in $(seq 1 2000); do echo $i > f$i; done; for i in $(seq 1 500); do ln -s f$i l$i; done" ];"""),
        ("three outputs referring to each other", """name = "multi"; outputs = [ "out" "dev" "lib" ]; args = [ "-c" "mkdir $out $dev $lib; echo $lib > $out/l; echo $out $lib > $dev/d; echo x > $lib/x" ];"""),
        ("a 55 MB output", """name = "large"; args = [ "-c" "seq 1 7000000 > $out" ];"""),
    ];

    public string Name => "nix";

    public string Description => "small derivations: tvix-fuse-build drv --rebuild vs Nix 2.8 nix-store --realise --check";

    public Task<IReadOnlyList<BenchResult>> RunAsync(BenchContext context, CancellationToken cancellationToken)
    {
        string root = context.WorkDir;
        File.SetUnixFileMode(root, (UnixFileMode)0x1ED);
        string tree = Path.Combine(root, "busybox");
        Directory.CreateDirectory(Path.Combine(tree, "bin"));
        File.Copy("/bin/busybox", Path.Combine(tree, "bin", "busybox"));
        File.CreateSymbolicLink(Path.Combine(tree, "bin", "sh"), "busybox");
        string busybox = Output("nix-store", "--add", tree);
        var environment = new Dictionary<string, string> { ["XDG_DATA_HOME"] = Path.Combine(root, "data"), ["CI"] = "true" };

        var results = new List<BenchResult>();
        int repetitions = context.Quick ? 3 : 7;
        // The NativeAOT tool when scripts/bench published it, and the framework-dependent one next to it.
        bool[] variants = BenchData.NativeTool is null ? [false] : [true, false];
        foreach (var (name, attrs) in Derivations)
        {
            cancellationToken.ThrowIfCancellationRequested();
            string file = Path.Combine(root, "derivation.nix");
            File.WriteAllText(file, $$"""
                let bb = builtins.storePath {{busybox}}; in
                builtins.derivation { system = "x86_64-linux"; builder = "${bb}/bin/sh"; {{attrs}} }
                """);
            string drv = Output("nix-instantiate", file);
            double Nix() => Measure.Process("nix-store", ["--realise", "--check", drv]);
            double Ours(bool native)
            {
                var (program, arguments) = BenchData.ToolCommand(native, "drv", "--rebuild", "--no-out-link", "--quiet", drv);
                return Measure.Process(program, arguments, environment: environment);
            }

            // Warm-up: Nix's first build makes the outputs valid (--check needs them), ours imports the inputs.
            Measure.Process("nix-store", ["--realise", drv]);
            foreach (bool native in variants)
            {
                Ours(native);
            }

            Nix();

            // The 55 MB case: also the builder's script alone, outside any sandbox, writing its output on the same
            // filesystem (what neither builder can make faster), so the table shows what each adds to it.
            bool large = name.Contains("55 MB", StringComparison.Ordinal);
            string bareOut = Path.Combine(root, "bare-out");
            double Bare() => Measure.Process("/bin/busybox", ["sh", "-c", $"out={bareOut}; {Script(attrs)}; rm -rf {bareOut}"]);

            var nix = new List<double>();
            var bare = new List<double>();
            var ours = variants.ToDictionary(v => v, _ => new List<double>());
            for (int i = 0; i < repetitions; i++)
            {
                foreach (bool native in variants)
                {
                    ours[native].Add(Ours(native));
                }

                nix.Add(Nix());
                if (large)
                {
                    bare.Add(Bare());
                }
            }

            double n = BenchData.Median(nix);
            foreach (bool native in variants)
            {
                double o = BenchData.Median(ours[native]);
                results.Add(new BenchResult(
                    $"{name}{(native ? ", NativeAOT tool" : variants.Length > 1 ? ", framework-dependent tool" : "")}",
                    Measure.Time(o), Measure.Time(n), "nix-store -r --check", n / o,
                    native || variants.Length == 1 ? Target(name) : null, native || variants.Length == 1 ? o <= Limit(name) * n : null));
            }

            if (large)
            {
                double b = BenchData.Median(bare);
                double o = BenchData.Median(ours[variants[0]]);
                results.Add(new BenchResult(
                    $"{name}: the command alone (busybox sh, no sandbox, same filesystem)", Measure.Time(b), Measure.Time(n), "nix-store -r --check", n / b, null, null,
                    $"added to it: ours {Measure.Time(o - b)}, Nix {Measure.Time(n - b)}"));
            }
        }

        return Task.FromResult<IReadOnlyList<BenchResult>>(results);
    }

    // Issue 16: small derivations within Nix's wall time (the median over the set), the 55 MB output within 0.8x of it.
    private static double Limit(string name) => name.Contains("55 MB", StringComparison.Ordinal) ? 0.8 : 1.0;

    private static string Target(string name) => Limit(name) < 1 ? ">= 1.25x (<= 0.8x Nix's time)" : ">= 1.0x (median of the set)";

    /// <summary>The shell script of a derivation's <c>args = [ "-c" "SCRIPT" ]</c>.</summary>
    private static string Script(string attrs)
    {
        const string Marker = "\"-c\" \"";
        int start = attrs.IndexOf(Marker, StringComparison.Ordinal) + Marker.Length;
        return attrs[start..attrs.IndexOf('"', start)];
    }

    private static string Output(string program, params string[] arguments)
    {
        string file = Path.GetTempFileName();
        try
        {
            Measure.Process(program, arguments, file);
            return File.ReadAllText(file).Trim();
        }
        finally
        {
            File.Delete(file);
        }
    }
}
