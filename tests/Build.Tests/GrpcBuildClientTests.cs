using TvixFuseBuild.Build.Grpc;
using TvixFuseBuild.Build.Pipeline;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Build.Service;
using TvixFuseBuild.Build.Tests.Pipeline;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Hashing;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Server;

namespace TvixFuseBuild.Build.Tests.Grpc;

/// <summary>
/// <see cref="GrpcBuildService"/> against a real BuildService on a unix socket, with counting stores on the serving
/// side: what it uploads, what it answers, and that a remote failure reads as a local one.
/// </summary>
[Collection(PipelineCollection.Name)]
public sealed class GrpcBuildClientTests(PipelineFixture fixture)
{
    private const string OutPath = "nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo";

    private BuildSpec Spec(string script, params Node[] extraInputs) => new()
    {
        Inputs = [fixture.Busybox, .. extraInputs],
        CommandArgs = [fixture.BusyboxPath + "/bin/sh", "-c", script],
        WorkingDir = "build",
        ScratchPaths = ["build", "nix/store"],
        InputsDir = "nix/store",
        Outputs = [OutPath],
        EnvironmentVars = [new EnvironmentVariable("PATH", fixture.BusyboxPath + "/bin"), new EnvironmentVariable("out", "/" + OutPath)],
    };

    [Theory]
    [InlineData(BuildProtocol.Tvix)]
    [InlineData(BuildProtocol.Snix)]
    public async Task UploadsOnlyWhatTheBuilderLacksAndBringsTheOutputsBack(BuildProtocol protocol)
    {
        var blobs = new CountingBlobService(fixture.Store.Blobs);
        var directories = new CountingDirectoryService(fixture.Store.Directories);
        var builds = new BuildGrpcService(new LocalBuildService(fixture.Runner()));
        await using var server = await GrpcCastoreTestServer.StartAsync(unixSocket: true, blobs: blobs, directories: directories, configure: s => s.AddBuildService(builds));

        // The client's store has busybox (which the builder's has too) and a file the builder has never seen.
        await using var local = CastoreStore.Open("memory://");
        await StoreCopy.CopyAsync(fixture.Busybox, fixture.Store, local, new CopyCount(), default);
        byte[] secret = System.Text.Encoding.UTF8.GetBytes($"only on the client {Guid.NewGuid()}\n");
        await using (var writer = local.Blobs.OpenWrite())
        {
            await writer.WriteAsync(secret);
            await writer.CompleteAsync();
        }

        var extra = new FileNode(PathComponent.Create("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-extra"), Blake3.Hash(secret), (ulong)secret.Length, false);
        var log = new List<string>();
        await using var service = new GrpcBuildService(local, [BuilderAddress.Parse(server.ListenAddress)], new GrpcBuildServiceOptions { Log = log.Add });
        var spec = Spec("mkdir $out; cat /nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-extra > $out/copy", extra);

        var run = await service.DoBuildAsync(spec, protocol);
        Assert.False(run.Cached);
        Assert.Contains($"uploaded 1 blob ({secret.Length} bytes), 0 directories to {server.StoreAddress()}", log);
        Assert.Equal(0, blobs.OpensOf(fixture.Busybox.Digest)); // busybox's root was there (Get): none of it was read or asked for
        Assert.DoesNotContain(blobs.Stats.Keys, d => d != extra.Digest);
        Assert.True(await fixture.Store.Blobs.HasAsync(extra.Digest));

        // The output is in the client's store, with the bytes the build wrote.
        var output = (DirectoryNode)run.Result.Outputs.Single().Node;
        var copy = (FileNode)(await local.Directories.GetAsync(output.Digest))!.Find("copy"u8)!;
        Assert.Equal(extra.Digest, copy.Digest);

        // Again: nothing to upload.
        log.Clear();
        var again = await service.DoBuildAsync(spec, protocol);
        Assert.Contains($"uploaded nothing to {server.StoreAddress()}", log);
        Assert.Equal(run.Result.Outputs.Single().Node, again.Result.Outputs.Single().Node);
    }

