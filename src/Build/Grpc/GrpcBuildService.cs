using System.Net.Http;
using Grpc.Core;
using GrpcChannel = Grpc.Net.Client.GrpcChannel;
using TvixFuseBuild.Build.Pipeline;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Build.Service;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Grpc;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Sandbox;
using SnixBuild = Snix.Build.V1;
using TvixBuild = Tvix.Build.V1;

namespace TvixFuseBuild.Build.Grpc;

/// <summary>Settings of a <see cref="GrpcBuildService"/>.</summary>
public sealed record GrpcBuildServiceOptions
{
    /// <summary>
    /// The castore the builders build from, where the inputs are uploaded and the outputs fetched. Default: the one
    /// builder's own (<c>serve</c> serves its store at its address); several builders need one they all use.
    /// </summary>
    public string? BuilderStore { get; init; }

    /// <summary>Consulted before a build, filled after: a result is content-addressed, whoever built it.</summary>
    public ResultCache? ResultCache { get; init; }

    /// <summary>Build even when the result cache has the request's outputs.</summary>
    public bool Rebuild { get; init; }

    /// <summary>The deadline of each DoBuild call.</summary>
    public TimeSpan? Timeout { get; init; }

    /// <summary>What the service does (uploads, retries), a line each.</summary>
    public Action<string>? Log { get; init; }

    /// <summary>The bearer token's file for the builders and their store when their addresses name none (<c>token-file=</c>).</summary>
    public string? TokenFile { get; init; }
}

/// <summary>
/// Builds on remote builders (<c>tvix-fuse-build serve</c>, or tvix's and snix's own) and answers as a local build does:
/// uploads to the builders' store what it lacks, calls <c>DoBuild</c>, brings the outputs back into the local store,
/// and turns the builder's statuses back into the exceptions a local build throws. With several builders (or a
/// <c>dns:///</c> name) one channel spreads the calls round-robin; a call whose builder is or becomes unreachable
/// (UNAVAILABLE, or its connection dies) is made again on another: DoBuild is content-addressed, so a retry is safe.
/// </summary>
public sealed class GrpcBuildService : IBuildService, IAsyncDisposable
{
    private readonly CastoreStore _local;
    private readonly IReadOnlyList<BuilderAddress> _builders;
    private readonly GrpcBuildServiceOptions _options;
    private readonly GrpcChannel _channel;
    private readonly string _storeAddress;
    private readonly SemaphoreSlim _opening = new(1, 1);
    private CastoreStore? _remote;

    /// <exception cref="StoreAddressException">The builders cannot be used together, or several are given without a store.</exception>
    public GrpcBuildService(CastoreStore local, IReadOnlyList<BuilderAddress> builders, GrpcBuildServiceOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(local);
        ArgumentNullException.ThrowIfNull(builders);
        _local = local;
        _builders = builders;
        _options = options ?? new GrpcBuildServiceOptions();
        if (builders.Count == 0)
        {
            throw new StoreAddressException("no builder given");
        }

        _storeAddress = _options.BuilderStore
            ?? (builders is [{ StoreAddress: { } own }] ? own : throw new StoreAddressException(
                builders.Count > 1
                    ? $"{builders.Count} builders: name the castore they all build from, to upload the inputs to"
                    : $"{builders[0]}: name the castore its builders build from, to upload the inputs to"));
        if (!GrpcStoreAddress.IsGrpcAddress(_storeAddress))
        {
            throw new StoreAddressException($"the builders' store '{_storeAddress}' is not a gRPC store address (grpc+unix:///PATH, grpc+http://HOST:PORT, grpc+https://HOST:PORT)");
        }

        GrpcStoreAddress.Parse(_storeAddress);
        _channel = GrpcChannels.Create([.. builders.Select(b => b.Endpoint)], new GrpcChannelSettings { TokenFile = _options.TokenFile });
    }

    /// <summary>The builders, as given, for messages.</summary>
    public string Display => string.Join(", ", _builders);

