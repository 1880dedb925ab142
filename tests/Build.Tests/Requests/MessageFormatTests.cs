using System.Text;
using Google.Protobuf;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Castore;
using TvixBuild = Tvix.Build.V1;

namespace TvixFuseBuild.Build.Tests.Requests;

public sealed class MessageFormatTests
{
    [Theory]
    [InlineData("{}", MessageFormat.Json)]
    [InlineData(" \r\n\t{\"commandArgs\": [\"sh\"]}\n", MessageFormat.Json)]
    [InlineData("", MessageFormat.Binary)]
    [InlineData("[1]", MessageFormat.Json)]
    [InlineData("null", MessageFormat.Json)]
    [InlineData("\"x\"", MessageFormat.Json)]
    [InlineData("x", MessageFormat.Binary)]
    public void DetectsJsonByItsFirstByte(string text, MessageFormat expected) =>
        Assert.Equal(expected, BuildMessages.DetectFormat(Encoding.UTF8.GetBytes(text)));

    [Fact]
    public void BinaryThatLooksLikeJsonAtFirstIsBinary()
    {
        // inputs[0] encoded in 123 (0x7b, '{') bytes: the encoding starts "\n{", yet holds tag bytes below 0x20.
        var spec = TestSpecs.Nix with { Inputs = [new DirectoryNode(new string('n', 83), TestSpecs.SomeDigest, 1)] };
        byte[] binary = BuildMessages.FormatRequest(spec, BuildProtocol.Tvix, MessageFormat.Binary);
        Assert.Equal(new byte[] { 0x0a, (byte)'{' }, binary[..2]);
        Assert.Equal(MessageFormat.Binary, BuildMessages.DetectFormat(binary));
        Assert.Equal(spec, BuildMessages.ParseRequest(binary, BuildProtocol.Tvix));
    }

    [Fact]
    public void JsonAcceptsProtoAndJsonFieldNamesAndBase64Bytes()
    {
        string json = """
            {
              "inputs": [{"file": {"name": "YQ==", "digest": "rxNJufX5oaagQE3qNtzJSZvLJcmtwRK3zJqTyuQfMmI=", "size": "3", "executable": true}}],
              "command_args": ["sh"],
              "workingDir": "build",
              "scratch_paths": ["build"],
              "environmentVars": [{"key": "K", "value": "AP8="}],
              "constraints": {"system": "x86_64-linux", "minMemory": 1024, "available_ro_paths": ["/dev/kvm"]},
              "additionalFiles": [{"path": "build/x", "contents": "aGk="}]
            }
            """;
        var spec = BuildMessages.ParseRequest(Encoding.UTF8.GetBytes(json), BuildProtocol.Tvix);
        var file = Assert.IsType<FileNode>(Assert.Single(spec.Inputs));
        Assert.Equal("a", file.Name.ToString());
        Assert.True(file.Executable);
        Assert.Equal(3ul, file.Size);
        Assert.Equal(new byte[] { 0, 255 }, spec.EnvironmentVars[0].Value.ToArray());
        Assert.Equal(1024ul, spec.Constraints!.MinMemory);
        Assert.Equal("hi", Encoding.UTF8.GetString(spec.AdditionalFiles[0].Contents.Span));
    }

