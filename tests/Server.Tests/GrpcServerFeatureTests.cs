using System.Diagnostics;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Net.Client;
using Grpc.Reflection.V1Alpha;
using TvixFuseBuild.Build.Pipeline;
using TvixFuseBuild.Build.Service;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Hashing;
using TvixFuseBuild.Castore.Stores;
using ServingStatus = Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus;

namespace TvixFuseBuild.Server.Tests;

/// <summary>
/// What <c>serve</c> needs for real deployments, through grpc-dotnet's own client over real sockets: health (and its
/// flip while draining), reflection, bearer tokens, TLS with a test CA, client certificates; and the listen sockets.
/// </summary>
public sealed class GrpcServerFeatureTests
{
    private static readonly string[] CastoreServices =
    [
        "snix.castore.v1.BlobService", "snix.castore.v1.DirectoryService", "tvix.castore.v1.BlobService", "tvix.castore.v1.DirectoryService",
    ];

    private static GrpcChannel Channel(string address, Action<SocketsHttpHandler>? configure = null, bool tls = false)
    {
        var handler = new SocketsHttpHandler { UseProxy = false, EnableMultipleHttp2Connections = true };
        configure?.Invoke(handler);
        return address.StartsWith("unix:", StringComparison.Ordinal)
            ? GrpcChannel.ForAddress(tls ? "https://localhost" : "http://localhost", new GrpcChannelOptions
            {
                HttpHandler = WithUnixSocket(handler, address["unix:".Length..]),
            })
            : GrpcChannel.ForAddress((tls ? "https://" : "http://") + address, new GrpcChannelOptions { HttpHandler = handler });
    }

