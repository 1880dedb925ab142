using System.Text;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using TvixFuseBuild.Build.Requests;
using SnixBuild = Snix.Build.V1;
using TvixBuild = Tvix.Build.V1;

namespace TvixFuseBuild.Build.Tests.Requests;

/// <summary>
/// The descriptor-free JSON reader and writer against Google.Protobuf's own JsonParser and JsonFormatter as the
/// oracle: the same documents accepted and refused, equal messages, byte-identical output; and the hand-written
/// message schemas against the generated descriptors.
/// </summary>
public sealed class ProtoJsonOracleTests
{
    private static readonly JsonFormatter Formatter = new(JsonFormatter.Settings.Default.WithIndentation("  "));

    public static TheoryData<string> Roots => new() { "tvix.build.v1.BuildRequest", "snix.build.v1.BuildRequest", "tvix.build.v1.Build", "snix.build.v1.BuildResponse" };

    private static MessageSchema Schema(string fullName) => MessageSchemas.All.Single(s => s.FullName == fullName);

    private static MessageDescriptor DescriptorOf(MessageSchema schema) => schema.New().Descriptor;

    [Fact]
    public void SchemasSayWhatTheDescriptorsSay()
    {
        // Every message reachable from the four roots is described, and nothing else.
        var reachable = new HashSet<string>();
        void Walk(MessageDescriptor d)
        {
            if (reachable.Add(d.FullName))
            {
                foreach (var f in d.Fields.InFieldNumberOrder().Where(f => f.FieldType == FieldType.Message))
                {
                    Walk(f.MessageType);
                }
            }
        }

        foreach (var root in Roots)
        {
            Walk(DescriptorOf(Schema(root)));
        }

        Assert.Equal(reachable.Order(), MessageSchemas.All.Select(s => s.FullName).Order());

        foreach (var schema in MessageSchemas.All)
        {
            var descriptor = DescriptorOf(schema);
            Assert.Equal(descriptor.FullName, schema.FullName);
            Assert.Equal(descriptor.Name, schema.Name);
            Assert.Equal(descriptor.ClrType, schema.ClrType);
            Assert.Equal(
                descriptor.Fields.InFieldNumberOrder().Select(f =>
                    (f.Name, f.JsonName, f.FieldNumber, f.FieldType.ToString(), f.IsRepeated, f.IsMap, f.ContainingOneof?.Name, f.FieldType == FieldType.Message ? f.MessageType.FullName : null)),
                schema.Fields.ToArray().Select(f =>
                    (f.Name, f.JsonName, f.Number, f.Kind.ToString(), f.IsRepeated, false, f.Oneof, f.MessageType?.FullName)));
        }
    }

    [Fact]
    public void SchemaAccessorsReadAndWriteTheFieldsTheyName()
    {
        foreach (var schema in MessageSchemas.All)
        {
            var descriptor = DescriptorOf(schema);
            foreach (var field in schema.Fields)
            {
                var proto = descriptor.FindFieldByNumber(field.Number);
                object sample = Sample(field);

                // Written through the schema, read through the descriptor; and the other way round.
                var message = schema.New();
                if (field.IsRepeated)
                {
                    field.List(message).Add(sample);
                    Assert.Equal([sample], ((System.Collections.IList)proto.Accessor.GetValue(message)).Cast<object>());
                }
                else
                {
                    field.Set(message, sample);
                    Assert.Equal(sample, proto.Accessor.GetValue(message));
                    Assert.False(field.IsDefault(message));
                    field.Clear(message);
                    Assert.True(field.IsDefault(message));
                    Assert.Equal(schema.New(), message);
                }

                var other = schema.New();
                if (field.IsRepeated)
                {
                    ((System.Collections.IList)proto.Accessor.GetValue(other)).Add(sample);
                    Assert.Equal([sample], field.List(other).Cast<object>());
                }
                else
                {
                    proto.Accessor.SetValue(other, sample);
                    Assert.Equal(sample, field.Get(other));
                }

                // No other field is touched.
                foreach (var rest in descriptor.Fields.InFieldNumberOrder().Where(f => f.FieldNumber != field.Number && f.ContainingOneof is null))
                {
                    Assert.Equal(rest.Accessor.GetValue(schema.New()), rest.Accessor.GetValue(other));
                }
            }
        }
    }

