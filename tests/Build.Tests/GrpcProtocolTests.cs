using System.Buffers;
using TvixFuseBuild.Build.Grpc;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Grpc;

namespace TvixFuseBuild.Build.Tests.Grpc;

public sealed class GrpcProtocolTests
{
    [Theory]
    [InlineData("plain ascii", "plain ascii")]
    [InlineData("100%", "100%25")]
    [InlineData("ü", "%C3%BC")]
    [InlineData("a\nb\tc", "a%0Ab%09c")]
    [InlineData("✓ ok", "%E2%9C%93 ok")]
    [InlineData("", "")]
    public void StatusMessagesArePercentEncoded(string message, string encoded)
    {
        Assert.Equal(encoded, GrpcProtocol.EncodeMessage(message));
        Assert.Equal(message, GrpcProtocol.DecodeMessage(encoded));
    }

    [Theory]
    [InlineData("50% off", "50% off")] // a % not followed by two hex digits stays
    [InlineData("%zz", "%zz")]
    [InlineData("end%4", "end%4")]
    [InlineData("%41%42", "AB")]
    public void LenientDecoding(string value, string decoded) => Assert.Equal(decoded, GrpcProtocol.DecodeMessage(value));

    [Theory]
    [InlineData(0.2, "200000u")]
    [InlineData(30, "30000000u")]
    [InlineData(120, "120000m")]
    [InlineData(200_000, "200000S")]
    public void TimeoutsFitInEightDigits(double seconds, string expected) =>
        Assert.Equal(expected, GrpcProtocol.FormatTimeout(TimeSpan.FromSeconds(seconds)));

    [Fact]
    public void TimeoutsRoundUpAndStayPositive()
    {
        Assert.Equal("1u", GrpcProtocol.FormatTimeout(TimeSpan.Zero));
        Assert.Equal("1u", GrpcProtocol.FormatTimeout(TimeSpan.FromTicks(1)));
        Assert.Equal("99999999H", GrpcProtocol.FormatTimeout(TimeSpan.MaxValue));
        foreach (var t in new[] { TimeSpan.FromMilliseconds(1), TimeSpan.FromSeconds(1.5), TimeSpan.FromDays(3000) })
        {
            Assert.True(GrpcProtocol.TryParseTimeout(GrpcProtocol.FormatTimeout(t), out var parsed));
            Assert.True(parsed >= t && parsed - t < TimeSpan.FromHours(1), $"{t} -> {parsed}");
        }
    }

    [Theory]
    [InlineData("1H", 3600_000)]
    [InlineData("2M", 120_000)]
    [InlineData("3S", 3000)]
    [InlineData("250m", 250)]
    [InlineData("1000u", 1)]
    [InlineData("5000000n", 5)]
    public void TimeoutsParse(string value, int milliseconds)
    {
        Assert.True(GrpcProtocol.TryParseTimeout(value, out var timeout));
        Assert.Equal(TimeSpan.FromMilliseconds(milliseconds), timeout);
    }

    [Theory]
    [InlineData("")]
    [InlineData("S")]
    [InlineData("10")]
    [InlineData("10s")]
    [InlineData("123456789S")]
    [InlineData("-1S")]
    [InlineData("1.5S")]
    public void BadTimeoutsDoNotParse(string value) => Assert.False(GrpcProtocol.TryParseTimeout(value, out _));

    [Fact]
    public void FrameHeaders()
    {
        Span<byte> header = stackalloc byte[5];
        GrpcProtocol.WriteFrameHeader(header, 0x01020304);
        Assert.Equal(new byte[] { 0, 1, 2, 3, 4 }, header.ToArray());
        Assert.Equal(0x01020304, GrpcProtocol.ParseFrameHeader(header, int.MaxValue));

        var tooLarge = Assert.Throws<RpcStatusException>(() => GrpcProtocol.ParseFrameHeader(new byte[] { 0, 0, 0, 4, 1 }, 1024));
        Assert.Equal(GrpcStatusCode.ResourceExhausted, tooLarge.Code);

        var compressed = Assert.Throws<RpcStatusException>(() => GrpcProtocol.ParseFrameHeader(new byte[] { 1, 0, 0, 0, 1 }, 1024));
        Assert.Equal(GrpcStatusCode.Internal, compressed.Code);
        Assert.Contains("compression", compressed.Detail);
    }

