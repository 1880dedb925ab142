using System.Text;
using Google.Protobuf;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Castore;
using SnixBuild = Snix.Build.V1;
using TvixBuild = Tvix.Build.V1;
using TvixCastore = Tvix.Castore.V1;

namespace TvixFuseBuild.Build.Tests.Requests;

public sealed class RequestModelTests
{
    [Fact]
    public void ModelInputsMustBeNamedAndStrictlyAscending()
    {
        var unnamed = TestSpecs.Nix with { Inputs = [new DirectoryNode(PathComponent.Empty, TestSpecs.SomeDigest, 0)] };
        var error = BuildRequestValidator.Validate(unnamed, BuildProtocol.Tvix);
        Assert.Equal(BuildRequestErrorKind.InvalidInputNode, error?.Kind);
        Assert.StartsWith("invalid input node at position 0: ", error!.Message);

        var unsorted = TestSpecs.Nix with { Inputs = [TestSpecs.Nix.Inputs[1], TestSpecs.Nix.Inputs[0]] };
        Assert.Equal(new BuildRequestError(BuildRequestErrorKind.InputNodesNotSorted, "input nodes are not sorted by name"), BuildRequestValidator.Validate(unsorted, BuildProtocol.Tvix));

        var duplicate = TestSpecs.Nix with { Inputs = [TestSpecs.Nix.Inputs[0], TestSpecs.Nix.Inputs[0]] };
        Assert.Equal(BuildRequestErrorKind.InputNodesNotSorted, BuildRequestValidator.Validate(duplicate, BuildProtocol.Tvix)?.Kind);
    }

    [Fact]
    public void InputsAreCheckedOneAtATimeAsTvixDoes()
    {
        // Node 1 is out of order before node 2 is even looked at.
        var request = new TvixBuild.BuildRequest();
        request.Inputs.Add(File("b"));
        request.Inputs.Add(File("a"));
        request.Inputs.Add(new TvixCastore.Node());
        Assert.Equal(BuildRequestErrorKind.InputNodesNotSorted, Assert.Throws<BuildRequestValidationException>(() => BuildSpec.FromTvix(request)).Kind);

        // An invalid node comes first when it is reached first, and names its position.
        request.Inputs.RemoveAt(1);
        var e = Assert.Throws<BuildRequestValidationException>(() => BuildSpec.FromTvix(request));
        Assert.Equal(BuildRequestErrorKind.InvalidInputNode, e.Kind);
        Assert.Equal("invalid input node at position 1: no node set", e.Message);

        // The inputs step comes before every later one.
        request.Inputs.RemoveAt(1);
        request.Inputs.Add(File("a\0b"));
        request.WorkingDir = "/absolute";
        e = Assert.Throws<BuildRequestValidationException>(() => BuildSpec.FromTvix(request));
        Assert.StartsWith("invalid input node at position 1: invalid name", e.Message);
    }

    [Theory]
    [InlineData("A\0B", "x")]
    [InlineData("A", "x\0y")]
    public void SnixRefusesNulInTheEnvironmentTvixDoesNot(string key, string value)
    {
        var spec = TestSpecs.Nix with { EnvironmentVars = [new EnvironmentVariable("0", "ok"), new EnvironmentVariable(key, value)] };
        Assert.Null(BuildRequestValidator.Validate(spec, BuildProtocol.Tvix));
        Assert.Equal(
            new BuildRequestError(BuildRequestErrorKind.InvalidEnvVar, "invalid environment variable at position 1"),
            BuildRequestValidator.Validate(spec, BuildProtocol.Snix));

        var e = Assert.Throws<BuildRequestValidationException>(() => BuildSpec.FromSnix(spec.ToSnix()));
        Assert.Equal(BuildRequestErrorKind.InvalidEnvVar, e.Kind);
        Assert.Equal(spec, BuildSpec.FromTvix(spec.ToTvix()));

        // Valid for tvix, but no process can be given such a variable.
        var runnable = BuildRequestValidator.CheckRunnable(spec);
        Assert.Equal(BuildRequestErrorKind.NulByte, runnable?.Kind);
        Assert.Contains("environment variable at position 1", runnable!.Message);
    }

    [Fact]
    public void OrderIsBytewiseOnUtf8NotUtf16()
    {
        // U+FF61 is EF BD A1 in UTF-8; U+1F600 is F0 9F 98 80 (UTF-16 D83D DE00 sorts before FF61 instead).
        string halfwidth = "\uFF61", emoji = char.ConvertFromUtf32(0x1F600);
        Assert.True(BuildRequestValidator.CompareUtf8(halfwidth, emoji) < 0);
        Assert.True(string.CompareOrdinal(halfwidth, emoji) > 0);
        var sorted = TestSpecs.Nix with { EnvironmentVars = [new EnvironmentVariable(halfwidth, ""), new EnvironmentVariable(emoji, "")] };
        Assert.Null(BuildRequestValidator.Validate(sorted, BuildProtocol.Tvix));
        var unsorted = sorted with { EnvironmentVars = [.. sorted.EnvironmentVars.Reverse()] };
        Assert.Equal(BuildRequestErrorKind.EnvVarNotSorted, BuildRequestValidator.Validate(unsorted, BuildProtocol.Tvix)?.Kind);
        Assert.Equal(0, BuildRequestValidator.CompareUtf8("abc", "abc"));
        Assert.True(BuildRequestValidator.CompareUtf8("ab", "abc") < 0);
        Assert.True(BuildRequestValidator.CompareUtf8("B", "a") < 0);
    }

