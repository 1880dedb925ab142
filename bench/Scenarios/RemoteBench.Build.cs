using System.Diagnostics;
using System.Text.Json.Nodes;

namespace TvixFuseBuild.Bench.Scenarios;

/// <summary>
/// A build whose inputs come from another instance: <c>tvix-fuse-build serve</c> serves a local store on a unix
/// socket, <c>tvix-fuse-build --store grpc+unix://… build</c> runs a build reading busybox (2 MB) from it, with an
/// empty local cache every time (cold) or the cache of the previous run (warm), next to the same build straight on the
/// local store. Whole processes: the client's start-up is in every figure.
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

        using var server = StartServer(["--store", store, "serve", "--listen", "unix:" + socket], environment);
        try
        {
            int run = 0;
            string warmCache = Path.Combine(root, "warm-cache");
            double Build(string storeAddress) => Measure.Process(
                "dotnet", [BenchData.Tool, "--store", storeAddress, "build", "--quiet", "--rebuild", "--out", Path.Combine(root, "reply.json"), requestFile],
                environment: environment);
            double Cold() => Build($"grpc+unix://{socket}?cache={Path.Combine(root, $"cold-cache-{run++}")}");
            double Warm() => Build($"grpc+unix://{socket}?cache={warmCache}");
            double Local() => Build(store);

            Warm();
            Local();
            int repetitions = context.Quick ? 3 : 11;
            var cold = new List<double>();
            var warm = new List<double>();
            var local = new List<double>();
            for (int i = 0; i < repetitions; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                cold.Add(Cold());
                warm.Add(Warm());
                local.Add(Local());
                Console.WriteLine($"   rep {i + 1}: cold {Measure.Time(cold[^1])}, warm {Measure.Time(warm[^1])}, local {Measure.Time(local[^1])}");
            }

            double c = BenchData.Median(cold), w = BenchData.Median(warm), l = BenchData.Median(local);
            return
            [
                new BenchResult("busybox true over 10 inputs from a served store, cold cache", Measure.Time(c), Measure.Time(l), "the same build on the local store", l / c, null, null,
                    "what the build touches (busybox, about 2 MB, and its directories) fetched over the socket into an empty cache"),
                new BenchResult("the same, warm cache", Measure.Time(w), Measure.Time(l), "the same build on the local store", l / w, null, null,
                    "everything read from the cache; nothing transferred"),
            ];
        }
        finally
        {
            server.Kill(entireProcessTree: false); // SIGKILL is fine here: the server holds no mount, and its socket dir goes with the work dir
            server.WaitForExit();
        }
    }

    private static Process StartServer(IEnumerable<string> arguments, IReadOnlyDictionary<string, string> environment)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, UseShellExecute = false };
        psi.ArgumentList.Add(BenchData.Tool);
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