    [Theory]
    [InlineData("application/grpc", true)]
    [InlineData("application/grpc+proto", true)]
    [InlineData("application/grpc; charset=utf-8", true)]
    [InlineData("application/grpcx", false)]
    [InlineData("text/plain", false)]
    [InlineData(null, false)]
    public void ContentTypes(string? contentType, bool grpc) => Assert.Equal(grpc, GrpcProtocol.IsGrpcContentType(contentType));

    [Fact]
    public void StatusNames()
    {
        Assert.Equal("DEADLINE_EXCEEDED", GrpcStatusCode.DeadlineExceeded.ToWireName());
        Assert.Equal("DATA_LOSS", GrpcStatusCode.DataLoss.ToWireName());
        Assert.Equal("42", ((GrpcStatusCode)42).ToWireName());
        Assert.Equal("NOT_FOUND: gone", new RpcStatusException(GrpcStatusCode.NotFound, "gone").Message);
    }

    [Fact]
    public void HttpAndHttp2ErrorMapping()
    {
        Assert.Equal(GrpcStatusCode.Unimplemented, GrpcProtocol.FromHttpStatus(System.Net.HttpStatusCode.NotFound));
        Assert.Equal(GrpcStatusCode.Unavailable, GrpcProtocol.FromHttpStatus(System.Net.HttpStatusCode.ServiceUnavailable));
        Assert.Equal(GrpcStatusCode.Unknown, GrpcProtocol.FromHttpStatus(System.Net.HttpStatusCode.Conflict));
        Assert.Equal(GrpcStatusCode.Cancelled, GrpcProtocol.FromHttp2ErrorCode(0x8));
        Assert.Equal(GrpcStatusCode.Unavailable, GrpcProtocol.FromHttp2ErrorCode(0x7));
        Assert.Equal(GrpcStatusCode.Internal, GrpcProtocol.FromHttp2ErrorCode(0x1));
    }

    [Fact]
    public void BlobChunksAreParsedInPlaceFromAnySegmentation()
    {
        // BlobChunk { data = 0x00..0x2F } preceded by an unknown varint field and followed by an unknown fixed32.
        byte[] data = [.. Enumerable.Range(0, 48).Select(i => (byte)i)];
        byte[] message = [(2 << 3) | 0, 0x96, 0x01, (1 << 3) | 2, 48, .. data, (3 << 3) | 5, 1, 2, 3, 4];
        var methods = CastoreGrpcMethods.Tvix;
        for (int split = 1; split < message.Length; split += 7)
        {
            var parsed = methods.BlobRead.ResponseMarshaller.Parse(Segmented(message, split));
            Assert.Equal(data, parsed.ToArray());
        }

        Assert.True(methods.BlobRead.ResponseMarshaller.Parse(new ReadOnlySequence<byte>([])).IsEmpty);
        Assert.Throws<InvalidDataException>(() => methods.BlobRead.ResponseMarshaller.Parse(new ReadOnlySequence<byte>(message[..10])));

        var output = new ArrayBufferWriter<byte>();
        methods.BlobPut.RequestMarshaller.WriteFrame(new ReadOnlySequence<byte>(data), output);
        Assert.Equal(5 + 2 + 48, output.WrittenCount);
        Assert.Equal(data, methods.BlobPut.RequestMarshaller.Parse(new ReadOnlySequence<byte>(output.WrittenMemory[5..])).ToArray());
    }

    [Fact]
    public void PathsPerPackage()
    {
        Assert.Equal("/tvix.castore.v1.BlobService/Read", CastoreGrpcMethods.Tvix.BlobRead.Path);
        Assert.Equal("/snix.castore.v1.DirectoryService/Put", CastoreGrpcMethods.For(CastoreProtocol.Snix).DirectoryPut.Path);
    }

    private static ReadOnlySequence<byte> Segmented(byte[] bytes, int split)
    {
        var first = new Segment(bytes.AsMemory(0, split), 0);
        var last = first.Append(bytes.AsMemory(split));
        return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}
