using System.Diagnostics;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using TvixFuseBuild.Server;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Grpc;
using TvixFuseBuild.Castore.Hashing;

namespace TvixFuseBuild.Build.Tests.Grpc;

/// <summary>Our client channel against our server (and a TLS Python server): call kinds, statuses, deadlines, cancellation.</summary>
public sealed class GrpcChannelTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task UnaryServerStreamingAndClientStreaming(bool unixSocket)
    {
        await using var server = await GrpcCastoreTestServer.StartAsync(unixSocket, configure: s => s.AddService(new GrpcTestService()));
        using var channel = new GrpcChannel(Endpoint(server));

        Assert.Equal("ping"u8.ToArray(), await channel.UnaryAsync(GrpcTestService.Client.Echo, "ping"u8.ToArray()));

        using (var call = channel.ServerStreaming(GrpcTestService.Client.Repeat, [3, 0, 0, 0, .. "ab"u8]))
        {
            var received = new List<byte[]>();
            await foreach (var message in call.ReadAllAsync())
            {
                received.Add(message);
            }

            Assert.Equal(3, received.Count);
            Assert.All(received, m => Assert.Equal("ab"u8.ToArray(), m));
        }

        // No messages at all: a Trailers-Only OK.
        using (var call = channel.ServerStreaming(GrpcTestService.Client.Repeat, [0, 0, 0, 0]))
        {
            Assert.False(await call.MoveNextAsync());
        }

        // Messages, then an error status in the trailers.
        using (var call = channel.ServerStreaming(GrpcTestService.Client.Repeat, [2, 0, 0, 0, .. "fail"u8]))
        {
            Assert.True(await call.MoveNextAsync());
            Assert.True(await call.MoveNextAsync());
            var e = await Assert.ThrowsAsync<RpcStatusException>(async () => await call.MoveNextAsync());
            Assert.Equal(GrpcStatusCode.Aborted, e.Code);
            Assert.Equal("failed after the messages", e.Detail);
        }

        using (var call = channel.ClientStreaming(GrpcTestService.Client.Concat))
        {
            await call.WriteAsync("a"u8.ToArray());
            await call.WriteAsync(new byte[100_000]);
            await call.WriteAsync("z"u8.ToArray());
            byte[] all = await call.CompleteAsync();
            Assert.Equal(100_002, all.Length);
            Assert.Equal((byte)'a', all[0]);
            Assert.Equal((byte)'z', all[^1]);
        }

        // The server rejects the stream early: the status comes out of a later write or the completion.
        using (var call = channel.ClientStreaming(GrpcTestService.Client.Concat))
        {
            var e = await Assert.ThrowsAsync<RpcStatusException>(async () =>
            {
                await call.WriteAsync("reject"u8.ToArray());
                for (int i = 0; i < 100; i++)
                {
                    await call.WriteAsync(new byte[10_000]);
                }

                await call.CompleteAsync();
            });
            Assert.True(e.Code == GrpcStatusCode.InvalidArgument, e.ToString());
            Assert.Equal("rejected early", e.Detail);
        }
    }

    [Fact]
    public async Task ManyConcurrentCallsShareTheChannel()
    {
        await using var server = await GrpcCastoreTestServer.StartAsync(configure: s => s.AddService(new GrpcTestService()));
        using var channel = new GrpcChannel(Endpoint(server));
        var calls = Enumerable.Range(0, 200).Select(async i =>
        {
            byte[] payload = BitConverter.GetBytes(i);
            Assert.Equal(payload, await channel.UnaryAsync(GrpcTestService.Client.Echo, payload));
        });
        await Task.WhenAll(calls);
    }

    [Fact]
    public async Task DeadlineAndCancellation()
    {
        var test = new GrpcTestService();
        await using var server = await GrpcCastoreTestServer.StartAsync(configure: s => s.AddService(test));
        using var channel = new GrpcChannel(Endpoint(server));

        var e = await Assert.ThrowsAsync<RpcStatusException>(() =>
            channel.UnaryAsync(GrpcTestService.Client.Slow, [], new GrpcCallOptions(TimeSpan.FromMilliseconds(200))));
        Assert.Equal(GrpcStatusCode.DeadlineExceeded, e.Code);
        Assert.NotNull(await test.SlowCallsEnded.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30)));

        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
        var cancelled = await Assert.ThrowsAnyAsync<OperationCanceledException>(() =>
            channel.UnaryAsync(GrpcTestService.Client.Slow, [], new GrpcCallOptions(null, cts.Token)));
        Assert.Equal(cts.Token, cancelled.CancellationToken);
        Assert.Equal("cancelled", await test.SlowCallsEnded.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30)));

        // Disposing a streaming call early resets the stream; the channel stays usable.
        using (var call = channel.ServerStreaming(GrpcTestService.Client.Repeat, [100, 0, 0, 0, .. new byte[10_000]]))
        {
            Assert.True(await call.MoveNextAsync());
        }

        Assert.Equal("ok"u8.ToArray(), await channel.UnaryAsync(GrpcTestService.Client.Echo, "ok"u8.ToArray()));
    }

    [Fact]
    public async Task ResponsesOverTheLimitAreResourceExhausted()
    {
        await using var server = await GrpcCastoreTestServer.StartAsync(configure: s => s.AddService(new GrpcTestService()));
        using var channel = new GrpcChannel(Endpoint(server), new GrpcChannelOptions { MaxReceiveMessageSize = 1000 });
        var e = await Assert.ThrowsAsync<RpcStatusException>(() => channel.UnaryAsync(GrpcTestService.Client.Echo, new byte[1001]));
        Assert.Equal(GrpcStatusCode.ResourceExhausted, e.Code);
        Assert.Equal(new byte[1000], await channel.UnaryAsync(GrpcTestService.Client.Echo, new byte[1000]));
    }

    [Fact]
    public async Task UnreachableIsUnavailableNamingTheAddress()
    {
        int port;
        using (var listener = new TcpListener(IPAddress.Loopback, 0))
        {
            listener.Start();
            port = ((IPEndPoint)listener.LocalEndpoint).Port;
        }

        using var channel = new GrpcChannel(GrpcEndpoint.Tcp("127.0.0.1", port));
        var e = await Assert.ThrowsAsync<RpcStatusException>(() => channel.UnaryAsync(GrpcTestService.Client.Echo, []));
        Assert.Equal(GrpcStatusCode.Unavailable, e.Code);
        Assert.Contains($"127.0.0.1:{port}", e.Detail);

        await using var blobs = await GrpcBlobService.OpenAsync($"grpc+http://127.0.0.1:{port}", new GrpcStoreOptions { Retry = GrpcRetryPolicy.None });
        var unavailable = await Assert.ThrowsAsync<StoreUnavailableException>(async () => await blobs.HasAsync(B3Digest.Empty));
        Assert.StartsWith($"cannot reach the store grpc+http://127.0.0.1:{port}: cannot connect to 127.0.0.1:{port}", unavailable.Message);
    }

    [Fact]
    public async Task GracefulShutdownLetsRunningCallsFinish()
    {
        using var temp = new GrpcTempDirectory();
        string socket = temp.File("stop.sock");
        var test = new GrpcTestService();
        await using var server = new GrpcServer().Listen("unix:" + socket).AddService(test);
        await server.StartAsync();
        using var channel = new GrpcChannel(GrpcEndpoint.UnixSocket(socket));
        using var call = channel.ClientStreaming(GrpcTestService.Client.Concat);
        await call.WriteAsync("before"u8.ToArray());
        await test.ConcatStarted.Task.WaitAsync(TimeSpan.FromSeconds(30));

        var stopping = server.StopAsync();
        await Task.Delay(200);
        Assert.False(stopping.IsCompleted, "the server stopped before the running call finished");
        await call.WriteAsync(" after"u8.ToArray());
        Assert.Equal("before after"u8.ToArray(), await call.CompleteAsync());
        await stopping.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.False(File.Exists(socket), "the socket file was left behind");
        var e = await Assert.ThrowsAsync<RpcStatusException>(() => channel.UnaryAsync(GrpcTestService.Client.Echo, []));
        Assert.Equal(GrpcStatusCode.Unavailable, e.Code);
    }

    [Fact]
    public async Task StaleSocketsAreReplacedLiveOnesAreNot()
    {
        using var temp = new GrpcTempDirectory();
        string socket = temp.File("s.sock");
        // A socket file left by a process that died (.NET would remove its own on dispose).
        using (var python = Process.Start("/usr/bin/python3", ["-c", "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])", socket]))
        {
            await python.WaitForExitAsync();
            Assert.Equal(0, python.ExitCode);
        }

        Assert.True(File.Exists(socket));
        await using var first = new GrpcServer().Listen("unix:" + socket).AddService(new GrpcTestService());
        await first.StartAsync();
        Assert.Equal(["unix:" + socket], first.BoundAddresses);

        await using var second = new GrpcServer().Listen("unix:" + socket);
        var e = await Assert.ThrowsAsync<IOException>(() => second.StartAsync());
        Assert.Contains("another server is listening", e.Message);

        string file = temp.File("plain");
        await File.WriteAllTextAsync(file, "x");
        await using var third = new GrpcServer().Listen("unix:" + file);
        Assert.Contains("not a socket", (await Assert.ThrowsAsync<IOException>(() => third.StartAsync())).Message);
    }

    [Fact]
    public async Task HttpsWithAlpnAgainstPythonTlsServer()
    {
        using var temp = new GrpcTempDirectory();
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("localhost");
        san.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(san.Build());
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        await File.WriteAllTextAsync(temp.File("cert.pem"), certificate.ExportCertificatePem());
        await File.WriteAllTextAsync(temp.File("key.pem"), key.ExportPkcs8PrivateKeyPem());

        await using var server = await PythonCastoreServer.StartAsync(
            GrpcInteropFixtures.ServerFixture(), "tvix", null, "--tls", temp.File("cert.pem"), temp.File("key.pem"));
        string address = $"grpc+https://localhost:{server.Target.Split(':')[1]}";
        byte[] hello = GrpcInteropFixtures.Blobs()["HELLOWORLD"];

        var trusting = new GrpcStoreOptions { Channel = new GrpcChannelOptions { TrustedRootCertificates = [certificate] } };
        await using (var blobs = await GrpcBlobService.OpenAsync(address + "?wait-connect=1", trusting))
        {
            using var reader = await blobs.OpenReadAsync(Blake3.Hash(hello));
            Assert.Equal(hello, await GrpcInteropClientTests.ReadAllAsync(reader!));
        }

        // Not trusted by the system: the TLS handshake fails, clearly.
        var e = await Assert.ThrowsAsync<StoreUnavailableException>(() =>
            GrpcBlobService.OpenAsync(address + "?wait-connect=1", new GrpcStoreOptions { Retry = GrpcRetryPolicy.None }));
        Assert.Contains("cannot reach the store " + address, e.Message);
    }

    [Fact]
    public async Task HttpAnswersThatAreNotGrpcMapToStatuses()
    {
        var builder = WebApplication.CreateEmptyBuilder(new());
        builder.WebHost.UseKestrelCore().ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, o => o.Protocols = Microsoft.AspNetCore.Server.Kestrel.Core.HttpProtocols.Http2));
        await using var app = builder.Build();
        app.Run(async http =>
        {
            switch (http.Request.Path.Value)
            {
                case "/s.S/Unavailable":
                    http.Response.StatusCode = 503;
                    break;
                case "/s.S/Html":
                    http.Response.ContentType = "text/html";
                    await http.Response.WriteAsync("<html/>");
                    break;
                case "/s.S/NoStatus":
                    http.Response.ContentType = "application/grpc";
                    await http.Response.Body.WriteAsync(new byte[] { 0, 0, 0, 0, 1, 42 });
                    break;
                default:
                    http.Response.StatusCode = 404;
                    break;
            }
        });
        await app.StartAsync();
        string address = app.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>()
            .Features.Get<Microsoft.AspNetCore.Hosting.Server.Features.IServerAddressesFeature>()!.Addresses.Single();
        using var channel = new GrpcChannel(GrpcEndpoint.Tcp("127.0.0.1", new Uri(address).Port));

        async Task<RpcStatusException> Call(string name) => await Assert.ThrowsAsync<RpcStatusException>(() =>
            channel.UnaryAsync(new GrpcMethod<byte[], byte[]>(GrpcMethodType.Unary, "s.S", name, RawBytesMarshaller.Instance, RawBytesMarshaller.Instance), []));

        Assert.Equal(GrpcStatusCode.Unavailable, (await Call("Unavailable")).Code);
        Assert.Equal(GrpcStatusCode.Unimplemented, (await Call("Missing")).Code);
        var html = await Call("Html");
        Assert.Equal(GrpcStatusCode.Unknown, html.Code);
        Assert.Contains("text/html", html.Detail);
        Assert.Equal(GrpcStatusCode.Internal, (await Call("NoStatus")).Code);
        await app.StopAsync();
    }

    private static GrpcEndpoint Endpoint(GrpcCastoreTestServer server) =>
        server.ListenAddress.StartsWith("unix:", StringComparison.Ordinal)
            ? GrpcEndpoint.UnixSocket(server.ListenAddress["unix:".Length..])
            : GrpcEndpoint.Tcp("127.0.0.1", int.Parse(server.ListenAddress.Split(':')[1]));
}
