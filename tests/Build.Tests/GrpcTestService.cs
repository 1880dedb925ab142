using System.Globalization;
using System.Text;
using System.Threading.Channels;
using TvixFuseBuild.Build.Grpc;
using TvixFuseBuild.Castore.Grpc;

namespace TvixFuseBuild.Build.Tests.Grpc;

/// <summary>A small service for exercising the gRPC layer itself: raw byte messages, chosen statuses, slow calls.</summary>
internal sealed class GrpcTestService : IGrpcService
{
    public static readonly GrpcMethod<byte[], byte[]> Echo = Unary("Echo");
    public static readonly GrpcMethod<byte[], byte[]> Fail = Unary("Fail");
    public static readonly GrpcMethod<byte[], byte[]> Throw = Unary("Throw");
    public static readonly GrpcMethod<byte[], byte[]> Slow = Unary("Slow");
    public static readonly GrpcMethod<byte[], byte[]> Repeat =
        new(GrpcMethodType.ServerStreaming, "interop.Test", "Repeat", RawBytesMarshaller.Instance, RawBytesMarshaller.Instance);

    public static readonly GrpcMethod<byte[], byte[]> Concat =
        new(GrpcMethodType.ClientStreaming, "interop.Test", "Concat", RawBytesMarshaller.Instance, RawBytesMarshaller.Instance);

    /// <summary>Completed when a Concat call has received its first message.</summary>
    public TaskCompletionSource ConcatStarted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>One entry per Slow call that ended: "deadline" or "cancelled".</summary>
    public Channel<string> SlowCallsEnded { get; } = Channel.CreateUnbounded<string>();

    public void Bind(GrpcServiceBinder binder) => binder
        .AddUnary(Echo, static (request, _) => ValueTask.FromResult(request))
        .AddUnary(Fail, static (request, _) =>
        {
            // "CODE:message"
            string text = Encoding.UTF8.GetString(request);
            int colon = text.IndexOf(':');
            throw new RpcStatusException((GrpcStatusCode)int.Parse(text[..colon], CultureInfo.InvariantCulture), text[(colon + 1)..]);
        })
        .AddUnary<byte[], byte[]>(Throw, static (_, _) => throw new InvalidOperationException("boom"))
        .AddUnary(Slow, SlowAsync)
        .AddServerStreaming(Repeat, RepeatAsync)
        .AddClientStreaming(Concat, ConcatAsync);

    private async ValueTask<byte[]> SlowAsync(byte[] request, GrpcServerCallContext context)
    {
        try
        {
            await Task.Delay(Timeout.Infinite, context.CancellationToken);
            return request;
        }
        catch (OperationCanceledException)
        {
            SlowCallsEnded.Writer.TryWrite(context.DeadlineExceeded ? "deadline" : "cancelled");
            throw;
        }
    }

    /// <summary>Request: 4 bytes count, then a payload; answers with the payload count times, then fails if the payload says "fail".</summary>
    private static async Task RepeatAsync(byte[] request, GrpcServerStreamWriter<byte[]> responses, GrpcServerCallContext context)
    {
        int count = BitConverter.ToInt32(request, 0);
        byte[] payload = request[4..];
        for (int i = 0; i < count; i++)
        {
            await responses.WriteAsync(payload);
        }

        if (payload.AsSpan().SequenceEqual("fail"u8))
        {
            throw new RpcStatusException(GrpcStatusCode.Aborted, "failed after the messages");
        }
    }

    private async ValueTask<byte[]> ConcatAsync(GrpcServerStreamReader<byte[]> requests, GrpcServerCallContext context)
    {
        var all = new MemoryStream();
        while (await requests.MoveNextAsync())
        {
            ConcatStarted.TrySetResult();
            if (requests.Current.AsSpan().SequenceEqual("reject"u8))
            {
                throw new RpcStatusException(GrpcStatusCode.InvalidArgument, "rejected early");
            }

            all.Write(requests.Current);
        }

        return all.ToArray();
    }

    private static GrpcMethod<byte[], byte[]> Unary(string name) =>
        new(GrpcMethodType.Unary, "interop.Test", name, RawBytesMarshaller.Instance, RawBytesMarshaller.Instance);
}

/// <summary>Messages as raw bytes (for methods without generated types), for the old server's test service.</summary>
internal sealed class RawBytesMarshaller : GrpcMarshaller<byte[]>
{
    public static RawBytesMarshaller Instance { get; } = new();

    public override int GetSize(byte[] value) => value.Length;

    public override void Write(byte[] value, System.Buffers.IBufferWriter<byte> output) => System.Buffers.BuffersExtensions.Write(output, value);

    public override byte[] Parse(in System.Buffers.ReadOnlySequence<byte> data) => System.Buffers.BuffersExtensions.ToArray(data);
}
