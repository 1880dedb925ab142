using TvixFuseBuild.Build.Pipeline;
using TvixFuseBuild.Build.Requests;

namespace TvixFuseBuild.Build.Service;

/// <summary>Builds on this machine, with <paramref name="runner"/>, into its store.</summary>
public sealed class LocalBuildService(BuildRunner runner) : IBuildService
{
    public BuildRunner Runner => runner;

    public Task<BuildRun> DoBuildAsync(
        BuildSpec spec, BuildProtocol protocol, BuildCallOptions? options = null, CancellationToken cancellationToken = default) =>
        runner.RunAsync(spec, protocol, options?.Output, cancellationToken);
}