    [Theory]
    [InlineData("{\"commandArgs\": [\"a\",]}", "request: malformed JSON tvix.build.v1.BuildRequest at line 1, column ")]
    [InlineData("{\n  \"commandArgs\": [\"a\"]\n} trailing", "at line 3, column 3")]
    [InlineData("[1]", "request: malformed JSON tvix.build.v1.BuildRequest: expected a JSON object, found an array")]
    [InlineData("{\"comandArgs\": [\"a\"]}", "BuildRequest.comandArgs: no such field in tvix.build.v1.BuildRequest")]
    [InlineData("{\"commandArgs\": \"sh\"}", "BuildRequest.commandArgs: expected an array (the field is repeated), found a string")]
    [InlineData("{\"commandArgs\": [\"sh\", 5]}", "BuildRequest.commandArgs[1]: ")]
    [InlineData("{\"inputs\": [{\"directory\": {\"name\": \"YQ==\", \"digest\": \"not base64!\"}}]}", "BuildRequest.inputs[0].directory.digest: invalid base64 \"not base64!\": bytes are written in standard base64")]
    [InlineData("{\"inputs\": [{\"directory\": {\"name\": \"YQ==\"}, \"file\": {\"name\": \"YQ==\"}}]}", "BuildRequest.inputs[0]: both \"directory\" and \"file\" are given, but they belong to the oneof node, which takes one of them")]
    [InlineData("{\"constraints\": {\"minMemory\": -1}}", "BuildRequest.constraints.minMemory: -1 is out of range for a uint64")]
    [InlineData("{\"constraints\": {\"minMemory\": 18446744073709551615}}", "BuildRequest.constraints.minMemory: 18446744073709551615 is out of range for a uint64 as a JSON number, which is read as a double and rounded; write it as a string: \"18446744073709551615\"")]
    [InlineData("{\"constraints\": {\"minMemory\": \"01\"}}", "BuildRequest.constraints.minMemory: \"01\" is not a number as JSON writes them (no '+', no leading zero)")]
    [InlineData("{\"constraints\": {\"minMemory\": 1.5}}", "BuildRequest.constraints.minMemory: 1.5 is not a whole number")]
    [InlineData("{\"constraints\": {\"networkAccess\": \"yes\"}}", "BuildRequest.constraints.networkAccess: expected true or false, found a string")]
    [InlineData("{\"inputs\": [{\"file\": {\"nme\": \"YQ==\"}}]}", "BuildRequest.inputs[0].file.nme: no such field in tvix.castore.v1.FileNode")]
    [InlineData("{\"inputs\": [null]}", "BuildRequest.inputs[0]: null in an array")]
    [InlineData("{\"inputs\": [\"x\"]}", "BuildRequest.inputs[0]: expected an object (tvix.castore.v1.Node), found a string")]
    [InlineData("{\"environment_vars\": [{\"key\": \"a\", \"value\": 1}]}", "BuildRequest.environment_vars[0].value: expected a base64 string, found a number")]
    [InlineData("{\"\\ud800x\": 1}", "BuildRequest: a field name holds a \\u escape of half a UTF-16 surrogate pair")]
    [InlineData("{\"environmentVars\": [{\"key\": \"a\"}, {\"key\": 1}]}", "BuildRequest.environmentVars[1].key: ")]
    [InlineData("{\"commandArgs\": [\"\\ud800\"]}", "BuildRequest.commandArgs[0]: the string holds a \\u escape of half a UTF-16 surrogate pair (\\ud800-\\udfff) without its other half")]
    public void MalformedJsonSaysWhereAndWhat(string json, string expected)
    {
        var e = Assert.Throws<BuildMessageFormatException>(() => BuildMessages.ParseRequest(Encoding.UTF8.GetBytes(json), BuildProtocol.Tvix, MessageFormat.Json));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void InvalidUtf8InJsonIsRefused()
    {
        byte[] data = [.. "{\"workingDir\": \"a"u8, 0xff, .. "\"}"u8];
        var e = Assert.Throws<BuildMessageFormatException>(() => BuildMessages.ParseRequest(data, BuildProtocol.Tvix, MessageFormat.Json));
        Assert.Contains("at line 1", e.Message);
    }

    [Fact]
    public void MalformedBinarySaysWhereAndWhat()
    {
        byte[] valid = BuildMessages.FormatRequest(TestSpecs.Nix, BuildProtocol.Tvix, MessageFormat.Binary);

        var truncated = Assert.Throws<BuildMessageFormatException>(() => BuildMessages.ParseRequest(valid.AsSpan(0, valid.Length - 3), BuildProtocol.Tvix, MessageFormat.Binary, "req.bin"));
        Assert.StartsWith("req.bin: malformed binary tvix.build.v1.BuildRequest: at byte ", truncated.Message);
        Assert.Contains("BuildRequest.refscan_needles[1]", truncated.Message);

        // command_args[1] holding invalid UTF-8: Google.Protobuf alone would replace it silently.
        byte[] badUtf8 = [0x12, 2, (byte)'s', (byte)'h', 0x12, 3, (byte)'a', 0xc3, 0x28];
        var e = Assert.Throws<BuildMessageFormatException>(() => BuildMessages.ParseRequest(badUtf8, BuildProtocol.Tvix, MessageFormat.Binary));
        Assert.Equal("request: malformed binary tvix.build.v1.BuildRequest: at byte 4: BuildRequest.command_args[1]: string is not valid UTF-8 (at byte 7)", e.Message);

        // working_dir sent as a varint.
        e = Assert.Throws<BuildMessageFormatException>(() => BuildMessages.ParseRequest(new byte[] { 0x18, 1 }, BuildProtocol.Tvix, MessageFormat.Binary));
        Assert.Contains("at byte 0: BuildRequest.working_dir: wire type 0 where a string (wire type 2) belongs", e.Message);

        // A nested message whose length runs past its parent.
        e = Assert.Throws<BuildMessageFormatException>(() => BuildMessages.ParseRequest(new byte[] { 0x0a, 5, 0x0a, 10, 0, 0, 0 }, BuildProtocol.Tvix, MessageFormat.Binary));
        Assert.Contains("BuildRequest.inputs[0].directory", e.Message);

        e = Assert.Throws<BuildMessageFormatException>(() => BuildMessages.ParseRequest(new byte[] { 0x00, 1 }, BuildProtocol.Tvix, MessageFormat.Binary));
        Assert.Contains("invalid field tag", e.Message);
    }

    [Fact]
    public void BinaryIgnoresUnknownFieldsAsProstDoes()
    {
        byte[] valid = BuildMessages.FormatRequest(TestSpecs.Nix, BuildProtocol.Tvix, MessageFormat.Binary);
        byte[] withUnknown = [.. valid, 0xf8, 0x06, 0x2a, 0xa2, 0x06, 2, 0xff, 0xfe, 0x9b, 0x06, 0x08, 1, 0x9c, 0x06];
        var spec = BuildMessages.ParseRequest(withUnknown, BuildProtocol.Tvix, MessageFormat.Binary);
        Assert.Equal(TestSpecs.Nix, spec);
        Assert.Equal(valid, spec.GetCanonicalEncoding());
    }

    [Fact]
    public void PackedAndUnpackedNeedleIndexesAreBothAccepted()
    {
        // outputs_needles[0].needles = [1, 2], written packed (the proto3 default) and unpacked.
        var build = new TvixBuild.Build { BuildRequest = TestSpecs.Nix.ToTvix() };
        build.Outputs.Add(new DirectoryNode("fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo", TestSpecs.SomeDigest, 0).ToTvixProto());
        build.OutputsNeedles.Add(new TvixBuild.Build.Types.OutputNeedles { Needles = { 0, 1 } });
        byte[] packed = build.ToByteArray();
        var result = BuildMessages.ParseReply(packed, BuildProtocol.Tvix, out _);
        Assert.Equal([0, 1], result.Outputs[0].Needles.ToArray());

        int at = packed.AsSpan().IndexOf(new byte[] { 0x1a, 4, 0x0a, 2, 0, 1 });
        Assert.True(at > 0);
        byte[] unpacked = [.. packed[..at], 0x1a, 4, 0x08, 0, 0x08, 1];
        Assert.Equal([0, 1], BuildMessages.ParseReply(unpacked, BuildProtocol.Tvix, out _).Outputs[0].Needles.ToArray());
    }

    [Fact]
    public void ReadsRequestsFromFilesAndNamesMissingOnes()
    {
        string dir = Directory.CreateTempSubdirectory("tvix-fuse-build-test-").FullName;
        try
        {
            string json = Path.Combine(dir, "req.json");
            string bin = Path.Combine(dir, "req.bin");
            File.WriteAllBytes(json, BuildMessages.FormatRequest(TestSpecs.Nix, BuildProtocol.Tvix, MessageFormat.Json));
            File.WriteAllBytes(bin, BuildMessages.FormatRequest(TestSpecs.Nix, BuildProtocol.Snix, MessageFormat.Binary));
            Assert.Equal((TestSpecs.Nix, MessageFormat.Json), BuildMessages.ReadRequest(json, BuildProtocol.Tvix));
            Assert.Equal((TestSpecs.Nix, MessageFormat.Binary), BuildMessages.ReadRequest(bin, BuildProtocol.Snix));

            var missing = Assert.Throws<FileNotFoundException>(() => BuildMessages.ReadRequest(Path.Combine(dir, "nope.json"), BuildProtocol.Tvix));
            Assert.Equal($"{Path.Combine(dir, "nope.json")}: no such file", missing.Message);
            Assert.Contains("is a directory", Assert.ThrowsAny<IOException>(() => BuildMessages.ReadRequest(dir, BuildProtocol.Tvix)).Message);

            File.WriteAllText(json, "{\"workingDir\": \"/abs\"}");
            var invalid = Assert.Throws<BuildRequestValidationException>(() => BuildMessages.ReadRequest(json, BuildProtocol.Tvix));
            Assert.Equal("invalid working_dir", invalid.Message);
            File.WriteAllText(json, "{\"workingDir\": 1");
            Assert.StartsWith($"{json}: malformed JSON", Assert.Throws<BuildMessageFormatException>(() => BuildMessages.ReadRequest(json, BuildProtocol.Tvix)).Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public void WritesAtomicallyAndLeavesNothingBehindOnFailure()
    {
        string dir = Directory.CreateTempSubdirectory("tvix-fuse-build-test-").FullName;
        try
        {
            string path = Path.Combine(dir, "reply.json");
            File.WriteAllText(path, "old");
            BuildMessages.WriteOutput(path, "new"u8);
            Assert.Equal("new", File.ReadAllText(path));
            Assert.Single(Directory.GetFiles(dir));

            Assert.ThrowsAny<IOException>(() => BuildMessages.WriteOutput(Path.Combine(dir, "missing", "reply.json"), "x"u8));
            Directory.CreateDirectory(Path.Combine(dir, "taken"));
            Assert.ThrowsAny<IOException>(() => BuildMessages.WriteOutput(Path.Combine(dir, "taken"), "x"u8));
            Assert.Equal([path], Directory.GetFiles(dir));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