    private static SocketsHttpHandler WithUnixSocket(SocketsHttpHandler handler, string path)
    {
        handler.ConnectCallback = async (_, ct) =>
        {
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            try
            {
                await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), ct);
                return new NetworkStream(socket, ownsSocket: true);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        };
        return handler;
    }

    /// <summary>Trusts exactly <paramref name="ca"/> for the server's certificate, and presents <paramref name="clientCertificate"/>.</summary>
    private static Action<SocketsHttpHandler> Trusting(X509Certificate2 ca, X509Certificate2? clientCertificate = null) => handler =>
    {
        handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, _, _) =>
        {
            using var chain = new X509Chain();
            chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
            chain.ChainPolicy.CustomTrustStore.Add(ca);
            chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            return certificate is X509Certificate2 c && chain.Build(c);
        };
        if (clientCertificate is not null)
        {
            handler.SslOptions.ClientCertificates = [clientCertificate];
        }
    };

    private static Task<byte[]> EchoAsync(GrpcChannel channel, byte[] message, Metadata? headers = null) =>
        channel.CreateCallInvoker().AsyncUnaryCall(GrpcTestService.EchoMethod, null, new CallOptions(headers, DateTime.UtcNow.AddMinutes(1)), message).ResponseAsync;

    private static async Task<ServingStatus> HealthAsync(GrpcChannel channel, string service) =>
        (await new Health.HealthClient(channel).CheckAsync(new HealthCheckRequest { Service = service }, deadline: DateTime.UtcNow.AddMinutes(1))).Status;

    [Fact]
    public async Task HealthAnswersServingAndFlipsToNotServingWhileDraining()
    {
        var test = new GrpcTestService();
        await using var server = await GrpcCastoreTestServer.StartAsync(unixSocket: true, configure: s => s.AddService(test));
        using var channel = Channel(server.ListenAddress);
        var health = new Health.HealthClient(channel);

        Assert.Equal(["interop.Test", .. CastoreServices], server.Server.ServiceNames);
        foreach (string service in (string[])["", .. server.Server.ServiceNames])
        {
            Assert.Equal(ServingStatus.Serving, await HealthAsync(channel, service));
        }

        var unknown = await Assert.ThrowsAsync<RpcException>(() => HealthAsync(channel, "no.such.Service"));
        Assert.Equal(StatusCode.NotFound, unknown.StatusCode);

        // A watcher hears the flip; a call that is running goes on while the server drains.
        using var watch = health.Watch(new HealthCheckRequest(), deadline: DateTime.UtcNow.AddMinutes(1));
        Assert.True(await watch.ResponseStream.MoveNext());
        Assert.Equal(ServingStatus.Serving, watch.ResponseStream.Current.Status);
        using var running = channel.CreateCallInvoker().AsyncClientStreamingCall(GrpcTestService.ConcatMethod, null, new CallOptions(deadline: DateTime.UtcNow.AddMinutes(1)));
        await running.RequestStream.WriteAsync("before "u8.ToArray());
        await test.ConcatStarted.Task.WaitAsync(TimeSpan.FromSeconds(30));

        server.Server.BeginDrain();

        Assert.True(await watch.ResponseStream.MoveNext());
        Assert.Equal(ServingStatus.NotServing, watch.ResponseStream.Current.Status);
        foreach (string service in (string[])["", .. server.Server.ServiceNames])
        {
            Assert.Equal(ServingStatus.NotServing, await HealthAsync(channel, service));
        }

        await running.RequestStream.WriteAsync("draining"u8.ToArray());
        await running.RequestStream.CompleteAsync();
        Assert.Equal("before draining"u8.ToArray(), await running.ResponseAsync);

        // Stopping ends the watch rather than waiting for it.
        await server.Server.StopAsync().WaitAsync(TimeSpan.FromSeconds(60));
        Assert.False(await watch.ResponseStream.MoveNext());
    }

    [Fact]
    public async Task ReflectionListsTheServicesAndDescribesThem()
    {
        await using var store = CastoreStore.Open("memory://");
        var builds = new BuildGrpcService(new LocalBuildService(new BuildRunner(store)));
        await using var server = await GrpcCastoreTestServer.StartAsync(configure: s => s.AddBuildService(builds));
        using var channel = Channel(server.ListenAddress);
        using var call = new ServerReflection.ServerReflectionClient(channel).ServerReflectionInfo(deadline: DateTime.UtcNow.AddMinutes(1));

        await call.RequestStream.WriteAsync(new ServerReflectionRequest { ListServices = "" });
        Assert.True(await call.ResponseStream.MoveNext());
        var listed = call.ResponseStream.Current.ListServicesResponse.Service.Select(s => s.Name).ToHashSet();

        await call.RequestStream.WriteAsync(new ServerReflectionRequest { FileContainingSymbol = "snix.build.v1.BuildService" });
        Assert.True(await call.ResponseStream.MoveNext());
        var files = call.ResponseStream.Current.FileDescriptorResponse.FileDescriptorProto
            .Select(b => Google.Protobuf.Reflection.FileDescriptorProto.Parser.ParseFrom(b)).ToList();
        await call.RequestStream.CompleteAsync();

        Assert.Superset(
            new HashSet<string>([.. CastoreServices, "tvix.build.v1.BuildService", "snix.build.v1.BuildService", "grpc.health.v1.Health"]),
            listed);
        var service = files.SelectMany(f => f.Service.Select(s => (f.Package, s))).Single(p => p.Package == "snix.build.v1" && p.s.Name == "BuildService").s;
        Assert.Equal("DoBuild", service.Method.Single().Name);
    }

    [Fact]
    public async Task AMissingOrWrongBearerTokenIsUnauthenticatedAndHealthStaysOpen()
    {
        await using var server = await GrpcCastoreTestServer.StartAsync(
            options: new GrpcServerOptions { BearerToken = "s3cret-token"u8.ToArray() }, configure: s => s.AddService(new GrpcTestService()));
        using var channel = Channel(server.ListenAddress);

        var missing = await Assert.ThrowsAsync<RpcException>(() => EchoAsync(channel, "x"u8.ToArray()));
        var wrong = await Assert.ThrowsAsync<RpcException>(() => EchoAsync(channel, "x"u8.ToArray(), new Metadata { { "authorization", "Bearer s3cret-tokeN" } }));
        var shorter = await Assert.ThrowsAsync<RpcException>(() => EchoAsync(channel, "x"u8.ToArray(), new Metadata { { "authorization", "Bearer s3cret" } }));
        var basic = await Assert.ThrowsAsync<RpcException>(() => EchoAsync(channel, "x"u8.ToArray(), new Metadata { { "authorization", "Basic czNjcmV0" } }));
        // The castore services are guarded the same way (the check is the server's, not a service's).
        var blobs = new Tvix.Castore.V1.BlobService.BlobServiceClient(channel);
        var stat = await Assert.ThrowsAsync<RpcException>(async () =>
            await blobs.StatAsync(new Tvix.Castore.V1.StatBlobRequest { Digest = Blake3.Hash("x"u8).ToByteString() }));

        Assert.All([missing, wrong, shorter, basic, stat], e => Assert.Equal(StatusCode.Unauthenticated, e.StatusCode));
        Assert.StartsWith("no bearer token: this server requires 'authorization: Bearer TOKEN'", missing.Status.Detail, StringComparison.Ordinal);
        Assert.Equal("the bearer token is wrong", wrong.Status.Detail);
        Assert.Equal("the bearer token is wrong", shorter.Status.Detail);
        Assert.Equal("the authorization header is not 'Bearer TOKEN'", basic.Status.Detail);
        Assert.Equal("hi"u8.ToArray(), await EchoAsync(channel, "hi"u8.ToArray(), new Metadata { { "authorization", "Bearer s3cret-token" } }));
        Assert.Equal(ServingStatus.Serving, await HealthAsync(channel, ""));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task TlsWithATestCaWorksAndCleartextAgainstItFails(bool unixSocket)
    {
        using var pki = TestCertificates.Create();
        using var ca = pki.LoadCa();
        await using var server = await GrpcCastoreTestServer.StartAsync(
            unixSocket, new GrpcServerOptions { Tls = ServerTls.Load(pki.ServerCertificate, pki.ServerKey) }, configure: s => s.AddService(new GrpcTestService()));
        string address = unixSocket ? server.ListenAddress : server.ListenAddress.Replace("127.0.0.1", "localhost", StringComparison.Ordinal);

        using (var tls = Channel(address, Trusting(ca), tls: true))
        {
            Assert.Equal("over tls"u8.ToArray(), await EchoAsync(tls, "over tls"u8.ToArray()));
            Assert.Equal(ServingStatus.Serving, await HealthAsync(tls, ""));
        }

        // h2c against a TLS listener: the client's HTTP/2 preface is not a TLS handshake; the connection fails.
        using (var plain = Channel(server.ListenAddress))
        {
            var e = await Assert.ThrowsAsync<RpcException>(() => EchoAsync(plain, "x"u8.ToArray()));
            Assert.True(e.StatusCode is StatusCode.Unavailable or StatusCode.Internal, $"{e.StatusCode}: {e.Status.Detail}");
        }

        // A client that does not trust the server's CA refuses the connection.
        using (var untrusting = Channel(address, tls: true))
        {
            var e = await Assert.ThrowsAsync<RpcException>(() => EchoAsync(untrusting, "x"u8.ToArray()));
            Assert.True(e.StatusCode is StatusCode.Unavailable or StatusCode.Internal, $"{e.StatusCode}: {e.Status.Detail}");
            Assert.Contains("SSL", e.Status.Detail, StringComparison.OrdinalIgnoreCase);
        }
    }

    [Fact]
    public async Task AClientCertificateIsRequiredAcceptedFromTheCaAndRefusedOtherwise()
    {
        using var pki = TestCertificates.Create();
        using var ca = pki.LoadCa();
        await using var server = await GrpcCastoreTestServer.StartAsync(
            options: new GrpcServerOptions { Tls = ServerTls.Load(pki.ServerCertificate, pki.ServerKey, pki.CaCertificate) },
            configure: s => s.AddService(new GrpcTestService()));
        string address = server.ListenAddress.Replace("127.0.0.1", "localhost", StringComparison.Ordinal);
        using var client = TestCertificates.LoadWithKey(pki.ClientCertificate, pki.ClientKey);
        using var stranger = TestCertificates.LoadWithKey(pki.StrangerCertificate, pki.StrangerKey);

        using (var accepted = Channel(address, Trusting(ca, client), tls: true))
        {
            Assert.Equal("with a certificate"u8.ToArray(), await EchoAsync(accepted, "with a certificate"u8.ToArray()));
        }

        using (var without = Channel(address, Trusting(ca), tls: true))
        {
            var e = await Assert.ThrowsAsync<RpcException>(() => EchoAsync(without, "x"u8.ToArray()));
            Assert.Equal(StatusCode.Unauthenticated, e.StatusCode);
            Assert.Equal("no client certificate: this server requires one issued by its client CA (--client-ca)", e.Status.Detail);
            // Orchestrators probe without one.
            Assert.Equal(ServingStatus.Serving, await HealthAsync(without, ""));
        }

        using (var refused = Channel(address, Trusting(ca, stranger), tls: true))
        {
            var e = await Assert.ThrowsAsync<RpcException>(() => EchoAsync(refused, "x"u8.ToArray()));
            Assert.Equal(StatusCode.Unauthenticated, e.StatusCode);
            Assert.StartsWith("the client certificate 'CN=stranger' is not accepted: ", e.Status.Detail, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task GracefulStopLetsRunningCallsFinishAndRemovesTheSocket()
    {
        using var temp = new GrpcTempDirectory();
        string socket = temp.File("stop.sock");
        var test = new GrpcTestService();
        await using var server = new GrpcServer().Listen("unix:" + socket).AddService(test);
        await server.StartAsync();
        using var channel = Channel("unix:" + socket);
        using var call = channel.CreateCallInvoker().AsyncClientStreamingCall(GrpcTestService.ConcatMethod, null, new CallOptions(deadline: DateTime.UtcNow.AddMinutes(1)));
        await call.RequestStream.WriteAsync("before"u8.ToArray());
        await test.ConcatStarted.Task.WaitAsync(TimeSpan.FromSeconds(30));

        var stopping = server.StopAsync();
        await call.RequestStream.WriteAsync(" after"u8.ToArray());
        await call.RequestStream.CompleteAsync();
        Assert.Equal("before after"u8.ToArray(), await call.ResponseAsync);
        await stopping.WaitAsync(TimeSpan.FromSeconds(60));

        Assert.False(File.Exists(socket), "the socket file was left behind");
        var e = await Assert.ThrowsAsync<RpcException>(() => EchoAsync(channel, []));
        Assert.Equal(StatusCode.Unavailable, e.StatusCode);
    }

    [Fact]
    public async Task StaleSocketsAreReplacedLiveOnesAndOtherFilesAreNot()
    {
        using var temp = new GrpcTempDirectory();
        string socket = temp.File("s.sock");
        // A socket file left by a process that died (.NET would remove its own on dispose).
        using (var python = Process.Start("/usr/bin/python3", ["-c", "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", socket]))
        {
            await python.WaitForExitAsync();
            Assert.Equal(0, python.ExitCode);
        }

        await using var first = new GrpcServer().Listen("unix:" + socket).AddService(new GrpcTestService());
        await first.StartAsync();
        Assert.Equal(["unix:" + socket], first.BoundAddresses);

        await using var second = new GrpcServer().Listen("unix:" + socket);
        Assert.Contains("another server is listening", (await Assert.ThrowsAsync<IOException>(() => second.StartAsync())).Message);

        string file = temp.File("plain");
        await File.WriteAllTextAsync(file, "x");
        await using var third = new GrpcServer().Listen("unix:" + file);
        Assert.Contains("not a socket", (await Assert.ThrowsAsync<IOException>(() => third.StartAsync())).Message);
        Assert.Equal("x", await File.ReadAllTextAsync(file));
    }

    [Fact]
    public void BadTlsFilesAreClearErrors()
    {
        using var pki = TestCertificates.Create();
        var wrongKey = Assert.Throws<IOException>(() => ServerTls.Load(pki.ServerCertificate, pki.ClientKey));
        var noCa = Assert.Throws<IOException>(() => ServerTls.Load(pki.ServerCertificate, pki.ServerKey, pki.ServerKey));
        var missing = Assert.ThrowsAny<IOException>(() => ServerTls.Load(pki.ServerCertificate + ".missing", pki.ServerKey));

        Assert.StartsWith($"cannot load the TLS certificate {pki.ServerCertificate} with the key {pki.ClientKey}: ", wrongKey.Message, StringComparison.Ordinal);
        Assert.StartsWith($"cannot load the client CA {pki.ServerKey}: ", noCa.Message, StringComparison.Ordinal);
        Assert.Contains(pki.ServerCertificate + ".missing", missing.Message, StringComparison.Ordinal);
    }
}