    private static object Sample(FieldSchema field) => field.Kind switch
    {
        FieldKind.String => $"s{field.Number}",
        FieldKind.Bytes => ByteString.CopyFromUtf8($"b{field.Number}"),
        FieldKind.UInt64 => (ulong)field.Number + 100,
        FieldKind.Bool => true,
        _ => field.MessageType!.New(),
    };

    /// <summary>Both accept (with equal messages) or both refuse; a refusal is always our format exception, on one line.</summary>
    private static IMessage? AssertSameAsJsonParser(MessageSchema schema, string json)
    {
        IMessage? expected = null;
        string? refusedBecause = null;
        try
        {
            expected = JsonParser.Default.Parse(json, DescriptorOf(schema));
        }
        catch (Exception e)
        {
            refusedBecause = $"{e.GetType().Name}: {e.Message}";
        }

        IMessage? actual = null;
        string? ours = null;
        try
        {
            actual = JsonMessageReader.Parse(Encoding.UTF8.GetBytes(json), schema, "doc");
        }
        catch (BuildMessageFormatException e)
        {
            ours = e.Message;
            Assert.DoesNotContain('\n', e.Message);
            Assert.StartsWith($"doc: malformed JSON {schema.FullName}", e.Message);
        }

        if (expected is null)
        {
            Assert.True(actual is null, $"JsonParser refuses ({refusedBecause}), we accept: {json}");
        }
        else
        {
            Assert.True(actual is not null, $"JsonParser accepts, we refuse ({ours}): {json}");
            Assert.Equal(expected, actual);
        }

        return expected;
    }

    private static void AssertSameAsJsonFormatter(MessageSchema schema, IMessage message)
    {
        byte[] expected = Encoding.UTF8.GetBytes(Formatter.Format(message) + "\n");
        byte[] actual = JsonMessageWriter.Write(message, schema);
        Assert.True(expected.AsSpan().SequenceEqual(actual), $"JsonFormatter:\n{Encoding.UTF8.GetString(expected)}\nours:\n{Encoding.UTF8.GetString(actual)}");
        Assert.Equal(message, JsonMessageReader.Parse(actual, schema, "written"));
    }

