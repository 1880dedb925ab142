using System.Globalization;
using System.Text;
using System.Threading.Channels;
using Grpc.Core;

namespace TvixFuseBuild.Build.Tests.Grpc;

/// <summary>
/// A small service (grpc-dotnet, raw byte messages) for exercising the gRPC layer itself: chosen statuses, slow calls,
/// streams.
/// </summary>
internal sealed class GrpcTestService : GrpcTestServiceBase
{
    private static readonly Marshaller<byte[]> Raw = Marshallers.Create(static b => b, static b => b);

    public static readonly Method<byte[], byte[]> EchoMethod = new(MethodType.Unary, "interop.Test", "Echo", Raw, Raw);
    public static readonly Method<byte[], byte[]> FailMethod = new(MethodType.Unary, "interop.Test", "Fail", Raw, Raw);
    public static readonly Method<byte[], byte[]> ThrowMethod = new(MethodType.Unary, "interop.Test", "Throw", Raw, Raw);
    public static readonly Method<byte[], byte[]> SlowMethod = new(MethodType.Unary, "interop.Test", "Slow", Raw, Raw);
    public static readonly Method<byte[], byte[]> RepeatMethod = new(MethodType.ServerStreaming, "interop.Test", "Repeat", Raw, Raw);
    public static readonly Method<byte[], byte[]> ConcatMethod = new(MethodType.ClientStreaming, "interop.Test", "Concat", Raw, Raw);

    /// <summary>Completed when a Concat call has received its first message.</summary>
    public TaskCompletionSource ConcatStarted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>One entry per Slow call that ended: "deadline" or "cancelled".</summary>
    public Channel<string> SlowCallsEnded { get; } = Channel.CreateUnbounded<string>();

    public override Task<byte[]> Echo(byte[] request, ServerCallContext context) => Task.FromResult(request);

    /// <summary>Request "CODE:message".</summary>
    public override Task<byte[]> Fail(byte[] request, ServerCallContext context)
    {
        string text = Encoding.UTF8.GetString(request);
        int colon = text.IndexOf(':');
        throw new RpcException(new Status((StatusCode)int.Parse(text[..colon], CultureInfo.InvariantCulture), text[(colon + 1)..]));
    }

    public override Task<byte[]> Throw(byte[] request, ServerCallContext context) => throw new InvalidOperationException("boom");

    public override async Task<byte[]> Slow(byte[] request, ServerCallContext context)
    {
        try
        {
            await Task.Delay(Timeout.Infinite, context.CancellationToken);
            return request;
        }
        catch (OperationCanceledException)
        {
            SlowCallsEnded.Writer.TryWrite(context.Deadline <= DateTime.UtcNow ? "deadline" : "cancelled");
            throw;
        }
    }

    /// <summary>Request: 4 bytes count, then a payload; answers with the payload count times, then fails if the payload says "fail".</summary>
    public override async Task Repeat(byte[] request, IServerStreamWriter<byte[]> responses, ServerCallContext context)
    {
        int count = BitConverter.ToInt32(request, 0);
        byte[] payload = request[4..];
        for (int i = 0; i < count; i++)
        {
            await responses.WriteAsync(payload);
        }

        if (payload.AsSpan().SequenceEqual("fail"u8))
        {
            throw new RpcException(new Status(StatusCode.Aborted, "failed after the messages"));
        }
    }

    public override async Task<byte[]> Concat(IAsyncStreamReader<byte[]> requests, ServerCallContext context)
    {
        var all = new MemoryStream();
        while (await requests.MoveNext(context.CancellationToken))
        {
            ConcatStarted.TrySetResult();
            if (requests.Current.AsSpan().SequenceEqual("reject"u8))
            {
                throw new RpcException(new Status(StatusCode.InvalidArgument, "rejected early"));
            }

            all.Write(requests.Current);
        }

        return all.ToArray();
    }
}

/// <summary>
/// What Grpc.Tools would generate for the test service: grpc-dotnet binds with a null service to learn the methods,
/// then calls the overrides of these virtual methods on the registered instance.
/// </summary>
[BindServiceMethod(typeof(GrpcTestServiceBase), nameof(BindService))]
internal abstract class GrpcTestServiceBase
{
    public static void BindService(ServiceBinderBase binder, GrpcTestServiceBase? service)
    {
        binder.AddMethod(GrpcTestService.EchoMethod, service is null ? null : service.Echo);
        binder.AddMethod(GrpcTestService.FailMethod, service is null ? null : service.Fail);
        binder.AddMethod(GrpcTestService.ThrowMethod, service is null ? null : service.Throw);
        binder.AddMethod(GrpcTestService.SlowMethod, service is null ? null : service.Slow);
        binder.AddMethod(GrpcTestService.RepeatMethod, service is null ? null : service.Repeat);
        binder.AddMethod(GrpcTestService.ConcatMethod, service is null ? null : service.Concat);
    }

    public abstract Task<byte[]> Echo(byte[] request, ServerCallContext context);

    public abstract Task<byte[]> Fail(byte[] request, ServerCallContext context);

    public abstract Task<byte[]> Throw(byte[] request, ServerCallContext context);

    public abstract Task<byte[]> Slow(byte[] request, ServerCallContext context);

    public abstract Task Repeat(byte[] request, IServerStreamWriter<byte[]> responses, ServerCallContext context);

    public abstract Task<byte[]> Concat(IAsyncStreamReader<byte[]> requests, ServerCallContext context);
}
