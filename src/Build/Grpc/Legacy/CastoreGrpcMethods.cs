using System.Buffers;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Grpc;
using Tvix.Castore.V1;

namespace TvixFuseBuild.Build.Grpc;

// Legacy: only the old hand-written server (GrpcServer) uses these; they go with it (issue 13, helper grpc-server).

/// <summary>
/// The castore BlobService and DirectoryService methods of one package. The snix messages have the same field numbers
/// as the tvix ones (only some names differ), so the tvix generated types serve both; only the paths differ.
/// Blob bytes and directories skip the generated types: <see cref="BlobRead"/> and <see cref="BlobPut"/> carry the
/// BlobChunk payload as a (borrowed) byte sequence, the directory methods carry validated <see cref="CastoreDirectory"/>.
/// </summary>
public sealed class CastoreGrpcMethods
{
    private static readonly GrpcMarshaller<StatBlobRequest> StatRequest = GrpcMarshaller.ForProtobuf(StatBlobRequest.Parser);
    private static readonly GrpcMarshaller<StatBlobResponse> StatResponse = GrpcMarshaller.ForProtobuf(StatBlobResponse.Parser);
    private static readonly GrpcMarshaller<ReadBlobRequest> ReadRequest = GrpcMarshaller.ForProtobuf(ReadBlobRequest.Parser);
    private static readonly GrpcMarshaller<PutBlobResponse> PutBlobResponseMarshaller = GrpcMarshaller.ForProtobuf(PutBlobResponse.Parser);
    private static readonly GrpcMarshaller<GetDirectoryRequest> GetRequest = GrpcMarshaller.ForProtobuf(GetDirectoryRequest.Parser);
    private static readonly GrpcMarshaller<PutDirectoryResponse> PutDirectoryResponseMarshaller = GrpcMarshaller.ForProtobuf(PutDirectoryResponse.Parser);

    public static CastoreGrpcMethods Tvix { get; } = new(CastoreProtocol.Tvix, "tvix.castore.v1");

    public static CastoreGrpcMethods Snix { get; } = new(CastoreProtocol.Snix, "snix.castore.v1");

    public static CastoreGrpcMethods For(CastoreProtocol protocol) => protocol == CastoreProtocol.Snix ? Snix : Tvix;

    private CastoreGrpcMethods(CastoreProtocol protocol, string package)
    {
        Protocol = protocol;
        Package = package;
        string blobs = package + ".BlobService";
        string directories = package + ".DirectoryService";
        BlobStat = new(GrpcMethodType.Unary, blobs, "Stat", StatRequest, StatResponse);
        BlobRead = new(GrpcMethodType.ServerStreaming, blobs, "Read", ReadRequest, BlobChunkMarshaller.Instance);
        BlobPut = new(GrpcMethodType.ClientStreaming, blobs, "Put", BlobChunkMarshaller.Instance, PutBlobResponseMarshaller);
        DirectoryGet = new(GrpcMethodType.ServerStreaming, directories, "Get", GetRequest, DirectoryMarshaller.Instance);
        DirectoryPut = new(GrpcMethodType.ClientStreaming, directories, "Put", DirectoryMarshaller.Instance, PutDirectoryResponseMarshaller);
    }

    public CastoreProtocol Protocol { get; }

    /// <summary><c>tvix.castore.v1</c> or <c>snix.castore.v1</c>.</summary>
    public string Package { get; }

    public GrpcMethod<StatBlobRequest, StatBlobResponse> BlobStat { get; }

    public GrpcMethod<ReadBlobRequest, ReadOnlySequence<byte>> BlobRead { get; }

    public GrpcMethod<ReadOnlySequence<byte>, PutBlobResponse> BlobPut { get; }

    public GrpcMethod<GetDirectoryRequest, CastoreDirectory> DirectoryGet { get; }

    public GrpcMethod<CastoreDirectory, PutDirectoryResponse> DirectoryPut { get; }
}

