namespace TvixFuseBuild.Server;

/// <summary>How a <see cref="BuildGrpcService"/> admits builds and what it reports. Quiet by default.</summary>
public sealed record BuildGrpcServiceOptions
{
    /// <summary>Builds run at once; further DoBuild calls wait their turn (honouring their deadline and cancellation).</summary>
    public int MaxConcurrentBuilds { get; init; } = Environment.ProcessorCount;

    /// <summary>Receives one line per notable event of a build (accepted, waiting, done, failed, refused, cancelled).</summary>
    public Action<string>? Events { get; init; }

    /// <summary>Receives every line the builds print, prefixed with <c>[build N]</c>. Null: logs are not shown.</summary>
    public Action<string>? BuildOutput { get; init; }
}
