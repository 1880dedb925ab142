using System.Buffers;
using System.Buffers.Binary;
using System.Globalization;
using System.Net;
using System.Text;

namespace TvixFuseBuild.Build.Grpc;

/// <summary>The gRPC-over-HTTP/2 wire rules shared by our client and server (PROTOCOL-HTTP2.md in grpc/grpc).</summary>
public static class GrpcProtocol
{
    public const string ContentType = "application/grpc";
    public const string StatusHeader = "grpc-status";
    public const string MessageHeader = "grpc-message";
    public const string TimeoutHeader = "grpc-timeout";
    public const string EncodingHeader = "grpc-encoding";
    public const string AcceptEncodingHeader = "grpc-accept-encoding";

    /// <summary>1 byte compressed flag + 4 bytes big-endian length.</summary>
    public const int FrameHeaderLength = 5;

    /// <summary>The largest message we accept by default, in either direction (gRPC's own default is 4 MiB).</summary>
    public const int DefaultMaxReceiveMessageSize = 16 << 20;

    /// <summary>Whether a content-type names gRPC: <c>application/grpc</c>, optionally with <c>+proto</c> etc. or parameters.</summary>
    public static bool IsGrpcContentType(string? contentType) =>
        contentType is not null &&
        contentType.StartsWith(ContentType, StringComparison.OrdinalIgnoreCase) &&
        (contentType.Length == ContentType.Length || contentType[ContentType.Length] is '+' or ';');

    public static void WriteFrameHeader(Span<byte> destination, int length)
    {
        destination[0] = 0;
        BinaryPrimitives.WriteUInt32BigEndian(destination[1..], (uint)length);
    }

    /// <summary>
    /// Reads a frame header; returns the message length. Throws for a compressed frame (we never negotiate compression)
    /// or a message over <paramref name="maxLength"/>.
    /// </summary>
    public static int ParseFrameHeader(ReadOnlySpan<byte> header, int maxLength)
    {
        byte flag = header[0];
        if (flag != 0)
        {
            ThrowCompressedFrame(flag);
        }

        uint length = BinaryPrimitives.ReadUInt32BigEndian(header[1..]);
        if (length > (uint)maxLength)
        {
            ThrowMessageTooLarge(length, maxLength);
        }

        return (int)length;
    }

    private static void ThrowCompressedFrame(byte flag) =>
        throw new RpcStatusException(
            GrpcStatusCode.Internal,
            flag == 1
                ? "received a compressed message, but no compression was negotiated (grpc-encoding identity)"
                : $"invalid message frame: compressed flag {flag}");

    private static void ThrowMessageTooLarge(uint length, int max) =>
        throw new RpcStatusException(
            GrpcStatusCode.ResourceExhausted, $"received message larger than max ({length} vs. {max} bytes)");

    /// <summary>
    /// Percent-encodes a status message as grpc-message requires: UTF-8, with every byte outside printable ASCII and
    /// every <c>%</c> written as <c>%XX</c>.
    /// </summary>
    public static string EncodeMessage(string message)
    {
        bool plain = true;
        foreach (char c in message)
        {
            if (c is < ' ' or > '~' or '%')
            {
                plain = false;
                break;
            }
        }

        if (plain)
        {
            return message;
        }

        byte[] utf8 = Encoding.UTF8.GetBytes(message);
        var sb = new StringBuilder(utf8.Length * 3);
        foreach (byte b in utf8)
        {
            if (b is < 0x20 or > 0x7E or (byte)'%')
            {
                sb.Append('%').Append(HexUpper[b >> 4]).Append(HexUpper[b & 0xF]);
            }
            else
            {
                sb.Append((char)b);
            }
        }

        return sb.ToString();
    }

    private const string HexUpper = "0123456789ABCDEF";

    /// <summary>Decodes a grpc-message value; a <c>%</c> not followed by two hex digits is kept as it is, as the spec asks.</summary>
    public static string DecodeMessage(string? value)
    {
        if (string.IsNullOrEmpty(value))
        {
            return string.Empty;
        }

        if (!value.Contains('%'))
        {
            return value;
        }

        byte[] bytes = ArrayPool<byte>.Shared.Rent(value.Length);
        try
        {
            int n = 0;
            for (int i = 0; i < value.Length; i++)
            {
                char c = value[i];
                if (c == '%' && i + 2 < value.Length &&
                    HexValue(value[i + 1]) is int hi and >= 0 && HexValue(value[i + 2]) is int lo and >= 0)
                {
                    bytes[n++] = (byte)((hi << 4) | lo);
                    i += 2;
                }
                else
                {
                    // Header values are ASCII; anything else is passed through as Latin-1 would have been.
                    bytes[n++] = (byte)c;
                }
            }

            return Encoding.UTF8.GetString(bytes, 0, n);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(bytes);
        }
    }