/// <summary>
/// BlobChunk (<c>bytes data = 1</c>) as its payload alone: written straight from the caller's bytes, parsed into a
/// slice of the received frame (borrowed until the next message), so blob bytes are never copied into a ByteString.
/// </summary>
internal sealed class BlobChunkMarshaller : GrpcMarshaller<ReadOnlySequence<byte>>
{
    private const byte DataTag = (1 << 3) | 2;

    public static BlobChunkMarshaller Instance { get; } = new();

    public override int GetSize(ReadOnlySequence<byte> value) =>
        value.IsEmpty ? 0 : 1 + VarintLength((ulong)value.Length) + checked((int)value.Length);

    public override void Write(ReadOnlySequence<byte> value, IBufferWriter<byte> output)
    {
        if (value.IsEmpty)
        {
            return;
        }

        var span = output.GetSpan(11);
        span[0] = DataTag;
        int n = 1;
        for (ulong v = (ulong)value.Length; ; v >>= 7)
        {
            if (v < 0x80)
            {
                span[n++] = (byte)v;
                break;
            }

            span[n++] = (byte)(v | 0x80);
        }

        output.Advance(n);
        foreach (var segment in value)
        {
            output.Write(segment.Span);
        }
    }

    /// <summary>The data field (the last one, as protobuf merges); unknown fields are skipped.</summary>
    public override ReadOnlySequence<byte> Parse(in ReadOnlySequence<byte> data)
    {
        var reader = new SequenceReader<byte>(data);
        var result = ReadOnlySequence<byte>.Empty;
        while (!reader.End)
        {
            ulong tag = ReadVarint(ref reader);
            int wireType = (int)(tag & 7);
            switch (wireType)
            {
                case 2:
                    ulong length = ReadVarint(ref reader);
                    if (length > (ulong)reader.Remaining)
                    {
                        throw Malformed();
                    }

                    if (tag == DataTag)
                    {
                        result = reader.UnreadSequence.Slice(0, (long)length);
                    }

                    reader.Advance((long)length);
                    break;
                case 0:
                    ReadVarint(ref reader);
                    break;
                case 1:
                case 5:
                    int size = wireType == 1 ? 8 : 4;
                    if (reader.Remaining < size)
                    {
                        throw Malformed();
                    }

                    reader.Advance(size);
                    break;
                default:
                    throw Malformed();
            }
        }

        return result;
    }

    private static int VarintLength(ulong value)
    {
        int n = 1;
        while (value >= 0x80)
        {
            value >>= 7;
            n++;
        }

        return n;
    }

    private static ulong ReadVarint(ref SequenceReader<byte> reader)
    {
        ulong value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (!reader.TryRead(out byte b))
            {
                throw Malformed();
            }

            value |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80)
            {
                return value;
            }
        }

        throw Malformed();
    }

    private static InvalidDataException Malformed() => new("malformed BlobChunk message");
}

/// <summary>A Directory message as a validated <see cref="CastoreDirectory"/> (its canonical encoding on the way out).</summary>
internal sealed class DirectoryMarshaller : GrpcMarshaller<CastoreDirectory>
{
    public static DirectoryMarshaller Instance { get; } = new();

    public override int GetSize(CastoreDirectory value) => value.Encoding.Length;

    public override void Write(CastoreDirectory value, IBufferWriter<byte> output) => output.Write(value.Encoding);

    /// <summary>Throws <see cref="DirectoryValidationException"/> for an invalid directory.</summary>
    public override CastoreDirectory Parse(in ReadOnlySequence<byte> data)
    {
        if (data.IsSingleSegment)
        {
            return CastoreDirectory.Decode(data.FirstSpan);
        }

        int length = checked((int)data.Length);
        byte[] buffer = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            data.CopyTo(buffer);
            return CastoreDirectory.Decode(buffer.AsSpan(0, length));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
