namespace TvixFuseBuild.Castore.Grpc;

/// <summary>How a gRPC store client retries transient failures (UNAVAILABLE: connection refused, server restarting).</summary>
public sealed record GrpcRetryPolicy
{
    /// <summary>Attempts per request, the first included; with the defaults the budget is about 3 seconds of waiting.</summary>
    public int MaxAttempts { get; init; } = 5;

    public TimeSpan InitialBackoff { get; init; } = TimeSpan.FromMilliseconds(200);

    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromSeconds(2);

    public static GrpcRetryPolicy None { get; } = new() { MaxAttempts = 1 };
}

/// <summary>Settings of the gRPC castore clients beyond what the address says.</summary>
public sealed record GrpcStoreOptions
{
    public GrpcChannelOptions Channel { get; init; } = new();

    public GrpcRetryPolicy Retry { get; init; } = new();

    /// <summary>Reach the store when it is opened and fail there if it cannot be reached, as <c>wait-connect=1</c> does, unless the address says <c>offline=1</c>.</summary>
    public bool ConnectAtOpen { get; init; }
}

/// <summary>The channel, package and policies one castore client uses, and the mapping of statuses to castore errors.</summary>
internal sealed class GrpcStoreConnection : IDisposable
{
    public GrpcStoreConnection(GrpcStoreAddress address, GrpcStoreOptions? options)
    {
        Address = address;
        Options = options ?? new GrpcStoreOptions();
        Methods = CastoreGrpcMethods.For(address.Protocol);
        Channel = new GrpcChannel(address.Endpoint, Options.Channel);
    }

    public GrpcStoreAddress Address { get; }

    public GrpcStoreOptions Options { get; }

    public CastoreGrpcMethods Methods { get; }

    public GrpcChannel Channel { get; }

    /// <summary>Whether opening a service on this connection reaches the store first (<see cref="ProbeAsync"/>).</summary>
    public bool ConnectsAtOpen => Address.WaitConnect || (Options.ConnectAtOpen && !Address.Offline);

    /// <summary>Options for a bounded request (everything but whole-blob downloads and uploads).</summary>
    public GrpcCallOptions Call(CancellationToken cancellationToken) => new(Address.CallTimeout, cancellationToken);

    /// <summary>Runs <paramref name="attempt"/>, retrying transient failures with exponential backoff and jitter.</summary>
    public async ValueTask<T> RetryAsync<T>(Func<CancellationToken, ValueTask<T>> attempt, CancellationToken cancellationToken)
    {
        var backoff = Options.Retry.InitialBackoff;
        for (int i = 1; ; i++)
        {
            try
            {
                return await attempt(cancellationToken).ConfigureAwait(false);
            }
            catch (RpcStatusException e) when (e.IsTransient && i < Options.Retry.MaxAttempts)
            {
                await DelayAsync(ref backoff, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Waits the current backoff (±25%) and doubles it for next time.</summary>
    public Task DelayAsync(ref TimeSpan backoff, CancellationToken cancellationToken)
    {
        var wait = backoff * (0.75 + (Random.Shared.NextDouble() / 2));
        backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, Options.Retry.MaxBackoff.Ticks));
        return Task.Delay(wait, cancellationToken);
    }

    /// <summary>Turns a failed call into the castore error its status stands for.</summary>
    public CastoreException Map(RpcStatusException e, string what) => e.Code switch
    {
        GrpcStatusCode.NotFound => new ObjectNotFoundException($"{what}: not found in {Address.Address}"),
        GrpcStatusCode.DataLoss => new CorruptObjectException($"{what}: the store {Address.Address} reports corrupt data: {e.Detail}"),
        GrpcStatusCode.Unavailable => new StoreUnavailableException($"cannot reach the store {Address.Address}: {e.Detail}", e),
        GrpcStatusCode.DeadlineExceeded => new StoreUnavailableException(
            $"{what}: the store {Address.Address} did not answer in time ({e.Detail})", e),
        GrpcStatusCode.Unimplemented => new StoreUnavailableException(
            $"{what}: the store {Address.Address} does not offer {Methods.Package} ({e.Detail}); is it a {(Methods.Protocol == CastoreProtocol.Tvix ? "snix" : "tvix")} store? choose with ?protocol=", e),
        _ => new StoreUnavailableException($"{what}: the store {Address.Address} failed: {e.Message}", e),
    };

    public CorruptObjectException Corrupt(string message) => new($"the store {Address.Address} sent {message}");

    /// <summary>Connects now (for <c>wait-connect=1</c>): any gRPC answer, even an error status, proves the store is there.</summary>
    public async Task ProbeAsync(CancellationToken cancellationToken)
    {
        try
        {
            await RetryAsync<bool>(
                async ct =>
                {
                    try
                    {
                        await Channel.UnaryAsync(
                            Methods.BlobStat,
                            new Tvix.Castore.V1.StatBlobRequest { Digest = B3Digest.Empty.ToByteString() },
                            Call(ct)).ConfigureAwait(false);
                    }
                    catch (RpcStatusException e) when (e.Code is not (GrpcStatusCode.Unavailable or GrpcStatusCode.DeadlineExceeded))
                    {
                    }

                    return true;
                },
                cancellationToken).ConfigureAwait(false);
        }
        catch (RpcStatusException e)
        {
            throw new StoreUnavailableException($"cannot reach the store {Address.Address}: {e.Detail}", e);
        }
    }

    public void Dispose() => Channel.Dispose();
}
