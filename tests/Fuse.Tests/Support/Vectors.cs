using System.Text.Json;

namespace TvixFuseBuild.Fuse.Tests.Support;

/// <summary>Loads the shared test vectors copied next to the test assembly; a missing file fails the test.</summary>
internal static class Vectors
{
    public static JsonElement Load(string name)
    {
        string path = Path.Combine(AppContext.BaseDirectory, "vectors", name);
        Assert.True(File.Exists(path), $"test vector file {path} is missing");
        using var stream = File.OpenRead(path);
        return JsonDocument.Parse(stream).RootElement.Clone();
    }
}
