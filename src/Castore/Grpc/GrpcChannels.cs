using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Grpc.Core;
using Grpc.Net.Client;
using Grpc.Net.Client.Balancer;
using Grpc.Net.Client.Configuration;
using Microsoft.Extensions.Logging.Abstractions;

namespace TvixFuseBuild.Castore.Grpc;

/// <summary>How a gRPC client retries UNAVAILABLE (connection refused, server restarting, backend draining).</summary>
public sealed record GrpcRetryPolicy
{
    /// <summary>
    /// Attempts per call, the first included. gRPC waits a random time up to the backoff before each retry (which
    /// doubles up to <see cref="MaxBackoff"/>): about 5 s of waiting in all with the defaults.
    /// </summary>
    public int MaxAttempts { get; init; } = 8;

    public TimeSpan InitialBackoff { get; init; } = TimeSpan.FromMilliseconds(250);

    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromSeconds(2);

    public static GrpcRetryPolicy None { get; } = new() { MaxAttempts = 1 };
}

/// <summary>Settings of the channels <see cref="GrpcChannels"/> makes, beyond what the addresses say.</summary>
public sealed record GrpcChannelSettings
{
    public GrpcRetryPolicy Retry { get; init; } = new();

    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The largest message accepted (a castore chunk is at most 16 MiB of data).</summary>
    public int MaxReceiveMessageSize { get; init; } = 32 << 20;

    /// <summary>With several backends: how often each one's grpc.health.v1 status (and a dns:/// name) is checked again.</summary>
    public TimeSpan HealthCheckInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>The bearer token's file when the address names none (<c>token-file=</c> wins); before <c>TVIX_FUSE_BUILD_TOKEN_FILE</c>.</summary>
    public string? TokenFile { get; init; }
}

/// <summary>
/// The one place gRPC client channels are made, for the castore stores and the build client alike: unix sockets and
/// TCP, h2c and TLS (<c>ca=</c> to trust a private CA), a bearer token (<c>token-file=</c>, else
/// <see cref="GrpcChannelSettings.TokenFile"/>, else the file named by <c>TVIX_FUSE_BUILD_TOKEN_FILE</c>), a client certificate (<c>cert=</c>/<c>key=</c>), retries of UNAVAILABLE, and for
/// several TCP endpoints or a <c>dns:///</c> name round-robin balancing over the backends whose grpc.health.v1 status is
/// SERVING (a backend without the health service counts as serving). Bad files are <see cref="StoreAddressException"/>s.
/// </summary>
public static class GrpcChannels
{
    /// <summary>The environment variable naming the default token file of every client.</summary>
    public const string TokenFileVariable = "TVIX_FUSE_BUILD_TOKEN_FILE";

    public static GrpcChannel Create(GrpcEndpoint endpoint, GrpcChannelSettings? settings = null) => Create([endpoint], settings);

    /// <summary>One channel over all <paramref name="endpoints"/> (which must agree on TLS and credentials).</summary>
    public static GrpcChannel Create(IReadOnlyList<GrpcEndpoint> endpoints, GrpcChannelSettings? settings = null)
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        if (endpoints.Count == 0)
        {
            throw new StoreAddressException("no gRPC address given");
        }

        settings ??= new GrpcChannelSettings();
        var first = endpoints[0];
        foreach (var other in endpoints)
        {
            if (other.UsesTls != first.UsesTls || other.CaFile != first.CaFile || other.TokenFile != first.TokenFile ||
                other.CertFile != first.CertFile || other.KeyFile != first.KeyFile)
            {
                throw new StoreAddressException(
                    $"the addresses {first.Display} and {other.Display} differ in TLS or credentials; several addresses of one channel must agree");
            }
        }

        bool balanced = endpoints.Count > 1 || first.IsDnsName;
        if (balanced && endpoints.FirstOrDefault(e => e.SocketPath is not null) is { } unix)
        {
            // grpc-dotnet balances only over connections it opens itself (TCP): no ConnectCallback, so no unix sockets.
            throw new StoreAddressException(
                $"the unix socket {unix.Display} cannot be one of several backends; give one unix socket, or TCP addresses");
        }

