using Google.Protobuf;
using TvixFuseBuild.Castore.Transfer;
using SnixBuild = Snix.Build.V1;
using TvixBuild = Tvix.Build.V1;

namespace TvixFuseBuild.Build.Requests;

/// <summary>How a message is written: protobuf JSON (the standard proto3 mapping; bytes as base64) or binary protobuf.</summary>
public enum MessageFormat
{
    Json,
    Binary,
}

/// <summary>
/// Reads and writes requests and replies of both protocols in both formats, from files or stdin/stdout.
/// Every malformed input becomes a <see cref="BuildMessageFormatException"/> naming the source, the field and the
/// position; an invalid request becomes a <see cref="BuildRequestValidationException"/> with tvix's message.
/// </summary>
/// <remarks>
/// Binary input is checked field by field against the message's schema before it is parsed (wire types, lengths,
/// UTF-8 in string fields, which Google.Protobuf would otherwise replace silently); unknown fields are ignored, as tvix
/// (prost) does. JSON input must be a JSON object; unknown field names are refused (a typo must not silently drop a
/// field); both the proto field names (<c>command_args</c>) and their JSON names (<c>commandArgs</c>) are accepted.
/// JSON is written with the JSON names, indented, default values omitted, and a final newline. Neither format builds
/// Google.Protobuf's reflection descriptors (<see cref="MessageSchemas"/> describes the messages instead).
/// </remarks>
public static class BuildMessages
{
    /// <summary>The name for standard input and output in <see cref="ReadRequest"/> and <see cref="WriteOutput"/>.</summary>
    public const string StdioName = "-";

