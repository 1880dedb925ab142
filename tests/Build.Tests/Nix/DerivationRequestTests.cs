using System.Text;
using TvixFuseBuild.Build.Nix;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Castore;

namespace TvixFuseBuild.Build.Tests.Nix;

/// <summary>tvix-glue's own conversion test cases (NIX.md), plus what the glue leaves undone and Nix does.</summary>
public sealed class DerivationRequestTests
{
    private static readonly string[] NixVariables =
        ["HOME", "NIX_BUILD_CORES", "NIX_BUILD_TOP", "NIX_LOG_FD", "NIX_STORE", "PATH", "PWD", "TEMP", "TEMPDIR", "TERM", "TMP", "TMPDIR"];

    private static Derivation Parse(string text) => Derivation.Parse(Encoding.UTF8.GetBytes(text));

    private static string Env(BuildSpec spec, string key) =>
        Encoding.UTF8.GetString(spec.EnvironmentVars.Single(v => v.Key == key).Value.Span);

    private static void AssertNixVariables(BuildSpec spec)
    {
        Assert.Equal("/homeless-shelter", Env(spec, "HOME"));
        Assert.Equal("0", Env(spec, "NIX_BUILD_CORES"));
        Assert.Equal("/build", Env(spec, "NIX_BUILD_TOP"));
        Assert.Equal("2", Env(spec, "NIX_LOG_FD"));
        Assert.Equal("/nix/store", Env(spec, "NIX_STORE"));
        Assert.Equal("/path-not-set", Env(spec, "PATH"));
        foreach (string key in new[] { "PWD", "TEMP", "TEMPDIR", "TMP", "TMPDIR" })
        {
            Assert.Equal("/build", Env(spec, key));
        }

        Assert.Equal("xterm-256color", Env(spec, "TERM"));
    }

    private static void AssertLayout(BuildSpec spec)
    {
        Assert.Equal("build", spec.WorkingDir);
        Assert.Equal("nix/store", spec.InputsDir);
        Assert.Equal(["build", "nix/store"], spec.ScratchPaths.ToArray());
        BuildRequestValidator.ThrowIfInvalid(spec, BuildProtocol.Tvix);
    }

    [Fact]
    public void GlueCase1_InputDerivationOutputBecomesAnInputNode()
    {
        var derivation = Parse("""Derive([("out","/nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo","","")],[("/nix/store/ss2p4wmxijn652haqyd7dckxwl4c7hxx-bar.drv",["out"])],[],":",":",[],[("bar","/nix/store/mp57d33657rf34lzvlbpfa1gjfv5gmpg-bar"),("builder",":"),("name","foo"),("out","/nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo"),("system",":")])""");
        Assert.Equal("/nix/store/ss2p4wmxijn652haqyd7dckxwl4c7hxx-bar.drv", derivation.InputDerivations.Single().DrvPath);
        var input = new DirectoryNode(PathComponent.Create("anything"), B3Digest.Empty, 0);
        var request = DerivationRequest.Create(derivation, [("/nix/store/mp57d33657rf34lzvlbpfa1gjfv5gmpg-bar", input)]);
        var spec = request.Spec;

        Assert.Equal([":"], spec.CommandArgs.ToArray());
        Assert.Equal(["nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo"], spec.Outputs.ToArray());
        Assert.Equal([.. NixVariables, "bar", "builder", "name", "out", "system"], spec.EnvironmentVars.Select(v => v.Key));
        AssertNixVariables(spec);
        Assert.Equal("/nix/store/mp57d33657rf34lzvlbpfa1gjfv5gmpg-bar", Env(spec, "bar"));
        Assert.Equal(new DirectoryNode(PathComponent.Create("mp57d33657rf34lzvlbpfa1gjfv5gmpg-bar"), B3Digest.Empty, 0), spec.Inputs.Single());
        Assert.Equal(":", spec.Constraints!.System);
        Assert.True(spec.Constraints.ProvideBinSh);
        Assert.False(spec.Constraints.NetworkAccess);
        Assert.Equal(["fhaj6gmwns62s6ypkcldbaj2ybvkhx3p", "mp57d33657rf34lzvlbpfa1gjfv5gmpg"], spec.RefscanNeedles.ToArray());
        Assert.Equal(["/nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo", "/nix/store/mp57d33657rf34lzvlbpfa1gjfv5gmpg-bar"], request.NeedlePaths.ToArray());
        Assert.Empty(spec.AdditionalFiles);
        AssertLayout(spec);
    }

