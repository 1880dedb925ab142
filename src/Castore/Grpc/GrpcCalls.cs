using System.Runtime.CompilerServices;

namespace TvixFuseBuild.Castore.Grpc;

/// <summary>
/// A running server-streaming call. Read with <see cref="MoveNextAsync"/> / <see cref="Current"/> or
/// <see cref="ReadAllAsync"/>; a non-OK final status is thrown as <see cref="RpcStatusException"/> after the last
/// message. Disposing before the end cancels the call.
/// </summary>
public sealed class GrpcServerStreamingCall<TResponse> : IDisposable
{
    private readonly GrpcCallCore _core;
    private readonly GrpcMarshaller<TResponse> _marshaller;
    private TResponse? _current;

    internal GrpcServerStreamingCall(GrpcCallCore core, GrpcMarshaller<TResponse> marshaller)
    {
        _core = core;
        _marshaller = marshaller;
    }

    /// <summary>The message read last. With a borrowing marshaller it is valid until the next <see cref="MoveNextAsync"/>.</summary>
    public TResponse Current => _current!;

    public async ValueTask<bool> MoveNextAsync()
    {
        var message = await _core.ReadMessageAsync().ConfigureAwait(false);
        if (message is null)
        {
            _current = default;
            return false;
        }

        _current = _core.Parse(_marshaller, message.Value);
        return true;
    }

    /// <summary>The messages; <paramref name="cancellationToken"/> cancels the call (as the call's own token would).</summary>
    public async IAsyncEnumerable<TResponse> ReadAllAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        using var registration = cancellationToken.CanBeCanceled ? cancellationToken.Register(Dispose) : default;
        while (true)
        {
            bool more;
            try
            {
                more = await MoveNextAsync().ConfigureAwait(false);
            }
            catch (RpcStatusException e) when (cancellationToken.IsCancellationRequested && e.Code == GrpcStatusCode.Cancelled)
            {
                throw new OperationCanceledException(e.Message, e, cancellationToken);
            }

            if (!more)
            {
                yield break;
            }

            yield return Current;
        }
    }

    public void Dispose() => _core.Dispose();
}

/// <summary>
/// A running client-streaming call: <see cref="WriteAsync"/> each request, then <see cref="CompleteAsync"/> to end the
/// request stream and get the response. If the server ends the call early (an error status), the next write throws
/// that status. Disposing without completing cancels the call.
/// </summary>
public sealed class GrpcClientStreamingCall<TRequest, TResponse> : IDisposable
{
    private readonly GrpcCallCore _core;
    private readonly GrpcStreamingRequestContent _content;
    private readonly GrpcMethod<TRequest, TResponse> _method;
    private static readonly TimeSpan ExplainTimeout = TimeSpan.FromSeconds(5);

    private readonly PooledBufferWriter _frame = new();
    private bool _completed;

    internal GrpcClientStreamingCall(GrpcCallCore core, GrpcStreamingRequestContent content, GrpcMethod<TRequest, TResponse> method)
    {
        _core = core;
        _content = content;
        _method = method;
    }

    public async ValueTask WriteAsync(TRequest message)
    {
        if (_completed)
        {
            ThrowHelper.ThrowInvalidOperation("the request stream was already completed");
        }

        var stream = await GetStreamAsync().ConfigureAwait(false);
        _frame.Clear();
        _method.RequestMarshaller.WriteFrame(message, _frame);
        try
        {
            await stream.WriteAsync(_frame.WrittenMemory, _core.CancellationToken).ConfigureAwait(false);

            // HTTP/2 request streams buffer until flushed: without this a message could wait for the next one.
            await stream.FlushAsync(_core.CancellationToken).ConfigureAwait(false);
        }
        catch (Exception e)
        {
            throw await ExplainWriteFailureAsync(e).ConfigureAwait(false);
        }
    }

    /// <summary>Ends the request stream and returns the server's response.</summary>
    public async Task<TResponse> CompleteAsync()
    {
        if (_completed)
        {
            ThrowHelper.ThrowInvalidOperation("the request stream was already completed");
        }

        _completed = true;
        _content.Complete();
        var message = await _core.ReadMessageAsync().ConfigureAwait(false)
            ?? throw _core.Fail(new RpcStatusException(GrpcStatusCode.Internal, $"{_method.Path}: the server sent no response message"));
        var response = _core.Parse(_method.ResponseMarshaller, message);
        if (await _core.ReadMessageAsync().ConfigureAwait(false) is not null)
        {
            throw _core.Fail(new RpcStatusException(GrpcStatusCode.Internal, $"{_method.Path}: the server sent more than one response message"));
        }

        return response;
    }

    private async ValueTask<Stream> GetStreamAsync()
    {
        var streamTask = _content.StreamTask;
        if (!streamTask.IsCompleted)
        {
            // The exchange may fail (or the server answer) before the transport ever asks for the body.
            await Task.WhenAny(streamTask, _core.SendTask).ConfigureAwait(false);
            if (!streamTask.IsCompleted)
            {
                throw await ExplainWriteFailureAsync(null).ConfigureAwait(false);
            }
        }

        return await streamTask.ConfigureAwait(false);
    }

    /// <summary>
    /// A write failed or could not start: when the server already answered, its status is the real reason
    /// (e.g. INVALID_ARGUMENT for the first bad message); otherwise the transport failure.
    /// </summary>
    private async ValueTask<Exception> ExplainWriteFailureAsync(Exception? writeError)
    {
        // The transport may report the broken request stream before the response that explains it has arrived.
        try
        {
            await _core.SendTask.WaitAsync(ExplainTimeout, _core.CancellationToken).ConfigureAwait(false);
        }
        catch
        {
            // Failed or still pending: the write failure (or the send's own failure) is all there is to report.
        }

        if (_core.SendTask.IsCompletedSuccessfully)
        {
            try
            {
                while (await _core.ReadMessageAsync().ConfigureAwait(false) is not null)
                {
                }
            }
            catch (Exception status)
            {
                return status;
            }
        }
        else if (_core.SendTask.IsFaulted)
        {
            return _core.Fail(_core.SendTask.Exception.InnerException!);
        }

        return _core.Fail(writeError ?? new RpcStatusException(GrpcStatusCode.Internal, $"{_core.Path}: the request stream closed before any message was sent"));
    }

    public void Dispose()
    {
        _core.Dispose();
        _frame.Dispose();
    }
}
