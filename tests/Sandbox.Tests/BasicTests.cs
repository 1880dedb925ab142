namespace TvixFuseBuild.Sandbox.Tests;

[Collection("sandbox")]
public sealed class BasicTests
{
    [Fact]
    public async Task RunsAsBuildUser()
    {
        using var tree = new SandboxTree();
        string output = await Run.Ok(tree.Sh($"{SandboxTree.Busybox} id"));
        Assert.Equal("uid=1000 gid=100 groups=100", output.Trim());
    }
}