    [Fact]
    public void GlueCase2_OutputPlaceholdersAreReplacedAsSnixDoes()
    {
        Assert.Equal("/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9", DerivationRequest.HashPlaceholder("out"));
        var derivation = Parse("""Derive([("out","/nix/store/dgapb8kh5gis4w7hzfl5725sx5gam0nz-with-placeholders","","")],[],[],"x86_64-linux","/bin/sh",["-c","/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9","/1zwrijlc0ixcpdjslshwq3nd28rbbmp6812lh5c49ifrcc3gk3mz"],[("BAR","/1zwrijlc0ixcpdjslshwq3nd28rbbmp6812lh5c49ifrcc3gk3mz"),("FOO","/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9"),("builder","/bin/sh"),("name","with-placeholders"),("out","/nix/store/dgapb8kh5gis4w7hzfl5725sx5gam0nz-with-placeholders"),("system","x86_64-linux")])""");
        var spec = DerivationRequest.Create(derivation, []).Spec;

        Assert.Equal(
            ["/bin/sh", "-c", "/nix/store/dgapb8kh5gis4w7hzfl5725sx5gam0nz-with-placeholders", "/1zwrijlc0ixcpdjslshwq3nd28rbbmp6812lh5c49ifrcc3gk3mz"],
            spec.CommandArgs.ToArray());
        Assert.Equal("/nix/store/dgapb8kh5gis4w7hzfl5725sx5gam0nz-with-placeholders", Env(spec, "FOO"));
        Assert.Equal("/1zwrijlc0ixcpdjslshwq3nd28rbbmp6812lh5c49ifrcc3gk3mz", Env(spec, "BAR"));
        Assert.Equal(["dgapb8kh5gis4w7hzfl5725sx5gam0nz"], spec.RefscanNeedles.ToArray());
        Assert.Equal("x86_64-linux", spec.Constraints!.System);
        AssertLayout(spec);
    }

    [Theory]
    [InlineData("/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9", true)]
    [InlineData("prefix=/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9/lib", true)]
    [InlineData("/nix/store/x/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9", true)]
    [InlineData("/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n", false)] // 51 characters
    [InlineData("/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2nE", false)] // not base-32
    [InlineData("/nix/store/dgapb8kh5gis4w7hzfl5725sx5gam0nz-with-placeholders", false)]
    [InlineData("mkdir $out; echo hi > $out/f", false)]
    [InlineData("", false)]
    public void OnlyStringsThatCanHoldAPlaceholderAreRewritten(string value, bool may)
    {
        Assert.Equal(may, DerivationRequest.MayHoldPlaceholder(value));
    }

    [Fact]
    public void APlaceholderOfAnyOutputIsReplacedWhereverItIs()
    {
        string dev = DerivationRequest.HashPlaceholder("dev");
        var derivation = Parse($$"""Derive([("dev","/nix/store/mp57d33657rf34lzvlbpfa1gjfv5gmpg-p-dev","",""),("out","/nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-p","","")],[],[],"x86_64-linux","/bin/sh",["-c","echo x{{dev}}/include"],[("builder","/bin/sh"),("flags","--with-x=/nix/store/aaa --inc={{dev}}/include"),("name","p"),("system","x86_64-linux")])""");
        var spec = DerivationRequest.Create(derivation, []).Spec;

        Assert.Equal("echo x/nix/store/mp57d33657rf34lzvlbpfa1gjfv5gmpg-p-dev/include", spec.CommandArgs[2]);
        Assert.Equal("--with-x=/nix/store/aaa --inc=/nix/store/mp57d33657rf34lzvlbpfa1gjfv5gmpg-p-dev/include", Env(spec, "flags"));
    }

    [Fact]
    public void GlueCase3_FixedOutputGetsTheNetwork()
    {
        var derivation = Parse("""Derive([("out","/nix/store/4q0pg5zpfmznxscq3avycvf9xdvx50n3-bar","r:sha256","08813cbee9903c62be4c5027726a418a300da4500b2d369d3af9286f4815ceba")],[],[],":",":",[],[("builder",":"),("name","bar"),("out","/nix/store/4q0pg5zpfmznxscq3avycvf9xdvx50n3-bar"),("outputHash","08813cbee9903c62be4c5027726a418a300da4500b2d369d3af9286f4815ceba"),("outputHashAlgo","sha256"),("outputHashMode","recursive"),("system",":")])""");
        Assert.True(derivation.IsFixedOutput);
        var spec = DerivationRequest.Create(derivation, []).Spec;

        Assert.Equal(":", spec.Constraints!.System);
        Assert.True(spec.Constraints.NetworkAccess);
        Assert.True(spec.Constraints.ProvideBinSh);
        Assert.Equal([.. NixVariables, "builder", "name", "out", "outputHash", "outputHashAlgo", "outputHashMode", "system"], spec.EnvironmentVars.Select(v => v.Key));
        AssertNixVariables(spec);
        Assert.Equal(["4q0pg5zpfmznxscq3avycvf9xdvx50n3"], spec.RefscanNeedles.ToArray());
        AssertLayout(spec);
    }

