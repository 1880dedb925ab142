namespace TvixFuseBuild.Build.Requests;

/// <summary>
/// Path rules of the build protocol (tvix's <c>is_clean_path</c>): a clean path has no empty, <c>.</c> or <c>..</c>
/// segment and no trailing slash. <c>""</c> is clean and relative; <c>/</c> is clean and absolute.
/// </summary>
public static class CleanPath
{
    public static bool IsClean(ReadOnlySpan<char> path)
    {
        if (path.IsEmpty || path is "/")
        {
            return true;
        }

        if (path[0] == '/')
        {
            path = path[1..];
        }

        foreach (var range in path.Split('/'))
        {
            var segment = path[range];
            if (segment.IsEmpty || segment is "." or "..")
            {
                return false;
            }
        }

        return true;
    }

    public static bool IsCleanRelative(ReadOnlySpan<char> path) => (path.IsEmpty || path[0] != '/') && IsClean(path);

    public static bool IsCleanAbsolute(ReadOnlySpan<char> path) => !path.IsEmpty && path[0] == '/' && IsClean(path);

    /// <summary>
    /// True when clean relative <paramref name="path"/> is <paramref name="directory"/> or lies below it
    /// (segment-wise: <c>a/bc</c> is not under <c>a/b</c>). Every path is under <c>""</c>.
    /// </summary>
    public static bool IsAtOrUnder(string path, string directory) =>
        directory.Length == 0 ||
        (path.StartsWith(directory, StringComparison.Ordinal) && (path.Length == directory.Length || path[directory.Length] == '/'));

    /// <summary>True when <paramref name="path"/> lies strictly below <paramref name="directory"/>.</summary>
    public static bool IsStrictlyUnder(string path, string directory) => path.Length != directory.Length && IsAtOrUnder(path, directory);

    /// <summary>The last segment of a clean path (<c>""</c> for the root).</summary>
    public static string LastSegment(string path) => path[(path.LastIndexOf('/') + 1)..];
}
