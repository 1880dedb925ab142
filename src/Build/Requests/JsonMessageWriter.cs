using System.Collections;
using System.Globalization;
using System.Text;
using Google.Protobuf;

namespace TvixFuseBuild.Build.Requests;

/// <summary>
/// Protobuf JSON output through <see cref="MessageSchema"/>, without descriptors: byte for byte what Google.Protobuf's
/// <c>JsonFormatter</c> with <c>WithIndentation("  ")</c> writes, plus a final newline (tests compare the two): JSON
/// names, fields in number order, defaults left out (a message that is present is written, if empty as <c>{}</c>),
/// uint64 as strings, bytes in standard base64, and the formatter's escaping of strings.
/// </summary>
internal static class JsonMessageWriter
{
    private const string Indentation = "  ";
    private const string Hex = "0123456789abcdef";

    public static byte[] Write(IMessage message, MessageSchema schema)
    {
        var text = new StringBuilder(1024);
        WriteMessage(text, message, schema, 0);
        text.Append('\n');
        return Encoding.UTF8.GetBytes(text.ToString());
    }

    private static void WriteMessage(StringBuilder text, IMessage message, MessageSchema schema, int level)
    {
        text.Append('{');
        bool first = true;
        foreach (var field in schema.Fields)
        {
            if (field.IsDefault(message))
            {
                continue;
            }

            if (!first)
            {
                text.Append(',');
            }

            NewLine(text, level + 1);
            WriteString(text, field.JsonName);
            text.Append(": ");
            object value = field.Get(message)!;
            if (field.IsRepeated)
            {
                WriteList(text, (IList)value, field, level + 1);
            }
            else
            {
                WriteValue(text, value, field, level + 1);
            }

            first = false;
        }

        if (!first)
        {
            NewLine(text, level);
        }

        text.Append('}');
    }

    private static void WriteList(StringBuilder text, IList list, FieldSchema field, int level)
    {
        text.Append('[');
        for (int i = 0; i < list.Count; i++)
        {
            if (i > 0)
            {
                text.Append(',');
            }

            NewLine(text, level + 1);
            WriteValue(text, list[i]!, field, level + 1);
        }

        if (list.Count > 0)
        {
            NewLine(text, level);
        }

        text.Append(']');
    }

    private static void WriteValue(StringBuilder text, object value, FieldSchema field, int level)
    {
        switch (field.Kind)
        {
            case FieldKind.Message:
                WriteMessage(text, (IMessage)value, field.MessageType!, level);
                break;
            case FieldKind.String:
                WriteString(text, (string)value);
                break;
            case FieldKind.Bytes:
                text.Append('"').Append(((ByteString)value).ToBase64()).Append('"');
                break;
            case FieldKind.UInt64:
                text.Append('"').Append(((ulong)value).ToString(CultureInfo.InvariantCulture)).Append('"');
                break;
            case FieldKind.Bool:
                text.Append((bool)value ? "true" : "false");
                break;
            default:
                throw new InvalidOperationException($"unknown field kind {field.Kind}");
        }
    }

    private static void NewLine(StringBuilder text, int level)
    {
        text.Append('\n');
        for (int i = 0; i < level; i++)
        {
            text.Append(Indentation);
        }
    }

    /// <summary>
    /// A JSON string escaped as JsonFormatter does: control characters (C0, DEL, C1), <c>&lt;</c> and <c>&gt;</c>,
    /// characters outside the BMP (as a surrogate pair) and a set of invisible or direction-changing characters as
    /// <c>\uXXXX</c>; a lone surrogate refused (<see cref="ArgumentException"/>).
    /// </summary>
    private static void WriteString(StringBuilder text, string value)
    {
        text.Append('"');
        for (int i = 0; i < value.Length; i++)
        {
            char c = value[i];
            if (c < 0xa0)
            {
                _ = c switch
                {
                    '\b' => text.Append("\\b"),
                    '\t' => text.Append("\\t"),
                    '\n' => text.Append("\\n"),
                    '\f' => text.Append("\\f"),
                    '\r' => text.Append("\\r"),
                    '"' => text.Append("\\\""),
                    '\\' => text.Append("\\\\"),
                    < ' ' or '<' or '>' or >= '\u007f' => AppendEscaped(text, c),
                    _ => text.Append(c),
                };
            }
            else if (char.IsHighSurrogate(c))
            {
                if (++i == value.Length || !char.IsLowSurrogate(value[i]))
                {
                    throw new ArgumentException("a string holds half a UTF-16 surrogate pair (a high surrogate without its low one), which is not text");
                }

                AppendEscaped(text, c);
                AppendEscaped(text, value[i]);
            }
            else if (char.IsLowSurrogate(c))
            {
                throw new ArgumentException("a string holds half a UTF-16 surrogate pair (a low surrogate without its high one), which is not text");
            }
            else if (c is '\u00ad' or '\u06dd' or '\u070f' or '\u17b4' or '\u17b5' or '\ufeff' or (>= '\ufff9' and <= '\ufffb')
                     or (>= '\u0600' and <= '\u0603') or (>= '\u200b' and <= '\u200f') or (>= '\u2028' and <= '\u202e')
                     or (>= '\u2060' and <= '\u2064') or (>= '\u206a' and <= '\u206f'))
            {
                AppendEscaped(text, c);
            }
            else
            {
                text.Append(c);
            }
        }

        text.Append('"');
    }

    private static StringBuilder AppendEscaped(StringBuilder text, char c) =>
        text.Append("\\u").Append(Hex[(c >> 12) & 0xf]).Append(Hex[(c >> 8) & 0xf]).Append(Hex[(c >> 4) & 0xf]).Append(Hex[c & 0xf]);
}