    [Theory]
    [InlineData("{}")]
    [InlineData(" \t\r\n{ }\n")]
    [InlineData("[]")]
    [InlineData("null")]
    [InlineData("1")]
    [InlineData("\"x\"")]
    [InlineData("\ufeff{}")]
    [InlineData("{}{}")]
    [InlineData("{\"commandArgs\":[\"a\"],}")]
    [InlineData("{/*c*/}")]
    [InlineData("{'workingDir':'a'}")]
    [InlineData("{\"inputs\":[]}")]
    [InlineData("{\"inputs\":null}")]
    [InlineData("{\"inputs\":{}}")]
    [InlineData("{\"inputs\":[null]}")]
    [InlineData("{\"inputs\":[{}]}")]
    [InlineData("{\"inputs\":[[]]}")]
    [InlineData("{\"inputs\":[{\"file\":null}]}")]
    [InlineData("{\"inputs\":[{\"file\":null,\"directory\":{}}]}")]
    [InlineData("{\"inputs\":[{\"file\":{},\"file\":{}}]}")]
    [InlineData("{\"inputs\":[{\"file\":{}}],\"inputs\":[{\"symlink\":{}}]}")]
    [InlineData("{\"inputs\":[{\"file\":{\"name\":\"YQ==\",\"digest\":\"rxNJufX5oaagQE3qNtzJSZvLJcmtwRK3zJqTyuQfMmI=\",\"size\":\"3\",\"executable\":true}}]}")]
    [InlineData("{\"constraints\":null}")]
    [InlineData("{\"constraints\":{}}")]
    [InlineData("{\"constraints\":\"x\"}")]
    [InlineData("{\"constraints\":[]}")]
    [InlineData("{\"constraints\":{\"system\":\"a\"},\"constraints\":{\"minMemory\":1}}")]
    [InlineData("{\"constraints\":{\"system\":\"a\"},\"constraints\":null}")]
    [InlineData("{\"workingDir\":\"a\",\"workingDir\":null}")]
    [InlineData("{\"workingDir\":\"a\",\"working_dir\":\"b\"}")]
    [InlineData("{\"commandArgs\":[\"a\"],\"command_args\":[\"b\"]}")]
    [InlineData("{\"commandArgs\":[\"a\"],\"commandArgs\":null}")]
    [InlineData("{\"commandArgs\":\"sh\"}")]
    [InlineData("{\"commandArgs\":[\"sh\",5]}")]
    [InlineData("{\"commandArgs\":[\"\\ud800\"]}")]
    [InlineData("{\"commandArgs\":[\"\\udc00\"]}")]
    [InlineData("{\"commandArgs\":[\"\\ud800\\u0041\"]}")]
    [InlineData("{\"commandArgs\":[\"\\ud83d\\ude00 \\u00e9\\u0000\\n\\/\"]}")]
    [InlineData("{\"\\u0063ommandArgs\":[\"x\"]}")]
    [InlineData("{\"command\\u005fargs\":[\"x\"]}")]
    [InlineData("{\"\\ud800\":1}")]
    [InlineData("{\"CommandArgs\":[\"x\"]}")]
    [InlineData("{\"commandargs\":[\"x\"]}")]
    [InlineData("{\"\":1}")]
    [InlineData("{\"workingDir\":1}")]
    [InlineData("{\"workingDir\":true}")]
    [InlineData("{\"workingDir\":{}}")]
    [InlineData("{\"workingDir\":1e400}")]
    [InlineData("{\"environmentVars\":[{\"key\":\"a\"},{\"key\":1}]}")]
    [InlineData("{\"environmentVars\":[{\"value\":\"AP8=\"}]}")]
    [InlineData("{\"environmentVars\":[{\"value\":\"AP8\"}]}")]
    [InlineData("{\"environmentVars\":[{\"value\":\"AP-_\"}]}")]
    [InlineData("{\"environmentVars\":[{\"value\":\"_-8\"}]}")]
    [InlineData("{\"environmentVars\":[{\"value\":\"AP+/\"}]}")]
    [InlineData("{\"environmentVars\":[{\"value\":\" A P 8 = \"}]}")]
    [InlineData("{\"environmentVars\":[{\"value\":\"AP8=\\n\"}]}")]
    [InlineData("{\"environmentVars\":[{\"value\":\"\\tAP8=\\r\"}]}")]
    [InlineData("{\"environmentVars\":[{\"value\":\"AP8==\"}]}")]
    [InlineData("{\"environmentVars\":[{\"value\":\"AA=A\"}]}")]
    [InlineData("{\"environmentVars\":[{\"value\":\"A===\"}]}")]
    [InlineData("{\"environmentVars\":[{\"value\":\"====\"}]}")]
    [InlineData("{\"environmentVars\":[{\"value\":\"A\"}]}")]
    [InlineData("{\"environmentVars\":[{\"value\":\"\"}]}")]
    [InlineData("{\"environmentVars\":[{\"value\":\" \"}]}")]
    [InlineData("{\"environmentVars\":[{\"value\":1}]}")]
    [InlineData("{\"environmentVars\":[{\"value\":null}]}")]
    [InlineData("{\"constraints\":{\"minMemory\":-1}}")]
    [InlineData("{\"constraints\":{\"minMemory\":-0}}")]
    [InlineData("{\"constraints\":{\"minMemory\":-0.0}}")]
    [InlineData("{\"constraints\":{\"minMemory\":0e5}}")]
    [InlineData("{\"constraints\":{\"minMemory\":1.0}}")]
    [InlineData("{\"constraints\":{\"minMemory\":1.5}}")]
    [InlineData("{\"constraints\":{\"minMemory\":1e2}}")]
    [InlineData("{\"constraints\":{\"minMemory\":1E+2}}")]
    [InlineData("{\"constraints\":{\"minMemory\":1e-2}}")]
    [InlineData("{\"constraints\":{\"minMemory\":1e400}}")]
    [InlineData("{\"constraints\":{\"minMemory\":1e19}}")]
    [InlineData("{\"constraints\":{\"minMemory\":1e20}}")]
    [InlineData("{\"constraints\":{\"minMemory\":9007199254740993}}")]
    [InlineData("{\"constraints\":{\"minMemory\":18446744073709549568}}")]
    [InlineData("{\"constraints\":{\"minMemory\":18446744073709550591}}")]
    [InlineData("{\"constraints\":{\"minMemory\":18446744073709550592}}")]
    [InlineData("{\"constraints\":{\"minMemory\":18446744073709551615}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"18446744073709551615\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"18446744073709551616\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"9007199254740993\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"1e3\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"1E3\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"1e19\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"1e20\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"1e-1\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"10e-1\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"1.0\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"1.5\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\".5e1\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"5.\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"-0\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"-0.0\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"-00\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"-1\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"00\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"0.5\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"+1\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\" 1\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"1 \"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"5\\u0000\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"\\u00001\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"0x10\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"1_0\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"\u0661\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":\"true\"}}")]
    [InlineData("{\"constraints\":{\"minMemory\":true}}")]
    [InlineData("{\"constraints\":{\"minMemory\":[1]}}")]
    [InlineData("{\"constraints\":{\"networkAccess\":\"true\"}}")]
    [InlineData("{\"constraints\":{\"networkAccess\":1}}")]
    [InlineData("{\"constraints\":{\"networkAccess\":false,\"provide_bin_sh\":true}}")]
    [InlineData("{\"constraints\":{\"availableRoPaths\":[\"/a\",\"/b\"],\"available_ro_paths\":[\"/c\"]}}")]
    public void EdgeCasesAreReadAsJsonParserReadsThem(string json)
    {
        AssertSameAsJsonParser(MessageSchemas.TvixBuildRequest, json);
        AssertSameAsJsonParser(MessageSchemas.SnixBuildRequest, json);
    }

