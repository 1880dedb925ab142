using System.Text;
using System.Text.RegularExpressions;

namespace TvixFuseBuild.Tool;

/// <summary>How names and values from outside (file names, arguments, store contents) are shown on a terminal.</summary>
internal static partial class ToolText
{
    /// <summary>Values longer than this are shown by their start and their length.</summary>
    public const int MaxValueLength = 80;

    /// <summary>An unquoted run of characters without a space longer than this is a value, not a path or a word: it is elided.</summary>
    public const int MaxWordLength = 400;

    /// <summary>No error line is longer than this; a longer one is cut (its values should have been elided already).</summary>
    public const int MaxLineLength = 2000;

    /// <summary>
    /// <paramref name="text"/> with control characters (C0, DEL, C1, and the bidirectional overrides that reorder
    /// what a terminal shows) written as escapes: <c>\n</c>, <c>\t</c>, <c>\e</c>, <c>\xNN</c>, <c>\u202E</c>; a
    /// backslash is doubled only when the text has something escaped, so ordinary names stay as they are.
    /// </summary>
    public static string Escape(string text)
    {
        int first = IndexOfUnsafe(text);
        if (first < 0)
        {
            return text;
        }

        var builder = new StringBuilder(text.Length + 16);
        foreach (char c in text)
        {
            switch (c)
            {
                case '\\': builder.Append(@"\\"); break;
                case '\n': builder.Append(@"\n"); break;
                case '\r': builder.Append(@"\r"); break;
                case '\t': builder.Append(@"\t"); break;
                case '\x1b': builder.Append(@"\e"); break;
                case < ' ' or '\x7f' or (>= '\x80' and < '\xa0'): builder.Append($"\\x{(int)c:x2}"); break;
                case var _ when IsUnsafe(c): builder.Append($"\\u{(int)c:X4}"); break;
                default: builder.Append(c); break;
            }
        }

        return builder.ToString();
    }

    /// <summary>
    /// <paramref name="value"/> escaped and, when long, elided: its first <see cref="MaxValueLength"/> characters,
    /// then <c>… (N bytes)</c>.
    /// </summary>
    public static string Elide(string value)
    {
        if (value.Length <= MaxValueLength)
        {
            return Escape(value);
        }

        return $"{Escape(value[..MaxValueLength])}… ({Encoding.UTF8.GetByteCount(value)} bytes)";
    }

    /// <summary><paramref name="value"/> elided and in single quotes, for messages.</summary>
    public static string Quote(string value) => $"'{Elide(value)}'";

    /// <summary>
    /// One line of a message: quoted values longer than <see cref="MaxValueLength"/> and unquoted words longer than
    /// <see cref="MaxWordLength"/> elided, control characters escaped, and at most <see cref="MaxLineLength"/> characters.
    /// </summary>
    public static string Line(string text)
    {
        string elided = LongQuotedValue().Replace(text, m => Quote(m.Groups[1].Value));
        string line = Escape(LongWord().Replace(elided, m => Elide(m.Value)));
        return line.Length <= MaxLineLength ? line : $"{line[..MaxLineLength]}… ({line.Length - MaxLineLength} more characters)";
    }

    private static int IndexOfUnsafe(string text)
    {
        for (int i = 0; i < text.Length; i++)
        {
            if (IsUnsafe(text[i]))
            {
                return i;
            }
        }

        return -1;
    }

    // C0, DEL, C1, and the bidi controls (LRE..RLO, LRI..PDI, LRM, RLM, ALM) that can make a name look like another.
    private static bool IsUnsafe(char c) =>
        c < ' ' || c is '\x7f' or (>= '\x80' and < '\xa0') or (>= '\u202a' and <= '\u202e') or (>= '\u2066' and <= '\u2069')
            or '\u200e' or '\u200f' or '\u061c';

    [GeneratedRegex("'([^'\n]{81,})'")]
    private static partial Regex LongQuotedValue();

    [GeneratedRegex(@"[^\s']{401,}")]
    private static partial Regex LongWord();
}
