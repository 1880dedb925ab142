using System.Security.Cryptography.X509Certificates;

namespace TvixFuseBuild.Castore.Grpc;

/// <summary>Settings of a <see cref="GrpcChannel"/>.</summary>
public sealed record GrpcChannelOptions
{
    /// <summary>The largest response message accepted; larger ones fail the call with RESOURCE_EXHAUSTED.</summary>
    public int MaxReceiveMessageSize { get; init; } = GrpcProtocol.DefaultMaxReceiveMessageSize;

    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// For <see cref="GrpcTransport.Https"/>: trust only these roots (e.g. a private CA) instead of the system's.
    /// The server name is still checked.
    /// </summary>
    public X509Certificate2Collection? TrustedRootCertificates { get; init; }

    /// <summary>The initial HTTP/2 receive window per stream; larger windows help bulk reads on fast links.</summary>
    public int InitialStreamWindowSize { get; init; } = 1 << 20;
}
