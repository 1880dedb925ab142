using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using TvixFuseBuild.Build.Pipeline;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Build.Service;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Grpc;
using TvixFuseBuild.Sandbox;

namespace TvixFuseBuild.Build.Grpc;

/// <summary>
/// The BuildService over a <see cref="BuildRunner"/>: <c>DoBuild</c> under <c>tvix.build.v1</c> (replies <c>Build</c>)
/// and <c>snix.build.v1</c> (replies <c>BuildResponse</c>). At most <see cref="BuildGrpcServiceOptions.MaxConcurrentBuilds"/>
/// builds run at once; the others wait their turn. Statuses:
/// <list type="table">
/// <item><term>INVALID_ARGUMENT</term><description>the request fails validation (tvix's message, as tvix answers), or can never run anywhere (our runnability check's message).</description></item>
/// <item><term>FAILED_PRECONDITION</term><description>a valid request this server cannot take as things are: an input is not in its store (upload it and retry), or the host does not meet the constraints (system, memory), or a read-only path is not allowed (<c>--allow-ro-path</c>) or may never be exposed (a symlink, a build directory, the store, /proc, /sys).</description></item>
/// <item><term>INTERNAL</term><description>the build ran and failed: the reason (exit status, signal, timeout, missing output) and the tail of its log; or the server could not run it (it cannot sandbox).</description></item>
/// <item><term>DEADLINE_EXCEEDED</term><description>the client's deadline passed, waiting or building; the build was cancelled and torn down.</description></item>
/// <item><term>UNAVAILABLE</term><description>the server is shutting down: the call was refused, or its build was cancelled at the end of the grace period.</description></item>
/// </list>
/// A client that cancels gets nothing (its stream is gone) and its build is cancelled and torn down likewise.
/// </summary>
public sealed class BuildGrpcService : IGrpcService
{
    /// <summary>The grpc-message budget: the failure text is cut (oldest log lines first) to stay under common clients' 8 KiB metadata limit.</summary>
    internal const int MaxStatusMessageLength = 4096;

    private readonly BuildRunner _runner;
    private readonly BuildGrpcServiceOptions _options;
    private readonly SemaphoreSlim _slots;
    private readonly CancellationTokenSource _stopping = new();
    private readonly CancellationTokenSource _abort = new();
    private readonly ConcurrentDictionary<long, Task> _calls = new();
    private long _lastId;
    private int _running;
    private int _waiting;

