using TvixFuseBuild.Build.Grpc;
using TvixFuseBuild.Build.Nix;
using TvixFuseBuild.Build.Pipeline;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Build.Service;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Transfer;
using TvixFuseBuild.Sandbox;

namespace TvixFuseBuild.MSBuild;

/// <summary>Where a step reports to (the MSBuild log, or a test).</summary>
internal interface IStepLog
{
    /// <summary>A line of the command's own output.</summary>
    void Output(string line);

    /// <summary>What the step is doing (inputs imported, cache hits, outputs materialized).</summary>
    void Detail(string message);

    /// <summary>Whether anyone reads <see cref="Detail"/>: when not, the messages are not even formatted.</summary>
    bool DetailEnabled { get; }
}

/// <summary>An output of the step, materialized on the host.</summary>
/// <param name="Name">The output's name (<c>out</c>, ...).</param>
/// <param name="Path">Where it now is: <c>OutputDirectory/NAME</c>.</param>
/// <param name="Node">What it is in the store.</param>
/// <param name="StorePath">Its path inside the sandbox, <c>/nix/store/HASH-NAME</c>.</param>
/// <param name="References">The inputs and outputs (by name) and extra needles found in it.</param>
internal sealed record MaterializedOutput(string Name, string Path, Node Node, string StorePath, IReadOnlyList<string> References);

internal sealed record StepResult(IReadOnlyList<MaterializedOutput> Outputs, bool Cached);

/// <summary>
/// One build step, start to end: import the inputs by content, write the Nix-shaped request, run it through the build
/// service (here, or on <see cref="StepParameters.Builder"/>; the result cache answers first either way), and
/// materialize the outputs. Every failure comes out
/// as a <see cref="TvixBuildException"/> carrying its error code; cancellation as <see cref="OperationCanceledException"/>,
/// after everything the step started is gone.
/// </summary>
internal static class StepRunner
{
    public static async Task<StepResult> RunAsync(
        StepParameters step, CastoreStore store, ResultCache? cache, IStepLog log, CancellationToken cancellationToken)
    {
        var inputs = await ImportInputsAsync(step, store, log, cancellationToken).ConfigureAwait(false);

        NixShapedRequest plan;
        try
        {
            plan = NixShapedRequest.Create(step.Name, inputs, step.OutputNames, step.Command, step.Environment, step.Network, step.ProvideBinSh);
        }
        catch (ArgumentException e)
        {
            throw new TvixBuildException(TvixBuildError.InvalidRequest, e.Message);
        }

        var spec = plan.Spec with { RefscanNeedles = [.. plan.Spec.RefscanNeedles, .. step.ExtraNeedles] };
        string[] needleOwners = [.. plan.NeedleOwners, .. step.ExtraNeedles];
        var run = await BuildAsync(step, store, cache, spec, log, cancellationToken).ConfigureAwait(false);

        var outputs = new List<MaterializedOutput>(plan.OutputNames.Length);
        for (int i = 0; i < plan.OutputNames.Length; i++)
        {
            var output = run.Result.Outputs[i];
            string destination = Path.Combine(step.OutputDirectory, plan.OutputNames[i]);
            await MaterializeAsync(output.Node, store, destination, cancellationToken).ConfigureAwait(false);
            var references = new List<string>(output.Needles.Length);
            foreach (int needle in output.Needles)
            {
                if (!references.Contains(needleOwners[needle]))
                {
                    references.Add(needleOwners[needle]);
                }
            }

            if (log.DetailEnabled)
            {
                log.Detail($"{plan.OutputNames[i]}: {destination} ({Describe(output.Node)})" +
                           (references.Count == 0 ? "" : $", references {string.Join(", ", references)}"));
            }

            outputs.Add(new MaterializedOutput(
                plan.OutputNames[i], destination, output.Node, $"{NixStorePaths.StoreDir}/{plan.OutputBaseNames[i]}", references));
        }

        // In the order the outputs were asked for, not the request's (sorted by path).
        var ordered = new MaterializedOutput[step.OutputNames.Count];
        for (int i = 0; i < ordered.Length; i++)
        {
            ordered[i] = outputs.Find(o => o.Name == step.OutputNames[i])!;
        }

        return new StepResult(ordered, run.Cached);
    }

