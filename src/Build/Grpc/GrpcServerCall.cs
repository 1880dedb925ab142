using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Http;
using TvixFuseBuild.Castore.Grpc;

namespace TvixFuseBuild.Build.Grpc;

/// <summary>
/// The server half of one call on one HTTP/2 stream: request frames from the request body pipe, response frames to
/// the response body pipe, and the final status in the trailers (or alone in the headers: Trailers-Only).
/// </summary>
internal sealed class GrpcServerCall
{
    private readonly HttpContext _http;
    private readonly PipeReader _body;
    private readonly PipeWriter _output;
    private readonly int _maxMessageSize;
    private SequencePosition? _pendingAdvance;
    private bool _requestEnded;
    private bool _responseStarted;

    public GrpcServerCall(HttpContext http, int maxMessageSize, GrpcServerCallContext context)
    {
        _http = http;
        _body = http.Request.BodyReader;
        _output = http.Response.BodyWriter;
        _maxMessageSize = maxMessageSize;
        Context = context;
    }

    public GrpcServerCallContext Context { get; }

    private CancellationToken Token => Context.CancellationToken;

    /// <summary>
    /// Reads the next request message. The previous message's bytes are released first, so a borrowing marshaller's
    /// value is valid until the next read.
    /// </summary>
    public async ValueTask<(bool More, T? Message)> ReadRequestAsync<T>(GrpcMarshaller<T> marshaller)
    {
        ReleasePending();
        if (_requestEnded)
        {
            return (false, default);
        }

        while (true)
        {
            var result = await _body.ReadAsync(Token).ConfigureAwait(false);
            var buffer = result.Buffer;
            if (TryReadFrame(ref buffer, out var message))
            {
                // Hold the bytes until the next read: the message may borrow them.
                _pendingAdvance = buffer.Start;
                try
                {
                    return (true, marshaller.Parse(message));
                }
                catch (Exception e) when (e is not (OperationCanceledException or RpcStatusException))
                {
                    throw new RpcStatusException(GrpcStatusCode.InvalidArgument, $"invalid request message: {e.Message}", e);
                }
            }

            if (result.IsCompleted || result.IsCanceled)
            {
                _body.AdvanceTo(buffer.End);
                _requestEnded = true;
                if (!buffer.IsEmpty)
                {
                    throw new RpcStatusException(GrpcStatusCode.Internal, "the request ended in the middle of a message");
                }

                return (false, default);
            }

            _body.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    private bool TryReadFrame(ref ReadOnlySequence<byte> buffer, out ReadOnlySequence<byte> message)
    {
        message = default;
        if (buffer.Length < GrpcProtocol.FrameHeaderLength)
        {
            return false;
        }

        Span<byte> header = stackalloc byte[GrpcProtocol.FrameHeaderLength];
        buffer.Slice(0, GrpcProtocol.FrameHeaderLength).CopyTo(header);
        int length = GrpcProtocol.ParseFrameHeader(header, _maxMessageSize);
        if (buffer.Length - GrpcProtocol.FrameHeaderLength < length)
        {
            return false;
        }

        message = buffer.Slice(GrpcProtocol.FrameHeaderLength, length);
        buffer = buffer.Slice(message.End);
        return true;
    }

    public void ReleasePending()
    {
        if (_pendingAdvance is { } position)
        {
            _pendingAdvance = null;
            _body.AdvanceTo(position);
        }
    }

    /// <summary>Reads the one request message of a unary or server-streaming call.</summary>
    public async ValueTask<T> ReadSingleRequestAsync<T>(GrpcMarshaller<T> marshaller)
    {
        var (more, message) = await ReadRequestAsync(marshaller).ConfigureAwait(false);
        if (!more)
        {
            throw new RpcStatusException(GrpcStatusCode.Internal, "no request message was sent");
        }

        if ((await ReadRequestAsync(marshaller).ConfigureAwait(false)).More)
        {
            throw new RpcStatusException(GrpcStatusCode.Internal, "more than one request message was sent to a method that takes one");
        }

        return message!;
    }

    public async ValueTask WriteResponseAsync<T>(GrpcMarshaller<T> marshaller, T message)
    {
        Token.ThrowIfCancellationRequested();
        if (!_responseStarted)
        {
            _responseStarted = true;
            _http.Response.StatusCode = StatusCodes.Status200OK;
            _http.Response.ContentType = GrpcProtocol.ContentType;
        }

        marshaller.WriteFrame(message, _output);
        var flush = await _output.FlushAsync(Token).ConfigureAwait(false);
        if (flush.IsCanceled || flush.IsCompleted)
        {
            throw new OperationCanceledException("the client went away", Token);
        }
    }

    /// <summary>Sets the final status: in the trailers after messages, alone in the headers (Trailers-Only) before any.</summary>
    public void SetStatus(GrpcStatusCode code, string message)
    {
        var response = _http.Response;
        string status = ((int)code).ToString(System.Globalization.CultureInfo.InvariantCulture);
        string? encoded = string.IsNullOrEmpty(message) ? null : GrpcProtocol.EncodeMessage(message);
        if (!_responseStarted && !response.HasStarted)
        {
            response.StatusCode = StatusCodes.Status200OK;
            response.ContentType = GrpcProtocol.ContentType;
            response.Headers[GrpcProtocol.StatusHeader] = status;
            if (encoded is not null)
            {
                response.Headers[GrpcProtocol.MessageHeader] = encoded;
            }

            return;
        }

        response.AppendTrailer(GrpcProtocol.StatusHeader, status);
        if (encoded is not null)
        {
            response.AppendTrailer(GrpcProtocol.MessageHeader, encoded);
        }
    }
}
