using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Headers;

namespace TvixFuseBuild.Server.Tests;

/// <summary>Our server (grpc-dotnet) at the HTTP/2 level, with a plain HttpClient: framing, Trailers-Only, statuses, deadlines.</summary>
public sealed class GrpcServerProtocolTests : IAsyncLifetime
{
    private readonly GrpcTestService _test = new();
    private GrpcCastoreTestServer _server = null!;
    private HttpMessageInvoker _http = null!;

    public async Task InitializeAsync()
    {
        _server = await GrpcCastoreTestServer.StartAsync(configure: s => s.AddService(_test));
        _http = new HttpMessageInvoker(new SocketsHttpHandler { UseProxy = false });
    }

    public async Task DisposeAsync()
    {
        _http.Dispose();
        await _server.DisposeAsync();
    }

    [Fact]
    public async Task OkResponseHasMessagesThenStatusInTrailers()
    {
        using var response = await SendAsync(GrpcTestService.EchoMethod.FullName, Frame("hello"u8));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("application/grpc", response.Content.Headers.ContentType?.MediaType);
        Assert.False(response.Headers.Contains("grpc-status"));
        byte[] body = await response.Content.ReadAsByteArrayAsync();
        Assert.Equal(Frame("hello"u8), body);
        Assert.Equal("0", response.TrailingHeaders.GetValues("grpc-status").Single());
    }

    [Fact]
    public async Task ErrorsBeforeAnyMessageAreTrailersOnly()
    {
        using var response = await SendAsync("/interop.Test/Nope", Frame(""u8));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("12", response.Headers.GetValues("grpc-status").Single());
        Assert.Equal("Method is unimplemented.", response.Headers.GetValues("grpc-message").Single());
        Assert.Empty(await response.Content.ReadAsByteArrayAsync());
        Assert.Empty(response.TrailingHeaders);
    }

    [Fact]
    public async Task StatusMessagesArePercentEncoded()
    {
        using var response = await SendAsync(GrpcTestService.FailMethod.FullName, Frame("3:ü 100%"u8));
        Assert.Equal("3", response.Headers.GetValues("grpc-status").Single());
        Assert.Equal("%C3%BC 100%25", response.Headers.GetValues("grpc-message").Single());
    }

    [Fact]
    public async Task ErrorsAfterMessagesAreInTrailers()
    {
        byte[] request = [3, 0, 0, 0, .. "fail"u8];
        using var response = await SendAsync(GrpcTestService.RepeatMethod.FullName, Frame(request));
        Assert.False(response.Headers.Contains("grpc-status"));
        byte[] body = await response.Content.ReadAsByteArrayAsync();
        Assert.Equal([.. Frame("fail"u8), .. Frame("fail"u8), .. Frame("fail"u8)], body);
        Assert.Equal("10", response.TrailingHeaders.GetValues("grpc-status").Single());
        Assert.Equal("failed after the messages", response.TrailingHeaders.GetValues("grpc-message").Single());
    }

    [Fact]
    public async Task TheServerEnforcesGrpcTimeout()
    {
        // This client does not enforce the deadline itself: the DEADLINE_EXCEEDED comes from the server.
        using var response = await SendAsync(GrpcTestService.SlowMethod.FullName, Frame(""u8), request => request.Headers.Add("grpc-timeout", "200m"));
        Assert.Equal("4", response.Headers.GetValues("grpc-status").Single());
        Assert.Equal("deadline", await _test.SlowCallsEnded.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public async Task MalformedRequestStreams()
    {
        byte[] truncated = Frame("hello"u8)[..7];
        using (var response = await SendAsync(GrpcTestService.EchoMethod.FullName, truncated))
        {
            Assert.Equal("13", response.Headers.GetValues("grpc-status").Single());
            Assert.Equal("Incomplete message.", response.Headers.GetValues("grpc-message").Single());
        }

        using (var response = await SendAsync(GrpcTestService.EchoMethod.FullName, [.. Frame("a"u8), .. Frame("b"u8)]))
        {
            Assert.Equal("13", response.Headers.GetValues("grpc-status").Single());
        }

        using (var response = await SendAsync(GrpcTestService.EchoMethod.FullName, []))
        {
            Assert.Equal("13", response.Headers.GetValues("grpc-status").Single());
        }
    }

    [Fact]
    public async Task NonGrpcRequestsGetHttpErrors()
    {
        using (var response = await SendAsync(GrpcTestService.EchoMethod.FullName, Frame("x"u8), request => request.Method = HttpMethod.Get))
        {
            // gRPC endpoints are POST only: a GET matches no route.
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        }

        using (var response = await SendAsync(GrpcTestService.EchoMethod.FullName, Frame("x"u8), request => request.Content!.Headers.ContentType = new MediaTypeHeaderValue("text/plain")))
        {
            Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
        }
    }

    private async Task<HttpResponseMessage> SendAsync(string path, byte[] body, Action<HttpRequestMessage>? configure = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, $"http://{_server.ListenAddress}{path}")
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = new ByteArrayContent(body),
        };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        request.Headers.TryAddWithoutValidation("te", "trailers");
        configure?.Invoke(request);
        if (request.Method == HttpMethod.Get)
        {
            request.Content = null;
        }

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        return await _http.SendAsync(request, timeout.Token);
    }

    private static byte[] Frame(ReadOnlySpan<byte> message)
    {
        var frame = new byte[5 + message.Length];
        BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), (uint)message.Length);
        message.CopyTo(frame.AsSpan(5));
        return frame;
    }
}
