using TvixFuseBuild.Castore.Grpc;

namespace TvixFuseBuild.Build.Grpc;

/// <summary>A gRPC service: binds its handlers to method descriptors. Add it with <see cref="GrpcServer.AddService"/>.</summary>
public interface IGrpcService
{
    void Bind(GrpcServiceBinder binder);
}

public delegate ValueTask<TResponse> GrpcUnaryHandler<TRequest, TResponse>(TRequest request, GrpcServerCallContext context);

public delegate Task GrpcServerStreamingHandler<TRequest, TResponse>(
    TRequest request, GrpcServerStreamWriter<TResponse> responses, GrpcServerCallContext context);

public delegate ValueTask<TResponse> GrpcClientStreamingHandler<TRequest, TResponse>(
    GrpcServerStreamReader<TRequest> requests, GrpcServerCallContext context);

/// <summary>Collects the methods of the services a server hosts, by path.</summary>
public sealed class GrpcServiceBinder
{
    private readonly Dictionary<string, GrpcServerMethod> _methods = new(StringComparer.Ordinal);

    internal IReadOnlyDictionary<string, GrpcServerMethod> Methods => _methods;

    public GrpcServiceBinder AddUnary<TRequest, TResponse>(
        GrpcMethod<TRequest, TResponse> method, GrpcUnaryHandler<TRequest, TResponse> handler) =>
        Add(method, GrpcMethodType.Unary, new UnaryMethod<TRequest, TResponse>(method, handler));

    public GrpcServiceBinder AddServerStreaming<TRequest, TResponse>(
        GrpcMethod<TRequest, TResponse> method, GrpcServerStreamingHandler<TRequest, TResponse> handler) =>
        Add(method, GrpcMethodType.ServerStreaming, new ServerStreamingMethod<TRequest, TResponse>(method, handler));

    public GrpcServiceBinder AddClientStreaming<TRequest, TResponse>(
        GrpcMethod<TRequest, TResponse> method, GrpcClientStreamingHandler<TRequest, TResponse> handler) =>
        Add(method, GrpcMethodType.ClientStreaming, new ClientStreamingMethod<TRequest, TResponse>(method, handler));

    private GrpcServiceBinder Add<TRequest, TResponse>(GrpcMethod<TRequest, TResponse> method, GrpcMethodType expected, GrpcServerMethod handler)
    {
        if (method.Type != expected)
        {
            throw new ArgumentException($"{method.Path} is a {method.Type} method, not {expected}", nameof(method));
        }

        if (!_methods.TryAdd(method.Path, handler))
        {
            throw new InvalidOperationException($"{method.Path} is bound twice");
        }

        return this;
    }
}

/// <summary>One bound method: reads the request(s), runs the handler, writes the response(s).</summary>
internal abstract class GrpcServerMethod
{
    public abstract Task InvokeAsync(GrpcServerCall call);
}

internal sealed class UnaryMethod<TRequest, TResponse>(
    GrpcMethod<TRequest, TResponse> method, GrpcUnaryHandler<TRequest, TResponse> handler) : GrpcServerMethod
{
    public override async Task InvokeAsync(GrpcServerCall call)
    {
        var request = await call.ReadSingleRequestAsync(method.RequestMarshaller).ConfigureAwait(false);
        var response = await handler(request, call.Context).ConfigureAwait(false);
        await call.WriteResponseAsync(method.ResponseMarshaller, response).ConfigureAwait(false);
    }
}

internal sealed class ServerStreamingMethod<TRequest, TResponse>(
    GrpcMethod<TRequest, TResponse> method, GrpcServerStreamingHandler<TRequest, TResponse> handler) : GrpcServerMethod
{
    public override async Task InvokeAsync(GrpcServerCall call)
    {
        var request = await call.ReadSingleRequestAsync(method.RequestMarshaller).ConfigureAwait(false);
        await handler(request, new GrpcServerStreamWriter<TResponse>(call, method.ResponseMarshaller), call.Context).ConfigureAwait(false);
    }
}

internal sealed class ClientStreamingMethod<TRequest, TResponse>(
    GrpcMethod<TRequest, TResponse> method, GrpcClientStreamingHandler<TRequest, TResponse> handler) : GrpcServerMethod
{
    public override async Task InvokeAsync(GrpcServerCall call)
    {
        var response = await handler(new GrpcServerStreamReader<TRequest>(call, method.RequestMarshaller), call.Context).ConfigureAwait(false);
        await call.WriteResponseAsync(method.ResponseMarshaller, response).ConfigureAwait(false);
    }
}

/// <summary>What a handler knows about its call.</summary>
public sealed class GrpcServerCallContext
{
    private readonly CancellationToken _clientAborted;

    internal GrpcServerCallContext(
        string method,
        string peer,
        DateTime? deadline,
        CancellationToken cancellationToken,
        CancellationToken clientAborted,
        Microsoft.AspNetCore.Http.IHeaderDictionary requestHeaders)
    {
        _clientAborted = clientAborted;
        Method = method;
        Peer = peer;
        Deadline = deadline;
        CancellationToken = cancellationToken;
        RequestHeaders = requestHeaders;
    }

    /// <summary>The path, <c>/package.Service/Method</c>.</summary>
    public string Method { get; }

    /// <summary>The client's address (<c>ipv4:…</c>, <c>ipv6:…</c> or <c>unix:</c>).</summary>
    public string Peer { get; }

    /// <summary>The client's deadline (UTC) from grpc-timeout, when it sent one.</summary>
    public DateTime? Deadline { get; }

    /// <summary>Cancelled when the client cancels, the deadline passes, or the server shuts down past its grace period.</summary>
    public CancellationToken CancellationToken { get; }

    /// <summary>Whether <see cref="CancellationToken"/> was cancelled by the deadline (rather than by the client).</summary>
    public bool DeadlineExceeded => Deadline is not null && CancellationToken.IsCancellationRequested && !_clientAborted.IsCancellationRequested;

    public Microsoft.AspNetCore.Http.IHeaderDictionary RequestHeaders { get; }
}

/// <summary>The request messages of a client-streaming call.</summary>
public sealed class GrpcServerStreamReader<T>
{
    private readonly GrpcServerCall _call;
    private readonly GrpcMarshaller<T> _marshaller;
    private T? _current;

    internal GrpcServerStreamReader(GrpcServerCall call, GrpcMarshaller<T> marshaller)
    {
        _call = call;
        _marshaller = marshaller;
    }

    /// <summary>The message read last; with a borrowing marshaller valid until the next <see cref="MoveNextAsync"/>.</summary>
    public T Current => _current!;

    public async ValueTask<bool> MoveNextAsync()
    {
        var (more, message) = await _call.ReadRequestAsync(_marshaller).ConfigureAwait(false);
        _current = message;
        return more;
    }
}

/// <summary>The response messages of a server-streaming call.</summary>
public sealed class GrpcServerStreamWriter<T>
{
    private readonly GrpcServerCall _call;
    private readonly GrpcMarshaller<T> _marshaller;

    internal GrpcServerStreamWriter(GrpcServerCall call, GrpcMarshaller<T> marshaller)
    {
        _call = call;
        _marshaller = marshaller;
    }

    /// <summary>Sends one message (and waits while the client is not reading: flow control).</summary>
    public ValueTask WriteAsync(T message) => _call.WriteResponseAsync(_marshaller, message);
}
