using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;

namespace TvixFuseBuild.Castore.Grpc;

/// <summary>Per-call settings: a timeout (sent as grpc-timeout and enforced locally) and a cancellation token.</summary>
public readonly record struct GrpcCallOptions(TimeSpan? Timeout = null, CancellationToken CancellationToken = default);

/// <summary>
/// A gRPC client channel: one long-lived HTTP/2 client for one endpoint (several connections when streams run out).
/// Thread-safe; calls may run concurrently. Messages are framed into pooled buffers.
/// </summary>
public sealed partial class GrpcChannel : IDisposable
{
    private readonly HttpMessageInvoker _invoker;

    public GrpcChannel(GrpcEndpoint endpoint, GrpcChannelOptions? options = null)
    {
        Endpoint = endpoint;
        Options = options ?? new GrpcChannelOptions();
        _invoker = new HttpMessageInvoker(CreateHandler(endpoint, Options), disposeHandler: true);
    }

    public GrpcEndpoint Endpoint { get; }

    public GrpcChannelOptions Options { get; }

    internal HttpMessageInvoker Invoker => _invoker;

    internal Uri GetUri(string path) => new(Endpoint.BaseUri, path);

    /// <summary>A unary call: one request, one response.</summary>
    public async Task<TResponse> UnaryAsync<TRequest, TResponse>(
        GrpcMethod<TRequest, TResponse> method, TRequest request, GrpcCallOptions options = default)
    {
        using var call = new GrpcCallCore(this, method.Path, options);
        call.Start(GrpcRequestContent.ForSingleMessage(method.RequestMarshaller, request));
        var message = await call.ReadMessageAsync().ConfigureAwait(false)
            ?? throw new RpcStatusException(GrpcStatusCode.Internal, $"{method.Path}: the server sent no response message");
        var response = call.Parse(method.ResponseMarshaller, message);
        if (await call.ReadMessageAsync().ConfigureAwait(false) is not null)
        {
            throw new RpcStatusException(GrpcStatusCode.Internal, $"{method.Path}: the server sent more than one response message");
        }

        return response;
    }

    /// <summary>Starts a server-streaming call: one request, a stream of responses.</summary>
    public GrpcServerStreamingCall<TResponse> ServerStreaming<TRequest, TResponse>(
        GrpcMethod<TRequest, TResponse> method, TRequest request, GrpcCallOptions options = default)
    {
        var call = new GrpcCallCore(this, method.Path, options);
        call.Start(GrpcRequestContent.ForSingleMessage(method.RequestMarshaller, request));
        return new GrpcServerStreamingCall<TResponse>(call, method.ResponseMarshaller);
    }

    /// <summary>Starts a client-streaming call: a stream of requests, one response.</summary>
    public GrpcClientStreamingCall<TRequest, TResponse> ClientStreaming<TRequest, TResponse>(
        GrpcMethod<TRequest, TResponse> method, GrpcCallOptions options = default)
    {
        var call = new GrpcCallCore(this, method.Path, options);
        var content = new GrpcStreamingRequestContent();
        call.Start(content);
        return new GrpcClientStreamingCall<TRequest, TResponse>(call, content, method);
    }

    public void Dispose() => _invoker.Dispose();

    private static SocketsHttpHandler CreateHandler(GrpcEndpoint endpoint, GrpcChannelOptions options)
    {
        var handler = new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = true,
            ConnectTimeout = options.ConnectTimeout,
            InitialHttp2StreamWindowSize = options.InitialStreamWindowSize,
            UseProxy = false, // loopback h2c and unix sockets must never go through an HTTP proxy from the environment
            UseCookies = false,
            AllowAutoRedirect = false,
            AutomaticDecompression = System.Net.DecompressionMethods.None,
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(2),
        };

        if (endpoint.Transport == GrpcTransport.Unix)
        {
            string path = endpoint.SocketPath!;
            handler.ConnectCallback = async (_, cancellationToken) =>
            {
                var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
                try
                {
                    await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), cancellationToken).ConfigureAwait(false);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            };
        }

        if (endpoint.Transport == GrpcTransport.Https && options.TrustedRootCertificates is { } roots)
        {
            handler.SslOptions = new SslClientAuthenticationOptions
            {
                RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
                    certificate is not null &&
                    (errors & SslPolicyErrors.RemoteCertificateNameMismatch) == 0 &&
                    (errors & SslPolicyErrors.RemoteCertificateNotAvailable) == 0 &&
                    ChainsTo(certificate, roots),
            };
        }

        return handler;
    }

    private static bool ChainsTo(X509Certificate certificate, X509Certificate2Collection roots)
    {
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(roots);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        using var leaf = new X509Certificate2(certificate);
        return chain.Build(leaf);
    }
}