    [Fact]
    public async Task ARemoteFailureIsTheLocalFailureWithItsLogTail()
    {
        var builds = new BuildGrpcService(new LocalBuildService(fixture.Runner()));
        await using var server = await GrpcCastoreTestServer.StartAsync(unixSocket: true, blobs: fixture.Store.Blobs, directories: fixture.Store.Directories, configure: s => s.AddBuildService(builds));
        await using var service = new GrpcBuildService(fixture.Store, [BuilderAddress.Parse(server.ListenAddress)]);
        var spec = Spec("echo first; echo second >&2; exit 5");

        var remote = await Assert.ThrowsAsync<BuildFailedException>(() => service.DoBuildAsync(spec, BuildProtocol.Tvix));
        var local = await Assert.ThrowsAsync<BuildFailedException>(() => new LocalBuildService(fixture.Runner()).DoBuildAsync(spec, BuildProtocol.Tvix));
        Assert.Equal("the command exited with status 5", remote.Message);
        Assert.Equal(local.Message, remote.Message);
        Assert.Equal(["first", "second"], remote.LastLogLines(25));
        Assert.Equal((Sandbox.SandboxOutcome.Exited, 5), (remote.Sandbox!.Outcome, remote.Sandbox.ExitCode));
        Assert.Equal(BuildFailureText.Headline(local), BuildFailureText.Headline(remote));
        Assert.Equal(BuildFailureText.Details(local), BuildFailureText.Details(remote));
    }

    [Fact]
    public async Task AnUnreachableBuilderIsABuilderFailure()
    {
        string socket = Path.Combine(fixture.Root, "nobody-" + Guid.NewGuid().ToString("N") + ".sock");
        await using var service = new GrpcBuildService(fixture.Store, [BuilderAddress.Parse("unix:" + socket)]);
        var e = await Assert.ThrowsAsync<BuilderException>(() => service.DoBuildAsync(Spec("mkdir $out"), BuildProtocol.Tvix));
        Assert.Contains(socket, e.Message);
    }

    [Theory]
    [InlineData("unix:/run/b.sock", "grpc+unix:///run/b.sock")]
    [InlineData("127.0.0.1:8000", "grpc+http://127.0.0.1:8000")]
    [InlineData("grpc+https://[::1]:9000", "grpc+https://[::1]:9000")]
    [InlineData("dns:///builders.example:8000", null)]
    public void BuilderAddressesTakeTheServeStoreAndDnsForms(string text, string? store)
    {
        var address = BuilderAddress.Parse(text);
        Assert.Equal(store, address.StoreAddress);
        Assert.Equal(text.StartsWith("dns:", StringComparison.Ordinal) ? "builders.example" : null, address.DnsName);
    }

    [Theory]
    [InlineData("ftp://example.org/", "unknown scheme 'ftp'")]
    [InlineData("dns://server/name:1", "three slashes")]
    [InlineData("dns:///name", "no port")]
    [InlineData("localhost", "no port")]
    public void MalformedBuilderAddressesSayWhy(string text, string reason)
    {
        var e = Assert.Throws<StoreAddressException>(() => BuilderAddress.Parse(text));
        Assert.Contains($"'{text}' is not a builder address", e.Message);
        Assert.Contains(reason, e.Message);
    }

    [Fact]
    public void AStatusDetailRoundTripsAndStaysUnderItsBudget()
    {
        var failure = new BuildFailedException("the command exited with status 2", null, null, string.Concat(Enumerable.Range(0, 500).Select(i => $"line {i} %\n")));
        string detail = BuildFailureText.StatusDetail(failure, 25, 300);
        Assert.StartsWith("build failed: the command exited with status 2\nlast ", detail);
        var back = BuildFailureText.FromStatusDetail(detail)!;
        Assert.Equal(failure.Message, back.Message);
        Assert.Equal("line 499 %", back.LastLogLines(25)[^1]);
        Assert.True(back.LastLogLines(25).Count < 25);
        Assert.Null(BuildFailureText.FromStatusDetail("the server cannot run the build: no sandbox"));
    }
}
