using System.Diagnostics.CodeAnalysis;
using System.Security.Authentication;
using Grpc.AspNetCore.Server;
using Grpc.Health.V1;
using Grpc.HealthCheck;
using Grpc.Reflection;
using Grpc.Reflection.V1Alpha;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using ServiceDescriptor = Google.Protobuf.Reflection.ServiceDescriptor;
using ServingStatus = Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus;

namespace TvixFuseBuild.Server;

/// <summary>
/// Hosts gRPC services (grpc-dotnet on Kestrel): HTTP/2 only, cleartext (h2c) or TLS, on TCP and unix sockets, with
/// the standard health service (<c>grpc.health.v1.Health</c>) and server reflection next to the services added.
/// <code>
/// await using var server = new GrpcServer()
///     .Listen("[::1]:8000").Listen("unix:/run/castore.sock")
///     .AddCastore(store.Blobs, store.Directories);
/// await server.StartAsync();
/// ...
/// server.BeginDrain();        // health says NOT_SERVING; calls go on
/// await server.StopAsync();   // graceful: running calls get ShutdownTimeout to finish
/// </code>
/// </summary>
public sealed class GrpcServer : IAsyncDisposable
{
    private readonly GrpcServerOptions _options;
    private readonly List<GrpcListenAddress> _listen = [];
    private readonly List<Action<IServiceCollection>> _register = [];
    private readonly List<Action<IEndpointRouteBuilder>> _map = [];
    private readonly List<ServiceDescriptor> _descriptors = [Health.Descriptor, ServerReflection.Descriptor];
    private readonly HealthServiceImpl _health = new();
    private readonly CancellationTokenSource _stopping = new();
    private WebApplication? _app;
    private IReadOnlyList<string> _boundAddresses = [];
    private IReadOnlyList<string> _serviceNames = [];
    private int _state; // 0 configuring, 1 started, 2 stopped

    public GrpcServer(GrpcServerOptions? options = null) => _options = options ?? new GrpcServerOptions();

    /// <summary>The addresses actually listened on (a port 0 replaced by the port chosen), e.g. <c>127.0.0.1:41234</c>, <c>unix:/run/x.sock</c>.</summary>
    public IReadOnlyList<string> BoundAddresses => _boundAddresses;

    /// <summary>The full names of the services hosted (without health and reflection), e.g. <c>tvix.castore.v1.BlobService</c>.</summary>
    public IReadOnlyList<string> ServiceNames => _serviceNames;

    public GrpcServer Listen(string address) => Listen(GrpcListenAddress.Parse(address));

    public GrpcServer Listen(GrpcListenAddress address)
    {
        EnsureConfiguring();
        _listen.Add(address);
        return this;
    }

