using System.Runtime.CompilerServices;
using TvixFuseBuild.Castore.Stores;
using Tvix.Castore.V1;

namespace TvixFuseBuild.Castore.Grpc;

/// <summary>
/// A castore DirectoryService reached over gRPC. Every directory received is checked against the digest it was asked
/// for (or, in a recursive get, against the edge that led to it, root to leaves); uploads are validated leaves to root
/// before they are sent.
/// </summary>
public sealed class GrpcDirectoryService : IDirectoryService
{
    private readonly GrpcStoreConnection _connection;

    private GrpcDirectoryService(GrpcStoreConnection connection) => _connection = connection;

    public GrpcStoreAddress Address => _connection.Address;

    /// <summary>Opens the DirectoryService at <paramref name="address"/>; with <c>wait-connect=1</c> connects (blocking) first.</summary>
    public static GrpcDirectoryService Open(string address, GrpcStoreOptions? options = null) =>
        OpenAsync(address, options).GetAwaiter().GetResult();

    public static Task<GrpcDirectoryService> OpenAsync(string address, GrpcStoreOptions? options = null, CancellationToken cancellationToken = default) =>
        OpenAsync(address, options, cancellationToken, probe: true);

    internal static async Task<GrpcDirectoryService> OpenAsync(string address, GrpcStoreOptions? options, CancellationToken cancellationToken, bool probe)
    {
        var connection = new GrpcStoreConnection(GrpcStoreAddress.Parse(address), options);
        try
        {
            if (probe && connection.ConnectsAtOpen)
            {
                await connection.ProbeAsync(cancellationToken).ConfigureAwait(false);
            }
        }
        catch
        {
            connection.Dispose();
            throw;
        }

        return new GrpcDirectoryService(connection);
    }

    public async ValueTask<CastoreDirectory?> GetAsync(B3Digest digest, CancellationToken cancellationToken = default)
    {
        var request = new GetDirectoryRequest { Digest = digest.ToByteString(), Recursive = false };
        try
        {
            return await _connection.RetryAsync(
                async ct =>
                {
                    using var call = _connection.Channel.ServerStreaming(_connection.Methods.DirectoryGet, request, _connection.Call(ct));
                    if (!await NextAsync(call, digest).ConfigureAwait(false))
                    {
                        return null;
                    }

                    var directory = call.Current;
                    if (directory.Digest != digest)
                    {
                        throw _connection.Corrupt($"directory {directory.Digest} when asked for {digest}");
                    }

                    if (await NextAsync(call, digest).ConfigureAwait(false))
                    {
                        throw _connection.Corrupt($"more than one directory for a non-recursive get of {digest}");
                    }

                    return directory;
                },
                cancellationToken).ConfigureAwait(false);
        }
        catch (RpcStatusException e) when (e.Code == GrpcStatusCode.NotFound)
        {
            return null;
        }
        catch (RpcStatusException e)
        {
            throw _connection.Map(e, $"get directory {digest}");
        }
    }

    public async IAsyncEnumerable<CastoreDirectory> GetRecursiveAsync(
        B3Digest root, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var request = new GetDirectoryRequest { Digest = root.ToByteString(), Recursive = true };
        var validator = new RootToLeavesValidator(root);
        var backoff = _connection.Options.Retry.InitialBackoff;
        int attempt = 1;
        int received = 0;
        var call = _connection.Channel.ServerStreaming(_connection.Methods.DirectoryGet, request, new GrpcCallOptions(null, cancellationToken));
        try
        {
            while (true)
            {
                bool more;
                try
                {
                    more = await NextAsync(call, root).ConfigureAwait(false);
                }
                catch (RpcStatusException e) when (e.IsTransient && received == 0 && attempt < _connection.Options.Retry.MaxAttempts)
                {
                    call.Dispose();
                    await _connection.DelayAsync(ref backoff, cancellationToken).ConfigureAwait(false);
                    attempt++;
                    call = _connection.Channel.ServerStreaming(_connection.Methods.DirectoryGet, request, new GrpcCallOptions(null, cancellationToken));
                    continue;
                }
                catch (RpcStatusException e) when (e.Code == GrpcStatusCode.NotFound)
                {
                    throw new ObjectNotFoundException(received == 0
                        ? $"directory {root} not found in {_connection.Address.Address}"
                        : $"a directory in the closure of {root} is missing in {_connection.Address.Address}: {e.Detail}");
                }
                catch (RpcStatusException e)
                {
                    throw _connection.Map(e, $"get the closure of directory {root}");
                }

                if (!more)
                {
                    break;
                }

                var directory = call.Current;
                try
                {
                    validator.Add(directory);
                }
                catch (InvalidClosureException e)
                {
                    throw _connection.Corrupt($"an invalid closure for {root}: {e.Message}");
                }

                received++;
                yield return directory;
            }

            validator.Finish();
        }
        finally
        {
            call.Dispose();
        }
    }

