namespace TvixFuseBuild.Server;

/// <summary>Settings of a <see cref="GrpcServer"/>.</summary>
public sealed record GrpcServerOptions
{
    /// <summary>The default largest request message: 16 MiB (Put chunks and directories are far smaller).</summary>
    public const int DefaultMaxReceiveMessageSize = 16 << 20;

    /// <summary>The largest request message accepted; larger ones fail the call with RESOURCE_EXHAUSTED.</summary>
    public int MaxReceiveMessageSize { get; init; } = DefaultMaxReceiveMessageSize;

    /// <summary>How long <see cref="GrpcServer.StopAsync"/> lets running calls finish before aborting them.</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Receives one line per call that failed with INTERNAL (unexpected exceptions). Quiet when null.</summary>
    public Action<string>? ErrorLog { get; init; }

    /// <summary>Lines of a failed build's log sent back (in the INTERNAL status message).</summary>
    public int BuildFailureLogLines { get; init; } = 25;

    /// <summary>TLS on every listen address (HTTP/2 with ALPN) instead of cleartext h2c. Null: cleartext.</summary>
    public ServerTls? Tls { get; init; }

    /// <summary>Calls must carry <c>authorization: Bearer TOKEN</c> with this token (compared in constant time). Null: no token needed.</summary>
    public byte[]? BearerToken { get; init; }
}