    [Theory]
    [InlineData("{\"outputs\":[{\"directory\":{\"name\":\"YQ==\",\"size\":\"1\"}}],\"outputsNeedles\":[{\"needles\":[\"0\",1,\"2\"]}]}")]
    [InlineData("{\"outputsNeedles\":[{\"needles\":[-1]}]}")]
    [InlineData("{\"outputsNeedles\":[{\"needles\":[null]}]}")]
    [InlineData("{\"outputsNeedles\":[{\"needles\":null}]}")]
    [InlineData("{\"buildRequest\":{}}")]
    [InlineData("{\"build_request\":{\"commandArgs\":[\"a\"]},\"buildRequest\":{\"outputs\":[\"o\"]}}")]
    [InlineData("{\"buildRequest\":null}")]
    public void TvixRepliesAreReadAsJsonParserReadsThem(string json) => AssertSameAsJsonParser(MessageSchemas.TvixBuildReply, json);

    [Theory]
    [InlineData("{\"outputs\":[{\"output\":{\"file\":{\"digest\":\"rxNJufX5oaagQE3qNtzJSZvLJcmtwRK3zJqTyuQfMmI=\"}},\"needles\":[\"3\"]}]}")]
    [InlineData("{\"outputs\":[{\"output\":null,\"needles\":[]}]}")]
    [InlineData("{\"outputs\":[{\"output\":{\"symlink\":{\"target\":\"YQ==\"},\"file\":null}}]}")]
    public void SnixResponsesAreReadAsJsonParserReadsThem(string json) => AssertSameAsJsonParser(MessageSchemas.SnixBuildResponse, json);

