using Grpc.Core;
using Grpc.Net.Client;

namespace TvixFuseBuild.Castore.Grpc;

/// <summary>Settings of the gRPC castore clients beyond what the address says.</summary>
public sealed record GrpcStoreOptions
{
    /// <summary>Retries of UNAVAILABLE (before any byte of a stream was received; grpc-dotnet's retry policy).</summary>
    public GrpcRetryPolicy Retry { get; init; } = new();

    /// <summary>Reach the store when it is opened and fail there if it cannot be reached, as <c>wait-connect=1</c> does, unless the address says <c>offline=1</c>.</summary>
    public bool ConnectAtOpen { get; init; }

    /// <summary>The bearer token's file when the address has no <c>token-file=</c> (see <see cref="GrpcChannelSettings.TokenFile"/>).</summary>
    public string? TokenFile { get; init; }
}

/// <summary>The channel, package and policies one castore client uses, and the mapping of statuses to castore errors.</summary>
internal sealed class GrpcStoreConnection : IDisposable
{
    public GrpcStoreConnection(GrpcStoreAddress address, GrpcStoreOptions? options)
    {
        Address = address;
        Options = options ?? new GrpcStoreOptions();
        Channel = GrpcChannels.Create(address.Endpoint, new GrpcChannelSettings { Retry = Options.Retry, TokenFile = Options.TokenFile });
        Rpc = CastoreRpc.Create(address.Protocol, Channel.CreateCallInvoker());
    }

    public GrpcStoreAddress Address { get; }

    public GrpcStoreOptions Options { get; }

    public GrpcChannel Channel { get; }

    public CastoreRpc Rpc { get; }

    /// <summary>Whether opening a service on this connection reaches the store first (<see cref="ProbeAsync"/>).</summary>
    public bool ConnectsAtOpen => Address.WaitConnect || (Options.ConnectAtOpen && !Address.Offline);

    /// <summary>Options for a bounded request (everything but whole-blob downloads and uploads).</summary>
    public CallOptions Call(CancellationToken cancellationToken) =>
        new(deadline: DateTime.UtcNow + Address.CallTimeout, cancellationToken: cancellationToken);

    /// <summary>Options for a call without a deadline (a whole blob, an upload, a closure: their size is unbounded).</summary>
    public static CallOptions Unbounded(CancellationToken cancellationToken) => new(cancellationToken: cancellationToken);

    /// <summary>
    /// Turns a failed call into the castore error its status stands for, or into an <see cref="OperationCanceledException"/>
    /// when it failed because <paramref name="cancellationToken"/> (the caller's) was cancelled.
    /// </summary>
    public Exception Map(RpcException e, string what, CancellationToken cancellationToken) =>
        e.StatusCode == StatusCode.Cancelled && cancellationToken.IsCancellationRequested
            ? new OperationCanceledException($"{what}: cancelled", e, cancellationToken)
            : Map(e, what);

    public CastoreException Map(RpcException e, string what) => e.StatusCode switch
    {
        StatusCode.NotFound => new ObjectNotFoundException($"{what}: not found in {Address.Address}"),
        StatusCode.DataLoss => new CorruptObjectException($"{what}: the store {Address.Address} reports corrupt data: {Detail(e)}"),
        StatusCode.Unavailable => new StoreUnavailableException($"cannot reach the store {Address.Address}: {Detail(e)}", e),
        StatusCode.DeadlineExceeded => new StoreUnavailableException(
            $"{what}: the store {Address.Address} did not answer in time ({Detail(e)})", e),
        StatusCode.Unimplemented => new StoreUnavailableException(
            $"{what}: the store {Address.Address} does not offer {Rpc.Package} ({Detail(e)}); is it a {(Rpc.Protocol == CastoreProtocol.Tvix ? "snix" : "tvix")} store? choose with ?protocol=", e),
        StatusCode.Unauthenticated => new StoreUnavailableException(
            $"{what}: the store {Address.Address} refused the call as unauthenticated ({Detail(e)}); give a token with --grpc-token-file, ?token-file= or {GrpcChannels.TokenFileVariable}", e),
        _ => new StoreUnavailableException($"{what}: the store {Address.Address} failed: {e.StatusCode}: {Detail(e)}", e),
    };

    public static string Detail(RpcException e) => GrpcErrors.Describe(e);

    public CorruptObjectException Corrupt(string message) => new($"the store {Address.Address} sent {message}");

    /// <summary>Connects now (for <c>wait-connect=1</c>): any gRPC answer, even an error status, proves the store is there.</summary>
    public async Task ProbeAsync(CancellationToken cancellationToken)
    {
        try
        {
            await Rpc.StatAsync(B3Digest.Empty, withChunks: false, Call(cancellationToken)).ConfigureAwait(false);
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Cancelled && cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException("connecting was cancelled", e, cancellationToken);
        }
        catch (RpcException e) when (e.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded || e.Status.DebugException is not null)
        {
            // A status made here (with the local cause attached: refused, TLS handshake, ...) is no answer from the store.
            throw new StoreUnavailableException($"cannot reach the store {Address.Address}: {Detail(e)}", e);
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.Unauthenticated)
        {
            throw Map(e, "connect");
        }
        catch (RpcException)
        {
        }
    }

    public void Dispose() => Channel.Dispose();
}