    /// <summary>The next directory of a Get stream; an undecodable one is corrupt data, not a transport problem.</summary>
    private async ValueTask<bool> NextAsync(GrpcServerStreamingCall<CastoreDirectory> call, B3Digest requested)
    {
        try
        {
            return await call.MoveNextAsync().ConfigureAwait(false);
        }
        catch (RpcStatusException e) when (e.InnerException is DirectoryValidationException invalid)
        {
            throw _connection.Corrupt($"an invalid directory when asked for {requested}: {invalid.Message}");
        }
    }

    public async ValueTask<B3Digest> PutAsync(CastoreDirectory directory, CancellationToken cancellationToken = default)
    {
        await using var putter = new Putter(this, cancellationToken, validate: false);
        await putter.PutAsync(directory, cancellationToken).ConfigureAwait(false);
        return await putter.CloseAsync(cancellationToken).ConfigureAwait(false);
    }

    public IDirectoryPutter CreatePutter() => new Putter(this, default, validate: true);

    public ValueTask DisposeAsync()
    {
        _connection.Dispose();
        return ValueTask.CompletedTask;
    }

    public override string ToString() => _connection.Address.Address;

    /// <summary>Streams a closure to the server after checking each directory locally (so errors come at once, with our message).</summary>
    private sealed class Putter(GrpcDirectoryService owner, CancellationToken callToken, bool validate) : IDirectoryPutter
    {
        private readonly LeavesToRootValidator? _validator = validate ? new() : null;
        private GrpcClientStreamingCall<CastoreDirectory, PutDirectoryResponse>? _call;
        private B3Digest? _last;
        private bool _closed;

        private GrpcStoreConnection Connection => owner._connection;

        public async ValueTask PutAsync(CastoreDirectory directory, CancellationToken cancellationToken = default)
        {
            if (_closed)
            {
                ThrowHelper.ThrowInvalidOperation("the closure was already closed");
            }

            _validator?.Add(directory);
            _call ??= Connection.Channel.ClientStreaming(
                Connection.Methods.DirectoryPut, new GrpcCallOptions(null, callToken.CanBeCanceled ? callToken : cancellationToken));
            try
            {
                await _call.WriteAsync(directory).ConfigureAwait(false);
            }
            catch (RpcStatusException e)
            {
                throw MapPutError(e);
            }

            _last = directory.Digest;
        }

        public async ValueTask<B3Digest> CloseAsync(CancellationToken cancellationToken = default)
        {
            if (_closed)
            {
                ThrowHelper.ThrowInvalidOperation("the closure was already closed");
            }

            _closed = true;
            var root = _validator?.Finish().Digest ?? _last ?? throw new InvalidClosureException("no directories were sent");
            PutDirectoryResponse response;
            try
            {
                response = await _call!.CompleteAsync().WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (RpcStatusException e)
            {
                throw MapPutError(e);
            }

            if (!B3Digest.TryCreate(response.RootDigest.Span, out var stored) || stored != root)
            {
                throw new CorruptObjectException(
                    $"the store {Connection.Address.Address} answered a directory upload with root {(stored == default ? $"a {response.RootDigest.Length}-byte digest" : stored.ToString())}, but the root sent was {root}");
            }

            return root;
        }

        private CastoreException MapPutError(RpcStatusException e) =>
            e.Code == GrpcStatusCode.InvalidArgument
                ? new InvalidClosureException($"the store {Connection.Address.Address} rejected the directories: {e.Detail}")
                : Connection.Map(e, "upload directories");

        public ValueTask DisposeAsync()
        {
            _closed = true;
            _call?.Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