    [Fact]
    public void TheVectorsAreReadAsJsonParserReadsThem()
    {
        foreach (var c in RequestVectors.All())
        {
            foreach (var schema in new[] { MessageSchemas.TvixBuildRequest, MessageSchemas.SnixBuildRequest })
            {
                var message = AssertSameAsJsonParser(schema, c.ProtoJson);
                Assert.NotNull(message);
                AssertSameAsJsonFormatter(schema, message);
            }
        }
    }

    [Theory]
    [MemberData(nameof(Roots))]
    public void GeneratedDocumentsAreReadAsJsonParserReadsThemAndWrittenAsJsonFormatterWritesThem(string root)
    {
        var schema = Schema(root);
        var descriptor = DescriptorOf(schema);
        int accepted = 0, refused = 0, nonEmpty = 0;
        for (int seed = 0; seed < 1500; seed++)
        {
            var generator = new DocumentGenerator(new Random(seed), invalid: seed % 2 == 1);
            string json = generator.Message(descriptor, 0);
            var message = AssertSameAsJsonParser(schema, json);
            if (message is null)
            {
                refused++;
                continue;
            }

            accepted++;
            nonEmpty += message.CalculateSize() > 0 ? 1 : 0;
            AssertSameAsJsonFormatter(schema, message);
        }

        // The generator reaches both outcomes often, and fills the messages.
        Assert.InRange(accepted, 300, 1400);
        Assert.InRange(refused, 100, 1200);
        Assert.True(nonEmpty > accepted * 3 / 4, $"{nonEmpty} of {accepted}");
    }

    [Fact]
    public void EveryCharacterIsEscapedAsJsonFormatterEscapesIt()
    {
        var request = new TvixBuild.BuildRequest();
        var text = new StringBuilder();
        for (int c = 0; c <= 0xffff; c++)
        {
            if (!char.IsSurrogate((char)c))
            {
                text.Append((char)c);
            }

            if (text.Length == 256 || c == 0xffff)
            {
                request.CommandArgs.Add(text.ToString());
                text.Clear();
            }
        }

        request.CommandArgs.Add("\ud83d\ude00 \U0010ffff \U00010000 x\ud800\udc00y");
        request.WorkingDir = "\"<&>'\\/";
        AssertSameAsJsonFormatter(MessageSchemas.TvixBuildRequest, request);

        // Half a surrogate pair: both refuse.
        foreach (string bad in new[] { "\ud800", "a\udc00", "\ud800x", "\udc00\ud800" })
        {
            var broken = new TvixBuild.BuildRequest { WorkingDir = bad };
            Assert.Throws<ArgumentException>(() => Formatter.Format(broken));
            Assert.Throws<ArgumentException>(() => JsonMessageWriter.Write(broken, MessageSchemas.TvixBuildRequest));
        }
    }

    [Fact]
    public void RequestsAndRepliesAreFormattedAsJsonFormatterFormatsThem()
    {
        var spec = TestSpecs.Nix with
        {
            Constraints = new BuildConstraints("x86_64-linux", ulong.MaxValue, ["/dev/kvm"], NetworkAccess: true, ProvideBinSh: true),
            AdditionalFiles = [TestSpecs.File("build/x", "hi\n")],
        };
        Assert.Equal(
            Formatter.Format(spec.ToTvix()) + "\n",
            Encoding.UTF8.GetString(BuildMessages.FormatRequest(spec, BuildProtocol.Tvix, MessageFormat.Json)));
        Assert.Equal(
            Formatter.Format(spec.ToSnix()) + "\n",
            Encoding.UTF8.GetString(BuildMessages.FormatRequest(spec, BuildProtocol.Snix, MessageFormat.Json)));

        var result = new BuildResult([new BuildOutput(new Castore.DirectoryNode("x", TestSpecs.SomeDigest, 7), [0, 1])]);
        Assert.Equal(
            Formatter.Format(result.ToTvixBuild(spec)) + "\n",
            Encoding.UTF8.GetString(BuildMessages.FormatReply(spec, result, BuildProtocol.Tvix, MessageFormat.Json)));
        Assert.Equal(
            Formatter.Format(result.ToSnixResponse(spec)) + "\n",
            Encoding.UTF8.GetString(BuildMessages.FormatReply(spec, result, BuildProtocol.Snix, MessageFormat.Json)));

        // Present but empty messages are written as {}; absent ones not at all.
        var build = new TvixBuild.Build { BuildRequest = new TvixBuild.BuildRequest { Constraints = new() } };
        build.Outputs.Add(new Tvix.Castore.V1.Node { File = new() });
        build.Outputs.Add(new Tvix.Castore.V1.Node());
        build.OutputsNeedles.Add(new TvixBuild.Build.Types.OutputNeedles());
        AssertSameAsJsonFormatter(MessageSchemas.TvixBuildReply, build);
        AssertSameAsJsonFormatter(MessageSchemas.TvixBuildReply, new TvixBuild.Build());
        var response = new SnixBuild.BuildResponse();
        response.Outputs.Add(new SnixBuild.BuildResponse.Types.Output { Output_ = new() { Symlink = new() { Target = ByteString.CopyFromUtf8("t") } } });
        AssertSameAsJsonFormatter(MessageSchemas.SnixBuildResponse, response);
    }

