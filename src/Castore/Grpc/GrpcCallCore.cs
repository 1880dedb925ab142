using System.Buffers;
using System.Net;
using System.Net.Http.Headers;

namespace TvixFuseBuild.Castore.Grpc;

/// <summary>
/// One HTTP/2 exchange carrying a gRPC call: request headers, the response's frames, the final status (from the
/// trailers, or from the headers of a Trailers-Only response), deadline and cancellation, and the translation of
/// transport failures into gRPC statuses.
/// </summary>
internal sealed class GrpcCallCore : IDisposable
{
    private static readonly MediaTypeHeaderValue GrpcContentType = new(GrpcProtocol.ContentType);
    private static readonly Version Http2 = new(2, 0);

    private readonly GrpcChannel _channel;
    private readonly string _path;
    private readonly TimeSpan? _timeout;
    private readonly CancellationToken _userToken;
    private readonly CancellationTokenSource _cts;
    private HttpRequestMessage? _request;
    private Task<HttpResponseMessage>? _sendTask;
    private HttpResponseMessage? _response;
    private GrpcFrameReader? _reader;
    private RpcStatusException? _trailersOnlyStatus;
    private Exception? _failure;
    private bool _completed;
    private bool _disposed;

    public GrpcCallCore(GrpcChannel channel, string path, GrpcCallOptions options)
    {
        _channel = channel;
        _path = path;
        _timeout = options.Timeout;
        _userToken = options.CancellationToken;
        _cts = CancellationTokenSource.CreateLinkedTokenSource(options.CancellationToken);
        if (_timeout is { } timeout)
        {
            _cts.CancelAfter(timeout < TimeSpan.Zero ? TimeSpan.Zero : timeout);
        }
    }

    /// <summary>Cancelled by the caller's token, the deadline, or disposal.</summary>
    public CancellationToken CancellationToken => _cts.Token;

    public string Path => _path;

    public Task<HttpResponseMessage> SendTask => _sendTask!;

    public void Start(HttpContent content)
    {
        content.Headers.ContentType = GrpcContentType;
        var request = new HttpRequestMessage(HttpMethod.Post, _channel.GetUri(_path))
        {
            Version = Http2,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = content,
        };
        request.Headers.TryAddWithoutValidation("te", "trailers");
        request.Headers.TryAddWithoutValidation(GrpcProtocol.AcceptEncodingHeader, "identity");
        if (_timeout is { } timeout)
        {
            request.Headers.TryAddWithoutValidation(GrpcProtocol.TimeoutHeader, GrpcProtocol.FormatTimeout(timeout));
        }

        _request = request;
        _sendTask = _channel.Invoker.SendAsync(request, _cts.Token);
    }

    /// <summary>
    /// The next response message (borrowed until the next read), or null once the call ended with status OK.
    /// A non-OK status is thrown as <see cref="RpcStatusException"/>; the caller's cancellation as
    /// <see cref="OperationCanceledException"/>.
    /// </summary>
    public async ValueTask<ReadOnlyMemory<byte>?> ReadMessageAsync()
    {
        if (_failure is not null)
        {
            throw _failure;
        }

        if (_completed)
        {
            return null;
        }

        try
        {
            var reader = _reader ?? await ReadResponseHeadersAsync().ConfigureAwait(false);
            if (reader is null)
            {
                _completed = true;
                if (_trailersOnlyStatus is { } status)
                {
                    throw status;
                }

                return null;
            }

            var message = await reader.ReadMessageAsync(_cts.Token).ConfigureAwait(false);
            if (message is null)
            {
                _completed = true;
                var status = ReadStatus(_response!.TrailingHeaders) ?? ReadStatus(_response.Headers)
                    ?? new RpcStatusException(GrpcStatusCode.Internal, $"{_path}: the server ended the call without a grpc-status");
                if (status.Code != GrpcStatusCode.OK)
                {
                    throw status;
                }
            }

            return message;
        }
        catch (Exception e)
        {
            throw Fail(e);
        }
    }

    /// <summary>Records the call's failure (later reads throw it again) and returns it as a gRPC status.</summary>
    public Exception Fail(Exception e)
    {
        _failure ??= Translate(e);
        if (!_completed)
        {
            _cts.Cancel();
        }

        return _failure;
    }

    /// <summary>Waits for the response headers; returns the frame reader, or null for a Trailers-Only response.</summary>
    private async ValueTask<GrpcFrameReader?> ReadResponseHeadersAsync()
    {
        var response = _response = await _sendTask!.ConfigureAwait(false);
        var headerStatus = ReadStatus(response.Headers);
        if (response.StatusCode != HttpStatusCode.OK)
        {
            throw headerStatus is { Code: not GrpcStatusCode.OK }
                ? headerStatus
                : new RpcStatusException(
                    GrpcProtocol.FromHttpStatus(response.StatusCode),
                    $"HTTP status {(int)response.StatusCode} {response.ReasonPhrase} from {_channel.Endpoint}{_path}");
        }

        if (headerStatus is not null)
        {
            // Trailers-Only: the status arrived with the headers; no body follows.
            _trailersOnlyStatus = headerStatus.Code == GrpcStatusCode.OK ? null : headerStatus;
            return null;
        }

        string? contentType = response.Content.Headers.NonValidated.TryGetValues("content-type", out var values) ? values.ToString() : null;
        if (!GrpcProtocol.IsGrpcContentType(contentType))
        {
            throw new RpcStatusException(
                GrpcStatusCode.Unknown, $"{_channel.Endpoint}{_path} answered with content-type '{contentType}', not {GrpcProtocol.ContentType}");
        }

        if (response.Headers.NonValidated.TryGetValues(GrpcProtocol.EncodingHeader, out var encoding) && encoding.ToString() is not ("identity" or ""))
        {
            throw new RpcStatusException(
                GrpcStatusCode.Internal, $"the server chose grpc-encoding '{encoding}', but we asked for identity only");
        }

        var stream = await response.Content.ReadAsStreamAsync(_cts.Token).ConfigureAwait(false);
        return _reader = new GrpcFrameReader(stream, _channel.Options.MaxReceiveMessageSize);
    }

