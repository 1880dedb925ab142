using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace TvixFuseBuild.Build.Tests.Requests;

/// <summary>The cases of <c>vectors/buildrequest.json</c>, each turned into a protobuf JSON request.</summary>
internal static class RequestVectors
{
    public sealed record Case(string Name, string ProtoJson, bool Valid, string? Error, string? Message)
    {
        public override string ToString() => Name;
    }

    public static IReadOnlyList<Case> All()
    {
        var root = Vectors.Load("buildrequest.json");
        var cases = new List<Case>();
        foreach (var c in root.GetProperty("cases").EnumerateArray())
        {
            var request = JsonNode.Parse(root.GetProperty("base").GetRawText())!.AsObject();
            foreach (var change in c.GetProperty("change").EnumerateObject())
            {
                request[change.Name] = JsonNode.Parse(change.Value.GetRawText());
            }

            cases.Add(new Case(
                c.GetProperty("case").GetString()!,
                ToProtoJson(request).ToJsonString(),
                c.GetProperty("valid").GetBoolean(),
                c.TryGetProperty("error", out var e) ? e.GetString() : null,
                c.TryGetProperty("message", out var m) ? m.GetString() : null));
        }

        Assert.True(cases.Count >= 27, "buildrequest.json has fewer cases than expected");
        return cases;
    }

    public static IEnumerable<object[]> Data() => All().Select(c => new object[] { c.Name });

    public static Case Get(string name) => All().Single(c => c.Name == name);

    /// <summary>Vector notation to the proto3 JSON mapping: <c>*_hex</c> and UTF-8 bytes fields become base64.</summary>
    private static JsonObject ToProtoJson(JsonObject request)
    {
        var result = new JsonObject();
        foreach (var (key, value) in request)
        {
            result[key] = key switch
            {
                "inputs" => new JsonArray([.. value!.AsArray().Select(n => (JsonNode)ConvertNode(n!.AsObject()))]),
                "environment_vars" => new JsonArray([.. value!.AsArray().Select(e => (JsonNode)new JsonObject
                {
                    ["key"] = e!["key"]!.GetValue<string>(),
                    ["value"] = B64(e["value"]!.GetValue<string>()),
                })]),
                "additional_files" => new JsonArray([.. value!.AsArray().Select(f => (JsonNode)new JsonObject
                {
                    ["path"] = f!["path"]!.GetValue<string>(),
                    ["contents"] = B64(f["contents"]!.GetValue<string>()),
                })]),
                _ => value?.DeepClone(),
            };
        }

        return result;
    }

    private static JsonObject ConvertNode(JsonObject node)
    {
        var result = new JsonObject();
        foreach (var (kind, body) in node)
        {
            var converted = new JsonObject();
            foreach (var (field, v) in body!.AsObject())
            {
                switch (field)
                {
                    case "name" or "target":
                        converted[field] = B64(v!.GetValue<string>());
                        break;
                    case "digest_hex":
                        converted["digest"] = Convert.ToBase64String(Convert.FromHexString(v!.GetValue<string>()));
                        break;
                    default:
                        converted[field] = v?.DeepClone();
                        break;
                }
            }

            result[kind] = converted;
        }

        return result;
    }

    private static string B64(string utf8) => Convert.ToBase64String(Encoding.UTF8.GetBytes(utf8));
}
