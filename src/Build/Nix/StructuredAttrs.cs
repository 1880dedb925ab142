using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace TvixFuseBuild.Build.Nix;

/// <summary>
/// A derivation's <c>__json</c> (structuredAttrs) as Nix 2.8 hands it to the builder: <c>.attrs.json</c> (the
/// attributes with <c>outputs</c> mapped to the output paths, keys sorted, compact) and <c>.attrs.sh</c> (bash
/// declarations of the attributes that are strings, integers, booleans, null, or flat lists and sets of those).
/// </summary>
public static partial class StructuredAttrs
{
    /// <summary>The two files' contents, from the <c>__json</c> value and the outputs' names and paths.</summary>
    /// <exception cref="FormatException"><c>__json</c> is not a JSON object.</exception>
    public static (string Json, string Shell) Render(string json, IReadOnlyList<(string Name, string Path)> outputs)
    {
        JsonElement root;
        try
        {
            using var document = JsonDocument.Parse(json);
            root = document.RootElement.Clone();
        }
        catch (JsonException e)
        {
            throw new FormatException($"the derivation's __json is not valid JSON: {e.Message}");
        }

        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new FormatException("the derivation's __json is not a JSON object");
        }

        var attributes = new SortedDictionary<string, Value>(StringComparer.Ordinal);
        foreach (var property in root.EnumerateObject())
        {
            attributes[property.Name] = Value.From(property.Value);
        }

        var outputsObject = new SortedDictionary<string, Value>(StringComparer.Ordinal);
        foreach (var (name, path) in outputs)
        {
            outputsObject[name] = new Value(JsonValueKind.String, path, null, null);
        }

        attributes["outputs"] = new Value(JsonValueKind.Object, null, null, outputsObject);
        var top = new Value(JsonValueKind.Object, null, null, attributes);

        var jsonText = new StringBuilder();
        top.Write(jsonText);
        var shell = new StringBuilder();
        foreach (var (key, value) in attributes)
        {
            if (!ShellName().IsMatch(key))
            {
                continue;
            }

            if (value.Simple() is { } simple)
            {
                shell.Append("declare ").Append(key).Append('=').Append(simple).Append('\n');
            }
            else if (value.Kind == JsonValueKind.Array)
            {
                var items = value.Items!.Select(i => i.Simple()).ToList();
                if (items.All(i => i is not null))
                {
                    shell.Append("declare -a ").Append(key).Append("=(").Append(string.Concat(items.Select(i => i + " "))).Append(")\n");
                }
            }
            else if (value.Kind == JsonValueKind.Object)
            {
                var items = value.Members!.Select(m => (m.Key, Simple: m.Value.Simple())).ToList();
                if (items.All(i => i.Simple is not null))
                {
                    shell.Append("declare -A ").Append(key).Append("=(")
                        .Append(string.Concat(items.Select(i => $"[{ShellEscape(i.Key)}]={i.Simple} "))).Append(")\n");
                }
            }
        }

        return (jsonText.ToString(), shell.ToString());
    }

    private static string ShellEscape(string s) => "'" + s.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    [GeneratedRegex("^[A-Za-z_][A-Za-z0-9_]*$")]
    private static partial Regex ShellName();

    private sealed record Value(JsonValueKind Kind, string? Scalar, List<Value>? Items, SortedDictionary<string, Value>? Members)
    {
        public static Value From(JsonElement element) => element.ValueKind switch
        {
            JsonValueKind.Object => new Value(JsonValueKind.Object, null, null, ReadMembers(element)),
            JsonValueKind.Array => new Value(JsonValueKind.Array, null, [.. element.EnumerateArray().Select(From)], null),
            JsonValueKind.String => new Value(JsonValueKind.String, element.GetString(), null, null),
            JsonValueKind.Number => new Value(JsonValueKind.Number, element.GetRawText(), null, null),
            _ => new Value(element.ValueKind, null, null, null),
        };

        private static SortedDictionary<string, Value> ReadMembers(JsonElement element)
        {
            var members = new SortedDictionary<string, Value>(StringComparer.Ordinal);
            foreach (var property in element.EnumerateObject())
            {
                members[property.Name] = From(property.Value);
            }

            return members;
        }

        private bool IsInteger => long.TryParse(Scalar, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out _);

        /// <summary>Nix's shell form of a string, whole number, null or boolean; null for anything else.</summary>
        public string? Simple()
        {
            switch (Kind)
            {
                case JsonValueKind.String:
                    return ShellEscape(Scalar!);
                case JsonValueKind.Number:
                    double d = double.Parse(Scalar!, CultureInfo.InvariantCulture);
                    float f = (float)d;
                    return MathF.Ceiling(f) == f ? unchecked((int)(IsInteger ? long.Parse(Scalar!, CultureInfo.InvariantCulture) : (long)d)).ToString(CultureInfo.InvariantCulture) : null;
                case JsonValueKind.Null:
                    return "''";
                case JsonValueKind.True:
                    return "1";
                case JsonValueKind.False:
                    return "";
                default:
                    return null;
            }
        }

        /// <summary>nlohmann::json's compact dump: keys sorted, no spaces, non-ASCII as is.</summary>
        public void Write(StringBuilder text)
        {
            switch (Kind)
            {
                case JsonValueKind.Object:
                    text.Append('{');
                    bool first = true;
                    foreach (var (key, value) in Members!)
                    {
                        text.Append(first ? "" : ",");
                        first = false;
                        WriteString(text, key);
                        text.Append(':');
                        value.Write(text);
                    }

                    text.Append('}');
                    break;
                case JsonValueKind.Array:
                    text.Append('[');
                    for (int i = 0; i < Items!.Count; i++)
                    {
                        text.Append(i == 0 ? "" : ",");
                        Items[i].Write(text);
                    }

                    text.Append(']');
                    break;
                case JsonValueKind.String:
                    WriteString(text, Scalar!);
                    break;
                case JsonValueKind.Number:
                    text.Append(IsInteger ? Scalar : FormatDouble(double.Parse(Scalar!, CultureInfo.InvariantCulture)));
                    break;
                case JsonValueKind.True:
                    text.Append("true");
                    break;
                case JsonValueKind.False:
                    text.Append("false");
                    break;
                default:
                    text.Append("null");
                    break;
            }
        }

        private static string FormatDouble(double d)
        {
            string s = d.ToString("R", CultureInfo.InvariantCulture);
            return s.Contains('.') || s.Contains('E') ? s.Replace("E", "e", StringComparison.Ordinal) : s + ".0";
        }

        private static void WriteString(StringBuilder text, string s)
        {
            text.Append('"');
            foreach (char c in s)
            {
                switch (c)
                {
                    case '"': text.Append("\\\""); break;
                    case '\\': text.Append("\\\\"); break;
                    case '\b': text.Append("\\b"); break;
                    case '\f': text.Append("\\f"); break;
                    case '\n': text.Append("\\n"); break;
                    case '\r': text.Append("\\r"); break;
                    case '\t': text.Append("\\t"); break;
                    default:
                        if (c < 0x20)
                        {
                            text.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                        }
                        else
                        {
                            text.Append(c);
                        }

                        break;
                }
            }

            text.Append('"');
        }
    }
}
