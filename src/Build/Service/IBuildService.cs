using TvixFuseBuild.Build.Pipeline;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Sandbox;

namespace TvixFuseBuild.Build.Service;

/// <summary>
/// Where builds run: here (<see cref="LocalBuildService"/>) or on builders reached over gRPC. The CLI, the MSBuild
/// task and <c>serve</c> all build through this, so a build answers the same wherever it ran.
/// </summary>
/// <remarks>
/// Failures are exceptions, the same whoever ran the build: <see cref="BuildRequestValidationException"/> (invalid
/// request), <see cref="Castore.ObjectNotFoundException"/> (an input is missing), <see cref="SandboxRefusedException"/>
/// (the builder cannot meet the request's constraints; nothing ran), <see cref="BuildFailedException"/> (the command
/// failed, timed out or left an output out), <see cref="OperationCanceledException"/>.
/// </remarks>
public interface IBuildService
{
    /// <summary>
    /// Runs <paramref name="spec"/>. When it returns, the outputs named in the result are in the caller's store.
    /// </summary>
    Task<BuildRun> DoBuildAsync(BuildSpec spec, BuildProtocol protocol, BuildCallOptions? options = null, CancellationToken cancellationToken = default);
}

/// <summary>Per-call settings of <see cref="IBuildService.DoBuildAsync"/>.</summary>
public sealed record BuildCallOptions
{
    /// <summary>Receives the command's output as it is written, where the service can stream it (locally).</summary>
    public SandboxOutput? Output { get; init; }
}