    private static int HexValue(char c) => c switch
    {
        >= '0' and <= '9' => c - '0',
        >= 'a' and <= 'f' => c - 'a' + 10,
        >= 'A' and <= 'F' => c - 'A' + 10,
        _ => -1,
    };

    /// <summary>
    /// Formats a timeout for grpc-timeout: at most 8 digits and a unit, rounded up so that a short timeout never becomes 0.
    /// </summary>
    public static string FormatTimeout(TimeSpan timeout)
    {
        long ticks = Math.Max(timeout.Ticks, 0);
        const long Max = 99_999_999;

        // Ticks are 100 ns; choose the finest unit whose value fits in 8 digits.
        long micros = CeilDiv(ticks, 10);
        if (micros <= Max)
        {
            return micros == 0 ? "1u" : Format(micros, 'u');
        }

        long millis = CeilDiv(ticks, TimeSpan.TicksPerMillisecond);
        if (millis <= Max)
        {
            return Format(millis, 'm');
        }

        long seconds = CeilDiv(ticks, TimeSpan.TicksPerSecond);
        if (seconds <= Max)
        {
            return Format(seconds, 'S');
        }

        long minutes = CeilDiv(ticks, TimeSpan.TicksPerMinute);
        if (minutes <= Max)
        {
            return Format(minutes, 'M');
        }

        return Format(Math.Min(CeilDiv(ticks, TimeSpan.TicksPerHour), Max), 'H');

        static long CeilDiv(long a, long b) => (a / b) + (a % b == 0 ? 0 : 1);
        static string Format(long value, char unit) => value.ToString(CultureInfo.InvariantCulture) + unit;
    }

    /// <summary>Parses a grpc-timeout value (1 to 8 digits and one of H M S m u n).</summary>
    public static bool TryParseTimeout(ReadOnlySpan<char> value, out TimeSpan timeout)
    {
        timeout = default;
        if (value.Length is < 2 or > 9)
        {
            return false;
        }

        long amount = 0;
        foreach (char c in value[..^1])
        {
            if (c is < '0' or > '9')
            {
                return false;
            }

            amount = (amount * 10) + (c - '0');
        }

        long ticks = value[^1] switch
        {
            'H' => amount * TimeSpan.TicksPerHour,
            'M' => amount * TimeSpan.TicksPerMinute,
            'S' => amount * TimeSpan.TicksPerSecond,
            'm' => amount * TimeSpan.TicksPerMillisecond,
            'u' => amount * 10,
            'n' => amount / 100,
            _ => -1,
        };
        if (ticks < 0)
        {
            return false;
        }

        timeout = TimeSpan.FromTicks(ticks);
        return true;
    }

    /// <summary>The status a client reports for a non-200 HTTP response without grpc-status (the gRPC spec's table).</summary>
    public static GrpcStatusCode FromHttpStatus(HttpStatusCode status) => status switch
    {
        HttpStatusCode.BadRequest => GrpcStatusCode.Internal,
        HttpStatusCode.Unauthorized => GrpcStatusCode.Unauthenticated,
        HttpStatusCode.Forbidden => GrpcStatusCode.PermissionDenied,
        HttpStatusCode.NotFound => GrpcStatusCode.Unimplemented,
        HttpStatusCode.TooManyRequests or HttpStatusCode.BadGateway or HttpStatusCode.ServiceUnavailable
            or HttpStatusCode.GatewayTimeout => GrpcStatusCode.Unavailable,
        _ => GrpcStatusCode.Unknown,
    };

    /// <summary>The status for a stream reset with an HTTP/2 error code (the gRPC spec's table).</summary>
    public static GrpcStatusCode FromHttp2ErrorCode(long errorCode) => errorCode switch
    {
        0x7 => GrpcStatusCode.Unavailable, // REFUSED_STREAM
        0x8 => GrpcStatusCode.Cancelled, // CANCEL
        0xB => GrpcStatusCode.ResourceExhausted, // ENHANCE_YOUR_CALM
        0xC => GrpcStatusCode.PermissionDenied, // INADEQUATE_SECURITY
        _ => GrpcStatusCode.Internal,
    };
}
