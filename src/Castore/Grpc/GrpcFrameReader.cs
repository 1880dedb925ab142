using System.Buffers;

namespace TvixFuseBuild.Castore.Grpc;

/// <summary>
/// Reads length-prefixed gRPC messages from a response stream into one pooled buffer. A message is borrowed: valid
/// until the next read.
/// </summary>
internal sealed class GrpcFrameReader : IDisposable
{
    private const int InitialBufferSize = 16 << 10;

    private readonly Stream _stream;
    private readonly int _maxMessageSize;
    private byte[] _buffer;
    private int _start;
    private int _end;

    public GrpcFrameReader(Stream stream, int maxMessageSize)
    {
        _stream = stream;
        _maxMessageSize = maxMessageSize;
        _buffer = ArrayPool<byte>.Shared.Rent(InitialBufferSize);
    }

    /// <summary>The next message, or null at a clean end of the stream (on a frame boundary).</summary>
    public async ValueTask<ReadOnlyMemory<byte>?> ReadMessageAsync(CancellationToken cancellationToken)
    {
        if (!await FillAsync(GrpcProtocol.FrameHeaderLength, cancellationToken).ConfigureAwait(false))
        {
            if (_end == _start)
            {
                return null;
            }

            throw Truncated();
        }

        int length = GrpcProtocol.ParseFrameHeader(_buffer.AsSpan(_start, GrpcProtocol.FrameHeaderLength), _maxMessageSize);
        _start += GrpcProtocol.FrameHeaderLength;
        if (!await FillAsync(length, cancellationToken).ConfigureAwait(false))
        {
            throw Truncated();
        }

        var message = _buffer.AsMemory(_start, length);
        _start += length;
        return message;
    }

    /// <summary>Makes at least <paramref name="count"/> unread bytes available; false when the stream ends first.</summary>
    private async ValueTask<bool> FillAsync(int count, CancellationToken cancellationToken)
    {
        if (_end - _start >= count)
        {
            return true;
        }

        if (_start == _end)
        {
            _start = _end = 0;
        }

        if (_buffer.Length - _start < count)
        {
            int pending = _end - _start;
            if (_buffer.Length >= count)
            {
                _buffer.AsSpan(_start, pending).CopyTo(_buffer);
            }
            else
            {
                byte[] larger = ArrayPool<byte>.Shared.Rent(Math.Max(count, (int)Math.Min(Array.MaxLength, 2L * _buffer.Length)));
                _buffer.AsSpan(_start, pending).CopyTo(larger);
                ArrayPool<byte>.Shared.Return(_buffer);
                _buffer = larger;
            }

            _start = 0;
            _end = pending;
        }

        while (_end - _start < count)
        {
            int n = await _stream.ReadAsync(_buffer.AsMemory(_end), cancellationToken).ConfigureAwait(false);
            if (n == 0)
            {
                return false;
            }

            _end += n;
        }

        return true;
    }

    private static RpcStatusException Truncated() =>
        new(GrpcStatusCode.Internal, "the stream ended in the middle of a message");

    public void Dispose()
    {
        byte[] buffer = _buffer;
        _buffer = [];
        if (buffer.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
