using System.Buffers;
using Google.Protobuf;
using Grpc.Core;
using TvixFuseBuild.Castore.Hashing;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Castore.Grpc;

public sealed partial class GrpcBlobService
{
    /// <summary>
    /// Uploads a blob with one streaming Put, hashing what it sends; small writes are coalesced into messages of up to
    /// <see cref="CoalesceSize"/> bytes. The server's digest must match ours.
    /// </summary>
    private sealed class Writer(GrpcBlobService owner) : IBlobWriter
    {
        private const int CoalesceSize = 256 << 10;

        private readonly Blake3Hasher _hasher = new();
        private CastoreRpc.Upload<ByteString>? _call;
        private byte[]? _pending;
        private int _pendingLength;
        private bool _completed;

        private GrpcStoreConnection Connection => owner._connection;

        public async ValueTask WriteAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
        {
            if (_completed)
            {
                ThrowHelper.ThrowInvalidOperation("the blob was already completed");
            }

            _hasher.Update(data.Span);
            try
            {
                while (!data.IsEmpty)
                {
                    if (_pendingLength == 0 && data.Length >= CoalesceSize)
                    {
                        int n = Math.Min(data.Length, PutMessageSize);
                        await SendAsync(data[..n], cancellationToken).ConfigureAwait(false);
                        data = data[n..];
                        continue;
                    }

                    _pending ??= ArrayPool<byte>.Shared.Rent(CoalesceSize);
                    int take = Math.Min(data.Length, CoalesceSize - _pendingLength);
                    data.Span[..take].CopyTo(_pending.AsSpan(_pendingLength));
                    _pendingLength += take;
                    data = data[take..];
                    if (_pendingLength == CoalesceSize)
                    {
                        await FlushAsync(cancellationToken).ConfigureAwait(false);
                    }
                }
            }
            catch (RpcException e)
            {
                throw Connection.Map(e, "upload a blob", cancellationToken);
            }
        }

        public async ValueTask<B3Digest> CompleteAsync(CancellationToken cancellationToken = default)
        {
            if (_completed)
            {
                ThrowHelper.ThrowInvalidOperation("the blob was already completed");
            }

            _completed = true;
            var digest = _hasher.Finalize();
            ByteString response;
            try
            {
                await FlushAsync(cancellationToken).ConfigureAwait(false);
                _call ??= Start(cancellationToken);
                response = await _call.CompleteAsync().ConfigureAwait(false);
            }
            catch (RpcException e)
            {
                throw Connection.Map(e, $"upload blob {digest}", cancellationToken);
            }

            if (!B3Digest.TryCreate(response.Span, out var stored) || stored != digest)
            {
                throw new CorruptObjectException(
                    $"the store {Connection.Address.Address} stored an upload as {(stored == default ? $"a {response.Length}-byte digest" : stored.ToString())}, but the bytes sent hash to {digest}");
            }

            return digest;
        }

        private async ValueTask FlushAsync(CancellationToken cancellationToken)
        {
            if (_pendingLength > 0)
            {
                await SendAsync(_pending.AsMemory(0, _pendingLength), cancellationToken).ConfigureAwait(false);
                _pendingLength = 0;
            }
        }

        // The message wraps the bytes without copying: the write serializes them before it completes, and neither the
        // caller's buffer nor _pending is touched until then.
        private async ValueTask SendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
        {
            _call ??= Start(cancellationToken);
            await _call.WriteAsync(UnsafeByteOperations.UnsafeWrap(data)).ConfigureAwait(false);
        }

        // An upload has no overall deadline (it may be large); the token of the first write or the completion cancels it.
        private CastoreRpc.Upload<ByteString> Start(CancellationToken cancellationToken) =>
            Connection.Rpc.Put(GrpcStoreConnection.Unbounded(cancellationToken));

        public ValueTask DisposeAsync()
        {
            _completed = true;
            _call?.Dispose();
            _call = null;
            if (_pending is { } pending)
            {
                _pending = null;
                ArrayPool<byte>.Shared.Return(pending);
            }

            return ValueTask.CompletedTask;
        }
    }
}
