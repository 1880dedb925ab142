using System.Buffers;
using Google.Protobuf;

namespace TvixFuseBuild.Build.Grpc;

/// <summary>Turns a message into bytes and back; one per message type, shared by client and server.</summary>
public abstract class GrpcMarshaller<T>
{
    /// <summary>The number of bytes <see cref="Write"/> produces for <paramref name="value"/>.</summary>
    public abstract int GetSize(T value);

    /// <summary>Writes exactly <see cref="GetSize"/> bytes.</summary>
    public abstract void Write(T value, IBufferWriter<byte> output);

    /// <summary>
    /// Parses one message. A marshaller may return a value that borrows <paramref name="data"/> (valid until the next
    /// message is read); such marshallers are used for streamed messages only.
    /// </summary>
    public abstract T Parse(in ReadOnlySequence<byte> data);
}

public static class GrpcMarshaller
{
    /// <summary>A marshaller for a generated protobuf message type.</summary>
    public static GrpcMarshaller<T> ForProtobuf<T>(MessageParser<T> parser)
        where T : IMessage<T> => new ProtobufMarshaller<T>(parser);

    /// <summary>Appends one length-prefixed message frame.</summary>
    public static void WriteFrame<T>(this GrpcMarshaller<T> marshaller, T value, IBufferWriter<byte> output)
    {
        int size = marshaller.GetSize(value);
        GrpcProtocol.WriteFrameHeader(output.GetSpan(GrpcProtocol.FrameHeaderLength), size);
        output.Advance(GrpcProtocol.FrameHeaderLength);
        marshaller.Write(value, output);
    }

    private sealed class ProtobufMarshaller<T>(MessageParser<T> parser) : GrpcMarshaller<T>
        where T : IMessage<T>
    {
        public override int GetSize(T value) => value.CalculateSize();

        public override void Write(T value, IBufferWriter<byte> output) => value.WriteTo(output);

        public override T Parse(in ReadOnlySequence<byte> data) => parser.ParseFrom(data);
    }
}
