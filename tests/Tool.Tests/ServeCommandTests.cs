using System.Diagnostics;
using System.Text;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using TvixFuseBuild.Build.Grpc;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Build.Tests.Grpc;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Grpc;
using TvixFuseBuild.Castore.Hashing;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Transfer;
using TvixFuseBuild.Server;
using TvixBuild = Tvix.Build.V1;

namespace TvixFuseBuild.Tool.Tests;

/// <summary>
/// <c>serve</c> as build farms run it, and two instances on one machine: one serves a store on a unix socket, the
/// other builds with <c>--store grpc+unix://…</c> and fetches only what its build touches. Every test removes its
/// processes, mounts and files, also when it fails.
/// </summary>
public sealed class ServeCommandTests : IDisposable
{
    private const string BusyboxName = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-busybox";
    private const string OutPath = "nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo";
    private readonly string _temp = Directory.CreateTempSubdirectory("tvix-fuse-serve-test-").FullName;
    private readonly List<Process> _processes = [];
    private readonly StringBuilder _serverLog = new();
    private readonly Dictionary<string, string> _environment;

    public ServeCommandTests()
    {
        File.SetUnixFileMode(_temp, (UnixFileMode)0x1ED);
        // Build directories go to TMPDIR: a test sees its builds come and go there.
        Directory.CreateDirectory(WorkRoot);
        File.SetUnixFileMode(WorkRoot, (UnixFileMode)0x1ED);
        _environment = new Dictionary<string, string> { ["XDG_DATA_HOME"] = Path.Combine(_temp, "data"), ["TMPDIR"] = WorkRoot };
    }

    private string WorkRoot => Path.Combine(_temp, "tmp");

    /// <summary>Where the server's build directories are (root's, mode 0700).</summary>
    private string BuildDirectories => Path.Combine(WorkRoot, "tvix-fuse-builds-0");

    private bool ABuildIsRunning() => Directory.Exists(BuildDirectories) && Directory.EnumerateDirectories(BuildDirectories).Any();

    private string Socket => Path.Combine(_temp, "serve.sock");

    private string ServingStore => Path.Combine(_temp, "serving-store");

    public void Dispose()
    {
        ToolProcess.StopAll(_processes);

        var chmod = Process.Start("chmod", ["-R", "u+rwX", _temp])!;
        chmod.WaitForExit();
        Directory.Delete(_temp, recursive: true);
    }

    /// <summary>
    /// Imports an input into <paramref name="store"/>: busybox in bin/ (with sh, echo, sleep, cat, mkdir linked to it),
    /// and next to it a share/ tree and a large file no build here ever reads.
    /// </summary>
    private static async Task<DirectoryNode> ImportInputAsync(CastoreStore store, string scratch)
    {
        string tree = Path.Combine(scratch, BusyboxName);
        Directory.CreateDirectory(Path.Combine(tree, "bin"));
        File.Copy("/bin/busybox", Path.Combine(tree, "bin", "busybox"));
        foreach (string applet in new[] { "sh", "echo", "sleep", "cat", "mkdir" })
        {
            File.CreateSymbolicLink(Path.Combine(tree, "bin", applet), "busybox");
        }

        for (int i = 0; i < 3; i++)
        {
            Directory.CreateDirectory(Path.Combine(tree, "share", $"doc{i}"));
            File.WriteAllText(Path.Combine(tree, "share", $"doc{i}", "README"), $"unread {i}\n");
        }

        File.WriteAllBytes(Path.Combine(tree, "unread.bin"), new byte[3 << 20]);
        var node = await HostImporter.ImportAsync(tree, PathComponent.Create(BusyboxName), store.Blobs, store.Directories);
        HostTree.Remove(tree);
        return (DirectoryNode)node;
    }

    private static BuildSpec Spec(DirectoryNode input, string script) => new()
    {
        Inputs = [input],
        CommandArgs = [$"/nix/store/{BusyboxName}/bin/sh", "-c", script],
        WorkingDir = "build",
        ScratchPaths = ["build", "nix/store"],
        InputsDir = "nix/store",
        Outputs = [OutPath],
        EnvironmentVars = [new EnvironmentVariable("PATH", $"/nix/store/{BusyboxName}/bin"), new EnvironmentVariable("out", "/" + OutPath)],
        RefscanNeedles = ["fhaj6gmwns62s6ypkcldbaj2ybvkhx3p"],
    };

