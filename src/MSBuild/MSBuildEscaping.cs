using System.Buffers;
using System.Text;

namespace TvixFuseBuild.MSBuild;

/// <summary>MSBuild's escaping of item specs and metadata values (<c>%XX</c> for the characters MSBuild gives meaning to).</summary>
internal static class MSBuildEscaping
{
    private static readonly SearchValues<char> Special = SearchValues.Create("%*?@$();'");

    public static string Escape(string text)
    {
        if (text.AsSpan().IndexOfAny(Special) < 0)
        {
            return text;
        }

        var escaped = new StringBuilder(text.Length + 8);
        foreach (char c in text)
        {
            if (Special.Contains(c))
            {
                escaped.Append('%').Append(((int)c).ToString("X2", System.Globalization.CultureInfo.InvariantCulture));
            }
            else
            {
                escaped.Append(c);
            }
        }

        return escaped.ToString();
    }

    /// <summary>Decodes the <c>%XX</c> sequences, as MSBuild does for an item's Include.</summary>
    public static string Unescape(string text)
    {
        int percent = text.IndexOf('%');
        if (percent < 0)
        {
            return text;
        }

        var unescaped = new StringBuilder(text.Length);
        unescaped.Append(text, 0, percent);
        for (int i = percent; i < text.Length; i++)
        {
            if (text[i] == '%' && i + 2 < text.Length && Uri.IsHexDigit(text[i + 1]) && Uri.IsHexDigit(text[i + 2]))
            {
                unescaped.Append((char)Convert.ToInt32(text.Substring(i + 1, 2), 16));
                i += 2;
            }
            else
            {
                unescaped.Append(text[i]);
            }
        }

        return unescaped.ToString();
    }
}
