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
}