    public Task<BuildRun> DoBuildAsync(BuildSpec spec, BuildProtocol protocol, BuildCallOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(spec);
        // Validated here, before anything is uploaded; the builder checks again at its edge.
        BuildRequestValidator.ThrowIfInvalid(spec, protocol);
        BuildRequestValidator.ThrowIfNotRunnable(spec);
        return RunAsync(spec, protocol, cancellationToken);
    }

    private async Task<BuildRun> RunAsync(BuildSpec spec, BuildProtocol protocol, CancellationToken cancellationToken)
    {
        var requestDigest = spec.ComputeDigest();
        if (!_options.Rebuild && _options.ResultCache is { } cache &&
            await cache.TryGetAsync(requestDigest, _local, cancellationToken).ConfigureAwait(false) is { } cached)
        {
            Log($"request {requestDigest} was built before and its outputs are in the store: not building it again");
            return new BuildRun(cached, Cached: true, Sandbox: null);
        }

        // The rest on the pool, as in BuildRunner: the caller's thread is back to watch for signals.
        await Task.CompletedTask.ConfigureAwait(ConfigureAwaitOptions.ForceYielding);
        var remote = await OpenStoreAsync(cancellationToken).ConfigureAwait(false);
        var uploaded = new CopyCount();
        try
        {
            foreach (var input in spec.Inputs)
            {
                await StoreCopy.CopyAsync(input, _local, remote, uploaded, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (StoreUnavailableException e) when (!cancellationToken.IsCancellationRequested)
        {
            throw new BuilderException(e.Message, e);
        }

        Log($"uploaded {uploaded} to {_storeAddress}");
        var result = await CallAsync(spec, protocol, cancellationToken).ConfigureAwait(false);
        var fetched = new CopyCount();
        foreach (var output in result.Outputs)
        {
            await StoreCopy.CopyAsync(output.Node, remote, _local, fetched, cancellationToken).ConfigureAwait(false);
        }

        Log($"fetched {fetched} from {_storeAddress}");
        if (_options.ResultCache is { } resultCache)
        {
            await resultCache.StoreAsync(requestDigest, spec, result, cancellationToken).ConfigureAwait(false);
        }

        return new BuildRun(result, Cached: false, Sandbox: null);
    }

    private async Task<CastoreStore> OpenStoreAsync(CancellationToken cancellationToken)
    {
        await _opening.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_remote is not null)
            {
                return _remote;
            }

            GrpcBlobService? blobs = null;
            try
            {
                var options = new GrpcStoreOptions { TokenFile = _options.TokenFile };
                blobs = await GrpcBlobService.OpenAsync(_storeAddress, options, cancellationToken).ConfigureAwait(false);
                var directories = await GrpcDirectoryService.OpenAsync(_storeAddress, options, cancellationToken).ConfigureAwait(false);
                return _remote = new CastoreStore(blobs, directories, _storeAddress, blobs, directories);
            }
            catch (Exception e) when (e is CastoreException and not StoreAddressException or HttpRequestException or IOException && !cancellationToken.IsCancellationRequested)
            {
                if (blobs is not null)
                {
                    await blobs.DisposeAsync().ConfigureAwait(false);
                }

                throw new BuilderException(e.Message, e);
            }
        }
        finally
        {
            _opening.Release();
        }
    }

    /// <summary>DoBuild, made again on another builder while the one it went to is unreachable.</summary>
    private async Task<BuildResult> CallAsync(BuildSpec spec, BuildProtocol protocol, CancellationToken cancellationToken)
    {
        // A dns:/// name may stand for any number of builders: a few tries more than the known ones.
        int attempts = Math.Max(3, _builders.Count + 2);
        for (int attempt = 1; ; attempt++)
        {
            var call = new CallOptions(
                deadline: _options.Timeout is { } timeout ? DateTime.UtcNow + timeout : null, cancellationToken: cancellationToken);
            try
            {
                BuildResult result;
                if (protocol == BuildProtocol.Snix)
                {
                    var reply = await new SnixBuild.BuildService.BuildServiceClient(_channel).DoBuildAsync(spec.ToSnix(), call).ConfigureAwait(false);
                    result = Check(spec, () => BuildResult.FromSnixResponse(reply), r => r.ToSnixResponse(spec));
                }
                else
                {
                    var reply = await new TvixBuild.BuildService.BuildServiceClient(_channel).DoBuildAsync(spec.ToTvix(), call).ConfigureAwait(false);
                    result = Check(spec, () => BuildResult.FromTvixBuild(reply), r => r.ToTvixBuild(spec));
                }

                return result;
            }
            catch (RpcException e) when (cancellationToken.IsCancellationRequested)
            {
                throw new OperationCanceledException("the build was cancelled", e, cancellationToken);
            }
            catch (RpcException e) when (Unreachable(e) && attempt < attempts)
            {
                Log($"a builder is unreachable ({Describe(e)}): trying again, on another if there is one");
                await Task.Delay(TimeSpan.FromMilliseconds(100 * attempt), cancellationToken).ConfigureAwait(false);
            }
            catch (RpcException e)
            {
                throw Translate(e);
            }
        }
    }

    private BuildResult Check(BuildSpec spec, Func<BuildResult> parse, Action<BuildResult> fits)
    {
        try
        {
            var result = parse();
            fits(result);
            return result;
        }
        catch (Exception e) when (e is BuildMessageFormatException or ArgumentException or CastoreException or InvalidOperationException)
        {
            throw new BuilderException($"the builder ({Display}) sent a reply that does not fit the request {spec.ComputeDigest()}: {e.Message}", e);
        }
    }

    /// <summary>The builder went away or cannot be reached: nothing of the build's own is known, so another may run it.</summary>
    private static bool Unreachable(RpcException e) => e.StatusCode switch
    {
        StatusCode.Unavailable => true,
        StatusCode.Internal or StatusCode.Unknown or StatusCode.Cancelled =>
            e.Status.DebugException is HttpRequestException or IOException or HttpProtocolException &&
            BuildFailureText.FromStatusDetail(e.Status.Detail) is null,
        _ => false,
    };

    /// <summary>A builder's status, as the exception a local build throws for the same reason.</summary>
    private Exception Translate(RpcException e)
    {
        string detail = e.Status.Detail;
        return e.StatusCode switch
        {
            StatusCode.InvalidArgument => new BuildRequestValidationException(BuildRequestErrorKind.RefusedByBuilder, detail),
            StatusCode.FailedPrecondition when detail.Contains(" is not in the store", StringComparison.Ordinal) ||
                                               detail.Contains("not found", StringComparison.OrdinalIgnoreCase) => new ObjectNotFoundException(detail),
            StatusCode.FailedPrecondition => new SandboxRefusedException(detail),
            StatusCode.Internal or StatusCode.Unknown when BuildFailureText.FromStatusDetail(detail) is { } failure => failure,
            StatusCode.DeadlineExceeded => new BuildFailedException(
                $"the command timed out: no answer from the builder within {_options.Timeout?.TotalSeconds ?? 0:0.#} s", null, null),
            StatusCode.Unavailable => new BuilderException($"no builder could run the build ({Display}): {Describe(e)}", e),
            _ => new BuilderException($"the builder ({Display}) refused the build: {Describe(e)}", e),
        };
    }

    private static string Describe(RpcException e) =>
        e.Status.DebugException is { } inner && !e.Status.Detail.Contains(inner.Message, StringComparison.Ordinal)
            ? $"{e.StatusCode}: {e.Status.Detail} ({inner.Message})"
            : $"{e.StatusCode}: {e.Status.Detail}";

    private void Log(string line) => _options.Log?.Invoke(line);

    public async ValueTask DisposeAsync()
    {
        _channel.Dispose();
        if (_remote is not null)
        {
            await _remote.DisposeAsync().ConfigureAwait(false);
        }

        _opening.Dispose();
    }
}