        string? token = ReadToken(first.TokenFile ?? settings.TokenFile);
        var handler = CreateHandler(first, settings);
        var options = new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = true,
            MaxReceiveMessageSize = settings.MaxReceiveMessageSize,
            MaxSendMessageSize = null,
            ServiceConfig = ServiceConfigFor(settings.Retry, balanced),
            MaxRetryAttempts = Math.Max(settings.Retry.MaxAttempts, 1),
        };

        var transport = first.UsesTls ? ChannelCredentials.SecureSsl : ChannelCredentials.Insecure;
        if (token is not null)
        {
            var bearer = CallCredentials.FromInterceptor((_, metadata) =>
            {
                metadata.Add("authorization", "Bearer " + token);
                return Task.CompletedTask;
            });
            options.Credentials = ChannelCredentials.Create(transport, bearer);

            // The token may go over h2c too: the default deployment is loopback or a unix socket, where TLS adds nothing.
            // Over a network, use grpc+https:// so it is not sent in the clear.
            options.UnsafeUseInsecureChannelCallCredentials = !first.UsesTls;
        }
        else if (balanced)
        {
            options.Credentials = transport;
        }

        if (!balanced)
        {
            return GrpcChannel.ForAddress(BaseUri(first), options);
        }

        options.Credentials ??= transport;
        options.ServiceProvider = new BalancingServices(new HealthCheckedResolverFactory(endpoints, settings));
        return GrpcChannel.ForAddress($"{HealthCheckedResolverFactory.Scheme}:///backends", options);
    }

    private static Uri BaseUri(GrpcEndpoint endpoint)
    {
        string host = endpoint.Host.Contains(':') ? $"[{endpoint.Host}]" : endpoint.Host;
        return new Uri($"{(endpoint.UsesTls ? "https" : "http")}://{host}:{endpoint.Port}/");
    }

    /// <summary>Retries of UNAVAILABLE for every method; round_robin over the backends when there are several.</summary>
    private static ServiceConfig ServiceConfigFor(GrpcRetryPolicy retry, bool balanced)
    {
        var config = new ServiceConfig();
        if (balanced)
        {
            config.LoadBalancingConfigs.Add(new RoundRobinConfig());
        }

        if (retry.MaxAttempts > 1)
        {
            var policy = new RetryPolicy
            {
                MaxAttempts = retry.MaxAttempts,
                InitialBackoff = retry.InitialBackoff,
                MaxBackoff = retry.MaxBackoff,
                BackoffMultiplier = 2,
            };
            policy.RetryableStatusCodes.Add(StatusCode.Unavailable);
            var method = new MethodConfig { RetryPolicy = policy };
            method.Names.Add(MethodName.Default);
            config.MethodConfigs.Add(method);
        }

        return config;
    }

    private static string? ReadToken(string? tokenFile)
    {
        string? source = null;
        if (tokenFile is null && Environment.GetEnvironmentVariable(TokenFileVariable) is { Length: > 0 } fromEnvironment)
        {
            tokenFile = fromEnvironment;
            source = $" (from {TokenFileVariable})";
        }

        if (tokenFile is null)
        {
            return null;
        }

        string token;
        try
        {
            token = File.ReadAllText(tokenFile).Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new StoreAddressException($"cannot read the token file '{tokenFile}'{source}: {e.Message}");
        }

        if (token.Length == 0 || token.Any(c => c is < '!' or > '~'))
        {
            throw new StoreAddressException(
                $"the token file '{tokenFile}'{source} must hold one token of printable ASCII characters{(token.Length == 0 ? ", but it is empty" : "")}");
        }

        return token;
    }

    private static SocketsHttpHandler CreateHandler(GrpcEndpoint endpoint, GrpcChannelSettings settings)
    {
        var handler = new SocketsHttpHandler
        {
            EnableMultipleHttp2Connections = true,
            ConnectTimeout = settings.ConnectTimeout,
            InitialHttp2StreamWindowSize = 1 << 20,
            UseProxy = false, // loopback h2c and unix sockets must never go through an HTTP proxy from the environment
            UseCookies = false,
            AllowAutoRedirect = false,
            AutomaticDecompression = DecompressionMethods.None,
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(2),
            KeepAlivePingDelay = TimeSpan.FromSeconds(60),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(30),
        };

        if (endpoint.SocketPath is { } path)
        {
            handler.ConnectCallback = (_, cancellationToken) => ConnectUnixAsync(path, cancellationToken);
        }

        if (endpoint.UsesTls)
        {
            handler.SslOptions = TlsOptions(endpoint);
        }

        return handler;
    }

    private static SslClientAuthenticationOptions TlsOptions(GrpcEndpoint endpoint)
    {
        var options = new SslClientAuthenticationOptions();
        if (endpoint.CaFile is { } caFile)
        {
            var roots = new X509Certificate2Collection();
            try
            {
                roots.ImportFromPemFile(caFile);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or CryptographicException)
            {
                throw new StoreAddressException($"cannot read the CA file '{caFile}': {e.Message}");
            }

            if (roots.Count == 0)
            {
                throw new StoreAddressException($"the CA file '{caFile}' holds no PEM certificate");
            }

            options.RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
                certificate is not null &&
                (errors & (SslPolicyErrors.RemoteCertificateNameMismatch | SslPolicyErrors.RemoteCertificateNotAvailable)) == 0 &&
                ChainsTo(certificate, roots);
        }

        if (endpoint.CertFile is { } certFile)
        {
            try
            {
                options.ClientCertificates = [X509Certificate2.CreateFromPemFile(certFile, endpoint.KeyFile)];
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or CryptographicException or ArgumentException)
            {
                throw new StoreAddressException($"cannot load the client certificate '{certFile}' with key '{endpoint.KeyFile}': {e.Message}");
            }
        }

        return options;
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

    private static async ValueTask<Stream> ConnectUnixAsync(string path, CancellationToken cancellationToken)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), cancellationToken).ConfigureAwait(false);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch (SocketException e)
        {
            socket.Dispose();

            // .NET reports a missing socket file as "Cannot assign requested address".
            throw new UnixSocketConnectException(e.SocketErrorCode switch
            {
                SocketError.AddressNotAvailable when !File.Exists(path) => $"the unix socket {path} does not exist",
                SocketError.ConnectionRefused => $"nothing listens on the unix socket {path}",
                _ => $"cannot connect to the unix socket {path}: {e.Message}",
            }, e);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    /// <summary>Why a unix socket could not be connected, in words (see <see cref="GrpcErrors.Describe"/>).</summary>
    internal sealed class UnixSocketConnectException(string message, Exception inner) : IOException(message, inner);

    /// <summary>The services grpc-dotnet looks up for balancing: our resolver; its built-in balancers are added by itself.</summary>
    private sealed class BalancingServices(ResolverFactory resolver) : IServiceProvider
    {
        public object? GetService(Type serviceType) =>
            serviceType == typeof(IEnumerable<ResolverFactory>) ? new[] { resolver }
            : serviceType == typeof(ResolverFactory) ? resolver
            : null;
    }

    /// <summary>
    /// Resolves the channel's backends: the static endpoints, or every address of a dns:/// name, each kept only while
    /// its grpc.health.v1 Check answers SERVING (or UNIMPLEMENTED: a server without the health service); when none
    /// passes, all are kept so calls fail with the backends' own errors. Re-resolved every HealthCheckInterval and when
    /// a connection fails.
    /// </summary>
    private sealed class HealthCheckedResolverFactory(IReadOnlyList<GrpcEndpoint> endpoints, GrpcChannelSettings settings) : ResolverFactory
    {
        public const string Scheme = "tvix-fuse-build";

        public override string Name => Scheme;

        public override Resolver Create(ResolverOptions options) => new HealthCheckedResolver(endpoints, settings);
    }

    private sealed class HealthCheckedResolver : PollingResolver
    {
        private readonly IReadOnlyList<GrpcEndpoint> _endpoints;
        private readonly GrpcChannelSettings _settings;
        private readonly Timer _timer;

        public HealthCheckedResolver(IReadOnlyList<GrpcEndpoint> endpoints, GrpcChannelSettings settings)
            : base(NullLoggerFactory.Instance)
        {
            _endpoints = endpoints;
            _settings = settings;
            _timer = new Timer(_ => RefreshQuietly(), null, Timeout.Infinite, Timeout.Infinite);
        }

        // A tick may race the channel's disposal; an exception on the timer's thread would end the process.
        private void RefreshQuietly()
        {
            try
            {
                Refresh();
            }
            catch (Exception e) when (e is ObjectDisposedException or InvalidOperationException)
            {
            }
        }

        protected override void OnStarted()
        {
            base.OnStarted();
            _timer.Change(_settings.HealthCheckInterval, _settings.HealthCheckInterval);
        }

        protected override async Task ResolveAsync(CancellationToken cancellationToken)
        {
            var candidates = new List<(GrpcEndpoint Probe, BalancerAddress Address)>();
            foreach (var endpoint in _endpoints)
            {
                if (endpoint.IsDnsName)
                {
                    IPAddress[] found;
                    try
                    {
                        found = await Dns.GetHostAddressesAsync(endpoint.Host, cancellationToken).ConfigureAwait(false);
                    }
                    catch (SocketException e)
                    {
                        Listener(ResolverResult.ForFailure(new Status(StatusCode.Unavailable, $"cannot resolve {endpoint.Display}: {e.Message}")));
                        return;
                    }

                    foreach (var ip in found.Distinct())
                    {
                        var one = GrpcEndpoint.Tcp(ip.ToString(), endpoint.Port, endpoint.UsesTls) with
                        {
                            CaFile = endpoint.CaFile,
                            TokenFile = endpoint.TokenFile,
                            CertFile = endpoint.CertFile,
                            KeyFile = endpoint.KeyFile,
                        };
                        candidates.Add((one, new BalancerAddress(ip.ToString(), endpoint.Port)));
                    }
                }
                else
                {
                    candidates.Add((endpoint, new BalancerAddress(endpoint.Host, endpoint.Port)));
                }
            }

            bool[] healthy = await Task.WhenAll(candidates.Select(c => IsServingAsync(c.Probe, cancellationToken))).ConfigureAwait(false);
            var serving = candidates.Where((_, i) => healthy[i]).Select(c => c.Address).ToList();
            var addresses = serving.Count > 0 ? serving : candidates.Select(c => c.Address).ToList();

            // In random order: a process that makes one call (a CLI build) gets the backend that the balancer reports
            // ready first, which is the same one (the last listed) for every process started with the same list.
            Random.Shared.Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(addresses));
            Listener(ResolverResult.ForResult(addresses));
        }

        private async Task<bool> IsServingAsync(GrpcEndpoint endpoint, CancellationToken cancellationToken)
        {
            using var probe = GrpcChannels.Create(endpoint, _settings with { Retry = GrpcRetryPolicy.None, ConnectTimeout = TimeSpan.FromSeconds(2) });
            var client = new global::Grpc.Health.V1.Health.HealthClient(probe);
            try
            {
                var reply = await client.CheckAsync(
                    new global::Grpc.Health.V1.HealthCheckRequest(),
                    new CallOptions(null, DateTime.UtcNow.AddSeconds(2), cancellationToken)).ConfigureAwait(false);
                return reply.Status == global::Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus.Serving;
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.Unimplemented)
            {
                return true;
            }
            catch (RpcException)
            {
                return false;
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                return false;
            }
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _timer.Dispose();
            }

            base.Dispose(disposing);
        }
    }
}
