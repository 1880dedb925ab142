using System.Xml;
using System.Xml.Linq;
using Microsoft.Build.Framework;

namespace TvixFuseBuild.MSBuild;

/// <summary>
/// Finds where an item was declared, so that an error about a <c>TvixBuildStep</c> or <c>TvixBuildInput</c> points at
/// the user's project rather than at the package's targets. A task sees only the item's defining file
/// (<c>DefiningProjectFullPath</c>); the line is that of the element of the item's type whose <c>Include</c> names it,
/// or of the only such element in the file. An Include built from properties or wildcards may match none: then the
/// file alone.
/// </summary>
internal sealed class ItemLocator
{
    private readonly Dictionary<string, XDocument?> _documents = new(StringComparer.Ordinal);

    /// <param name="occurrence">Which of several elements naming the item (0: the first), for an item declared twice.</param>
    public ErrorLocation? Find(ITaskItem item, string itemType, int occurrence = 0)
    {
        string file = item.GetMetadata("DefiningProjectFullPath");
        if (file.Length == 0)
        {
            return null;
        }

        if (Load(file) is not { } document)
        {
            return new ErrorLocation(file, 0, 0);
        }

        var elements = document.Descendants().Where(e => e.Name.LocalName == itemType && e.Attribute("Include") is not null).ToList();
        var naming = elements.Where(e => Names(e, item.ItemSpec)).ToList();
        var element = naming.Count > 0 ? naming[Math.Min(occurrence, naming.Count - 1)] : elements.Count == 1 ? elements[0] : null;
        if (element is not IXmlLineInfo { LineNumber: > 0 } line)
        {
            return new ErrorLocation(file, 0, 0);
        }

        // XML reports the column of the name; MSBuild that of the '<'.
        return new ErrorLocation(file, line.LineNumber, Math.Max(1, line.LinePosition - 1));
    }

    private static bool Names(XElement element, string itemSpec)
    {
        string include = element.Attribute("Include")!.Value;
        return include.Split(';', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
            .Any(part => string.Equals(MSBuildEscaping.Unescape(part), itemSpec, StringComparison.Ordinal) ||
                         string.Equals(Path.TrimEndingDirectorySeparator(MSBuildEscaping.Unescape(part)), Path.TrimEndingDirectorySeparator(itemSpec), StringComparison.Ordinal));
    }

    private XDocument? Load(string file)
    {
        if (!_documents.TryGetValue(file, out var document))
        {
            try
            {
                document = XDocument.Load(file, LoadOptions.SetLineInfo);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or XmlException)
            {
                document = null;
            }

            _documents[file] = document;
        }

        return document;
    }
}
