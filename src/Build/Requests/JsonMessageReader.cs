using System.Globalization;
using System.Text;
using System.Text.Json;
using Google.Protobuf;

namespace TvixFuseBuild.Build.Requests;

/// <summary>
/// Protobuf JSON input: the proto3 mapping as Google.Protobuf's <c>JsonParser</c> reads these messages (tests compare
/// the two on every kind of input), read with <see cref="Utf8JsonReader"/> straight into the generated messages through
/// their <see cref="MessageSchema"/>, without descriptors or reflection. The document is first read through once as
/// JSON, so that a syntax error anywhere is reported (with line and column) before any content error; the content
/// error names the field as written, e.g. <c>BuildRequest.inputs[0].file.digest: invalid base64 ...</c>.
/// </summary>
/// <remarks>
/// The mapping, as JsonParser does it: a field by its proto name or its JSON name; an unknown field refused; null is
/// the default (a repeated field emptied, a message absent), but not an element of an array; a field given twice
/// keeps the last value (a repeated field: both lists, appended); two fields of one oneof refused, null or not;
/// bytes in standard base64 with its padding (whitespace inside is skipped); uint64 as a JSON number, read as a
/// double (so 2^64-1 is out of range and 2^53+1 rounds), or as a string (exact; <c>1e3</c> and <c>5.0</c> allowed, a
/// leading zero or <c>+</c> not).
/// </remarks>
internal static class JsonMessageReader
{
    private const NumberStyles NumberStyle = NumberStyles.AllowLeadingSign | NumberStyles.AllowDecimalPoint | NumberStyles.AllowExponent;

    private static readonly JsonReaderOptions Options = new() { MaxDepth = 100 };

    public static IMessage Parse(ReadOnlySpan<byte> data, MessageSchema schema, string source)
    {
        string prefix = $"{source}: malformed JSON {schema.FullName}";
        if (!System.Text.Unicode.Utf8.IsValid(data))
        {
            int bad = Utf8Text.FirstInvalid(data);
            int line = data[..bad].Count((byte)'\n');
            int column = bad - (data[..bad].LastIndexOf((byte)'\n') + 1);
            throw new BuildMessageFormatException($"{prefix} at line {line + 1}, column {column + 1}: invalid UTF-8 (byte {bad})");
        }

        var reader = new Utf8JsonReader(data, Options);
        JsonTokenType root;
        try
        {
            reader.Read();
            root = reader.TokenType;
            while (reader.Read())
            {
            }
        }
        catch (JsonException e)
        {
            string where = e.LineNumber is long line ? $" at line {line + 1}, column {e.BytePositionInLine + 1}" : string.Empty;
            throw new BuildMessageFormatException($"{prefix}{where}: {FirstSentence(e.Message)}", e);
        }

        if (root != JsonTokenType.StartObject)
        {
            throw new BuildMessageFormatException($"{prefix}: expected a JSON object, found {Describe(root)}");
        }

        reader = new Utf8JsonReader(data, Options);
        reader.Read();
        var message = schema.New();
        try
        {
            ReadObject(ref reader, schema, message, schema.Name);
        }
        catch (RefusedException e)
        {
            throw new BuildMessageFormatException($"{prefix}: {e.Path}: {e.Reason}");
        }

        return message;
    }

