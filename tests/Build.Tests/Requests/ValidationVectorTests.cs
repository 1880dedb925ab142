using System.Text;
using Google.Protobuf;
using TvixFuseBuild.Build.Requests;
using SnixBuild = Snix.Build.V1;
using TvixBuild = Tvix.Build.V1;

namespace TvixFuseBuild.Build.Tests.Requests;

public sealed class ValidationVectorTests
{
    public static IEnumerable<object[]> Cases => RequestVectors.Data();

    [Theory]
    [MemberData(nameof(Cases))]
    public void TvixJson(string name) => Check(RequestVectors.Get(name), BuildProtocol.Tvix, MessageFormat.Json);

    [Theory]
    [MemberData(nameof(Cases))]
    public void TvixBinary(string name) => Check(RequestVectors.Get(name), BuildProtocol.Tvix, MessageFormat.Binary);

    // Every case applies to snix too: it differs only in refusing NUL in the environment, which no case has.
    [Theory]
    [MemberData(nameof(Cases))]
    public void SnixJson(string name) => Check(RequestVectors.Get(name), BuildProtocol.Snix, MessageFormat.Json);

    [Theory]
    [MemberData(nameof(Cases))]
    public void SnixBinary(string name) => Check(RequestVectors.Get(name), BuildProtocol.Snix, MessageFormat.Binary);

    [Theory]
    [MemberData(nameof(Cases))]
    public void MessageObjects(string name)
    {
        var c = RequestVectors.Get(name);
        var tvix = JsonParser.Default.Parse<TvixBuild.BuildRequest>(c.ProtoJson);
        var snix = JsonParser.Default.Parse<SnixBuild.BuildRequest>(c.ProtoJson);
        AssertOutcome(c, () => BuildSpec.FromTvix(tvix));
        AssertOutcome(c, () => BuildSpec.FromSnix(snix));
    }

    [Fact]
    public void TheVectorsCoverEveryTvixErrorKind()
    {
        var kinds = RequestVectors.All().Where(c => !c.Valid).Select(c => Enum.Parse<BuildRequestErrorKind>(c.Error!)).ToHashSet();
        var tvixKinds = Enum.GetValues<BuildRequestErrorKind>().Where(k => new BuildRequestValidationException(k, "").IsProtocolError);
        Assert.Equal(tvixKinds.Except([BuildRequestErrorKind.InvalidScratchPath, BuildRequestErrorKind.InvalidInputsDir]).Count(), kinds.Count(k => k is not (BuildRequestErrorKind.InvalidScratchPath or BuildRequestErrorKind.InvalidInputsDir)));
        Assert.Contains(BuildRequestErrorKind.InvalidScratchPath, kinds);
        Assert.Contains(BuildRequestErrorKind.InvalidInputsDir, kinds);
    }

    private static void Check(RequestVectors.Case c, BuildProtocol protocol, MessageFormat format)
    {
        byte[] data = format == MessageFormat.Json
            ? Encoding.UTF8.GetBytes(c.ProtoJson)
            : (protocol == BuildProtocol.Tvix
                ? JsonParser.Default.Parse<TvixBuild.BuildRequest>(c.ProtoJson).ToByteArray()
                : JsonParser.Default.Parse<SnixBuild.BuildRequest>(c.ProtoJson).ToByteArray());
        Assert.Equal(format, BuildMessages.DetectFormat(data));
        var spec = AssertOutcome(c, () => BuildMessages.ParseRequest(data, protocol, format: null));
        if (spec is not null)
        {
            // A valid vector survives a round trip through either protocol and format unchanged.
            foreach (var p in new[] { BuildProtocol.Tvix, BuildProtocol.Snix })
            {
                foreach (var f in new[] { MessageFormat.Json, MessageFormat.Binary })
                {
                    Assert.Equal(spec, BuildMessages.ParseRequest(BuildMessages.FormatRequest(spec, p, f), p, f));
                }
            }

            Assert.Null(BuildRequestValidator.Validate(spec, protocol));
            // Our runnability check on top: this vector replaces the scratch paths with ["build", "build"], so its
            // output under nix/store has nowhere writable to be made; every other valid vector can run.
            var runnable = BuildRequestValidator.CheckRunnable(spec);
            if (c.Name == "duplicate scratch paths are allowed")
            {
                Assert.Equal(BuildRequestErrorKind.UnproducibleOutput, runnable?.Kind);
            }
            else
            {
                Assert.Null(runnable);
            }
        }
    }

    private static BuildSpec? AssertOutcome(RequestVectors.Case c, Func<BuildSpec> parse)
    {
        if (c.Valid)
        {
            return parse();
        }

        var e = Assert.Throws<BuildRequestValidationException>(() => parse());
        Assert.Equal(c.Error, e.Kind.ToString());
        Assert.True(e.IsProtocolError);
        if (e.Kind == BuildRequestErrorKind.InvalidInputNode)
        {
            // A nested error: tvix appends the node's own error after the vector's prefix.
            Assert.StartsWith(c.Message + ": ", e.Message);
        }
        else
        {
            Assert.Equal(c.Message, e.Message);
        }

        return null;
    }
}
