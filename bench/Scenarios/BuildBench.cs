using System.Text.Json;
using System.Text.Json.Nodes;

namespace TvixFuseBuild.Bench.Scenarios;

/// <summary>
/// A trivial build's whole-process time: <c>tvix-fuse-build build</c> of a request running <c>busybox true</c> over 10
/// inputs (validation, FUSE mount, sandbox, teardown, process start-up included) next to the same command in runc and
/// in bwrap, each started as a process. Plus the same request answered from the result cache.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
internal sealed class BuildBench : IBenchScenario
{
    public string Name => "build";

    public string Description => "a trivial build, whole process: tvix-fuse-build build vs runc run vs bwrap";

    public Task<IReadOnlyList<BenchResult>> RunAsync(BenchContext context, CancellationToken cancellationToken)
    {
        string root = context.WorkDir;
        File.SetUnixFileMode(root, (UnixFileMode)0x1ED);
        var tree = BusyboxTree.Create(Path.Combine(root, "tree"), 10);
        string bundle = tree.RuncBundle();
        string store = "local://" + Path.Combine(root, "store");
        var environment = new Dictionary<string, string> { ["XDG_DATA_HOME"] = Path.Combine(root, "data"), ["CI"] = "true" };

        string nodesFile = Path.Combine(root, "nodes.json");
        var (importer, import) = BenchData.ToolCommand(BenchData.NativeTool is not null, ["--store", store, "import", "--json", .. tree.Names.Select(n => Path.Combine(tree.Inputs, n))]);
        Measure.Process(importer, import, nodesFile);
        var nodes = JsonNode.Parse(File.ReadAllText(nodesFile))!.AsArray()
            .OrderBy(n => NodeName(n!), StringComparer.Ordinal).Select(n => n!.DeepClone()).ToArray();
        var request = new JsonObject
        {
            ["inputs"] = new JsonArray(nodes),
            ["commandArgs"] = new JsonArray($"/nix/store/{BusyboxTree.BusyboxName}/bin/busybox", "true"),
            ["workingDir"] = "build",
            ["scratchPaths"] = new JsonArray("build", "nix/store"),
            ["inputsDir"] = "nix/store",
            ["environmentVars"] = new JsonArray(new JsonObject { ["key"] = "PATH", ["value"] = Convert.ToBase64String("/path-not-set"u8) }),
        };
        string requestFile = Path.Combine(root, "request.json");
        File.WriteAllText(requestFile, request.ToJsonString());

        string[] build = ["--store", store, "build", "--quiet", "--out", Path.Combine(root, "reply.json"), requestFile];
        double Tool(bool native, string[] arguments)
        {
            var (program, args) = BenchData.ToolCommand(native, arguments);
            return Measure.Process(program, args, environment: environment);
        }

        // The NativeAOT tool when scripts/bench published it, and the framework-dependent one next to it.
        bool[] variants = BenchData.NativeTool is null ? [false] : [true, false];
        double Ours(bool native) => Tool(native, [.. build[..^1], "--rebuild", requestFile]);
        double Cached(bool native) => Tool(native, build);
        double Runc() => Measure.Process("runc", ["run", "--bundle", bundle, "tvix-bench-" + Guid.NewGuid().ToString("N")[..12]]);
        double Bwrap() => Measure.Process("bwrap", tree.BwrapArgumentList());

        // Warm-up: page cache, the result cache entry, runc's first run.
        foreach (bool native in variants)
        {
            Ours(native);
            Cached(native);
        }

        Runc();
        Bwrap();

        int repetitions = context.Quick ? 3 : 11;
        var ours = variants.ToDictionary(v => v, _ => new List<double>());
        var cached = variants.ToDictionary(v => v, _ => new List<double>());
        var runc = new List<double>();
        var bwrap = new List<double>();
        for (int i = 0; i < repetitions; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            foreach (bool native in variants)
            {
                ours[native].Add(Ours(native));
            }

            runc.Add(Runc());
            bwrap.Add(Bwrap());
            foreach (bool native in variants)
            {
                cached[native].Add(Cached(native));
            }
        }

        double r = BenchData.Median(runc), b = BenchData.Median(bwrap);
        var results = new List<BenchResult>();
        foreach (bool native in variants)
        {
            string tool = native ? ", NativeAOT tool" : variants.Length > 1 ? ", framework-dependent tool" : "";
            double o = BenchData.Median(ours[native]), c = BenchData.Median(cached[native]);
            results.Add(new BenchResult($"busybox true over 10 inputs, whole process{tool}", Measure.Time(o), Measure.Time(r), "runc run", r / o, null, null));
            results.Add(new BenchResult($"busybox true over 10 inputs, whole process{tool}", Measure.Time(o), Measure.Time(b), "bwrap", b / o, null, null));
            results.Add(new BenchResult($"the same request again, from the result cache{tool}", Measure.Time(c), Measure.Time(r), "runc run", r / c, null, null));
        }

        return Task.FromResult<IReadOnlyList<BenchResult>>(results);
    }

    private static string NodeName(JsonNode node)
    {
        var inner = node.AsObject().First().Value!;
        return System.Text.Encoding.UTF8.GetString(Convert.FromBase64String(inner["name"]!.GetValue<string>()));
    }
}
