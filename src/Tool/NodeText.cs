using Google.Protobuf;
using TvixFuseBuild.Castore;
using TvixV1 = Tvix.Castore.V1;

namespace TvixFuseBuild.Tool;

/// <summary>How nodes are printed: a tab-separated line for people and scripts, or the protobuf JSON form.</summary>
internal static class NodeText
{
    private static readonly JsonFormatter Json = new(JsonFormatter.Settings.Default);

    /// <summary>
    /// <c>NAME KIND DIGEST SIZE</c> (tab-separated); a symlink shows <c>-> TARGET</c> in place of digest and size. Names
    /// and targets have their control characters escaped (<see cref="ToolText.Escape"/>): the JSON form is the exact one.
    /// </summary>
    public static string Line(Node node) => node switch
    {
        DirectoryNode d => $"{Name(node)}\tdirectory\t{d.Digest}\t{d.Size}",
        FileNode f => $"{Name(node)}\t{f.KindDisplay}\t{f.Digest}\t{f.Size}",
        SymlinkNode s => $"{Name(node)}\tsymlink\t-> {ToolText.Escape(s.Target.ToString())}",
        _ => throw new ArgumentOutOfRangeException(nameof(node)),
    };

    public static string Name(Node node) => node.Name.IsEmpty ? "(anonymous)" : ToolText.Escape(node.Name.ToString());

    /// <summary>
    /// For people: <c>directory DIGEST, castore size N</c> (the size tvix records: twice the entries plus the
    /// subdirectories' sizes), <c>file DIGEST, 1.2 MiB</c>, <c>symlink -> TARGET</c>.
    /// </summary>
    public static string Summary(Node node) => node switch
    {
        DirectoryNode d => $"directory {d.Digest}, castore size {d.Size}",
        FileNode f => $"{f.KindDisplay} {f.Digest}, {ProgressDisplay.Bytes(f.Size)}",
        SymlinkNode s => $"symlink -> {ToolText.Elide(s.Target.ToString())}",
        _ => throw new ArgumentOutOfRangeException(nameof(node)),
    };

    /// <summary>A JSON array of tvix.castore.v1.Node objects (proto3 JSON mapping: bytes base64, uint64 as strings).</summary>
    public static string JsonArray(IEnumerable<Node> nodes) =>
        "[" + string.Join(",\n ", nodes.Select(n => Json.Format(n.ToTvixProto()))) + "]";

    /// <summary>Reads what <see cref="JsonArray"/> writes (also a single object), validating every node.</summary>
    public static IReadOnlyList<Node> ParseJson(string json, string source)
    {
        using var document = ParseDocument(json, source);
        var root = document.RootElement;
        var elements = root.ValueKind == System.Text.Json.JsonValueKind.Array ? root.EnumerateArray().ToList() : [root];
        var nodes = new List<Node>();
        for (int i = 0; i < elements.Count; i++)
        {
            try
            {
                var proto = JsonParser.Default.Parse<TvixV1.Node>(elements[i].GetRawText());
                nodes.Add(proto.ToModel());
            }
            catch (Exception e) when (e is InvalidProtocolBufferException or InvalidJsonException or CastoreException or FormatException)
            {
                throw new UsageException($"{source}: node {i}: {e.Message}");
            }
        }

        return nodes;
    }

    private static System.Text.Json.JsonDocument ParseDocument(string json, string source)
    {
        try
        {
            return System.Text.Json.JsonDocument.Parse(json);
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new UsageException($"{source}: not JSON: {e.Message}");
        }
    }
}
