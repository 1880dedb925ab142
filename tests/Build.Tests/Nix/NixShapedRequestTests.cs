using TvixFuseBuild.Build.Nix;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Hashing;

namespace TvixFuseBuild.Build.Tests.Nix;

public sealed class NixShapedRequestTests
{
    private static readonly Node Tools = new DirectoryNode(PathComponent.Create("tools"), Blake3.Hash("tools"u8), 1);
    private static readonly Node Script = new FileNode(PathComponent.Create("script"), Blake3.Hash("script"u8), 6, false);

    [Fact]
    public void PathHoldsTheDirectoryInputsBinsAndSlashBinWithABinSh()
    {
        Assert.Equal("/path-not-set", PathOf([("script", Script)], binSh: false));
        Assert.Equal("/bin", PathOf([("script", Script)], binSh: true));

        string tools = PathOf([("tools", Tools), ("script", Script)], binSh: false);
        Assert.Matches(@"^/nix/store/[0-9a-z]{32}-tools/bin$", tools);
        Assert.Equal(tools + ":/bin", PathOf([("tools", Tools), ("script", Script)], binSh: true));
    }

    [Fact]
    public void BinShIsAConstraintAndPartOfTheOutputPaths()
    {
        var without = Create([("tools", Tools)], binSh: false);
        var with = Create([("tools", Tools)], binSh: true);
        Assert.False(without.Spec.Constraints!.ProvideBinSh);
        Assert.True(with.Spec.Constraints!.ProvideBinSh);
        Assert.NotEqual(without.OutputBaseNames, with.OutputBaseNames);
    }

    private static string PathOf((string Name, Node Node)[] inputs, bool binSh) =>
        System.Text.Encoding.UTF8.GetString(Create(inputs, binSh).Spec.EnvironmentVars.Single(e => e.Key == "PATH").Value.Span);

    private static NixShapedRequest Create((string Name, Node Node)[] inputs, bool binSh) =>
        NixShapedRequest.Create("test", inputs, ["out"], ["sh", "-c", "true"], new Dictionary<string, string>(), network: false, binSh);
}
