using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using Grpc.Core;
using TvixFuseBuild.Build.Pipeline;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Build.Service;
using SnixBuild = Snix.Build.V1;
using TvixBuild = Tvix.Build.V1;

namespace TvixFuseBuild.Server;

/// <summary>
/// The BuildService over an <see cref="IBuildService"/>: <c>DoBuild</c> under <c>tvix.build.v1</c> (replies <c>Build</c>)
/// and <c>snix.build.v1</c> (replies <c>BuildResponse</c>); add it with <see cref="BuildGrpcServices.AddBuildService"/>. The request is
/// parsed and validated here, once; the build service gets the <see cref="BuildSpec"/>. At most
/// <see cref="BuildGrpcServiceOptions.MaxConcurrentBuilds"/> builds run at once; the others wait their turn. What a
/// failure tells the client is the server's interceptor's to say:
/// <list type="table">
/// <item><term>INVALID_ARGUMENT</term><description>the request fails validation (tvix's message, as tvix answers), or can never run anywhere.</description></item>
/// <item><term>FAILED_PRECONDITION</term><description>a valid request this server cannot take as things are: an input is not in its store (upload it and retry), or the host does not meet the constraints (system, memory), or a read-only path is not allowed (<c>--allow-ro-path</c>) or may never be exposed.</description></item>
/// <item><term>INTERNAL</term><description>the build ran and failed: the reason (exit status, signal, timeout, missing output) and the tail of its log; or the server could not run it (it cannot sandbox).</description></item>
/// <item><term>DEADLINE_EXCEEDED</term><description>the client's deadline passed, waiting or building; the build was cancelled and torn down.</description></item>
/// <item><term>UNAVAILABLE</term><description>the server is shutting down: the call was refused, or its build was cancelled at the end of the grace period.</description></item>
/// </list>
/// A client that cancels gets nothing (its stream is gone) and its build is cancelled and torn down likewise.
/// </summary>
public sealed class BuildGrpcService
{
    private readonly IBuildService _builds;
    private readonly BuildGrpcServiceOptions _options;
    private readonly SemaphoreSlim _slots;
    private readonly CancellationTokenSource _stopping = new();
    private readonly CancellationTokenSource _abort = new();
    private readonly ConcurrentDictionary<long, Task> _calls = new();
    private long _lastId;
    private int _running;
    private int _waiting;

