using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Grpc;

namespace TvixFuseBuild.Build.Grpc;

/// <summary>
/// Hosts gRPC services on Kestrel: HTTP/2 only, cleartext (h2c with prior knowledge) on TCP and unix sockets.
/// <code>
/// await using var server = new GrpcServer()
///     .Listen("[::1]:8000").Listen("unix:/run/castore.sock")
///     .AddService(new BlobGrpcService(store.Blobs))
///     .AddService(new DirectoryGrpcService(store.Directories));
/// await server.StartAsync();
/// ...
/// await server.StopAsync();   // graceful: running calls get ShutdownTimeout to finish
/// </code>
/// </summary>
public sealed class GrpcServer : IAsyncDisposable
{
    private readonly GrpcServerOptions _options;
    private readonly List<GrpcListenAddress> _listen = [];
    private readonly GrpcServiceBinder _binder = new();
    private WebApplication? _app;
    private IReadOnlyList<string> _boundAddresses = [];
    private int _state; // 0 configuring, 1 started, 2 stopped

    public GrpcServer(GrpcServerOptions? options = null) => _options = options ?? new GrpcServerOptions();

    /// <summary>The addresses actually listened on (a port 0 replaced by the port chosen), e.g. <c>127.0.0.1:41234</c>, <c>unix:/run/x.sock</c>.</summary>
    public IReadOnlyList<string> BoundAddresses => _boundAddresses;

    public GrpcServer Listen(string address) => Listen(GrpcListenAddress.Parse(address));

    public GrpcServer Listen(GrpcListenAddress address)
    {
        EnsureConfiguring();
        _listen.Add(address);
        return this;
    }

    public GrpcServer AddService(IGrpcService service)
    {
        EnsureConfiguring();
        service.Bind(_binder);
        return this;
    }

    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        EnsureConfiguring();
        if (_listen.Count == 0)
        {
            throw new InvalidOperationException("the server has no listen address");
        }

