using System.Buffers;
using Google.Protobuf;
using Grpc.Core;
using TvixFuseBuild.Castore.Grpc;
using TvixV1 = Tvix.Castore.V1;

namespace TvixFuseBuild.Castore.Tests;

public sealed class GrpcBlobChunkParserTests
{
    private static byte[] Bytes(int n, int seed = 1)
    {
        var bytes = new byte[n];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    private static byte[] Encode(Action<CodedOutputStream> write)
    {
        using var memory = new MemoryStream();
        var output = new CodedOutputStream(memory);
        write(output);
        output.Flush();
        return memory.ToArray();
    }

    private static byte[] Parse(ReadOnlySequence<byte> payload)
    {
        using var chunk = BlobChunkMarshaller.Parse(payload);
        return chunk.Memory.ToArray();
    }

    private static byte[] Parse(byte[] payload) => Parse(new ReadOnlySequence<byte>(payload));

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(127)]
    [InlineData(128)]
    [InlineData(256 << 10)]
    public void ParsesWhatTheGeneratedSerializerWrites(int size)
    {
        var data = Bytes(size);
        Assert.Equal(data, Parse(new TvixV1.BlobChunk { Data = ByteString.CopyFrom(data) }.ToByteArray()));
    }

    [Fact]
    public void EmptyPayloadAndEmptyDataAreEmpty()
    {
        Assert.Empty(Parse([]));
        Assert.Empty(Parse(Encode(o => { o.WriteTag(1, WireFormat.WireType.LengthDelimited); o.WriteLength(0); })));
    }

    [Fact]
    public void SkipsUnknownFieldsOfEveryWireTypeInAnyOrder()
    {
        var data = Bytes(1000);
        var payload = Encode(o =>
        {
            o.WriteTag(2, WireFormat.WireType.Varint);
            o.WriteUInt64(ulong.MaxValue); // 10 bytes
            o.WriteTag(3, WireFormat.WireType.Fixed64);
            o.WriteFixed64(42);
            o.WriteTag(4, WireFormat.WireType.LengthDelimited);
            o.WriteBytes(ByteString.CopyFrom(Bytes(300, 2)));
            o.WriteTag(5, WireFormat.WireType.Fixed32);
            o.WriteFixed32(7);
            o.WriteTag(1, WireFormat.WireType.LengthDelimited);
            o.WriteBytes(ByteString.CopyFrom(data));
            o.WriteTag(6, WireFormat.WireType.StartGroup);
            o.WriteTag(7, WireFormat.WireType.Varint);
            o.WriteInt32(1);
            o.WriteTag(8, WireFormat.WireType.StartGroup);
            o.WriteTag(8, WireFormat.WireType.EndGroup);
            o.WriteTag(6, WireFormat.WireType.EndGroup);
            o.WriteTag(1, WireFormat.WireType.Varint); // field 1 with another wire type is an unknown field, as in protobuf
            o.WriteInt32(5);
            o.WriteTag(536_870_911, WireFormat.WireType.LengthDelimited);
            o.WriteLength(0);
        });

        Assert.Equal(data, Parse(payload));
        // The generated parser agrees.
        Assert.Equal(data, TvixV1.BlobChunk.Parser.ParseFrom(payload).Data.ToByteArray());
    }

    [Fact]
    public void TheLastDataWins()
    {
        var first = Bytes(5000, 1);
        var last = Bytes(70, 2);
        var payload = Encode(o =>
        {
            o.WriteTag(1, WireFormat.WireType.LengthDelimited);
            o.WriteBytes(ByteString.CopyFrom(first));
            o.WriteTag(9, WireFormat.WireType.Fixed32);
            o.WriteFixed32(1);
            o.WriteTag(1, WireFormat.WireType.LengthDelimited);
            o.WriteBytes(ByteString.CopyFrom(last));
        });

        Assert.Equal(last, Parse(payload));
        Assert.Equal(last, TvixV1.BlobChunk.Parser.ParseFrom(payload).Data.ToByteArray());
    }

