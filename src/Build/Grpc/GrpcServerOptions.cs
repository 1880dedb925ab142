using TvixFuseBuild.Castore.Grpc;

namespace TvixFuseBuild.Build.Grpc;

/// <summary>Settings of a <see cref="GrpcServer"/>.</summary>
public sealed record GrpcServerOptions
{
    /// <summary>The largest request message accepted; larger ones fail the call with RESOURCE_EXHAUSTED.</summary>
    public int MaxReceiveMessageSize { get; init; } = GrpcProtocol.DefaultMaxReceiveMessageSize;

    /// <summary>How long <see cref="GrpcServer.StopAsync"/> lets running calls finish before aborting them.</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Receives one line per call that failed with INTERNAL or UNKNOWN (unexpected exceptions). Quiet when null.</summary>
    public Action<string>? ErrorLog { get; init; }
}