    [Fact]
    public void ConversionsRoundTripEveryField()
    {
        var spec = TestSpecs.Nix with
        {
            Constraints = new BuildConstraints("x86_64-linux", 1 << 30, ["/dev/fuse", "/dev/kvm"], NetworkAccess: true, ProvideBinSh: true),
            AdditionalFiles = [new AdditionalFile("build/.attrs.json", new byte[] { 0, 1, 2, 255 })],
            EnvironmentVars = [new EnvironmentVariable("bin", new byte[] { 0xff, 0xfe })],
        };
        Assert.Null(BuildRequestValidator.Validate(spec, BuildProtocol.Tvix));
        var tvix = spec.ToTvix();
        Assert.Equal(spec, BuildSpec.FromTvix(tvix));
        Assert.Equal(spec, BuildSpec.FromSnix(spec.ToSnix()));
        Assert.Equal(tvix.ToByteArray(), spec.ToSnix().ToByteArray());
        Assert.Equal("x86_64-linux", tvix.Constraints.System);
        Assert.Equal(new byte[] { 0xff, 0xfe }, tvix.EnvironmentVars[0].Value.ToByteArray());
        Assert.Equal(TvixCastore.Node.NodeOneofCase.Symlink, tvix.Inputs[2].NodeCase);
        Assert.Equal(Encoding.UTF8.GetBytes(spec.RefscanNeedles[0]), spec.GetRefscanNeedleBytes()[0]);
        Assert.NotNull(spec.FindInput("bbbb-builder.sh"u8));
        Assert.Null(spec.FindInput("bbbb"u8));
    }

    [Fact]
    public void TheCanonicalEncodingIsTheProtobufEncodingInFieldOrder()
    {
        var spec = new BuildSpec
        {
            CommandArgs = ["sh"],
            WorkingDir = "b",
            Outputs = ["o"],
            EnvironmentVars = [new EnvironmentVariable("K", "v")],
            Constraints = new BuildConstraints("s"),
            RefscanNeedles = ["n"],
        };
        byte[] expected =
        [
            0x12, 2, (byte)'s', (byte)'h', // 2 command_args
            0x1a, 1, (byte)'b', // 3 working_dir
            0x32, 1, (byte)'o', // 6 outputs
            0x3a, 6, 0x0a, 1, (byte)'K', 0x12, 1, (byte)'v', // 7 environment_vars
            0x42, 3, 0x0a, 1, (byte)'s', // 8 constraints
            0x52, 1, (byte)'n', // 10 refscan_needles
        ];
        Assert.Equal(expected, spec.GetCanonicalEncoding());
        Assert.Equal(TvixFuseBuild.Castore.Hashing.Blake3.Hash(expected), spec.ComputeDigest());
    }

    [Fact]
    public void TheDigestIgnoresProtocolAndFormatButNoField()
    {
        var spec = TestSpecs.Nix;
        var digest = spec.ComputeDigest();
        foreach (var protocol in new[] { BuildProtocol.Tvix, BuildProtocol.Snix })
        {
            foreach (var format in new[] { MessageFormat.Json, MessageFormat.Binary })
            {
                Assert.Equal(digest, BuildMessages.ParseRequest(BuildMessages.FormatRequest(spec, protocol, format), protocol).ComputeDigest());
            }
        }

        // JSON field order and spelling do not matter.
        string reordered = """{"refscan_needles": ["n"], "commandArgs": ["sh"]}""";
        string ordered = """{"commandArgs": ["sh"], "refscanNeedles": ["n"]}""";
        Assert.Equal(
            BuildMessages.ParseRequest(Encoding.UTF8.GetBytes(ordered), BuildProtocol.Tvix).ComputeDigest(),
            BuildMessages.ParseRequest(Encoding.UTF8.GetBytes(reordered), BuildProtocol.Tvix).ComputeDigest());

        BuildSpec[] variants =
        [
            spec with { RefscanNeedles = [.. spec.RefscanNeedles, "x"] },
            spec with { Constraints = new BuildConstraints("x86_64-linux") },
            spec with { CommandArgs = [.. spec.CommandArgs, ""] },
            spec with { EnvironmentVars = [new EnvironmentVariable("HOME", "/homeless-shelter")] },
            spec with { Inputs = [spec.Inputs[0]] },
            spec with { WorkingDir = "" },
        ];
        Assert.Equal(variants.Length + 1, variants.Select(v => v.ComputeDigest()).Append(digest).Distinct().Count());
    }

    [Fact]
    public void TheDigestMatchesB3sumOfTheEncoding()
    {
        string file = Path.Combine(Path.GetTempPath(), $"tvix-fuse-build-test-{Guid.NewGuid():N}.bin");
        try
        {
            System.IO.File.WriteAllBytes(file, TestSpecs.Nix.GetCanonicalEncoding());
            var psi = new System.Diagnostics.ProcessStartInfo("b3sum", ["--no-names", file]) { RedirectStandardOutput = true };
            using var b3sum = System.Diagnostics.Process.Start(psi)!;
            string hex = b3sum.StandardOutput.ReadToEnd().Trim();
            b3sum.WaitForExit();
            Assert.Equal(0, b3sum.ExitCode);
            Assert.Equal(hex, TestSpecs.Nix.ComputeDigest().ToHex());
        }
        finally
        {
            System.IO.File.Delete(file);
        }
    }

    private static TvixCastore.Node File(string name) => new()
    {
        File = new TvixCastore.FileNode { Name = ByteString.CopyFromUtf8(name), Digest = ByteString.CopyFrom(TestSpecs.SomeDigest.ToArray()) },
    };
}
