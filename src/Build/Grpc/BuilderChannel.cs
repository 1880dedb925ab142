using System.Net;
using System.Net.Sockets;
using Grpc.Core;
using Grpc.Net.Client;
using GrpcChannel = Grpc.Net.Client.GrpcChannel;
using GrpcChannelOptions = Grpc.Net.Client.GrpcChannelOptions;
using Grpc.Net.Client.Balancer;
using Grpc.Net.Client.Configuration;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Grpc;

namespace TvixFuseBuild.Build.Grpc;

/// <summary>
/// The one place the build client makes its channel (to be replaced by the castore client's channel factory): one
/// builder gets a plain channel (a unix socket through a connect callback, TCP in h2c or TLS); several, or a
/// <c>dns:///</c> name, one channel whose calls grpc-dotnet spreads round-robin over the builders' connections, a
/// builder whose connection fails being left out until it reconnects.
/// </summary>
internal static class BuilderChannel
{
    public static GrpcChannel Create(IReadOnlyList<BuilderAddress> builders)
    {
        if (builders.Count == 0)
        {
            throw new ArgumentException("no builder", nameof(builders));
        }

        if (builders.Count == 1 && builders[0].Endpoint is { } endpoint)
        {
            return endpoint.Transport == GrpcTransport.Unix ? ForUnixSocket(endpoint.SocketPath!) : ForTcp(endpoint);
        }

        if (builders.Any(b => b.Endpoint?.Transport == GrpcTransport.Unix))
        {
            throw new StoreAddressException(
                "several builders must be reached over TCP (HOST:PORT, grpc+http://, grpc+https://, dns:///NAME:PORT): a unix socket builder works alone");
        }

        if (builders.Select(b => b.Tls).Distinct().Count() > 1)
        {
            throw new StoreAddressException("several builders must all use TLS (grpc+https://) or all not");
        }

        bool tls = builders[0].Tls;
        var options = new GrpcChannelOptions
        {
            Credentials = tls ? ChannelCredentials.SecureSsl : ChannelCredentials.Insecure,
            ServiceConfig = new ServiceConfig { LoadBalancingConfigs = { new RoundRobinConfig() } },
            HttpHandler = Handler(),
            MaxReceiveMessageSize = null,
        };
        if (builders.Count == 1)
        {
            return GrpcChannel.ForAddress($"dns:///{builders[0].DnsName}:{builders[0].Port}", options);
        }

        if (builders.Any(b => b.DnsName is not null))
        {
            throw new StoreAddressException("a dns:/// builder address names all the builders: give it alone, not with other builders");
        }

        var addresses = builders.Select(b => new BalancerAddress(b.Endpoint!.Host, b.Endpoint.Port)).ToArray();
        options.ServiceProvider = new ResolverProvider(new StaticResolverFactory(_ => addresses));
        return GrpcChannel.ForAddress("static:///builders", options);
    }

    private static GrpcChannel ForTcp(GrpcEndpoint endpoint) =>
        GrpcChannel.ForAddress(
            $"{(endpoint.Transport == GrpcTransport.Https ? "https" : "http")}://{(endpoint.Host.Contains(':') ? $"[{endpoint.Host}]" : endpoint.Host)}:{endpoint.Port}",
            new GrpcChannelOptions { HttpHandler = Handler(), MaxReceiveMessageSize = null });

    private static GrpcChannel ForUnixSocket(string path)
    {
        var handler = Handler();
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
        return GrpcChannel.ForAddress("http://localhost", new GrpcChannelOptions { HttpHandler = handler, MaxReceiveMessageSize = null });
    }

    private static SocketsHttpHandler Handler() => new()
    {
        EnableMultipleHttp2Connections = true,
        KeepAlivePingDelay = TimeSpan.FromSeconds(20),
        KeepAlivePingTimeout = TimeSpan.FromSeconds(20),
        KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
        PooledConnectionIdleTimeout = Timeout.InfiniteTimeSpan,
    };

    /// <summary>Gives the channel the static resolver: grpc-dotnet asks its service provider for resolver factories.</summary>
    private sealed class ResolverProvider(ResolverFactory factory) : IServiceProvider
    {
        private readonly ResolverFactory[] _factories = [factory];

        public object? GetService(Type serviceType) => serviceType == typeof(IEnumerable<ResolverFactory>) ? _factories : null;
    }
}