        foreach (var address in _listen)
        {
            if (address.SocketPath is { } path)
            {
                RemoveStaleSocket(path);
            }
        }

        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = _options.ShutdownTimeout);

        // The host must not take over Ctrl-C and SIGTERM (its default console lifetime would): the process owns its
        // signals and calls StopAsync itself.
        builder.Services.AddSingleton<IHostLifetime, PassiveLifetime>();
        builder.WebHost.UseKestrelCore().ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = null; // streams are unbounded; single messages are bounded instead
            kestrel.Limits.MinRequestBodyDataRate = null;
            kestrel.Limits.MinResponseDataRate = null;
            kestrel.Limits.Http2.InitialConnectionWindowSize = 4 << 20;
            kestrel.Limits.Http2.InitialStreamWindowSize = 2 << 20;
            kestrel.Limits.Http2.MaxFrameSize = 1 << 20;
            foreach (var address in _listen)
            {
                Action<ListenOptions> http2 = o => o.Protocols = HttpProtocols.Http2;
                if (address.SocketPath is { } path)
                {
                    kestrel.ListenUnixSocket(path, http2);
                }
                else if (address.IsLocalhost)
                {
                    kestrel.ListenLocalhost(address.Port, http2);
                }
                else
                {
                    kestrel.Listen(address.EndPoint!, http2);
                }
            }
        });

        var app = builder.Build();
        var methods = _binder.Methods;
        app.Run(http => HandleAsync(http, methods));
        try
        {
            await app.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            await app.DisposeAsync().ConfigureAwait(false);
            throw new IOException($"cannot listen on {string.Join(", ", _listen)}: {Innermost(e).Message}", e);
        }

        _app = app;
        _state = 1;
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses ?? [];
        _boundAddresses = [.. addresses.Select(a => a.StartsWith("http://", StringComparison.Ordinal) ? a["http://".Length..] : a)];
    }

    /// <summary>
    /// Stops listening and lets running calls finish for up to <see cref="GrpcServerOptions.ShutdownTimeout"/> (or until
    /// <paramref name="cancellationToken"/>); what is still running then is aborted. Unix socket files are removed.
    /// </summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _state, 2) != 1 || _app is not { } app)
        {
            return;
        }

        try
        {
            await app.StopAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await app.DisposeAsync().ConfigureAwait(false);
            foreach (var address in _listen)
            {
                if (address.SocketPath is { } path && UnixSocketFile.IsSocket(path))
                {
                    File.Delete(path);
                }
            }
        }
    }

    public async ValueTask DisposeAsync() => await StopAsync().ConfigureAwait(false);

    private void EnsureConfiguring()
    {
        if (_state != 0)
        {
            throw new InvalidOperationException("the server was already started");
        }
    }

    private async Task HandleAsync(HttpContext http, IReadOnlyDictionary<string, GrpcServerMethod> methods)
    {
        var request = http.Request;
        if (!HttpMethods.IsPost(request.Method))
        {
            http.Response.StatusCode = StatusCodes.Status405MethodNotAllowed;
            return;
        }

        if (!GrpcProtocol.IsGrpcContentType(request.ContentType))
        {
            http.Response.StatusCode = StatusCodes.Status415UnsupportedMediaType;
            return;
        }

        string? timeoutHeader = request.Headers[GrpcProtocol.TimeoutHeader];
        string? encoding = request.Headers[GrpcProtocol.EncodingHeader];
        TimeSpan? timeout = null;
        bool malformedTimeout = false;
        if (timeoutHeader is not null)
        {
            malformedTimeout = !GrpcProtocol.TryParseTimeout(timeoutHeader, out var parsed);
            timeout = malformedTimeout ? null : parsed;
        }

        using var cts = CancellationTokenSource.CreateLinkedTokenSource(http.RequestAborted);
        var context = new GrpcServerCallContext(
            request.Path.Value ?? string.Empty, Peer(http), DateTime.UtcNow + timeout, cts.Token, http.RequestAborted, request.Headers);
        var call = new GrpcServerCall(http, _options.MaxReceiveMessageSize, context);
        if (timeout is { } deadline)
        {
            cts.CancelAfter(deadline);
        }

        try
        {
            if (malformedTimeout)
            {
                throw new RpcStatusException(GrpcStatusCode.Internal, $"malformed grpc-timeout '{timeoutHeader}'");
            }

            if (encoding is not (null or "identity"))
            {
                http.Response.Headers[GrpcProtocol.AcceptEncodingHeader] = "identity";
                throw new RpcStatusException(GrpcStatusCode.Unimplemented, $"grpc-encoding '{encoding}' is not supported; only identity");
            }

            if (!methods.TryGetValue(context.Method, out var method))
            {
                throw new RpcStatusException(GrpcStatusCode.Unimplemented, $"unknown method {context.Method}");
            }

            await method.InvokeAsync(call).ConfigureAwait(false);
            call.SetStatus(GrpcStatusCode.OK, string.Empty);
        }
        catch (Exception e)
        {
            if (http.RequestAborted.IsCancellationRequested)
            {
                // The client reset the stream (cancelled): there is nobody to tell.
                return;
            }

            var status = ToStatus(e, context.DeadlineExceeded, context);
            call.SetStatus(status.Code, status.Detail);
        }
        finally
        {
            call.ReleasePending();
        }
    }

    private RpcStatusException ToStatus(Exception e, bool deadlineExpired, GrpcServerCallContext context)
    {
        switch (e)
        {
            case RpcStatusException status:
                return status;
            case OperationCanceledException or IOException when deadlineExpired:
                return new RpcStatusException(GrpcStatusCode.DeadlineExceeded, $"{context.Method}: the deadline passed");
            case OperationCanceledException:
                return new RpcStatusException(GrpcStatusCode.Cancelled, $"{context.Method}: cancelled (the server is shutting down)");
            case ObjectNotFoundException:
                return new RpcStatusException(GrpcStatusCode.NotFound, e.Message);
            case InvalidClosureException or DirectoryValidationException or InvalidNameException or InvalidSymlinkTargetException:
                return new RpcStatusException(GrpcStatusCode.InvalidArgument, e.Message);
            case CorruptObjectException:
                return new RpcStatusException(GrpcStatusCode.DataLoss, e.Message);
            case StoreUnavailableException:
                return new RpcStatusException(GrpcStatusCode.Unavailable, e.Message);
        }

        _options.ErrorLog?.Invoke($"{context.Method} from {context.Peer}: {e}");
        return new RpcStatusException(GrpcStatusCode.Internal, e is CastoreException ? e.Message : $"{e.GetType().Name}: {e.Message}");
    }

    private static string Peer(HttpContext http) => http.Connection.RemoteIpAddress switch
    {
        null => "unix:",
        { AddressFamily: AddressFamily.InterNetworkV6 } ip => $"ipv6:[{ip}]:{http.Connection.RemotePort}",
        var ip => $"ipv4:{ip}:{http.Connection.RemotePort}",
    };

    /// <summary>A socket file nobody listens on any more (a crashed server) is removed; anything else is left alone and reported.</summary>
    private static void RemoveStaleSocket(string path)
    {
        // bind() would say ENOENT, which .NET reports as "Cannot assign requested address".
        if (Path.GetDirectoryName(path) is { } directory && !Directory.Exists(directory))
        {
            throw new IOException($"cannot listen on unix:{path}: the directory {directory} does not exist");
        }

        if (!Path.Exists(path))
        {
            return;
        }

        if (!UnixSocketFile.IsSocket(path))
        {
            throw new IOException($"cannot listen on unix:{path}: the path exists and is not a socket");
        }

        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
        {
            File.Delete(path);
            return;
        }

        throw new IOException($"cannot listen on unix:{path}: another server is listening there");
    }

    private static Exception Innermost(Exception e)
    {
        while (e.InnerException is { } inner)
        {
            e = inner;
        }

        return e;
    }
}

/// <summary>A host lifetime that neither waits for nor reacts to anything: start and stop are the server's calls.</summary>
internal sealed class PassiveLifetime : IHostLifetime
{
    public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