    /// <summary>Reads the members of the object the reader is on into <paramref name="message"/>; leaves the reader on its end.</summary>
    private static void ReadObject(ref Utf8JsonReader reader, MessageSchema schema, IMessage message, string path)
    {
        List<(string Oneof, string Name)>? oneofs = null;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            var field = Find(ref reader, schema, path, out string name);
            if (field is null)
            {
                throw new RefusedException($"{path}.{PropertyName(ref reader, path)}", $"no such field in {schema.FullName}");
            }

            if (field.Oneof is { } oneof)
            {
                oneofs ??= [];
                foreach (var (seen, seenName) in oneofs)
                {
                    if (seen == oneof)
                    {
                        throw new RefusedException(path, seenName == name
                            ? $"\"{name}\" is given twice, and it belongs to the oneof {oneof}, which takes one value"
                            : $"both \"{seenName}\" and \"{name}\" are given, but they belong to the oneof {oneof}, which takes one of them");
                    }
                }

                oneofs.Add((oneof, name));
            }

            reader.Read();
            if (reader.TokenType == JsonTokenType.Null)
            {
                field.Clear(message);
            }
            else if (field.IsRepeated)
            {
                if (reader.TokenType != JsonTokenType.StartArray)
                {
                    throw new RefusedException($"{path}.{name}", $"expected an array (the field is repeated), found {Describe(reader.TokenType)}");
                }

                var list = field.List(message);
                int index = 0;
                while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
                {
                    if (reader.TokenType == JsonTokenType.Null)
                    {
                        throw new RefusedException($"{path}.{name}[{index}]", "null in an array: the elements of a repeated field cannot be null");
                    }

                    list.Add(ReadValue(ref reader, field, path, name, index));
                    index++;
                }
            }
            else
            {
                field.Set(message, ReadValue(ref reader, field, path, name, -1));
            }
        }
    }

    /// <summary>
    /// The field the property the reader is on names: a JSON name first, then a proto name (as JsonParser's map, where
    /// the JSON names win); <paramref name="name"/> is the name as matched (the document's name, unescaped).
    /// </summary>
    private static FieldSchema? Find(ref Utf8JsonReader reader, MessageSchema schema, string path, out string name)
    {
        try
        {
            foreach (var field in schema.Fields)
            {
                if (reader.ValueTextEquals(field.JsonNameUtf8))
                {
                    name = field.JsonName;
                    return field;
                }
            }

            foreach (var field in schema.Fields)
            {
                if (reader.ValueTextEquals(field.NameUtf8))
                {
                    name = field.Name;
                    return field;
                }
            }
        }
        catch (InvalidOperationException)
        {
            throw UnpairedSurrogate(path, "a field name");
        }

        name = string.Empty;
        return null;
    }

    private static string PropertyName(ref Utf8JsonReader reader, string path)
    {
        try
        {
            return Printable(reader.GetString()!, int.MaxValue);
        }
        catch (InvalidOperationException)
        {
            throw UnpairedSurrogate(path, "a field name");
        }
    }

    /// <summary>One value (an element, for a repeated field) of <paramref name="field"/>, from the token the reader is on (never null).</summary>
    private static object ReadValue(ref Utf8JsonReader reader, FieldSchema field, string path, string name, int index)
    {
        var token = reader.TokenType;
        switch (field.Kind)
        {
            case FieldKind.Message:
            {
                if (token != JsonTokenType.StartObject)
                {
                    throw Refused(path, name, index, $"expected an object ({field.MessageType!.FullName}), found {Describe(token)}");
                }

                var child = field.MessageType!.New();
                ReadObject(ref reader, field.MessageType, child, index < 0 ? $"{path}.{name}" : $"{path}.{name}[{index}]");
                return child;
            }

            case FieldKind.Bool:
                return token switch
                {
                    JsonTokenType.True => true,
                    JsonTokenType.False => false,
                    _ => throw Refused(path, name, index, $"expected true or false, found {Describe(token)}"),
                };

            case FieldKind.String:
                return token == JsonTokenType.String
                    ? GetString(ref reader, path, name, index)
                    : throw Refused(path, name, index, $"expected a string, found {Describe(token)}");

            case FieldKind.Bytes:
            {
                if (token != JsonTokenType.String)
                {
                    throw Refused(path, name, index, $"expected a base64 string, found {Describe(token)}");
                }

                string text = GetString(ref reader, path, name, index);
                try
                {
                    return ByteString.FromBase64(text);
                }
                catch (FormatException)
                {
                    throw Refused(path, name, index, $"invalid base64 {Quote(text)}: bytes are written in standard base64 (A-Z a-z 0-9 + /), padded with = to a multiple of 4 characters");
                }
            }

            case FieldKind.UInt64:
                return token switch
                {
                    JsonTokenType.Number => UInt64FromNumber(reader.ValueSpan, path, name, index),
                    JsonTokenType.String => UInt64FromString(GetString(ref reader, path, name, index), path, name, index),
                    _ => throw Refused(path, name, index, $"expected a number (or a string holding one), found {Describe(token)}"),
                };

            default:
                throw new InvalidOperationException($"unknown field kind {field.Kind}");
        }
    }

    /// <summary>As JsonParser: the number is read as a double, which must be a whole number in range.</summary>
    private static ulong UInt64FromNumber(ReadOnlySpan<byte> text, string path, string name, int index)
    {
        double value = double.Parse(text, NumberStyle, CultureInfo.InvariantCulture);
        string written = Encoding.UTF8.GetString(text);
        if (double.IsFinite(value) && value != Math.Floor(value))
        {
            throw Refused(path, name, index, $"{written} is not a whole number");
        }

        try
        {
            return double.IsFinite(value) ? checked((ulong)value) : throw new OverflowException();
        }
        catch (OverflowException)
        {
            // Between 2^64 - 1024 and 2^64 - 1 the double rounds up to 2^64: in range as a string.
            throw Refused(path, name, index, ulong.TryParse(written, NumberStyle, CultureInfo.InvariantCulture, out _)
                ? $"{written} is out of range for a uint64 as a JSON number, which is read as a double and rounded; write it as a string: \"{written}\""
                : $"{written} is out of range for a uint64");
        }
    }

    /// <summary>As JsonParser: no '+' and no leading zero, then <see cref="ulong.Parse(string, NumberStyles, IFormatProvider)"/> with a sign, decimal point and exponent allowed.</summary>
    private static ulong UInt64FromString(string text, string path, string name, int index)
    {
        bool leadingZero = text.Length > 1 && text[0] == '0' && char.IsAsciiDigit(text[1]);
        bool negativeLeadingZero = text.Length > 2 && text[0] == '-' && text[1] == '0' && char.IsAsciiDigit(text[2]);
        if (text.StartsWith('+') || leadingZero || negativeLeadingZero)
        {
            throw Refused(path, name, index, $"{Quote(text)} is not a number as JSON writes them (no '+', no leading zero)");
        }

        try
        {
            return ulong.Parse(text, NumberStyle, CultureInfo.InvariantCulture);
        }
        catch (FormatException)
        {
            throw Refused(path, name, index, $"{Quote(text)} is not a number");
        }
        catch (OverflowException)
        {
            throw Refused(path, name, index, $"{Quote(text)} is not a whole number in the range of a uint64");
        }
    }

    private static string GetString(ref Utf8JsonReader reader, string path, string name, int index)
    {
        try
        {
            return reader.GetString()!;
        }
        catch (InvalidOperationException)
        {
            throw UnpairedSurrogate(index < 0 ? $"{path}.{name}" : $"{path}.{name}[{index}]", "the string");
        }
    }

    private static RefusedException UnpairedSurrogate(string path, string what) =>
        new(path, $"{what} holds a \\u escape of half a UTF-16 surrogate pair (\\ud800-\\udfff) without its other half, which is not text");

    private static RefusedException Refused(string path, string name, int index, string reason) =>
        new(index < 0 ? $"{path}.{name}" : $"{path}.{name}[{index}]", reason);

    private static string Describe(JsonTokenType token) => token switch
    {
        JsonTokenType.StartObject => "an object",
        JsonTokenType.StartArray => "an array",
        JsonTokenType.String => "a string",
        JsonTokenType.Number => "a number",
        JsonTokenType.True => "true",
        JsonTokenType.False => "false",
        JsonTokenType.Null => "null",
        _ => token.ToString(),
    };

    /// <summary>A value for an error message: quoted, control characters escaped, long ones cut.</summary>
    private static string Quote(string text) => $"\"{Printable(text, 40)}\"";

    /// <summary>Text from the document for an error message: on one line (control characters, quotes and backslashes escaped), cut after <paramref name="max"/> characters.</summary>
    private static string Printable(string text, int max)
    {
        int length = text.Length <= max ? text.Length : char.IsHighSurrogate(text[max - 1]) ? max - 1 : max;
        var result = new StringBuilder();
        foreach (char c in text.AsSpan(0, length))
        {
            _ = c switch
            {
                '"' or '\\' => result.Append('\\').Append(c),
                < ' ' or '\u007f' => result.Append($"\\u{(int)c:x4}"),
                _ => result.Append(c),
            };
        }

        return result.Append(length < text.Length ? "..." : string.Empty).ToString();
    }

    // System.Text.Json appends "Path: ... | LineNumber: ..." and advice about reader options; we say where ourselves.
    private static string FirstSentence(string message)
    {
        foreach (string marker in (ReadOnlySpan<string>)[" Path: ", " LineNumber: ", " Change the reader options."])
        {
            int cut = message.IndexOf(marker, StringComparison.Ordinal);
            if (cut >= 0)
            {
                message = message[..cut];
            }
        }

        return message.TrimEnd();
    }

    /// <summary>The content at <see cref="Path"/> is not what the message type takes there.</summary>
    private sealed class RefusedException(string path, string reason) : Exception(reason)
    {
        public string Path { get; } = path;

        public string Reason { get; } = reason;
    }
}