    private static async Task<List<(string Name, Node Node)>> ImportInputsAsync(
        StepParameters step, CastoreStore store, IStepLog log, CancellationToken cancellationToken)
    {
        var inputs = new List<(string Name, Node Node)>(step.Inputs.Count);
        foreach (var input in step.Inputs)
        {
            if (!Path.Exists(input.Path) && new FileInfo(input.Path).LinkTarget is null)
            {
                throw new TvixBuildException(TvixBuildError.InputMissing, $"the input {input.Path} does not exist");
            }

            Node node;
            try
            {
                // The import cache: an unchanged toolchain is not read and hashed again on every call.
                node = await HostImporter.ImportAsync(
                    input.Path, PathComponent.Create(input.Name), store.Blobs, store.Directories,
                    new ImportOptions { Cache = store.Local?.ImportCache }, cancellationToken: cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is ImportException or IOException or UnauthorizedAccessException)
            {
                throw new TvixBuildException(TvixBuildError.InputMissing, $"cannot import the input {input.Path}: {e.Message}");
            }
            catch (CastoreException e)
            {
                throw new TvixBuildException(TvixBuildError.StoreError, $"cannot store the input {input.Path} in {store.Address}: {e.Message}");
            }

            if (log.DetailEnabled)
            {
                log.Detail($"input {input.Name}: {input.Path} ({Describe(node)})");
            }

            inputs.Add((input.Name, node));
        }

        return inputs;
    }

    /// <summary>The build service the step asks for: this host's pipeline, or the remote builder.</summary>
    private static IBuildService CreateService(StepParameters step, CastoreStore store, ResultCache? cache, IStepLog log)
    {
        if (step.Builder is not { } builder)
        {
            return new LocalBuildService(new BuildRunner(store, new BuildRunnerOptions
            {
                WorkRoot = step.WorkRoot,
                ResultCache = cache,
                Rebuild = step.Rebuild,
                Timeout = step.Timeout,
                Log = log.DetailEnabled ? log.Detail : null,
                Limits = step.Limits,
                LimitNames = new LimitNames("TvixBuildMaxProcesses", "TvixBuildMaxMemory", "TvixBuildTmpSize"),
            }));
        }

        try
        {
            return new GrpcBuildService(store, [BuilderAddress.Parse(builder)], new GrpcBuildServiceOptions
            {
                ResultCache = cache,
                Rebuild = step.Rebuild,
                Timeout = step.Timeout,
                Log = log.DetailEnabled ? log.Detail : null,
            });
        }
        catch (StoreAddressException e)
        {
            throw new TvixBuildException(TvixBuildError.InvalidRequest, $"Builder: {e.Message}");
        }
    }

    private static async Task<BuildRun> BuildAsync(
        StepParameters step, CastoreStore store, ResultCache? cache, BuildSpec spec, IStepLog log, CancellationToken cancellationToken)
    {
        var service = CreateService(step, store, cache, log);
        var lines = new OutputLines(log.Output);
        try
        {
            var run = await service.DoBuildAsync(spec, BuildProtocol.Tvix, new BuildCallOptions { Output = lines.WriteAsync }, cancellationToken).ConfigureAwait(false);
            if (run.Cached && log.DetailEnabled)
            {
                log.Detail($"{step.Name}: an identical build's outputs are in the store; the command did not run again");
            }

            return run;
        }
        catch (BuildRequestValidationException e)
        {
            throw new TvixBuildException(TvixBuildError.InvalidRequest, $"{step.Name}: the request is invalid: {e.Message}");
        }
        catch (ObjectNotFoundException e)
        {
            throw new TvixBuildException(TvixBuildError.InputMissing, $"{step.Name}: {e.Message}");
        }
        catch (SandboxException e)
        {
            throw new TvixBuildException(TvixBuildError.SandboxUnavailable, $"{step.Name}: {e.Message}");
        }
        catch (BuildFailedException e)
        {
            throw new TvixBuildException(Code(e), Describe(step, e));
        }
        catch (BuilderException e)
        {
            throw new TvixBuildException(TvixBuildError.BuilderFailed, $"{step.Name}: {e.Message}");
        }
        catch (Exception e) when (e is CastoreException or IOException or UnauthorizedAccessException)
        {
            throw new TvixBuildException(TvixBuildError.StoreError, $"{step.Name}: {e.Message}");
        }
        finally
        {
            lines.Flush();
            if (service is IAsyncDisposable disposable)
            {
                await disposable.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    /// <summary>The error code of a failed build; a remote one has only its reason, worded as a local one's.</summary>
    private static string Code(BuildFailedException failure) => failure.Sandbox switch
    {
        { Succeeded: true } => TvixBuildError.OutputMissing,
        { Outcome: SandboxOutcome.TimedOut or SandboxOutcome.SilenceTimedOut } => TvixBuildError.TimedOut,
        { } => TvixBuildError.CommandFailed,
        null when failure.Message.Contains("did not produce the output", StringComparison.Ordinal) => TvixBuildError.OutputMissing,
        null when failure.Message.Contains("timed out", StringComparison.Ordinal) ||
                  failure.Message.Contains("printed nothing for too long", StringComparison.Ordinal) => TvixBuildError.TimedOut,
        null => TvixBuildError.CommandFailed,
    };

    private static async Task MaterializeAsync(Node node, CastoreStore store, string destination, CancellationToken cancellationToken)
    {
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(destination)!);

            // Writable: the outputs live in the build tree, which `dotnet clean` and `rm -rf obj` must be able to remove.
            // The earlier output is replaced once the new one is complete; a device or FIFO there is never replaced.
            await HostExporter.ExportAsync(
                node, store, destination, new ExportOptions { Writable = true, ReplaceExisting = true }, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is CastoreException or IOException or UnauthorizedAccessException)
        {
            throw new TvixBuildException(TvixBuildError.MaterializeFailed, $"cannot materialize the output at {destination}: {e.Message}");
        }
    }

    /// <summary><c>STEP: REASON; the last N lines of its log:</c> and the lines, as <see cref="BuildFailureText"/> words them.</summary>
    private static string Describe(StepParameters step, BuildFailedException failure)
    {
        var details = BuildFailureText.Details(failure);
        return $"{step.Name}: {failure.Message}; {details[0]}" + string.Concat(details.Skip(1).Select(l => "\n" + l));
    }

    private static string Describe(Node node) => node switch
    {
        DirectoryNode d => $"directory {d.Digest}",
        FileNode f => $"{f.KindDisplay} {f.Digest}, {f.Size} bytes",
        SymlinkNode s => $"symlink to {s.Target}",
        _ => node.KindDisplay,
    };
}
