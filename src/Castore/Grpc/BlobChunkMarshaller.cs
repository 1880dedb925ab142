using System.Buffers;
using Google.Protobuf;
using Grpc.Core;

namespace TvixFuseBuild.Castore.Grpc;

/// <summary>One Read response's <c>data</c>, in a buffer rented from <see cref="ArrayPool{T}.Shared"/> until disposed.</summary>
internal sealed class RentedBlobChunk : IDisposable
{
    private byte[]? _buffer;
    private readonly int _length;

    internal RentedBlobChunk(byte[] buffer, int length)
    {
        _buffer = buffer;
        _length = length;
    }

    /// <summary>The bytes; valid until <see cref="Dispose"/>.</summary>
    public ReadOnlyMemory<byte> Memory =>
        _buffer is { } buffer ? buffer.AsMemory(0, _length) : throw new ObjectDisposedException(nameof(RentedBlobChunk));

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _buffer, null) is { Length: > 0 } buffer)
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}

/// <summary>
/// The blob Read call with a response marshaller that parses <c>BlobChunk</c> (field 1, bytes <c>data</c>) straight from
/// the received payload into a rented buffer, where the generated parser copies every message into a new
/// <see cref="ByteString"/> (a large-object-heap allocation per 256 KiB message).
/// </summary>
internal static class BlobChunkMarshaller
{
    private static readonly Marshaller<RentedBlobChunk> Response = new(
        static (_, _) => throw new NotSupportedException("the client only receives BlobChunk through this marshaller"),
        static context => Parse(context.PayloadAsReadOnlySequence()));

    public static Method<TRequest, RentedBlobChunk> ReadMethod<TRequest>(string serviceFullName, MessageParser<TRequest> parser)
        where TRequest : class, IMessage<TRequest> =>
        new(MethodType.ServerStreaming, serviceFullName, "Read",
            Marshallers.Create(static (TRequest request) => request.ToByteArray(), parser.ParseFrom), Response);

    /// <summary>
    /// Parses a serialized <c>BlobChunk</c>: the last <c>data</c> wins, as in protobuf; unknown fields (any wire type,
    /// groups included) are skipped. Malformed input throws <see cref="RpcException"/> (INTERNAL) saying what is wrong.
    /// </summary>
    internal static RentedBlobChunk Parse(ReadOnlySequence<byte> payload)
    {
        var reader = new SequenceReader<byte>(payload);
        byte[] data = [];
        int length = 0;
        try
        {
            while (!reader.End)
            {
                var (field, wireType) = ReadTag(ref reader);
                if (field == 1 && wireType == WireFormat.WireType.LengthDelimited)
                {
                    int n = ReadLength(ref reader);
                    Release(data);
                    data = [];
                    data = n == 0 ? [] : ArrayPool<byte>.Shared.Rent(n);
                    reader.TryCopyTo(data.AsSpan(0, n));
                    reader.Advance(n);
                    length = n;
                }
                else
                {
                    Skip(ref reader, field, wireType, depth: 0);
                }
            }
        }
        catch
        {
            Release(data);
            throw;
        }

        return new RentedBlobChunk(data, length);
    }

    private static void Release(byte[] data)
    {
        if (data.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(data);
        }
    }

    private static (uint Field, WireFormat.WireType WireType) ReadTag(ref SequenceReader<byte> reader)
    {
        ulong tag = ReadVarint(ref reader);
        ulong field = tag >> 3;
        return field is 0 or > 0x1FFF_FFFF
            ? throw Malformed($"invalid field number {field}")
            : ((uint)field, (WireFormat.WireType)(tag & 7));
    }

    private static int ReadLength(ref SequenceReader<byte> reader)
    {
        ulong n = ReadVarint(ref reader);
        return n <= (ulong)reader.Remaining ? (int)n : throw Malformed($"a field of {n} bytes with only {reader.Remaining} left");
    }

    private static ulong ReadVarint(ref SequenceReader<byte> reader)
    {
        ulong value = 0;
        for (int shift = 0; shift < 70; shift += 7)
        {
            if (!reader.TryRead(out byte b))
            {
                throw Malformed("truncated varint");
            }

            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80)
            {
                return value;
            }
        }

        throw Malformed("varint longer than 10 bytes");
    }

    private static void Skip(ref SequenceReader<byte> reader, uint field, WireFormat.WireType wireType, int depth)
    {
        switch (wireType)
        {
            case WireFormat.WireType.Varint:
                ReadVarint(ref reader);
                break;
            case WireFormat.WireType.Fixed64:
                Advance(ref reader, 8);
                break;
            case WireFormat.WireType.LengthDelimited:
                reader.Advance(ReadLength(ref reader));
                break;
            case WireFormat.WireType.Fixed32:
                Advance(ref reader, 4);
                break;
            case WireFormat.WireType.StartGroup:
                if (depth >= 100)
                {
                    throw Malformed("groups nested more than 100 deep");
                }

                while (true)
                {
                    if (reader.End)
                    {
                        throw Malformed($"group {field} not closed");
                    }

                    var (inner, innerType) = ReadTag(ref reader);
                    if (innerType == WireFormat.WireType.EndGroup)
                    {
                        if (inner != field)
                        {
                            throw Malformed($"group {field} closed as {inner}");
                        }

                        break;
                    }

                    Skip(ref reader, inner, innerType, depth + 1);
                }

                break;
            default:
                throw Malformed(wireType == WireFormat.WireType.EndGroup
                    ? $"end of group {field} with no group open"
                    : $"invalid wire type {(int)wireType} for field {field}");
        }
    }

    private static void Advance(ref SequenceReader<byte> reader, int n)
    {
        if (reader.Remaining < n)
        {
            throw Malformed($"a fixed field of {n} bytes with only {reader.Remaining} left");
        }

        reader.Advance(n);
    }

    private static RpcException Malformed(string what) =>
        new(new Status(StatusCode.Internal, $"malformed BlobChunk from the store: {what}"));
}
