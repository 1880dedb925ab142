using System.Text.Json;
using System.Xml.Linq;
using TvixFuseBuild.MSBuild.Tests.Support;

namespace TvixFuseBuild.MSBuild.Tests;

[Collection(DotnetBuildCollection.Name)]
public sealed class PackageTests(PackedFeed feed)
{
    [Fact]
    public void PackageHasTheTaskLayoutAndNothingForConsumersToReference()
    {
        using var package = feed.OpenPackage();
        var entries = package.Entries.Select(e => e.FullName).ToHashSet(StringComparer.Ordinal);

        string[] expected =
        [
            "build/TvixFuseBuild.MSBuild.props",
            "build/TvixFuseBuild.MSBuild.targets",
            "tasks/net10.0/TvixFuseBuild.MSBuild.dll",
            "tasks/net10.0/TvixFuseBuild.MSBuild.deps.json",
            "tasks/net10.0/TvixFuseBuild.Castore.dll",
            "tasks/net10.0/TvixFuseBuild.Avx512.dll",
            "tasks/net10.0/TvixFuseBuild.Build.dll",
            "tasks/net10.0/TvixFuseBuild.Fuse.dll",
            "tasks/net10.0/TvixFuseBuild.Sandbox.dll",
            "tasks/net10.0/TvixFuseBuild.Native.dll",
            "tasks/net10.0/TvixFuseBuild.Sandbox.runtimeconfig.json",
            "tasks/net10.0/tvix-sandbox-init",
            "tasks/net10.0/Google.Protobuf.dll",
        ];
        Assert.All(expected, e => Assert.Contains(e, entries));

        // The sandbox init every build starts is the NativeAOT executable, not an assembly.
        using (var init = package.GetEntry("tasks/net10.0/tvix-sandbox-init")!.Open())
        {
            var magic = new byte[4];
            init.ReadExactly(magic);
            Assert.Equal([0x7f, (byte)'E', (byte)'L', (byte)'F'], magic);
        }
        Assert.DoesNotContain(entries, e => e.StartsWith("lib/", StringComparison.Ordinal) || e.StartsWith("ref/", StringComparison.Ordinal));

        // MSBuild's own assemblies come from the MSBuild that loads the task; a second copy would break type identity.
        Assert.DoesNotContain(entries, e => Path.GetFileName(e).StartsWith("Microsoft.Build", StringComparison.Ordinal));

        // The deps.json names every private dependency the task assembly needs.
        using (var deps = JsonDocument.Parse(package.GetEntry("tasks/net10.0/TvixFuseBuild.MSBuild.deps.json")!.Open()))
        {
            string text = deps.RootElement.GetRawText();
            Assert.Contains("Google.Protobuf", text, StringComparison.Ordinal);
            Assert.Contains("TvixFuseBuild.Sandbox", text, StringComparison.Ordinal);
        }

        var nuspec = XDocument.Load(package.Entries.Single(e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal)).Open());
        XNamespace ns = nuspec.Root!.Name.Namespace;
        var metadata = nuspec.Root.Element(ns + "metadata")!;
        Assert.Equal("true", metadata.Element(ns + "developmentDependency")?.Value);
        Assert.Equal(feed.Version, metadata.Element(ns + "version")?.Value);
        Assert.Null(metadata.Element(ns + "dependencies"));
    }

    [Fact]
    public void ConsumerGetsOnlyTheBuildAssets()
    {
        var project = feed.CreateProject("AssetsConsumer", "", ("Program.cs", "System.Console.WriteLine(1);"));
        var restore = Dotnet.Run(project.Directory, feed.BuildEnvironment, ["restore", "-nodeReuse:false", "--disable-build-servers"], TimeSpan.FromMinutes(2));
        Assert.True(restore.ExitCode == 0, restore.ToString());

        using var assets = JsonDocument.Parse(File.ReadAllText(project.PathOf("obj/project.assets.json")));
        var target = assets.RootElement.GetProperty("targets").GetProperty("net10.0");
        var entry = target.GetProperty($"{PackedFeed.PackageId}/{feed.Version}");
        foreach (string kind in new[] { "compile", "runtime" })
        {
            if (entry.TryGetProperty(kind, out var assetsOfKind))
            {
                Assert.All(assetsOfKind.EnumerateObject(), a => Assert.EndsWith("_._", a.Name, StringComparison.Ordinal));
            }
        }

        // Only build/ assets, which by default do not flow to the projects that reference this one either.
        Assert.Equal(
            ["build/TvixFuseBuild.MSBuild.props", "build/TvixFuseBuild.MSBuild.targets"],
            entry.GetProperty("build").EnumerateObject().Select(p => p.Name).Order(StringComparer.Ordinal));
        Assert.False(entry.TryGetProperty("dependencies", out _));
    }
}
