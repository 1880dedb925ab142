using System.Diagnostics;
using System.Text.Json.Nodes;

namespace TvixFuseBuild.Bench.Scenarios;

/// <summary>
/// A build whose inputs come from another instance: <c>tvix-fuse-build serve</c> serves a local store on a unix
/// socket, <c>tvix-fuse-build --store grpc+unix://… build</c> runs a build reading busybox (2 MB) from it, with an
/// empty local cache every time (cold) or the cache of the previous run (warm), next to the same build straight on the
/// local store; and the same build sent to that server with <c>build --builder</c>. With a baseline build, its own serve
/// and client do the warm and local builds too, in the same rounds. Whole processes: the client's start-up is in every figure.
/// </summary>
internal sealed partial class RemoteBench
{
    private static IEnumerable<BenchResult> BuildOverRemote(BenchContext context, CancellationToken cancellationToken)
    {
        string root = Path.Combine(context.WorkDir, "build");
        Directory.CreateDirectory(root);
        File.SetUnixFileMode(context.WorkDir, (UnixFileMode)0x1ED);
        File.SetUnixFileMode(root, (UnixFileMode)0x1ED);
        var tree = BusyboxTree.Create(Path.Combine(root, "tree"), 10);
        string store = "local://" + Path.Combine(root, "store");
        string socket = Path.Combine(root, "serve.sock");
        var environment = new Dictionary<string, string> { ["XDG_DATA_HOME"] = Path.Combine(root, "data"), ["CI"] = "true" };

        string nodesFile = Path.Combine(root, "nodes.json");
        Measure.Process("dotnet", [BenchData.Tool, "--store", store, "import", "--json", .. tree.Names.Select(n => Path.Combine(tree.Inputs, n))], nodesFile);
        var request = new JsonObject
        {
            ["inputs"] = new JsonArray([.. JsonNode.Parse(File.ReadAllText(nodesFile))!.AsArray()
                .OrderBy(n => n!.AsObject().First().Value!["name"]!.GetValue<string>() is var b64 ? System.Text.Encoding.UTF8.GetString(Convert.FromBase64String(b64)) : "", StringComparer.Ordinal)
                .Select(n => n!.DeepClone())]),
            ["commandArgs"] = new JsonArray($"/nix/store/{BusyboxTree.BusyboxName}/bin/busybox", "true"),
            ["workingDir"] = "build",
            ["scratchPaths"] = new JsonArray("build", "nix/store"),
            ["inputsDir"] = "nix/store",
        };
        string requestFile = Path.Combine(root, "request.json");
        File.WriteAllText(requestFile, request.ToJsonString());

        // This build's server rebuilds every request it is sent (--builder), as the local build here does with --rebuild.
        using var server = Served.Start(BenchData.Tool, store, socket, environment, "--rebuild");
        string? baselineTool = BaselineTool;
        using var baselineServer = baselineTool is null ? null : Served.Start(baselineTool, store, Path.Combine(root, "old.sock"), environment);

        // The client of --builder has its own local store holding the inputs: what the builder lacks is uploaded, the
        // outputs come back into it (after the first run, nothing is missing on either side: a warm cache).
        string clientStore = "local://" + Path.Combine(root, "client-store");
        Measure.Process("dotnet", [BenchData.Tool, "--store", clientStore, "import", "--json", .. tree.Names.Select(n => Path.Combine(tree.Inputs, n))], Path.Combine(root, "client-nodes.json"));

        int run = 0;
        string warmCache = Path.Combine(root, "warm-cache");
        string baselineWarmCache = Path.Combine(root, "baseline-warm-cache");
        double Build(string tool, string storeAddress, params string[] extra) => Measure.Process(
            "dotnet", [tool, "--store", storeAddress, "build", "--quiet", "--rebuild", "--out", Path.Combine(root, "reply.json"), .. extra, requestFile],
            environment: environment);
        double Cold() => Build(BenchData.Tool, server.Address($"cache={Path.Combine(root, $"cold-cache-{run++}")}"));
        double Warm() => Build(BenchData.Tool, server.Address($"cache={warmCache}"));
        double Local() => Build(BenchData.Tool, store);
        double Builder() => Build(BenchData.Tool, clientStore, "--builder", "unix:" + socket);
        double BaselineWarm() => Build(baselineTool!, baselineServer!.Address($"cache={baselineWarmCache}"));
        double BaselineLocal() => Build(baselineTool!, store);

        Warm();
        Local();
        Builder();
        if (baselineServer is not null)
        {
            BaselineWarm();
            BaselineLocal();
        }

        int repetitions = context.Quick ? 3 : 11;
        var cold = new List<double>();
        var warm = new List<double>();
        var local = new List<double>();
        var builder = new List<double>();
        var baselineWarm = new List<double>();
        var baselineLocal = new List<double>();
        for (int i = 0; i < repetitions; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            cold.Add(Cold());
            warm.Add(Warm());
            local.Add(Local());
            builder.Add(Builder());
            if (baselineServer is not null)
            {
                baselineWarm.Add(BaselineWarm());
                baselineLocal.Add(BaselineLocal());
            }

            Console.WriteLine(
                $"   build rep {i + 1}: cold {Measure.Time(cold[^1])}, warm {Measure.Time(warm[^1])}, local {Measure.Time(local[^1])}, --builder {Measure.Time(builder[^1])}" +
                (baselineServer is null ? "" : $"; baseline warm {Measure.Time(baselineWarm[^1])}, baseline local {Measure.Time(baselineLocal[^1])}"));
        }

        double c = BenchData.Median(cold), w = BenchData.Median(warm), l = BenchData.Median(local), r = BenchData.Median(builder);
        const string within = "within 10% of local (>= 0.91x)";
        var results = new List<BenchResult>
        {
            new("busybox true over 10 inputs from a served store, cold cache", Measure.Time(c), Measure.Time(l), "the same build on the local store", l / c, null, null,
                "what the build touches (busybox, about 2 MB, and its directories) fetched over the socket into an empty cache"),
            new("the same, warm cache", Measure.Time(w), Measure.Time(l), "the same build on the local store", l / w, within, l / w >= 1 / 1.1,
                "everything read from the cache; the output written through to the served store"),
            new("the same sent to the builder (build --builder unix:…), warm", Measure.Time(r), Measure.Time(l), "the same build on the local store", l / r, within, l / r >= 1 / 1.1,
                "serve builds it (--rebuild) from its own store; nothing to upload, the output fetched back (Stat first)"),
        };
        if (baselineServer is not null)
        {
            double bw = BenchData.Median(baselineWarm), bl = BenchData.Median(baselineLocal);
            results.Add(new("the same from a served store, warm cache: the baseline build", Measure.Time(bw), Measure.Time(bl), "the baseline's local build", bl / bw, null, null,
                "its own serve and client"));
            results.Add(new("warm cache from a served store: this build vs the baseline", Measure.Time(w), Measure.Time(bw), "baseline build", bw / w, null, null,
                $"{repetitions} interleaved rounds, medians"));
        }

        return results;
    }

    private static Process StartServer(string tool, IEnumerable<string> arguments, IReadOnlyDictionary<string, string> environment)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, UseShellExecute = false };
        psi.ArgumentList.Add(tool);
        foreach (string a in arguments)
        {
            psi.ArgumentList.Add(a);
        }

        foreach (var (key, value) in environment)
        {
            psi.Environment[key] = value;
        }

        var server = Process.Start(psi) ?? throw new InvalidOperationException("cannot start tvix-fuse-build serve");
        string? line = server.StandardOutput.ReadLine();
        if (line is null || !line.StartsWith("listening on ", StringComparison.Ordinal))
        {
            server.Kill();
            throw new InvalidOperationException($"tvix-fuse-build serve did not start: {line}");
        }

        return server;
    }
}
