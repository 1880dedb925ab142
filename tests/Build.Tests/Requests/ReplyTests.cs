using System.Text;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Castore;

namespace TvixFuseBuild.Build.Tests.Requests;

public sealed class ReplyTests
{
    private static readonly BuildSpec Request = TestSpecs.Nix with
    {
        Outputs = ["nix/store/aaaa-dev", "nix/store/zzzz-out"],
        RefscanNeedles = ["aaaa", "zzzz", "busybox"],
    };

    private static readonly BuildResult Result = new(
    [
        new BuildOutput(new SymlinkNode(PathComponent.Empty, SymlinkTarget.Create("zzzz-out")), [1]),
        new BuildOutput(new DirectoryNode("ignored-name", TestSpecs.SomeDigest, 4), [0, 2]),
    ]);

    [Fact]
    public void TvixBuildEchoesTheRequestAndNamesOutputsByTheirLastComponent()
    {
        var build = Result.ToTvixBuild(Request);
        Assert.Equal(Request.ToTvix(), build.BuildRequest);
        Assert.Equal(2, build.Outputs.Count);
        Assert.Equal("aaaa-dev", build.Outputs[0].Symlink.Name.ToStringUtf8());
        Assert.Equal("zzzz-out", build.Outputs[1].Directory.Name.ToStringUtf8());
        Assert.Equal(4ul, build.Outputs[1].Directory.Size);
        Assert.Equal([1ul], build.OutputsNeedles[0].Needles);
        Assert.Equal([0ul, 2ul], build.OutputsNeedles[1].Needles);
        Assert.Equal(Result, BuildResult.FromTvixBuild(build));
    }

    [Fact]
    public void SnixResponseHasAnonymousOutputsInRequestOrder()
    {
        var response = Result.ToSnixResponse(Request);
        Assert.Equal(2, response.Outputs.Count);
        Assert.True(response.Outputs[0].Output_.Symlink.Name.IsEmpty);
        Assert.Equal("zzzz-out", response.Outputs[0].Output_.Symlink.Target.ToStringUtf8());
        Assert.True(response.Outputs[1].Output_.Directory.Name.IsEmpty);
        Assert.Equal([0ul, 2ul], response.Outputs[1].Needles);
        Assert.Equal(Result, BuildResult.FromSnixResponse(response));
    }

    [Theory]
    [InlineData(BuildProtocol.Tvix, MessageFormat.Json)]
    [InlineData(BuildProtocol.Tvix, MessageFormat.Binary)]
    [InlineData(BuildProtocol.Snix, MessageFormat.Json)]
    [InlineData(BuildProtocol.Snix, MessageFormat.Binary)]
    public void RepliesRoundTripInBothFormats(BuildProtocol protocol, MessageFormat format)
    {
        byte[] bytes = BuildMessages.FormatReply(Request, Result, protocol, format);
        Assert.Equal(format, BuildMessages.DetectFormat(bytes));
        Assert.Equal(Result, BuildMessages.ParseReply(bytes, protocol, out var echoed));
        Assert.Equal(protocol == BuildProtocol.Tvix ? Request : null, echoed);
    }

    [Fact]
    public void JsonRepliesUseTheStandardMapping()
    {
        string tvix = Encoding.UTF8.GetString(BuildMessages.FormatReply(Request, Result, BuildProtocol.Tvix, MessageFormat.Json));
        Assert.Contains("\"outputsNeedles\": [", tvix);
        Assert.Contains("\"buildRequest\": {", tvix);
        Assert.Contains($"\"name\": \"{Convert.ToBase64String("zzzz-out"u8)}\"", tvix);
        Assert.Contains("\"2\"", tvix); // uint64 values are strings in proto3 JSON
        Assert.EndsWith("}\n", tvix);

        string snix = Encoding.UTF8.GetString(BuildMessages.FormatReply(Request, Result, BuildProtocol.Snix, MessageFormat.Json));
        Assert.Contains("\"outputs\": [", snix);
        Assert.DoesNotContain("\"name\"", snix);
    }

    [Fact]
    public void AResultThatDoesNotFitTheRequestIsAProgrammingError()
    {
        Assert.Throws<ArgumentException>(() => new BuildResult([Result.Outputs[0]]).ToTvixBuild(Request));
        Assert.Throws<ArgumentException>(() => (Result with { Outputs = [Result.Outputs[0], Result.Outputs[1] with { Needles = [3] }] }).ToSnixResponse(Request));
        Assert.Throws<ArgumentException>(() => (Result with { Outputs = [Result.Outputs[0], Result.Outputs[1] with { Needles = [2, 0] }] }).ToTvixBuild(Request));
    }

    [Fact]
    public void InconsistentRepliesAreRefused()
    {
        var build = Result.ToTvixBuild(Request);
        build.OutputsNeedles.RemoveAt(1);
        Assert.Contains("2 outputs but 1 outputs_needles", Assert.Throws<BuildMessageFormatException>(() => BuildResult.FromTvixBuild(build)).Message);

        var response = Result.ToSnixResponse(Request);
        response.Outputs[1].Needles.Clear();
        response.Outputs[1].Needles.Add([2, 1]);
        Assert.Contains("outputs[1].needles", Assert.Throws<BuildMessageFormatException>(() => BuildResult.FromSnixResponse(response)).Message);
    }
}