    [Fact]
    public void GlueCase4_PassAsFile()
    {
        var derivation = Parse("""Derive([("out","/nix/store/pp17lwra2jkx8rha15qabg2q3wij72lj-foo","","")],[],[],":",":",[],[("bar","baz"),("baz","bar"),("builder",":"),("name","foo"),("out","/nix/store/pp17lwra2jkx8rha15qabg2q3wij72lj-foo"),("passAsFile","bar baz"),("system",":")])""");
        var spec = DerivationRequest.Create(derivation, []).Spec;

        Assert.Equal([.. NixVariables, "barPath", "bazPath", "builder", "name", "out", "passAsFile", "system"], spec.EnvironmentVars.Select(v => v.Key));
        Assert.Equal("/build/.attr-1fcgpy7vc4ammr7s17j2xq88scswkgz23dqzc04g8sx5vcp2pppw", Env(spec, "barPath"));
        Assert.Equal("/build/.attr-15l04iksj1280dvhbzdq9ai3wlf8ac2188m9qv0gn81k9nba19ds", Env(spec, "bazPath"));
        Assert.Equal("bar baz", Env(spec, "passAsFile"));
        Assert.Equal(
            [("build/.attr-15l04iksj1280dvhbzdq9ai3wlf8ac2188m9qv0gn81k9nba19ds", "bar"), ("build/.attr-1fcgpy7vc4ammr7s17j2xq88scswkgz23dqzc04g8sx5vcp2pppw", "baz")],
            spec.AdditionalFiles.Select(f => (f.Path, Encoding.UTF8.GetString(f.Contents.Span))));
        Assert.Equal(["pp17lwra2jkx8rha15qabg2q3wij72lj"], spec.RefscanNeedles.ToArray());
        AssertLayout(spec);
    }

    [Fact]
    public void PassAsFileNamingAMissingKeyIsRefusedWithTheGluesMessage()
    {
        var derivation = Parse("""Derive([("out","/nix/store/pp17lwra2jkx8rha15qabg2q3wij72lj-foo","","")],[],[],":",":",[],[("builder",":"),("out","/nix/store/pp17lwra2jkx8rha15qabg2q3wij72lj-foo"),("passAsFile","nope")])""");
        var e = Assert.Throws<FormatException>(() => DerivationRequest.Create(derivation, []));
        Assert.Equal("passAsFile refers to non-existent env key", e.Message);
    }

    [Fact]
    public void StructuredAttrsAreWrittenAsNix28WritesThem()
    {
        // The __json and the two files Nix 2.8 wrote for it (recorded from a real build).
        const string Out = "/nix/store/s73zl884azxjdnzsdssyybr5m2zxixgj-sa";
        const string Dev = "/nix/store/rqcv8srsnqn9yk4kdjqmdgpmppvhxkwj-sa-dev";
        var derivation = Parse($$"""Derive([("dev","{{Dev}}","",""),("out","{{Out}}","","")],[],[],"x86_64-linux","/bb/bin/sh",["-c","x"],[("__json","{\"b\":true,\"builder\":\"/bb/bin/sh\",\"f\":1.5,\"foo\":\"it's\",\"l\":[\"a\",1],\"n\":3,\"name\":\"sa\",\"o\":{\"x\":\"y\"},\"outputs\":[\"out\",\"dev\"],\"system\":\"x86_64-linux\"}"),("dev","{{Dev}}"),("out","{{Out}}")])""");
        var spec = DerivationRequest.Create(derivation, []).Spec;

        Assert.Equal(
            [.. NixVariables[..1], "NIX_ATTRS_JSON_FILE", "NIX_ATTRS_SH_FILE", .. NixVariables[1..]],
            spec.EnvironmentVars.Select(v => v.Key));
        Assert.Equal("/build/.attrs.json", Env(spec, "NIX_ATTRS_JSON_FILE"));
        Assert.Equal("/build/.attrs.sh", Env(spec, "NIX_ATTRS_SH_FILE"));
        var files = spec.AdditionalFiles.ToDictionary(f => f.Path, f => Encoding.UTF8.GetString(f.Contents.Span));
        Assert.Equal(
            $$"""{"b":true,"builder":"/bb/bin/sh","f":1.5,"foo":"it's","l":["a",1],"n":3,"name":"sa","o":{"x":"y"},"outputs":{"dev":"{{Dev}}","out":"{{Out}}"},"system":"x86_64-linux"}""",
            files["build/.attrs.json"]);
        Assert.Equal(
            "declare b=1\ndeclare builder='/bb/bin/sh'\ndeclare foo='it'\\''s'\ndeclare -a l=('a' 1 )\ndeclare n=3\ndeclare name='sa'\n" +
            $"declare -A o=(['x']='y' )\ndeclare -A outputs=(['dev']='{Dev}' ['out']='{Out}' )\ndeclare system='x86_64-linux'\n",
            files["build/.attrs.sh"]);
        Assert.Equal(["nix/store/rqcv8srsnqn9yk4kdjqmdgpmppvhxkwj-sa-dev", "nix/store/s73zl884azxjdnzsdssyybr5m2zxixgj-sa"], spec.Outputs.ToArray());
    }

