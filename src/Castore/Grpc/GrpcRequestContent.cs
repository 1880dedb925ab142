using System.Net;

namespace TvixFuseBuild.Castore.Grpc;

/// <summary>A request body holding one framed message in a pooled buffer (unary and server-streaming calls).</summary>
internal sealed class GrpcRequestContent : HttpContent
{
    private readonly PooledBufferWriter _frame;

    // The buffer goes back to the pool only when both the send has finished with it and the content was disposed:
    // a cancelled call is disposed while the transport may still be copying from it.
    private int _holders = 1;

    private GrpcRequestContent(PooledBufferWriter frame) => _frame = frame;

    public static GrpcRequestContent ForSingleMessage<T>(GrpcMarshaller<T> marshaller, T message)
    {
        var frame = new PooledBufferWriter();
        try
        {
            marshaller.WriteFrame(message, frame);
        }
        catch
        {
            frame.Dispose();
            throw;
        }

        return new GrpcRequestContent(frame);
    }

    protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
        SerializeToStreamAsync(stream, context, CancellationToken.None);

    protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
    {
        if (Interlocked.Increment(ref _holders) == 1)
        {
            // Already disposed and released.
            Interlocked.Decrement(ref _holders);
            throw new ObjectDisposedException(nameof(GrpcRequestContent));
        }

        try
        {
            await stream.WriteAsync(_frame.WrittenMemory, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            Release();
        }
    }

    protected override bool TryComputeLength(out long length)
    {
        length = _frame.WrittenCount;
        return true;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            Release();
        }

        base.Dispose(disposing);
    }

    private void Release()
    {
        if (Interlocked.Decrement(ref _holders) == 0)
        {
            _frame.Dispose();
        }
    }
}

/// <summary>
/// A request body written message by message while the call runs (client-streaming calls). HTTP/2 lets the response
/// begin before the request ends, so the writer and the exchange proceed side by side.
/// </summary>
internal sealed class GrpcStreamingRequestContent : HttpContent
{
    private readonly TaskCompletionSource<Stream> _stream = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _end = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes when the transport is ready for the body.</summary>
    public Task<Stream> StreamTask => _stream.Task;

    /// <summary>Ends the request body (END_STREAM).</summary>
    public void Complete() => _end.TrySetResult();

    protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
        SerializeToStreamAsync(stream, context, CancellationToken.None);

    protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
    {
        // Messages already written to an earlier attempt cannot be replayed.
        if (!_stream.TrySetResult(stream))
        {
            throw new InvalidOperationException("a streaming request cannot be sent twice");
        }

        using var registration = cancellationToken.Register(static state => ((TaskCompletionSource)state!).TrySetCanceled(), _end);
        await _end.Task.ConfigureAwait(false);
    }

    protected override bool TryComputeLength(out long length)
    {
        length = 0;
        return false;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _end.TrySetCanceled();
            _stream.TrySetCanceled();
        }

        base.Dispose(disposing);
    }
}