    /// <summary>
    /// Random protobuf JSON for a message type, driven by its descriptor: every field by either name (now and then
    /// escaped), in any order, sometimes twice or null; values in every form the mapping knows (uint64 as numbers and
    /// strings, bytes in base64 variants, strings with escapes); with <c>invalid</c>, also unknown fields, wrong types,
    /// conflicting oneof members, null elements and broken escapes.
    /// </summary>
    private sealed class DocumentGenerator(Random random, bool invalid)
    {
        private static readonly string[] Numbers =
        [
            "0", "1", "7", "42", "1024", "-0", "-0.0", "0.0", "1.0", "1e2", "1E+2", "0e5", "2.50e1", "9007199254740992", "9007199254740993",
            "4294967296", "9223372036854775807", "9223372036854775808", "10000000000000000000", "18446744073709549568",
            "18446744073709550591", "18446744073709551615",
        ];

        private static readonly string[] BadNumbers = ["-1", "1.5", "1e-2", "1e20", "1e400", "-1e400", "18446744073709551616", "0.1"];

        private static readonly string[] NumericStrings =
        [
            "0", "1", "42", "-0", "1e3", "1E3", "1.0", "10e-1", ".5e1", "5.", "18446744073709551615", "9007199254740993", "1e19", "5\\u0000",
        ];

        private static readonly string[] BadNumericStrings =
        [
            "", "+1", "01", "-01", "-1", " 1", "1 ", "0x10", "1_0", "1.5", "1e-1", "1e20", "18446744073709551616", "true", "\\u00001", "\u0661", "NaN",
        ];

        private static readonly string[] TextPieces =
        [
            "a", "Z", "0", " ", "/", "\\/", "\\\"", "\\\\", "\\n", "\\t", "\\b", "\\f", "\\r", "\\u0000", "\\u001f", "\\u0041", "\\u00e9", "é", "€", "😀",
            "\\ud83d\\ude00", "\\uD83D\\uDE00", "\ufeff", "\u2028", "\u00ad", "<", ">", "&", "'", "\u007f", "\\u007f", "\u0085", "nix/store", "-",
        ];

        private static readonly string[] BadTextPieces = ["\\ud800", "\\udc00", "\\ud800\\u0041", "\\ud83d"];

        public string Message(MessageDescriptor descriptor, int depth)
        {
            var members = new List<string>();
            string? oneof = null;
            foreach (var field in descriptor.Fields.InFieldNumberOrder())
            {
                if (random.Next(depth == 0 ? 10 : 4) == 0)
                {
                    continue;
                }

                if (field.ContainingOneof is { } o)
                {
                    // One member of a oneof, unless conflicts are wanted.
                    if (oneof == o.Name && !(invalid && random.Next(6) == 0))
                    {
                        continue;
                    }

                    oneof = o.Name;
                }

                members.Add(Member(field, depth));
                if (random.Next(25) == 0)
                {
                    members.Add(Member(field, depth));
                }
            }

            if (invalid && random.Next(25) == 0)
            {
                members.Add($"\"{Pick(["unknown", "commandargs", "Inputs", "working-dir", "", "@type"])}\": {Pick(["1", "null", "{}", "[]", "\"x\""])}");
            }