    [Fact]
    public void VariablesNixSetsItselfWinOverTheDerivations()
    {
        var derivation = Parse("""Derive([("out","/nix/store/pp17lwra2jkx8rha15qabg2q3wij72lj-foo","","")],[],[],":",":",[],[("HOME","/home"),("PATH","/bin"),("TMPDIR","/elsewhere"),("out","/nix/store/pp17lwra2jkx8rha15qabg2q3wij72lj-foo")])""");
        var spec = DerivationRequest.Create(derivation, []).Spec;
        Assert.Equal("/home", Env(spec, "HOME"));
        Assert.Equal("/bin", Env(spec, "PATH"));
        Assert.Equal("/build", Env(spec, "TMPDIR"));
    }

    [Theory]
    [InlineData("Derive(")]
    [InlineData("Derive([],[],[],\"\",\"\",[],[])")]
    [InlineData("Derive([(\"out\",\"/nix/store/x\",\"\",\"\")],[],[],\"s\",\"b\",[],[]) trailing")]
    [InlineData("Derive([(\"out\",\"/nix/store/x\",\"\",\"\")],[],[],\"s\",\"b\",[],[(\"unterminated)])")]
    public void NotADerivationIsAFormatError(string text)
    {
        var e = Assert.Throws<FormatException>(() => Parse(text));
        Assert.Contains("derivation", e.Message);
    }

    [Fact]
    public void StringEscapesAreDecoded()
    {
        var derivation = Parse("""Derive([("out","/nix/store/pp17lwra2jkx8rha15qabg2q3wij72lj-foo","","")],[],[],"s","b",["a\"b\\c\nd\te\rf"],[])""");
        Assert.Equal("a\"b\\c\nd\te\rf", derivation.Arguments.Single());
    }

    [Theory]
    [InlineData("sha256", "08813cbee9903c62be4c5027726a418a300da4500b2d369d3af9286f4815ceba")]
    [InlineData("sha256", "sha256-CIE8vumQPGK+TFAncmpBijANpFALLTadOvkob0gVzro=")]
    [InlineData("sha256", "sha256:1fnf2m46ya7r7afkcb8ba2j0sc4a85m749sh9jz64g4hx6z3r088")]
    [InlineData("sha256", "1fnf2m46ya7r7afkcb8ba2j0sc4a85m749sh9jz64g4hx6z3r088")]
    public void HashesParseInEveryForm(string algorithm, string text)
    {
        var hash = NixHash.Parse(text, algorithm);
        Assert.Equal("08813cbee9903c62be4c5027726a418a300da4500b2d369d3af9286f4815ceba", Convert.ToHexStringLower(hash.Digest));
        Assert.Equal("sha256-CIE8vumQPGK+TFAncmpBijANpFALLTadOvkob0gVzro=", hash.ToSri());
    }

    [Fact]
    public void AHashOfTheWrongAlgorithmIsRefused()
    {
        Assert.Throws<FormatException>(() => NixHash.Parse("sha1-CIE8vumQPGK+TFAncmpBijANpFALLTadOvkob0gVzro=", "sha256"));
        Assert.Throws<FormatException>(() => NixHash.Parse("abcd", "sha256"));
    }
}