    [Fact]
    public void ParsesPayloadsSplitAcrossSegmentsAtEveryPoint()
    {
        var data = Bytes(300);
        var payload = Encode(o =>
        {
            o.WriteTag(2, WireFormat.WireType.Varint);
            o.WriteUInt64(1UL << 40);
            o.WriteTag(1, WireFormat.WireType.LengthDelimited);
            o.WriteBytes(ByteString.CopyFrom(data));
            o.WriteTag(3, WireFormat.WireType.Fixed64);
            o.WriteFixed64(1);
        });

        for (int split = 0; split <= payload.Length; split++)
        {
            Assert.Equal(data, Parse(Segments(payload[..split], payload[split..])));
        }

        Assert.Equal(data, Parse(Segments(payload.Select(b => new[] { b }).ToArray())));
    }

    public static TheoryData<string, byte[]> Malformed() => new()
    {
        { "truncated varint", [0x08, 0x80] },
        { "truncated tag", [0x80] },
        { "varint longer than 10 bytes", [0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01] },
        { "data longer than the payload", [0x0A, 0x05, 1, 2, 3] },
        { "huge length", [0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F] },
        { "field number 0", [0x02, 0x00] },
        { "wire type 6", [0x0E] },
        { "wire type 7", [0x0F] },
        { "end of group with none open", [0x14] },
        { "group not closed", [0x13, 0x08, 0x01] },
        { "group closed as another field", [0x13, 0x24] },
        { "truncated fixed64", [0x11, 1, 2, 3] },
        { "truncated fixed32", [0x15, 1] },
        { "truncated unknown bytes", [0x12, 0x03, 1] },
    };

    [Theory]
    [MemberData(nameof(Malformed))]
    public void MalformedPayloadsThrowInternal(string what, byte[] payload)
    {
        var e = Assert.Throws<RpcException>(() => BlobChunkMarshaller.Parse(new ReadOnlySequence<byte>(payload)));
        Assert.Equal(StatusCode.Internal, e.StatusCode);
        Assert.StartsWith("malformed BlobChunk from the store: ", e.Status.Detail);
        // The generated parser rejects them too.
        Assert.ThrowsAny<InvalidProtocolBufferException>(() => TvixV1.BlobChunk.Parser.ParseFrom(payload));
        _ = what;
    }

    [Fact]
    public void DeeplyNestedGroupsAreRejected()
    {
        var payload = Enumerable.Repeat((byte)0x13, 200).ToArray();
        var e = Assert.Throws<RpcException>(() => BlobChunkMarshaller.Parse(new ReadOnlySequence<byte>(payload)));
        Assert.Contains("nested", e.Status.Detail);
    }

    [Fact]
    public void TheChunkIsUnusableAfterDispose()
    {
        var chunk = BlobChunkMarshaller.Parse(new ReadOnlySequence<byte>(new TvixV1.BlobChunk { Data = ByteString.CopyFrom(Bytes(10)) }.ToByteArray()));
        chunk.Dispose();
        chunk.Dispose();
        Assert.Throws<ObjectDisposedException>(() => chunk.Memory);
    }

    [Fact]
    public void TheMethodIsTheGeneratedOne()
    {
        var method = BlobChunkMarshaller.ReadMethod(TvixV1.BlobService.Descriptor.FullName, TvixV1.ReadBlobRequest.Parser);
        Assert.Equal("/tvix.castore.v1.BlobService/Read", method.FullName);
        Assert.Equal(MethodType.ServerStreaming, method.Type);
        var snix = BlobChunkMarshaller.ReadMethod(Snix.Castore.V1.BlobService.Descriptor.FullName, Snix.Castore.V1.ReadBlobRequest.Parser);
        Assert.Equal("/snix.castore.v1.BlobService/Read", snix.FullName);
    }

    private static ReadOnlySequence<byte> Segments(params byte[][] parts)
    {
        Segment? first = null, last = null;
        foreach (var part in parts)
        {
            var segment = new Segment(part, last?.RunningIndex + last?.Memory.Length ?? 0);
            if (last is null)
            {
                first = segment;
            }
            else
            {
                last.Next = segment;
            }

            last = segment;
        }

        return first is null ? ReadOnlySequence<byte>.Empty : new ReadOnlySequence<byte>(first, 0, last!, last!.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(byte[] bytes, long runningIndex)
        {
            Memory = bytes;
            RunningIndex = runningIndex;
        }

        public new Segment? Next
        {
            get => (Segment?)base.Next;
            set => base.Next = value;
        }
    }
}