    public BuildGrpcService(IBuildService builds, BuildGrpcServiceOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(builds);
        _builds = builds;
        _options = options ?? new BuildGrpcServiceOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.MaxConcurrentBuilds, 1, nameof(options));
        _slots = new SemaphoreSlim(_options.MaxConcurrentBuilds, _options.MaxConcurrentBuilds);
    }

    /// <summary>Builds running now (holding a slot).</summary>
    public int RunningBuilds => Volatile.Read(ref _running);

    /// <summary>DoBuild calls waiting for a slot.</summary>
    public int WaitingBuilds => Volatile.Read(ref _waiting);

    /// <summary>
    /// The first step of a graceful shutdown: new calls and calls still waiting for a slot are answered UNAVAILABLE;
    /// running builds go on.
    /// </summary>
    public void BeginShutdown() => _stopping.Cancel();

    /// <summary>
    /// The last step of a shutdown: refuses what is waiting, cancels the running builds and returns once every call
    /// has ended and its build is torn down (no process, mount or build directory left).
    /// </summary>
    public async Task CancelAndWaitAsync()
    {
        BeginShutdown();
        await _abort.CancelAsync().ConfigureAwait(false);
        await Task.WhenAll(_calls.Values).ConfigureAwait(false);
    }

    /// <summary>Returns once every call running now has ended (without cancelling anything), or when <paramref name="cancellationToken"/> fires.</summary>
    public Task WaitForCallsAsync(CancellationToken cancellationToken = default) =>
        Task.WhenAll(_calls.Values).WaitAsync(cancellationToken);

    internal async Task<TReply> DoBuildAsync<TReply>(
        BuildProtocol protocol, Func<BuildSpec> parse, Func<BuildSpec, BuildResult, TReply> reply, ServerCallContext context)
    {
        long id = Interlocked.Increment(ref _lastId);
        var ended = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _calls[id] = ended.Task;
        try
        {
            // Registered first, checked second: CancelAndWaitAsync either sees this call or this call sees it stopping.
            if (_stopping.IsCancellationRequested)
            {
                throw ShuttingDown(id, "refused");
            }

            BuildSpec spec;
            try
            {
                spec = parse();
            }
            catch (BuildRequestValidationException e)
            {
                Event(id, $"refused: invalid request: {e.Message}");
                throw;
            }

            Event(id, $"accepted ({protocol.ToString().ToLowerInvariant()}, from {context.Peer}): {spec.Inputs.Length} inputs, " +
                      $"{spec.Outputs.Length} outputs, command {spec.CommandArgs.FirstOrDefault()}");
            using var cancel = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, _abort.Token);
            await WaitForSlotAsync(id, context).ConfigureAwait(false);
            Interlocked.Increment(ref _running);
            try
            {
                var result = await RunAsync(id, spec, protocol, context, cancel.Token).ConfigureAwait(false);
                return reply(spec, result);
            }
            finally
            {
                Interlocked.Decrement(ref _running);
                _slots.Release();
            }
        }
        finally
        {
            _calls.TryRemove(id, out _);
            ended.SetResult();
        }
    }

    private async Task WaitForSlotAsync(long id, ServerCallContext context)
    {
        if (_slots.Wait(0))
        {
            return;
        }

        Interlocked.Increment(ref _waiting);
        Event(id, $"waiting for a slot ({RunningBuilds} of {_options.MaxConcurrentBuilds} builds running)");
        using var wait = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, _stopping.Token);
        try
        {
            await _slots.WaitAsync(wait.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!context.CancellationToken.IsCancellationRequested)
        {
            throw ShuttingDown(id, "refused while waiting for a slot");
        }
        catch (OperationCanceledException)
        {
            Event(id, DeadlinePassed(context) ? "the deadline passed while it waited for a slot" : "cancelled by the client while it waited for a slot");
            throw;
        }
        finally
        {
            Interlocked.Decrement(ref _waiting);
        }

        // A shutdown that began while this call got its slot: refuse rather than start something new.
        if (_stopping.IsCancellationRequested)
        {
            _slots.Release();
            throw ShuttingDown(id, "refused");
        }
    }

    private async Task<BuildResult> RunAsync(
        long id, BuildSpec spec, BuildProtocol protocol, ServerCallContext context, CancellationToken cancellationToken)
    {
        var stopwatch = Stopwatch.StartNew();
        var log = _options.BuildOutput is { } sink ? new BuildLogLines($"[build {id}] ", sink) : null;
        try
        {
            var run = await _builds.DoBuildAsync(spec, protocol, new BuildCallOptions { Output = log is null ? null : log.WriteAsync }, cancellationToken)
                .ConfigureAwait(false);
            log?.Flush();
            Event(id, run.Cached
                ? "done: answered from the result cache"
                : $"done in {stopwatch.Elapsed.TotalSeconds.ToString("0.00", CultureInfo.InvariantCulture)} s");
            return run.Result;
        }
        catch (Exception e)
        {
            log?.Flush();
            if (!cancellationToken.IsCancellationRequested)
            {
                Event(id, e switch
                {
                    BuildFailedException => $"failed: {e.Message}",
                    BuildRequestValidationException => $"refused: invalid request: {e.Message}",
                    Castore.ObjectNotFoundException or Sandbox.SandboxRefusedException => $"refused: {e.Message}",
                    _ => $"could not run: {e.GetType().Name}: {e.Message}",
                });
                throw;
            }

            // Whatever surfaced while the build was being torn down, it was cancelled.
            if (context.CancellationToken.IsCancellationRequested)
            {
                Event(id, DeadlinePassed(context) ? "cancelled: the deadline passed" : "cancelled by the client");
                throw new OperationCanceledException("the build was cancelled", e, context.CancellationToken);
            }

            Event(id, "cancelled: the server is shutting down and the grace period is over");
            throw new ServerShuttingDownException("the server is shutting down; the build was cancelled");
        }
    }

    private ServerShuttingDownException ShuttingDown(long id, string what)
    {
        Event(id, $"{what}: the server is shutting down");
        return new ServerShuttingDownException("the server is shutting down; the build was not started");
    }

    private static bool DeadlinePassed(ServerCallContext context) => context.Deadline <= DateTime.UtcNow;

    private void Event(long id, string text) => _options.Events?.Invoke($"build {id}: {text}");
}

/// <summary>Adds the BuildService to a server.</summary>
public static class BuildGrpcServices
{
    /// <summary>Hosts <paramref name="builds"/> under <c>tvix.build.v1</c> and <c>snix.build.v1</c>.</summary>
    public static GrpcServer AddBuildService(this GrpcServer server, BuildGrpcService builds) => server
        .AddService(new TvixBuildService(builds), TvixBuild.BuildService.Descriptor)
        .AddService(new SnixBuildService(builds), SnixBuild.BuildService.Descriptor);
}

internal sealed class TvixBuildService(BuildGrpcService builds) : TvixBuild.BuildService.BuildServiceBase
{
    public override Task<TvixBuild.Build> DoBuild(TvixBuild.BuildRequest request, ServerCallContext context) =>
        builds.DoBuildAsync(BuildProtocol.Tvix, () => BuildSpec.FromTvix(request), static (spec, result) => result.ToTvixBuild(spec), context);
}

internal sealed class SnixBuildService(BuildGrpcService builds) : SnixBuild.BuildService.BuildServiceBase
{
    public override Task<SnixBuild.BuildResponse> DoBuild(SnixBuild.BuildRequest request, ServerCallContext context) =>
        builds.DoBuildAsync(BuildProtocol.Snix, () => BuildSpec.FromSnix(request), static (spec, result) => result.ToSnixResponse(spec), context);
}