    public BuildGrpcService(BuildRunner runner, BuildGrpcServiceOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(runner);
        _runner = runner;
        _options = options ?? new BuildGrpcServiceOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.MaxConcurrentBuilds, 1, nameof(options));
        _slots = new SemaphoreSlim(_options.MaxConcurrentBuilds, _options.MaxConcurrentBuilds);
    }

    /// <summary>Builds running now (holding a slot).</summary>
    public int RunningBuilds => Volatile.Read(ref _running);

    /// <summary>DoBuild calls waiting for a slot.</summary>
    public int WaitingBuilds => Volatile.Read(ref _waiting);

    public void Bind(GrpcServiceBinder binder) => binder
        .AddUnary(BuildGrpcMethods.TvixDoBuild, (request, context) =>
            DoBuildAsync(BuildProtocol.Tvix, () => BuildSpec.FromTvix(request), static (spec, result) => result.ToTvixBuild(spec), context))
        .AddUnary(BuildGrpcMethods.SnixDoBuild, (request, context) =>
            DoBuildAsync(BuildProtocol.Snix, () => BuildSpec.FromSnix(request), static (spec, result) => result.ToSnixResponse(spec), context));

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

    private async ValueTask<TReply> DoBuildAsync<TReply>(
        BuildProtocol protocol, Func<BuildSpec> parse, Func<BuildSpec, BuildResult, TReply> reply, GrpcServerCallContext context)
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

            var spec = Admit(id, protocol, parse, context);
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

    /// <summary>Validates the request and checks what can be checked before it waits for a slot.</summary>
    private BuildSpec Admit(long id, BuildProtocol protocol, Func<BuildSpec> parse, GrpcServerCallContext context)
    {
        try
        {
            var spec = parse();
            BuildRequestValidator.ThrowIfNotRunnable(spec);
            if (spec.Constraints is { } constraints)
            {
                SandboxRunner.CheckConstraints(constraints.System, (long)Math.Min(constraints.MinMemory, long.MaxValue));
            }

            _runner.CheckReadOnlyPaths(spec);
            Event(id, $"accepted ({protocol.ToString().ToLowerInvariant()}, from {context.Peer}): {spec.Inputs.Length} inputs, " +
                      $"{spec.Outputs.Length} outputs, command {spec.CommandArgs.FirstOrDefault()}");
            return spec;
        }
        catch (BuildRequestValidationException e)
        {
            Event(id, $"refused: invalid request: {e.Message}");
            throw new RpcStatusException(GrpcStatusCode.InvalidArgument, e.Message, e);
        }
        catch (SandboxRefusedException e)
        {
            Event(id, $"refused: {e.Message}");
            throw new RpcStatusException(GrpcStatusCode.FailedPrecondition, e.Message, e);
        }
    }

    private async Task WaitForSlotAsync(long id, GrpcServerCallContext context)
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
            Event(id, context.DeadlineExceeded ? "the deadline passed while it waited for a slot" : "cancelled by the client while it waited for a slot");
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
        long id, BuildSpec spec, BuildProtocol protocol, GrpcServerCallContext context, CancellationToken cancellationToken)
    {
        var stopwatch = Stopwatch.StartNew();
        var log = _options.BuildOutput is { } sink ? new BuildLogLines($"[build {id}] ", sink) : null;
        try
        {
            var run = await _runner.RunAsync(spec, protocol, log is null ? null : log.WriteAsync, cancellationToken).ConfigureAwait(false);
            log?.Flush();
            Event(id, run.Cached
                ? "done: answered from the result cache"
                : $"done in {stopwatch.Elapsed.TotalSeconds.ToString("0.00", CultureInfo.InvariantCulture)} s");
            return run.Result;
        }
        catch (Exception e)
        {
            log?.Flush();
            if (Translate(id, e, context, cancellationToken) is { } translated)
            {
                throw translated;
            }

            throw;
        }
    }

    /// <summary>What a failure of the pipeline tells the client; null for what the server's generic mapping handles.</summary>
    private Exception? Translate(long id, Exception e, GrpcServerCallContext context, CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            // Whatever surfaced while the build was being torn down, it was cancelled.
            if (context.CancellationToken.IsCancellationRequested)
            {
                bool deadline = context.DeadlineExceeded;
                Event(id, deadline ? "cancelled: the deadline passed" : "cancelled by the client");
                // A client that went away gets nothing: the server sends no status on a reset stream.
                return deadline ? new RpcStatusException(GrpcStatusCode.DeadlineExceeded, "the deadline passed; the build was cancelled", e) : null;
            }

            Event(id, "cancelled: the server is shutting down and the grace period is over");
            return new RpcStatusException(GrpcStatusCode.Unavailable, "the server is shutting down; the build was cancelled", e);
        }

        switch (e)
        {
            case BuildFailedException failure:
                Event(id, $"failed: {failure.Message}");
                return new RpcStatusException(GrpcStatusCode.Internal, FailureDetail(failure, _options.FailureLogLines), e);
            case BuildRequestValidationException invalid:
                Event(id, $"refused: invalid request: {invalid.Message}");
                return new RpcStatusException(GrpcStatusCode.InvalidArgument, invalid.Message, e);
            case SandboxRefusedException refused:
                Event(id, $"refused: {refused.Message}");
                return new RpcStatusException(GrpcStatusCode.FailedPrecondition, refused.Message, e);
            case ObjectNotFoundException missing:
                Event(id, $"refused: {missing.Message}");
                return new RpcStatusException(GrpcStatusCode.FailedPrecondition, missing.Message, e);
            case SandboxException or IOException or UnauthorizedAccessException:
                Event(id, $"could not run: {e.Message}");
                _options.Errors?.Invoke($"build {id}: cannot run builds: {e.Message}");
                return new RpcStatusException(GrpcStatusCode.Internal, $"the server cannot run the build: {e.Message}", e);
            default:
                Event(id, $"failed: {e.GetType().Name}: {e.Message}");
                return null;
        }
    }

    private RpcStatusException ShuttingDown(long id, string what)
    {
        Event(id, $"{what}: the server is shutting down");
        return new RpcStatusException(GrpcStatusCode.Unavailable, "the server is shutting down; the build was not started");
    }

    /// <summary>The status detail of a failed build: <see cref="BuildFailureText.StatusDetail"/>, the one wording a client turns back into the failure.</summary>
    internal static string FailureDetail(BuildFailedException failure, int lineCount) =>
        BuildFailureText.StatusDetail(failure, lineCount, MaxStatusMessageLength);

    private void Event(long id, string text) => _options.Events?.Invoke($"build {id}: {text}");
}
