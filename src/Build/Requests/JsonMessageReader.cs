using System.Text;
using System.Text.Json;
using Google.Protobuf;
using Google.Protobuf.Reflection;

namespace TvixFuseBuild.Build.Requests;

/// <summary>
/// Protobuf JSON input, parsed by Google.Protobuf's <see cref="JsonParser"/> (the standard proto3 mapping).
/// Syntax errors are reported with line and column (System.Text.Json finds them); when the parser refuses the
/// content, the offending field is found by re-parsing the document's parts one at a time with the same parser, so
/// the location never disagrees with what the parser accepts.
/// </summary>
internal static class JsonMessageReader
{
    private static readonly JsonDocumentOptions DocumentOptions = new() { MaxDepth = 100 };

    public static IMessage Parse(ReadOnlySpan<byte> data, MessageDescriptor descriptor, string source)
    {
        string prefix = $"{source}: malformed JSON {descriptor.FullName}";
        if (!System.Text.Unicode.Utf8.IsValid(data))
        {
            int bad = Utf8Text.FirstInvalid(data);
            int line = data[..bad].Count((byte)'\n');
            int column = bad - (data[..bad].LastIndexOf((byte)'\n') + 1);
            throw new BuildMessageFormatException($"{prefix} at line {line + 1}, column {column + 1}: invalid UTF-8 (byte {bad})");
        }

        JsonElement root;
        try
        {
            using var document = JsonDocument.Parse(data.ToArray(), DocumentOptions);
            root = document.RootElement.Clone();
        }
        catch (JsonException e)
        {
            string where = e.LineNumber is long line ? $" at line {line + 1}, column {e.BytePositionInLine + 1}" : string.Empty;
            throw new BuildMessageFormatException($"{prefix}{where}: {FirstSentence(e.Message)}", e);
        }

        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new BuildMessageFormatException($"{prefix}: expected a JSON object, found {Describe(root.ValueKind)}");
        }

        try
        {
            return JsonParser.Default.Parse(root.GetRawText(), descriptor);
        }
        catch (Exception e) when (e is InvalidProtocolBufferException or InvalidJsonException)
        {
            var (path, reason) = Locate(root, descriptor, descriptor.Name) ?? (descriptor.Name, e.Message);
            throw new BuildMessageFormatException($"{prefix}: {path}: {reason}", e);
        }
    }

    /// <summary>The path and reason of the first part of <paramref name="element"/> that the parser refuses, or null when every part alone is fine.</summary>
    private static (string Path, string Reason)? Locate(JsonElement element, MessageDescriptor descriptor, string path)
    {
        foreach (var property in element.EnumerateObject())
        {
            var field = FindField(descriptor, property.Name);
            string fieldPath = $"{path}.{property.Name}";
            if (field is null)
            {
                return (fieldPath, $"no such field in {descriptor.FullName}");
            }

            if (TryParseField(descriptor, property.Name, property.Value) is not { } reason)
            {
                continue;
            }

            bool isMessage = field.FieldType == FieldType.Message && !IsWellKnown(field.MessageType);
            if (field.IsRepeated && !field.IsMap && property.Value.ValueKind == JsonValueKind.Array)
            {
                int i = 0;
                foreach (var item in property.Value.EnumerateArray())
                {
                    string itemPath = $"{fieldPath}[{i++}]";
                    if (TryParseField(descriptor, property.Name, item, asArray: true) is not { } itemReason)
                    {
                        continue;
                    }

                    if (isMessage && item.ValueKind == JsonValueKind.Object)
                    {
                        return Locate(item, field.MessageType, itemPath) ?? (itemPath, itemReason);
                    }

                    return (itemPath, itemReason);
                }
            }
            else if (isMessage && !field.IsRepeated && property.Value.ValueKind == JsonValueKind.Object)
            {
                return Locate(property.Value, field.MessageType, fieldPath) ?? (fieldPath, reason);
            }

            return (fieldPath, reason);
        }

        return null;
    }

    /// <summary>Parses <c>{ name: value }</c> (or <c>{ name: [value] }</c>) as <paramref name="descriptor"/>; returns the parser's complaint, or null.</summary>
    private static string? TryParseField(MessageDescriptor descriptor, string name, JsonElement value, bool asArray = false)
    {
        var json = new StringBuilder();
        json.Append("{\"").Append(JsonEncodedText.Encode(name).Value).Append("\":");
        json.Append(asArray ? "[" : string.Empty).Append(value.GetRawText()).Append(asArray ? "]" : string.Empty).Append('}');
        try
        {
            JsonParser.Default.Parse(json.ToString(), descriptor);
            return null;
        }
        catch (Exception e) when (e is InvalidProtocolBufferException or InvalidJsonException)
        {
            return e.Message;
        }
    }

    private static FieldDescriptor? FindField(MessageDescriptor descriptor, string name)
    {
        foreach (var field in descriptor.Fields.InDeclarationOrder())
        {
            if (field.JsonName == name || field.Name == name)
            {
                return field;
            }
        }

        return null;
    }

    private static bool IsWellKnown(MessageDescriptor descriptor) => descriptor.File.Package == "google.protobuf";

    private static string Describe(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => kind.ToString(),
    };

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
}