    public T Parse<T>(GrpcMarshaller<T> marshaller, ReadOnlyMemory<byte> message)
    {
        try
        {
            return marshaller.Parse(new ReadOnlySequence<byte>(message));
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw Fail(new RpcStatusException(GrpcStatusCode.Internal, $"{_path}: cannot parse the response message: {e.Message}", e));
        }
    }

    /// <summary>Reads grpc-status / grpc-message from headers or trailers; null when there is no grpc-status.</summary>
    private static RpcStatusException? ReadStatus(HttpHeaders headers)
    {
        if (!headers.NonValidated.TryGetValues(GrpcProtocol.StatusHeader, out var statusValues))
        {
            return null;
        }

        string message = headers.NonValidated.TryGetValues(GrpcProtocol.MessageHeader, out var messageValues)
            ? GrpcProtocol.DecodeMessage(messageValues.ToString())
            : string.Empty;
        return int.TryParse(statusValues.ToString(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int code)
            ? new RpcStatusException((GrpcStatusCode)code, message)
            : new RpcStatusException(GrpcStatusCode.Unknown, $"invalid grpc-status '{statusValues}': {message}");
    }

    /// <summary>Turns whatever a failed exchange threw into an <see cref="RpcStatusException"/> (or the caller's cancellation).</summary>
    public Exception Translate(Exception e)
    {
        if (e is RpcStatusException)
        {
            return e;
        }

        // Our own cancellation shows up as whatever the transport was doing when it was aborted.
        if (_cts.IsCancellationRequested && e is OperationCanceledException or IOException or HttpRequestException or ObjectDisposedException)
        {
            if (_userToken.IsCancellationRequested)
            {
                return e is OperationCanceledException oce && oce.CancellationToken == _userToken
                    ? e
                    : new OperationCanceledException($"{_path}: cancelled", e, _userToken);
            }

            if (!_disposed && _timeout is { } timeout)
            {
                return new RpcStatusException(
                    GrpcStatusCode.DeadlineExceeded,
                    $"deadline exceeded: {_channel.Endpoint}{_path} did not finish within {timeout.TotalSeconds:0.###} s",
                    e);
            }

            return new RpcStatusException(GrpcStatusCode.Cancelled, $"{_path}: the call was cancelled", e);
        }

        if (e is OperationCanceledException)
        {
            return new RpcStatusException(GrpcStatusCode.Cancelled, $"{_path}: the call was cancelled", e);
        }

        // A stream reset by the peer surfaces as HttpProtocolException, possibly wrapped.
        for (var inner = e; inner is not null; inner = inner.InnerException)
        {
            if (inner is HttpProtocolException protocol)
            {
                var code = GrpcProtocol.FromHttp2ErrorCode(protocol.ErrorCode);
                return new RpcStatusException(code, $"{_channel.Endpoint}{_path}: the stream was reset by the peer (HTTP/2 error {protocol.ErrorCode})", e);
            }
        }

        return e switch
        {
            HttpRequestException { HttpRequestError: HttpRequestError.ConnectionError or HttpRequestError.NameResolutionError or HttpRequestError.SecureConnectionError or HttpRequestError.ProxyTunnelError } hre =>
                new RpcStatusException(GrpcStatusCode.Unavailable, $"cannot connect to {_channel.Endpoint}: {Innermost(hre).Message}", e),
            HttpRequestException { HttpRequestError: HttpRequestError.VersionNegotiationError } =>
                new RpcStatusException(GrpcStatusCode.Unavailable, $"{_channel.Endpoint} does not speak HTTP/2", e),
            HttpRequestException hre =>
                new RpcStatusException(GrpcStatusCode.Unavailable, $"{_channel.Endpoint}: {Innermost(hre).Message}", e),
            IOException io =>
                new RpcStatusException(GrpcStatusCode.Unavailable, $"connection to {_channel.Endpoint} lost: {Innermost(io).Message}", e),
            ObjectDisposedException when _disposed =>
                new RpcStatusException(GrpcStatusCode.Cancelled, $"{_path}: the call was disposed", e),
            _ => new RpcStatusException(GrpcStatusCode.Unknown, $"{_path}: {e.Message}", e),
        };
    }

    private static Exception Innermost(Exception e)
    {
        while (e.InnerException is { } inner)
        {
            e = inner;
        }

        return e;
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (!_completed)
        {
            // Resets the HTTP/2 stream (RST_STREAM CANCEL) so the server stops working on it.
            _cts.Cancel();
        }

        _reader?.Dispose();
        _response?.Dispose();
        _request?.Dispose();
        if (_sendTask is { IsCompleted: false } pending)
        {
            // Observe a late failure so it is not reported as unobserved.
            _ = pending.ContinueWith(static t => t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }

        _cts.Dispose();
    }
}
