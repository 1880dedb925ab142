using System.Collections.Concurrent;
using System.Text;
using System.Text.Json.Nodes;
using Google.Protobuf;
using TvixFuseBuild.Build.Grpc;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Build.Tests.Pipeline;
using TvixFuseBuild.Build.Tests.Requests;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Grpc;
using SnixBuild = Snix.Build.V1;
using TvixBuild = Tvix.Build.V1;

namespace TvixFuseBuild.Build.Tests.Grpc;

/// <summary>
/// Our BuildService on a real socket, called by Python's grpcio with its own generated stubs: real builds (FUSE inputs,
/// a namespace sandbox) behind DoBuild, and every status a client can get.
/// </summary>
[Collection(PipelineCollection.Name)]
public sealed class GrpcBuildServiceTests(PipelineFixture fixture)
{
    private const string OutPath = "nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo";

    private BuildSpec Spec(string script) => new()
    {
        Inputs = [fixture.Busybox],
        CommandArgs = [fixture.BusyboxPath + "/bin/sh", "-c", script],
        WorkingDir = "build",
        ScratchPaths = ["build", "nix/store"],
        InputsDir = "nix/store",
        Outputs = [OutPath],
        EnvironmentVars = [new EnvironmentVariable("PATH", fixture.BusyboxPath + "/bin"), new EnvironmentVariable("out", "/" + OutPath)],
        RefscanNeedles = ["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "fhaj6gmwns62s6ypkcldbaj2ybvkhx3p"],
    };

    private async Task<(GrpcCastoreTestServer Server, BuildGrpcService Builds)> StartAsync(int maxBuilds = 2, ConcurrentQueue<string>? events = null)
    {
        var builds = new BuildGrpcService(fixture.Runner(), new BuildGrpcServiceOptions
        {
            MaxConcurrentBuilds = maxBuilds,
            Events = events is null ? null : events.Enqueue,
        });
        var server = await GrpcCastoreTestServer.StartAsync(
            unixSocket: true, blobs: fixture.Store.Blobs, directories: fixture.Store.Directories, extraServices: builds);
        return (server, builds);
    }

    private static JsonObject DoBuild(IMessage request, double? timeout = null)
    {
        var op = new JsonObject { ["op"] = "do_build", ["request_hex"] = Convert.ToHexString(request.ToByteArray()) };
        if (timeout is { } t)
        {
            op["timeout"] = t;
        }

        return op;
    }

    [Fact]
    public async Task TvixDoBuildRunsTheBuildAndRepliesWithABuild()
    {
        var (server, _) = await StartAsync();
        await using var _ = server;
        var spec = Spec($"echo building; mkdir $out; echo {fixture.BusyboxPath} > $out/ref; echo hi > $out/greeting");

        var result = (await GrpcPython.RunClientAsync(server.ListenAddress, "tvix", [DoBuild(spec.ToTvix())]))[0]!;

        Assert.True((string?)result["code"] == "OK", (string?)result["details"]);
        Assert.Equal("[[\"directory\",\"fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo\"]]", result["outputs"]!.ToJsonString());
        var reply = TvixBuild.Build.Parser.ParseFrom(Convert.FromHexString((string)result["response_hex"]!));
        Assert.Equal(spec.ToTvix(), reply.BuildRequest);
        Assert.Equal([0UL], reply.OutputsNeedles.Single().Needles);

        // The outputs are in the serving store: a client fetches them with Get/Read from the same server.
        var output = (DirectoryNode)BuildResult.FromTvixBuild(reply).Outputs.Single().Node;
        var directory = await fixture.Store.Directories.GetAsync(output.Digest);
        Assert.NotNull(directory);
        var greeting = (FileNode)directory.Find("greeting"u8)!;
        var read = (await GrpcPython.RunClientAsync(server.ListenAddress, "tvix", [
            new JsonObject { ["op"] = "blob_read", ["digest_hex"] = greeting.Digest.ToHex() },
        ]))[0]!;
        Assert.Equal(Convert.ToHexString("hi\n"u8).ToLowerInvariant(), (string?)read["data_hex"]);
    }

    [Fact]
    public async Task SnixDoBuildRepliesWithABuildResponse()
    {
        var (server, _) = await StartAsync();
        await using var _ = server;
        var spec = Spec("printf 'just a file' > $out");

        var result = (await GrpcPython.RunClientAsync(server.ListenAddress, "snix", [DoBuild(spec.ToSnix())]))[0]!;

        Assert.True((string?)result["code"] == "OK", (string?)result["details"]);
        Assert.Equal("[[\"file\",\"\"]]", result["outputs"]!.ToJsonString());
        var reply = SnixBuild.BuildResponse.Parser.ParseFrom(Convert.FromHexString((string)result["response_hex"]!));
        var file = (FileNode)BuildResult.FromSnixResponse(reply).Outputs.Single().Node;
        Assert.Equal(Castore.Hashing.Blake3.Hash("just a file"u8), file.Digest);
        Assert.Empty(reply.Outputs.Single().Needles);
    }

    [Theory]
    [InlineData("tvix")]
    [InlineData("snix")]
    public async Task EveryInvalidVectorIsInvalidArgumentWithTvixsMessage(string package)
    {
        var (server, _) = await StartAsync();
        await using var _ = server;
        var invalid = RequestVectors.All().Where(c => !c.Valid).ToList();
        var operations = new JsonArray([.. invalid.Select(c => (JsonNode)DoBuild(package == "tvix"
            ? JsonParser.Default.Parse<TvixBuild.BuildRequest>(c.ProtoJson)
            : JsonParser.Default.Parse<SnixBuild.BuildRequest>(c.ProtoJson)))]);

        var results = await GrpcPython.RunClientAsync(server.ListenAddress, package, operations);

        foreach (var (c, result) in invalid.Zip(results))
        {
            Assert.True((string?)result!["code"] == "INVALID_ARGUMENT", $"{c.Name}: {result.ToJsonString()}");
            string details = (string)result["details"]!;
            Assert.True(details == c.Message || details.StartsWith(c.Message + ": ", StringComparison.Ordinal), $"{c.Name}: {details}");
        }

        Assert.Empty(fixture.LeftoverBuildDirectories());
    }

    [Fact]
    public async Task AFailedBuildIsInternalWithTheReasonAndTheLogTail()
    {
        var (server, _) = await StartAsync();
        await using var _ = server;
        var spec = Spec("for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30; do echo line $i; done; exit 3");

        var result = (await GrpcPython.RunClientAsync(server.ListenAddress, "snix", [DoBuild(spec.ToSnix())]))[0]!;

        Assert.Equal("INTERNAL", (string?)result["code"]);
        string details = (string)result["details"]!;
        Assert.StartsWith("build failed: ", details, StringComparison.Ordinal);
        Assert.Contains("exit", details, StringComparison.Ordinal);
        Assert.Contains("3", details.Split('\n')[0], StringComparison.Ordinal);
        Assert.EndsWith("line 30", details, StringComparison.Ordinal);
        Assert.Contains("line 6\n", details, StringComparison.Ordinal); // the last 25 lines
        Assert.DoesNotContain("line 5\n", details, StringComparison.Ordinal);
        Assert.Empty(fixture.LeftoverBuildDirectories());
    }

    [Fact]
    public async Task AMissingInputIsFailedPrecondition()
    {
        var (server, _) = await StartAsync();
        await using var _ = server;
        var spec = Spec("true") with { Inputs = [new DirectoryNode(fixture.Busybox.Name, Castore.Hashing.Blake3.Hash("not in the store"u8), 1)] };

        var result = (await GrpcPython.RunClientAsync(server.ListenAddress, "tvix", [DoBuild(spec.ToTvix())]))[0]!;

        Assert.Equal("FAILED_PRECONDITION", (string?)result["code"]);
        Assert.True(((string)result["details"]!).Contains("is not in the store", StringComparison.Ordinal), (string?)result["details"]);
    }

    [Fact]
    public async Task BuildsBeyondTheLimitWaitTheirTurn()
    {
        var events = new ConcurrentQueue<string>();
        var (server, builds) = await StartAsync(maxBuilds: 1, events);
        await using var _ = server;

        // Two builds at once on one slot, from two independent clients: the second waits until the first is done. Each
        // runs for 3 s, so the second arrives while the first runs even when the clients start unevenly.
        var first = GrpcPython.RunClientAsync(server.ListenAddress, "tvix", [DoBuild(Spec("sleep 3; echo one > $out").ToTvix())]);
        var second = GrpcPython.RunClientAsync(server.ListenAddress, "tvix", [DoBuild(Spec("sleep 3; echo two > $out").ToTvix())]);
        var results = await Task.WhenAll(first, second);

        Assert.All(results, r => Assert.True((string?)r[0]!["code"] == "OK", (string?)r[0]!["details"]));
        var log = events.ToArray();
        Assert.Single(log, e => e.Contains("waiting for a slot (1 of 1 builds running)", StringComparison.Ordinal));
        // Whichever came second started only after the first was done.
        int waiting = Array.FindIndex(log, e => e.Contains("waiting for a slot", StringComparison.Ordinal));
        string waiter = log[waiting].Split(':')[0];
        int firstDone = Array.FindIndex(log, e => !e.StartsWith(waiter + ":", StringComparison.Ordinal) && e.Contains(": done", StringComparison.Ordinal));
        int waiterDone = Array.FindIndex(log, e => e.StartsWith(waiter + ":", StringComparison.Ordinal) && e.Contains(": done", StringComparison.Ordinal));
        Assert.True(firstDone >= 0 && waiterDone > firstDone, string.Join('\n', log));
        Assert.Equal(0, builds.RunningBuilds);
        Assert.Equal(0, builds.WaitingBuilds);
    }

    [Fact]
    public async Task ADeadlineCancelsTheBuildAndTearsItDown()
    {
        var (server, builds) = await StartAsync();
        await using var _ = server;
        var spec = Spec("echo started; sleep 60; echo never > $out");

        var result = (await GrpcPython.RunClientAsync(server.ListenAddress, "tvix", [DoBuild(spec.ToTvix(), timeout: 3)]))[0]!;

        Assert.Equal("DEADLINE_EXCEEDED", (string?)result["code"]);
        // The server's side of the call ends once the build is torn down: the sandbox killed, its mount gone.
        await builds.WaitForCallsAsync(new CancellationTokenSource(TimeSpan.FromSeconds(30)).Token);
        Assert.Empty(fixture.LeftoverBuildDirectories());
        Assert.DoesNotContain(File.ReadAllLines("/proc/self/mountinfo"), l => l.Contains(fixture.Root, StringComparison.Ordinal));
    }

    [Fact]
    public async Task OurClientCallsDoBuildOverTcpToo()
    {
        var builds = new BuildGrpcService(fixture.Runner());
        await using var server = await GrpcCastoreTestServer.StartAsync(
            unixSocket: false, blobs: fixture.Store.Blobs, directories: fixture.Store.Directories, extraServices: builds);
        using var channel = GrpcChannels.Create(GrpcEndpoint.Tcp("127.0.0.1", int.Parse(server.ListenAddress.Split(':')[1])));
        var spec = Spec("echo over tcp > $out");

        var reply = await new TvixBuild.BuildService.BuildServiceClient(channel).DoBuildAsync(spec.ToTvix(), deadline: DateTime.UtcNow.AddMinutes(2));
        var bad = await Assert.ThrowsAsync<global::Grpc.Core.RpcException>(async () =>
            await new SnixBuild.BuildService.BuildServiceClient(channel).DoBuildAsync(new SnixBuild.BuildRequest(), deadline: DateTime.UtcNow.AddMinutes(1)));

        Assert.Equal(Castore.Hashing.Blake3.Hash(Encoding.UTF8.GetBytes("over tcp\n")), ((FileNode)BuildResult.FromTvixBuild(reply).Outputs.Single().Node).Digest);
        Assert.Equal(global::Grpc.Core.StatusCode.InvalidArgument, bad.StatusCode);
    }
}