    private async Task<DirectoryNode> PrepareServingStoreAsync()
    {
        await using var store = CastoreStore.Open("local://" + ServingStore);
        return await ImportInputAsync(store, _temp);
    }

    /// <summary>Starts <c>serve</c> and waits for its ready line.</summary>
    private async Task<Process> StartServerAsync(params string[] options)
    {
        var server = ToolProcess.Start(["--store", "local://" + ServingStore, "serve", "--listen", "unix:" + Socket, .. options], _environment);
        _processes.Add(server);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        server.ErrorDataReceived += (_, e) =>
        {
            lock (_serverLog)
            {
                _serverLog.AppendLine(e.Data);
            }
        };
        server.BeginErrorReadLine();
        string? line = await server.StandardOutput.ReadLineAsync(timeout.Token);
        Assert.True(line == $"listening on unix:{Socket}", $"serve did not start: {line}; {ServerLog}");
        return server;
    }

    private GrpcChannel Channel() => GrpcChannels.Create(GrpcEndpoint.UnixSocket(Socket));

    private static Task<TvixBuild.Build> DoBuildAsync(GrpcChannel channel, TvixBuild.BuildRequest request, TimeSpan timeout) =>
        new TvixBuild.BuildService.BuildServiceClient(channel).DoBuildAsync(request, deadline: DateTime.UtcNow + timeout).ResponseAsync;

    private string ServerLog
    {
        get
        {
            lock (_serverLog)
            {
                return _serverLog.ToString();
            }
        }
    }