    private static readonly System.Buffers.SearchValues<byte> NonWhitespaceControlBytes = System.Buffers.SearchValues.Create(
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]);

    /// <summary>
    /// JSON when the first byte that is not JSON whitespace can start a JSON text (<c>{ [ " - 0-9 t f n</c>: an
    /// array or <c>null</c> is JSON that is not a request, not malformed binary) and no byte is a control character
    /// other than JSON whitespace (JSON text never holds one raw; a request in binary protobuf always does: the tag of
    /// its required <c>command_args</c> is 0x12); binary otherwise.
    /// </summary>
    public static MessageFormat DetectFormat(ReadOnlySpan<byte> data)
    {
        int first = data.IndexOfAnyExcept(" \t\r\n"u8);
        if (first < 0 || !"{[\"-0123456789tfn"u8.Contains(data[first]))
        {
            return MessageFormat.Binary;
        }

        return data.ContainsAny(NonWhitespaceControlBytes) ? MessageFormat.Binary : MessageFormat.Json;
    }

    /// <summary>The request message of <paramref name="protocol"/>.</summary>
    internal static MessageSchema RequestSchema(BuildProtocol protocol) => protocol switch
    {
        BuildProtocol.Tvix => MessageSchemas.TvixBuildRequest,
        BuildProtocol.Snix => MessageSchemas.SnixBuildRequest,
        _ => throw new ArgumentOutOfRangeException(nameof(protocol)),
    };

    /// <summary>The reply message of <paramref name="protocol"/>: tvix <c>Build</c>, snix <c>BuildResponse</c>.</summary>
    internal static MessageSchema ReplySchema(BuildProtocol protocol) => protocol switch
    {
        BuildProtocol.Tvix => MessageSchemas.TvixBuildReply,
        BuildProtocol.Snix => MessageSchemas.SnixBuildResponse,
        _ => throw new ArgumentOutOfRangeException(nameof(protocol)),
    };

    /// <summary>
    /// Parses a request and validates it as <paramref name="protocol"/> does. <paramref name="format"/> null means
    /// detect (<see cref="DetectFormat"/>). <paramref name="source"/> names the input in error messages.
    /// </summary>
    public static BuildSpec ParseRequest(ReadOnlySpan<byte> data, BuildProtocol protocol, MessageFormat? format = null, string source = "request")
    {
        var message = ParseMessage(data, RequestSchema(protocol), format ?? DetectFormat(data), source);
        return BuildSpec.FromProto(message);
    }

    /// <summary>
    /// Reads a request from the file <paramref name="path"/> (or stdin for <c>-</c>), parses and validates it; returns
    /// it with the format it was in (so the reply can be written the same way).
    /// </summary>
    public static (BuildSpec Spec, MessageFormat Format) ReadRequest(string path, BuildProtocol protocol, MessageFormat? format = null)
    {
        byte[] data = ReadInput(path);
        string source = path == StdioName ? "stdin" : path;
        var actual = format ?? DetectFormat(data);
        return (ParseRequest(data, protocol, actual, source), actual);
    }

    /// <summary>Parses a reply: tvix <c>Build</c> (whose echoed request is returned in <paramref name="request"/>) or snix <c>BuildResponse</c> (null there).</summary>
    public static BuildResult ParseReply(ReadOnlySpan<byte> data, BuildProtocol protocol, out BuildSpec? request, MessageFormat? format = null, string source = "reply")
    {
        var message = ParseMessage(data, ReplySchema(protocol), format ?? DetectFormat(data), source);
        switch (message)
        {
            case TvixBuild.Build build:
                request = build.BuildRequest is null ? null : BuildSpec.FromTvix(build.BuildRequest);
                return BuildResult.FromTvixBuild(build);
            case SnixBuild.BuildResponse response:
                request = null;
                return BuildResult.FromSnixResponse(response);
            default:
                throw new InvalidOperationException("unreachable");
        }
    }

    /// <summary>The request in <paramref name="protocol"/>'s message, in <paramref name="format"/>.</summary>
    public static byte[] FormatRequest(BuildSpec spec, BuildProtocol protocol, MessageFormat format)
    {
        ArgumentNullException.ThrowIfNull(spec);
        IMessage message = protocol == BuildProtocol.Tvix ? spec.ToTvix() : spec.ToSnix();
        return Format(message, RequestSchema(protocol), format);
    }

    /// <summary>The reply to <paramref name="request"/>: tvix <c>Build</c> or snix <c>BuildResponse</c>, in <paramref name="format"/>.</summary>
    public static byte[] FormatReply(BuildSpec request, BuildResult result, BuildProtocol protocol, MessageFormat format)
    {
        ArgumentNullException.ThrowIfNull(result);
        IMessage message = protocol == BuildProtocol.Tvix ? result.ToTvixBuild(request) : result.ToSnixResponse(request);
        return Format(message, ReplySchema(protocol), format);
    }

    /// <summary>Writes a <paramref name="schema"/> message in <paramref name="format"/>: JSON indented with a final newline, or binary protobuf.</summary>
    internal static byte[] Format(IMessage message, MessageSchema schema, MessageFormat format) => format switch
    {
        MessageFormat.Json => JsonMessageWriter.Write(message, schema),
        MessageFormat.Binary => message.ToByteArray(),
        _ => throw new ArgumentOutOfRangeException(nameof(format)),
    };

    /// <summary>
    /// Parses <paramref name="data"/> as a <paramref name="schema"/> message, without validating its meaning.
    /// Throws <see cref="BuildMessageFormatException"/> naming the source, field and position of the first problem.
    /// </summary>
    internal static IMessage ParseMessage(ReadOnlySpan<byte> data, MessageSchema schema, MessageFormat format, string source) => format switch
    {
        MessageFormat.Binary => BinaryMessageReader.Parse(data, schema, source),
        MessageFormat.Json => JsonMessageReader.Parse(data, schema, source),
        _ => throw new ArgumentOutOfRangeException(nameof(format)),
    };

    /// <summary>All bytes of the file <paramref name="path"/>, or of stdin for <c>-</c>. IO errors name the path.</summary>
    public static byte[] ReadInput(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (path == StdioName)
        {
            using var stdin = Console.OpenStandardInput();
            using var buffer = new MemoryStream();
            stdin.CopyTo(buffer);
            return buffer.ToArray();
        }

        if (Directory.Exists(path))
        {
            throw new IOException($"{path}: is a directory, not a file");
        }

        try
        {
            return File.ReadAllBytes(path);
        }
        catch (FileNotFoundException)
        {
            throw new FileNotFoundException($"{path}: no such file");
        }
        catch (DirectoryNotFoundException)
        {
            throw new DirectoryNotFoundException($"{path}: no such file or directory");
        }
        catch (UnauthorizedAccessException)
        {
            throw new UnauthorizedAccessException($"{path}: permission denied");
        }
    }

    /// <summary>
    /// Writes <paramref name="bytes"/> to stdout (<paramref name="path"/> null or <c>-</c>) or to the file
    /// <paramref name="path"/> with <see cref="HostFile.WriteAllBytes"/>: a new file renamed into place of nothing or a
    /// regular file (a failure leaves nothing half-written), a character device or FIFO written through, anything else
    /// refused.
    /// </summary>
    public static void WriteOutput(string? path, ReadOnlySpan<byte> bytes)
    {
        if (path is null or StdioName)
        {
            using var stdout = Console.OpenStandardOutput();
            stdout.Write(bytes);
            stdout.Flush();
            return;
        }

        HostFile.WriteAllBytes(path, bytes);
    }
}
