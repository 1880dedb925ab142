using System.Runtime.CompilerServices;
using Google.Protobuf;
using Grpc.Core;
using TvixFuseBuild.Castore.Stores;

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
        try
        {
            using var call = _connection.Rpc.GetDirectory(digest, recursive: false, _connection.Call(cancellationToken));
            if (!await NextAsync(call, digest, cancellationToken).ConfigureAwait(false))
            {
                return null;
            }

            var directory = call.Current;
            if (directory.Digest != digest)
            {
                throw _connection.Corrupt($"directory {directory.Digest} when asked for {digest}");
            }

            if (await NextAsync(call, digest, cancellationToken).ConfigureAwait(false))
            {
                throw _connection.Corrupt($"more than one directory for a non-recursive get of {digest}");
            }

            return directory;
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.NotFound)
        {
            return null;
        }
        catch (RpcException e)
        {
            throw _connection.Map(e, $"get directory {digest}", cancellationToken);
        }
    }

    public async IAsyncEnumerable<CastoreDirectory> GetRecursiveAsync(
        B3Digest root, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var validator = new RootToLeavesValidator(root);
        int received = 0;

        // UNAVAILABLE before the first directory is retried by the channel's retry policy.
        using var call = _connection.Rpc.GetDirectory(root, recursive: true, GrpcStoreConnection.Unbounded(cancellationToken));
        while (true)
        {
            bool more;
            try
            {
                more = await NextAsync(call, root, cancellationToken).ConfigureAwait(false);
            }
            catch (RpcException e) when (e.StatusCode == StatusCode.NotFound)
            {
                throw new ObjectNotFoundException(received == 0
                    ? $"directory {root} not found in {_connection.Address.Address}"
                    : $"a directory in the closure of {root} is missing in {_connection.Address.Address}: {e.Status.Detail}");
            }
            catch (RpcException e)
            {
                throw _connection.Map(e, $"get the closure of directory {root}", cancellationToken);
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

    /// <summary>The next directory of a Get stream; an invalid one is corrupt data, not a transport problem.</summary>
    private async ValueTask<bool> NextAsync(CastoreRpc.Stream<CastoreDirectory> call, B3Digest requested, CancellationToken cancellationToken)
    {
        try
        {
            return await call.MoveNextAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (DirectoryValidationException invalid)
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
        private CastoreRpc.Upload<CastoreDirectory>? _call;
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
            _call ??= Connection.Rpc.PutDirectory(GrpcStoreConnection.Unbounded(callToken.CanBeCanceled ? callToken : cancellationToken));
            try
            {
                await _call.WriteAsync(directory).ConfigureAwait(false);
            }
            catch (RpcException e)
            {
                throw MapPutError(e, cancellationToken);
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
            ByteString response;
            try
            {
                response = await _call!.CompleteAsync().WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (RpcException e)
            {
                throw MapPutError(e, cancellationToken);
            }

            if (!B3Digest.TryCreate(response.Span, out var stored) || stored != root)
            {
                throw new CorruptObjectException(
                    $"the store {Connection.Address.Address} answered a directory upload with root {(stored == default ? $"a {response.Length}-byte digest" : stored.ToString())}, but the root sent was {root}");
            }

            return root;
        }

        private Exception MapPutError(RpcException e, CancellationToken cancellationToken) =>
            e.StatusCode == StatusCode.InvalidArgument
                ? new InvalidClosureException($"the store {Connection.Address.Address} rejected the directories: {e.Status.Detail}")
                : Connection.Map(e, "upload directories", cancellationToken);

        public ValueTask DisposeAsync()
        {
            _closed = true;
            _call?.Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