    private async Task<(int ExitCode, string Stderr)> WaitForExitAsync(Process server)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await server.WaitForExitAsync(timeout.Token);
        return (server.ExitCode, ServerLog);
    }

    private void AssertNothingLeftBehind()
    {
        Assert.False(File.Exists(Socket), "the socket file is left behind");
        Assert.DoesNotContain(File.ReadAllLines("/proc/self/mountinfo"), l => l.Contains(_temp, StringComparison.Ordinal));
        Assert.False(ABuildIsRunning(), "a build directory is left behind");
        foreach (string pid in Directory.EnumerateDirectories("/proc").Select(Path.GetFileName).Where(n => n!.All(char.IsAsciiDigit))!)
        {
            try
            {
                string cmdline = File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ');
                Assert.False(cmdline.Contains(_temp, StringComparison.Ordinal), $"process {pid} is left behind: {cmdline}");
            }
            catch (IOException)
            {
            }
        }
    }

    [Fact]
    public async Task ServesBuildsAndStopsGracefullyOnSigterm()
    {
        var input = await PrepareServingStoreAsync();
        var server = await StartServerAsync("--verbose");
        using var channel = Channel();

        // A build is running when SIGTERM comes: it finishes (within the grace period) and its client gets the result.
        var build = DoBuildAsync(channel, Spec(input, "echo started; sleep 2; echo finished > $out").ToTvix(), TimeSpan.FromMinutes(2));
        await WaitForAsync(ABuildIsRunning);
        Assert.Equal(0, ToolProcess.Signal(server.Id, 15));

        var reply = await build;
        var (exitCode, stderr) = await WaitForExitAsync(server);

        var output = (FileNode)BuildResult.FromTvixBuild(reply).Outputs.Single().Node;
        Assert.Equal(Blake3.Hash("finished\n"u8), output.Digest);
        Assert.True(exitCode == 143, stderr); // 128 + SIGTERM, after the graceful stop
        Assert.Contains("SIGTERM: stopping; 1 build running", stderr, StringComparison.Ordinal);
        AssertNothingLeftBehind();

        // What it built is in its store.
        await using var store = CastoreStore.Open("local://" + ServingStore);
        Assert.True(await store.Blobs.HasAsync(output.Digest));
    }

    [Fact]
    public async Task ABuildStillRunningAfterTheGracePeriodIsCancelledAndTornDown()
    {
        var input = await PrepareServingStoreAsync();
        var server = await StartServerAsync("--grace-period", "1");
        using var channel = Channel();

        var build = DoBuildAsync(channel, Spec(input, "sleep 600; echo never > $out").ToTvix(), TimeSpan.FromMinutes(2));
        await WaitForAsync(ABuildIsRunning);
        await Task.Delay(500); // the sandbox is up
        Assert.Equal(0, ToolProcess.Signal(server.Id, 15));

        var failure = await Assert.ThrowsAsync<RpcException>(() => build);
        var (exitCode, stderr) = await WaitForExitAsync(server);

        Assert.True(failure.StatusCode is StatusCode.Unavailable, $"{failure.StatusCode}: {failure.Message}");
        Assert.True(exitCode == 143, stderr); // 128 + SIGTERM, after the graceful stop
        AssertNothingLeftBehind();
    }

    [Fact]
    public async Task ReadOnlyPathsAreRefusedUnlessAllowed()
    {
        var input = await PrepareServingStoreAsync();
        string allowed = Path.Combine(_temp, "allowed");
        Directory.CreateDirectory(allowed);
        File.WriteAllText(Path.Combine(allowed, "f"), "from the host\n");
        BuildSpec Reading(string path) => Spec(input, $"cat {path}/f > $out") with
        {
            Constraints = new BuildConstraints(Sandbox.SandboxRunner.SupportedSystems[0], AvailableReadOnlyPaths: [path]),
        };

        // By default no read-only path at all.
        var server = await StartServerAsync();
        using (var channel = Channel())
        {
            var refused = await Assert.ThrowsAsync<RpcException>(() =>
                DoBuildAsync(channel, Reading(allowed).ToTvix(), TimeSpan.FromMinutes(2)));
            Assert.True(refused.StatusCode is StatusCode.FailedPrecondition, $"{refused.StatusCode}: {refused.Message}");
            Assert.Contains($"read-only path {allowed} is not allowed: this server allows no read-only paths", refused.Message, StringComparison.Ordinal);
        }

        Assert.Equal(0, ToolProcess.Signal(server.Id, 15));
        await WaitForExitAsync(server);

        // With --allow-ro-path: that path is taken, anything else is refused naming it.
        server = await StartServerAsync("--allow-ro-path", allowed);
        using (var channel = Channel())
        {
            var refused = await Assert.ThrowsAsync<RpcException>(() =>
                DoBuildAsync(channel, Reading("/etc").ToTvix(), TimeSpan.FromMinutes(2)));
            Assert.True(refused.StatusCode is StatusCode.FailedPrecondition, $"{refused.StatusCode}: {refused.Message}");
            Assert.Contains($"read-only path /etc is not allowed: this server allows only paths under {allowed}", refused.Message, StringComparison.Ordinal);

            var reply = await DoBuildAsync(channel, Reading(allowed).ToTvix(), TimeSpan.FromMinutes(2));
            var output = (FileNode)BuildResult.FromTvixBuild(reply).Outputs.Single().Node;
            Assert.Equal(Blake3.Hash("from the host\n"u8), output.Digest);
        }

        Assert.Equal(0, ToolProcess.Signal(server.Id, 15));
        await WaitForExitAsync(server);
        AssertNothingLeftBehind();
    }

    [Fact]
    public async Task ItsLimitsApplyToEveryBuildAndAreNamedInTheFailure()
    {
        var input = await PrepareServingStoreAsync();
        var server = await StartServerAsync("--tmp-size", "16M", "--max-processes", "50");
        using var channel = Channel();

        var failure = await Assert.ThrowsAsync<RpcException>(() => DoBuildAsync(channel, Spec(input, "busybox dd if=/dev/zero of=/tmp/fill bs=1M count=64; exit 1").ToTvix(),
            TimeSpan.FromMinutes(2)));
        Assert.True(failure.StatusCode is StatusCode.Internal, $"{failure.StatusCode}: {failure.Message}");
        Assert.Contains("the command exited with status 1: /tmp reached its size limit of 16 MiB (--tmp-size)", failure.Message, StringComparison.Ordinal);

        // The next build gets the same limits.
        var again = await Assert.ThrowsAsync<RpcException>(() => DoBuildAsync(channel, Spec(input, "( while true; do sleep 30 & done ) 2>/dev/null; exit 2").ToTvix(),
            TimeSpan.FromMinutes(2)));
        Assert.Contains("the command exited with status 2: it reached the process limit of 50 (--max-processes)", again.Message, StringComparison.Ordinal);

        Assert.Equal(0, ToolProcess.Signal(server.Id, 15));
        var (exitCode, stderr) = await WaitForExitAsync(server);
        Assert.True(exitCode == 143, stderr); // 128 + SIGTERM, after the graceful stop
        AssertNothingLeftBehind();
    }

    [Fact]
    public async Task BadAddressesAreClearErrors()
    {
        var relative = ToolProcess.Run(["serve", "--listen", "unix:relative.sock"], _environment);
        var noPort = ToolProcess.Run(["serve", "--listen", "[::1]"], _environment);
        var badBuilds = ToolProcess.Run(["serve", "--listen", "unix:" + Socket, "--max-builds", "0"], _environment);
        var noDirectory = ToolProcess.Run(["--store", "local://" + ServingStore, "serve", "--listen", $"unix:{_temp}/missing/serve.sock"], _environment);

        Assert.Equal(2, relative.ExitCode);
        Assert.StartsWith("tvix-fuse-build: error: --listen: ", relative.Stderr, StringComparison.Ordinal);
        Assert.Equal(2, noPort.ExitCode);
        Assert.StartsWith("tvix-fuse-build: error: --listen: ", noPort.Stderr, StringComparison.Ordinal);
        Assert.Equal(2, badBuilds.ExitCode);
        Assert.Contains("--max-builds must be between 1 and 1024", badBuilds.Stderr, StringComparison.Ordinal);
        Assert.Equal(1, noDirectory.ExitCode);
        Assert.Contains($"cannot listen on unix:{_temp}/missing/serve.sock: the directory {_temp}/missing does not exist", noDirectory.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", relative.Stderr + noPort.Stderr + badBuilds.Stderr + noDirectory.Stderr, StringComparison.Ordinal);
        await Task.CompletedTask;
    }

    /// <summary>A grpc-dotnet channel to the server's unix socket.</summary>
    private Grpc.Net.Client.GrpcChannel DotnetChannel() => Grpc.Net.Client.GrpcChannel.ForAddress("http://localhost", new Grpc.Net.Client.GrpcChannelOptions
    {
        HttpHandler = new SocketsHttpHandler
        {
            ConnectCallback = async (_, ct) =>
            {
                var socket = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Unspecified);
                await socket.ConnectAsync(new System.Net.Sockets.UnixDomainSocketEndPoint(Socket), ct);
                return new System.Net.Sockets.NetworkStream(socket, ownsSocket: true);
            },
        },
    });

    [Fact]
    public async Task ItChecksTheTokenAndDrainsWithHealthNotServing()
    {
        var input = await PrepareServingStoreAsync();
        string tokenFile = Path.Combine(_temp, "token");
        await File.WriteAllTextAsync(tokenFile, "a-long-random-token\n");
        var server = await StartServerAsync("--token-file", tokenFile, "--verbose");
        using var channel = DotnetChannel();
        var health = new Grpc.Health.V1.Health.HealthClient(channel);
        var builds = new TvixBuild.BuildService.BuildServiceClient(channel);
        var token = new Grpc.Core.Metadata { { "authorization", "Bearer a-long-random-token" } };
        var deadline = DateTime.UtcNow.AddMinutes(2);
        async Task<Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus> StatusAsync(string service) =>
            (await health.CheckAsync(new Grpc.Health.V1.HealthCheckRequest { Service = service }, deadline: deadline)).Status;

        // Health answers without a token; a build without one is refused, saying why.
        Assert.Equal(Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus.Serving, await StatusAsync(""));
        Assert.Equal(Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus.Serving, await StatusAsync("snix.build.v1.BuildService"));
        var refused = await Assert.ThrowsAsync<Grpc.Core.RpcException>(async () =>
            await builds.DoBuildAsync(Spec(input, "echo no > $out").ToTvix(), deadline: deadline));
        Assert.Equal(Grpc.Core.StatusCode.Unauthenticated, refused.StatusCode);
        Assert.StartsWith("no bearer token", refused.Status.Detail, StringComparison.Ordinal);

        // SIGTERM while a build runs: health flips to NOT_SERVING, a new build is refused, the running one finishes.
        var build = builds.DoBuildAsync(Spec(input, "echo started; sleep 3; echo finished > $out").ToTvix(), token, deadline).ResponseAsync;
        await WaitForAsync(ABuildIsRunning);
        Assert.Equal(0, ToolProcess.Signal(server.Id, 15));
        await WaitForAsync(() => ServerLog.Contains("SIGTERM: stopping", StringComparison.Ordinal));
        Assert.Equal(Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus.NotServing, await StatusAsync(""));
        Assert.Equal(Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus.NotServing, await StatusAsync("tvix.build.v1.BuildService"));
        var late = await Assert.ThrowsAsync<Grpc.Core.RpcException>(async () =>
            await builds.DoBuildAsync(Spec(input, "echo late > $out").ToTvix(), token, deadline));
        Assert.Equal(Grpc.Core.StatusCode.Unavailable, late.StatusCode);

        var reply = await build;
        var (exitCode, stderr) = await WaitForExitAsync(server);
        Assert.Equal(Blake3.Hash("finished\n"u8), ((FileNode)BuildResult.FromTvixBuild(reply).Outputs.Single().Node).Digest);
        Assert.True(exitCode == 143, stderr);
        AssertNothingLeftBehind();
    }

    [Fact]
    public async Task ClientsTakeTheTokenFromTheOptionTheAddressOrTheEnvironment()
    {
        var input = await PrepareServingStoreAsync();
        string token = Path.Combine(_temp, "token");
        string wrong = Path.Combine(_temp, "wrong-token");
        await File.WriteAllTextAsync(token, "the-right-token\n");
        await File.WriteAllTextAsync(wrong, "another-token\n");
        await StartServerAsync("--token-file", token);
        string store = $"grpc+unix://{Socket}?cache=none";
        string file = $"{input.Digest}/share/doc0/README";
        ToolProcess.Result Cat(IDictionary<string, string>? environment, params string[] options) =>
            ToolProcess.Run([.. options, "cat", file], environment ?? _environment);

        var withEnvironment = new Dictionary<string, string>(_environment) { [GrpcChannels.TokenFileVariable] = token };
        var withWrongEnvironment = new Dictionary<string, string>(_environment) { [GrpcChannels.TokenFileVariable] = wrong };

        // No token, or the wrong one: refused by the server, and the client says so and how to give one.
        foreach (var refused in new[] { Cat(null, "--store", store), Cat(null, "--store", store, "--grpc-token-file", wrong) })
        {
            Assert.True(refused.ExitCode == 1, refused.Stderr);
            Assert.True(refused.Stderr.Contains("unauthenticated", StringComparison.OrdinalIgnoreCase), refused.Stderr);
            Assert.True(refused.Stderr.Contains("--grpc-token-file", StringComparison.Ordinal), refused.Stderr);
            Assert.DoesNotContain("   at ", refused.Stderr, StringComparison.Ordinal);
        }

        // The option (before or after the command), the address and the environment; the address wins over the
        // option, the option over the environment.
        ToolProcess.Result[] served =
        [
            Cat(null, "--grpc-token-file", token, "--store", store),
            Cat(null, "--store", store + "&token-file=" + token, "--grpc-token-file", wrong),
            Cat(withEnvironment, "--store", store),
            Cat(withWrongEnvironment, "--store", store, "--grpc-token-file", token),
        ];
        Assert.All(served, r => Assert.True(r is { ExitCode: 0, Stdout: "unread 0\n" }, r.Stderr));
        var afterCommand = ToolProcess.Run(["--store", store, "cat", "--grpc-token-file", token, file], _environment);
        Assert.True(afterCommand is { ExitCode: 0, Stdout: "unread 0\n" }, afterCommand.Stderr);

        // A token file that cannot be read: a clear error, nothing sent.
        var missing = Cat(null, "--store", store, "--grpc-token-file", Path.Combine(_temp, "absent"));
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains($"cannot read the token file '{Path.Combine(_temp, "absent")}'", missing.Stderr, StringComparison.Ordinal);

        // A build sent to the builder with --builder: its calls and the uploads to its store carry the token too.
        string clientStore = "local://" + Path.Combine(_temp, "client-store");
        await using (var client = CastoreStore.Open(clientStore))
        {
            Directory.CreateDirectory(Path.Combine(_temp, "client-scratch"));
            Assert.Equal(input, await ImportInputAsync(client, Path.Combine(_temp, "client-scratch")));
        }

        string request = Path.Combine(_temp, "request.json");
        await File.WriteAllTextAsync(request, JsonFormatter.Default.Format(Spec(input, "echo built remotely > $out").ToTvix()));
        var unauthenticatedBuild = ToolProcess.Run(["--store", clientStore, "build", "--builder", "unix:" + Socket, request], _environment);
        Assert.True(unauthenticatedBuild.ExitCode == 1, unauthenticatedBuild.Stderr);
        Assert.Contains("unauthenticated", unauthenticatedBuild.Stderr, StringComparison.OrdinalIgnoreCase);
        var build = ToolProcess.Run(["--store", clientStore, "--grpc-token-file", token, "build", "--builder", "unix:" + Socket, request], _environment);
        Assert.True(build.ExitCode == 0, build.Stderr);
        var built = (FileNode)BuildResult.FromTvixBuild(JsonParser.Default.Parse<TvixBuild.Build>(build.Stdout)).Outputs.Single().Node;
        var output = ToolProcess.Run(["--store", clientStore, "cat", built.Digest.ToString()], _environment);
        Assert.Equal((0, "built remotely\n"), (output.ExitCode, output.Stdout));

        // serve's own --token-file is the token it requires; --grpc-token-file is the client's, and help says which is which.
        var help = ToolProcess.Run(["serve", "--help"], _environment);
        Assert.Contains("--grpc-token-file", help.Stdout, StringComparison.Ordinal);
        Assert.Contains("--token-file", help.Stdout.Replace("--grpc-token-file", "", StringComparison.Ordinal), StringComparison.Ordinal);
    }

    [Fact]
    public void BadTlsAndTokenOptionsAreUsageErrors()
    {
        string empty = Path.Combine(_temp, "empty-token");
        File.WriteAllText(empty, "\n");
        var keyOnly = ToolProcess.Run(["serve", "--listen", "unix:" + Socket, "--tls-key", "/x.key"], _environment);
        var certOnly = ToolProcess.Run(["serve", "--listen", "unix:" + Socket, "--tls-cert", "/x.pem"], _environment);
        var caOnly = ToolProcess.Run(["serve", "--listen", "unix:" + Socket, "--client-ca", "/ca.pem"], _environment);
        var emptyToken = ToolProcess.Run(["serve", "--listen", "unix:" + Socket, "--token-file", empty], _environment);
        var missingCert = ToolProcess.Run(["serve", "--listen", "unix:" + Socket, "--tls-cert", _temp + "/none.pem", "--tls-key", _temp + "/none.key"], _environment);

        Assert.Equal((2, "tvix-fuse-build: error: --tls-key needs --tls-cert"), (keyOnly.ExitCode, keyOnly.Stderr.Split('\n')[0]));
        Assert.Equal((2, "tvix-fuse-build: error: --tls-cert needs --tls-key"), (certOnly.ExitCode, certOnly.Stderr.Split('\n')[0]));
        Assert.Equal((2, "tvix-fuse-build: error: --client-ca needs TLS: give --tls-cert and --tls-key too"), (caOnly.ExitCode, caOnly.Stderr.Split('\n')[0]));
        Assert.Equal((2, $"tvix-fuse-build: error: --token-file {empty} is empty"), (emptyToken.ExitCode, emptyToken.Stderr.Split('\n')[0]));
        Assert.Equal(1, missingCert.ExitCode);
        Assert.Contains("none.pem", missingCert.Stderr, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", keyOnly.Stderr + certOnly.Stderr + caOnly.Stderr + emptyToken.Stderr + missingCert.Stderr, StringComparison.Ordinal);
        Assert.False(File.Exists(Socket));
    }

    [Fact]
    public async Task ASecondInstanceBuildsFromTheServedStoreFetchingOnlyWhatItsBuildTouches()
    {
        // The serving instance: our server over a counting local store, on a unix socket.
        await using var local = CastoreStore.Open("local://" + ServingStore);
        var input = await ImportInputAsync(local, _temp);
        var blobs = new CountingBlobService(local.Blobs);
        var directories = new CountingDirectoryService(local.Directories);
        var chunks = new Server.BlobChunkIndex();
        await using var server = new Server.GrpcServer()
            .Listen("unix:" + Socket)
            .AddCastore(new Server.BlobGrpcService(blobs, chunks), new Server.DirectoryGrpcService(directories));
        await server.StartAsync();

        // The building instance: a separate tvix-fuse-build process whose inputs come through grpc+unix://.
        string request = Path.Combine(_temp, "request.json");
        await File.WriteAllTextAsync(request, JsonFormatter.Default.Format(Spec(input, "echo hello from the remote > $out").ToTvix()));
        string store = $"grpc+unix://{Socket}";

        var first = ToolProcess.Run(["--store", store, "build", request], _environment);
        Assert.True(first.ExitCode == 0, first.Stderr);
        var (blobsAfterFirst, directoriesAfterFirst) = Snapshot(blobs, directories);
        var second = ToolProcess.Run(["--store", store, "build", "--rebuild", request], _environment);
        Assert.True(second.ExitCode == 0, second.Stderr);
        var (blobsAfterSecond, directoriesAfterSecond) = Snapshot(blobs, directories);

        // Running sh reads busybox, and only busybox: share/ and unread.bin are never fetched.
        var root = (await local.Directories.GetAsync(input.Digest))!;
        var bin = (DirectoryNode)root.Find("bin"u8)!;
        var busybox = (FileNode)(await local.Directories.GetAsync(bin.Digest))!.Find("busybox"u8)!;
        var share = (DirectoryNode)root.Find("share"u8)!;
        var unread = (FileNode)root.Find("unread.bin"u8)!;
        // The busybox blob is large: the client reads it chunk by chunk (the server looks each chunk up by its digest).
        var busyboxChunks = (await chunks.GetChunksAsync(local.Blobs, busybox.Digest, default))!.Select(c => c.Digest).ToHashSet();
        Assert.True(busyboxChunks.Count > 1);
        Assert.True(blobs.OpensOf(busybox.Digest) >= 1);
        Assert.All(blobs.Opens.Keys, d => Assert.True(d == busybox.Digest || busyboxChunks.Contains(d), $"{d} was read"));
        Assert.Equal(0, blobs.Stats.GetValueOrDefault(unread.Digest));
        Assert.Equal(0, directories.Gets.GetValueOrDefault(share.Digest) + directories.RecursiveGets.GetValueOrDefault(share.Digest));
        Assert.True(directories.Gets.GetValueOrDefault(input.Digest) + directories.RecursiveGets.GetValueOrDefault(input.Digest) == 1, Describe(directories));
        Assert.True(directories.Gets.GetValueOrDefault(bin.Digest) + directories.RecursiveGets.GetValueOrDefault(bin.Digest) <= 1, Describe(directories));

        // The second identical build reads everything from the building instance's local cache.
        Assert.Equal(blobsAfterFirst, blobsAfterSecond);
        Assert.Equal(directoriesAfterFirst, directoriesAfterSecond);
        Assert.Equal(first.Stdout, second.Stdout);
    }

    private static (string Blobs, string Directories) Snapshot(CountingBlobService blobs, CountingDirectoryService directories) =>
        (string.Join(',', blobs.Opens.OrderBy(p => p.Key.ToString()).Select(p => $"{p.Key}={p.Value}")),
         Describe(directories));

    private static string Describe(CountingDirectoryService directories) =>
        "gets " + string.Join(',', directories.Gets.OrderBy(p => p.Key.ToString()).Select(p => $"{p.Key}={p.Value}")) +
        "; recursive " + string.Join(',', directories.RecursiveGets.OrderBy(p => p.Key.ToString()).Select(p => $"{p.Key}={p.Value}"));

    private async Task WaitForAsync(Func<bool> condition)
    {
        var stopwatch = Stopwatch.StartNew();
        while (!condition())
        {
            Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(60), $"timed out waiting; the server said: {ServerLog}");
            await Task.Delay(50);
        }
    }
}