            if (random.Next(3) == 0)
            {
                members = [.. members.OrderBy(_ => random.Next())];
            }

            return "{" + Space() + string.Join("," + Space(), members) + Space() + "}";
        }

        private string Member(FieldDescriptor field, int depth)
        {
            string value = random.Next(30) == 0 ? "null" : field.IsRepeated ? Array(field, depth) : Value(field, depth);
            return $"{Name(field)}{Space()}:{Space()}{value}";
        }

        private string Name(FieldDescriptor field)
        {
            string name = random.Next(2) == 0 ? field.Name : field.JsonName;
            if (random.Next(10) == 0)
            {
                int at = random.Next(name.Length);
                name = $"{name[..at]}\\u{(int)name[at]:x4}{name[(at + 1)..]}";
            }

            return $"\"{name}\"";
        }

        private string Array(FieldDescriptor field, int depth)
        {
            if (invalid && random.Next(40) == 0)
            {
                return Value(field, depth);
            }

            var items = Enumerable.Range(0, random.Next(depth == 0 ? 1 : 0, 4)).Select(_ => invalid && random.Next(60) == 0 ? "null" : Value(field, depth));
            return "[" + string.Join("," + Space(), items) + "]";
        }

        private string Value(FieldDescriptor field, int depth)
        {
            if (invalid && random.Next(40) == 0)
            {
                return Pick(["1", "-1", "true", "false", "{}", "[]", "\"x\"", "\"\"", "[1]", "{\"a\":1}"]);
            }

            switch (field.FieldType)
            {
                case FieldType.Message:
                    return depth > 4 ? "{}" : Message(field.MessageType, depth + 1);
                case FieldType.Bool:
                    return invalid && random.Next(10) == 0 ? Pick(["\"true\"", "1", "0", "\"false\""]) : Pick(["true", "false"]);
                case FieldType.UInt64:
                    return random.Next(4) switch
                    {
                        0 => invalid && random.Next(3) == 0 ? Pick(BadNumbers) : Pick(Numbers),
                        1 => $"\"{(invalid && random.Next(3) == 0 ? Pick(BadNumericStrings) : Pick(NumericStrings))}\"",
                        2 => ((ulong)random.NextInt64() >> random.Next(64)).ToString(),
                        _ => $"\"{(ulong)random.NextInt64() * 2 + (ulong)random.Next(2)}\"",
                    };
                case FieldType.Bytes:
                    return $"\"{Base64()}\"";
                default:
                    var text = new StringBuilder();
                    for (int i = random.Next(6); i > 0; i--)
                    {
                        text.Append(invalid && random.Next(30) == 0 ? Pick(BadTextPieces) : Pick(TextPieces));
                    }

                    return $"\"{text}\"";
            }
        }

        private string Base64()
        {
            var bytes = new byte[random.Next(random.Next(3) == 0 ? 40 : 6)];
            random.NextBytes(bytes);
            string text = Convert.ToBase64String(bytes);
            switch (random.Next(invalid ? 12 : 8))
            {
                case 0:
                    return text.Insert(random.Next(text.Length + 1), Pick([" ", "\\n", "\\t", "\\r", "  "]));
                case 8:
                    return text.TrimEnd('=');
                case 9:
                    return text.Replace('+', '-').Replace('/', '_');
                case 10:
                    return text + Pick(["=", "A", "==", "!"]);
                case 11:
                    return text.Length > 0 ? text[..^1] : "=";
                default:
                    return text;
            }
        }

        private string Space() => random.Next(4) == 0 ? Pick([" ", "\n", "\t", "\r\n  "]) : string.Empty;

        private string Pick(string[] choices) => choices[random.Next(choices.Length)];
    }
}