    /// <summary>
    /// Hosts <paramref name="service"/>, an implementation of a Grpc.Tools-generated service base; server reflection
    /// describes it if given its <paramref name="descriptor"/> (the generated class's static <c>Descriptor</c>).
    /// </summary>
    public GrpcServer AddService<[DynamicallyAccessedMembers(GrpcServiceMembers)] TService>(TService service, ServiceDescriptor? descriptor = null)
        where TService : class
    {
        EnsureConfiguring();
        _register.Add(services => services.AddSingleton(service));
        _map.Add(endpoints => endpoints.MapGrpcService<TService>());
        if (descriptor is not null)
        {
            _descriptors.Add(descriptor);
        }

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
                UnixSocketFile.RemoveStale(path);
            }
        }

        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = _options.ShutdownTimeout);
        builder.Logging.ClearProviders();

        // The host must not take over Ctrl-C and SIGTERM (its default console lifetime would): the process owns its
        // signals and calls StopAsync itself.
        builder.Services.AddSingleton<IHostLifetime, PassiveLifetime>();
        builder.Services.AddRouting();
        builder.Services.AddSingleton(new ServerInterceptor(_options));
        builder.Services.AddGrpc(grpc =>
        {
            grpc.MaxReceiveMessageSize = _options.MaxReceiveMessageSize;
            grpc.MaxSendMessageSize = null;
            grpc.Interceptors.Add<ServerInterceptor>();
        });
        // Grpc.AspNetCore.Server.Reflection's AddGrpcReflection finds each service's descriptor by reflection (not
        // trim-safe, so not in the NativeAOT tool); the descriptors are given to AddService instead.
        builder.Services.AddSingleton(new ReflectionServiceImpl(_descriptors));
        builder.Services.AddSingleton(new StoppableHealthService(_health, _stopping.Token));
        foreach (var register in _register)
        {
            register(builder.Services);
        }

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
                if (address.SocketPath is { } path)
                {
                    kestrel.ListenUnixSocket(path, ConfigureListener);
                }
                else if (address.IsLocalhost)
                {
                    kestrel.ListenLocalhost(address.Port, ConfigureListener);
                }
                else
                {
                    kestrel.Listen(address.EndPoint!, ConfigureListener);
                }
            }
        });

        var app = builder.Build();
        app.UseRouting();
        foreach (var map in _map)
        {
            map(app);
        }

        app.MapGrpcService<StoppableHealthService>();
        app.MapGrpcService<ReflectionServiceImpl>();
        _serviceNames = [.. ((IEndpointRouteBuilder)app).DataSources
            .SelectMany(d => d.Endpoints)
            .Select(e => e.Metadata.GetMetadata<GrpcMethodMetadata>()?.Method.ServiceName)
            .OfType<string>()
            .Where(n => n != Health.Descriptor.FullName && !n.StartsWith("grpc.reflection.", StringComparison.Ordinal))
            .Distinct()
            .Order(StringComparer.Ordinal)];
        SetHealth(ServingStatus.Serving);
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
        _boundAddresses = [.. addresses.Select(a =>
            a.StartsWith("http://", StringComparison.Ordinal) ? a["http://".Length..] :
            a.StartsWith("https://", StringComparison.Ordinal) ? a["https://".Length..] : a)];
    }

    /// <summary>
    /// The first step of a graceful stop: the health service says NOT_SERVING (for the server and each service), so
    /// that load balancers and orchestrators send nothing new; everything goes on being served.
    /// </summary>
    public void BeginDrain() => SetHealth(ServingStatus.NotServing);

    /// <summary>
    /// Stops listening and lets running calls finish for up to <see cref="GrpcServerOptions.ShutdownTimeout"/> (or until
    /// <paramref name="cancellationToken"/>); what is still running then is aborted. Health watches end at once. Unix
    /// socket files are removed.
    /// </summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _state, 2) != 1 || _app is not { } app)
        {
            return;
        }

        BeginDrain();
        await _stopping.CancelAsync().ConfigureAwait(false);
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

    private void SetHealth(ServingStatus status)
    {
        _health.SetStatus(string.Empty, status);
        foreach (string name in _serviceNames)
        {
            _health.SetStatus(name, status);
        }
    }

    private void ConfigureListener(ListenOptions listen)
    {
        listen.Protocols = HttpProtocols.Http2;
        if (_options.Tls is not { } tls)
        {
            return;
        }

        listen.UseHttps(https =>
        {
            https.ServerCertificate = tls.Certificate;
            https.SslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13;
            if (tls.ClientCa is not null)
            {
                // Asked for, checked per call by the interceptor: a client without a good one hears UNAUTHENTICATED
                // saying why, rather than a failed handshake.
                https.ClientCertificateMode = ClientCertificateMode.AllowCertificate;
                https.CheckCertificateRevocation = false;
                https.ClientCertificateValidation = (_, _, _) => true;
            }
        });
    }

    /// <summary>What grpc-dotnet's <c>MapGrpcService</c> needs kept of a service type (its constructors and methods, found by reflection).</summary>
    private const DynamicallyAccessedMemberTypes GrpcServiceMembers =
        DynamicallyAccessedMemberTypes.PublicConstructors | DynamicallyAccessedMemberTypes.PublicMethods | DynamicallyAccessedMemberTypes.NonPublicMethods;

    private void EnsureConfiguring()
    {
        if (_state != 0)
        {
            throw new InvalidOperationException("the server was already started");
        }
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

/// <summary>
/// grpc.health.v1.Health (Grpc.HealthCheck's implementation) whose Watch streams end when the server stops, rather
/// than holding the stop up for its whole timeout.
/// </summary>
internal sealed class StoppableHealthService(HealthServiceImpl health, CancellationToken stopping) : Health.HealthBase
{
    public override Task<HealthCheckResponse> Check(HealthCheckRequest request, Grpc.Core.ServerCallContext context) =>
        health.Check(request, context);

    public override async Task Watch(
        HealthCheckRequest request, Grpc.Core.IServerStreamWriter<HealthCheckResponse> responseStream, Grpc.Core.ServerCallContext context)
    {
        var watch = health.Watch(request, responseStream, context);
        var stopped = Task.Delay(Timeout.Infinite, stopping);
        if (await Task.WhenAny(watch, stopped).ConfigureAwait(false) == watch)
        {
            await watch.ConfigureAwait(false);
            return;
        }

        // The abandoned watch ends when the call does (its token fires); its failure to write then is expected.
        _ = watch.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
    }
}
