using System.Text;
using System.Text.Json;

namespace TvixFuseBuild.Tool.Tests;

public sealed class RefscanCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("tvix-fuse-build-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string P(string name) => Path.Combine(_dir, name);

    [Fact]
    public void EveryRefscanVectorThroughTheCommand()
    {
        string vectors = Path.Combine(AppContext.BaseDirectory, "vectors", "refscan.json");
        Assert.True(File.Exists(vectors), $"test vector file {vectors} is missing");
        using var document = JsonDocument.Parse(File.ReadAllBytes(vectors));
        int checkedCases = 0;
        foreach (var c in document.RootElement.GetProperty("cases").EnumerateArray())
        {
            var needles = c.GetProperty("needles").EnumerateArray().Select(n => n.GetString()!).ToArray();
            var found = c.GetProperty("found").EnumerateArray().Select(f => f.GetInt32()).ToArray();
            File.WriteAllText(Path.Combine(_dir, "needles"), string.Concat(needles.Select(n => n + "\n")));
            File.WriteAllText(Path.Combine(_dir, "haystack"), c.GetProperty("haystack").GetString()!);
            var result = ToolProcess.Run(["refscan", "--needles", P("needles"), "--json", P("haystack")]);
            if (needles.Length == 0)
            {
                // The command refuses an empty needles file rather than scanning for nothing.
                Assert.Equal(1, result.ExitCode);
                Assert.Equal($"tvix-fuse-build: error: needles file {P("needles")} is empty\n", result.Stderr);
                continue;
            }

            Assert.True(result.ExitCode == 0, result.Stderr);
            var path = Assert.Single(JsonDocument.Parse(result.Stdout).RootElement.GetProperty("paths").EnumerateArray());
            Assert.Equal(P("haystack"), path.GetProperty("path").GetString());
            Assert.Equal(found, path.GetProperty("found").EnumerateArray().Select(f => f.GetProperty("index").GetInt32()));
            Assert.Equal(found.Select(i => needles[i]), path.GetProperty("found").EnumerateArray().Select(f => f.GetProperty("needle").GetString()));
            checkedCases++;
        }

        Assert.True(checkedCases >= 6);
    }

    [Fact]
    public void PlainOutputForFilesTreesAndSymlinks()
    {
        Directory.CreateDirectory(Path.Combine(_dir, "out", "bin"));
        File.WriteAllText(Path.Combine(_dir, "out", "bin", "hello"), "#!/nix/store/33l4p0pn0mybmqzaxfkpppyh7vx1c74p-bash/bin/sh\n");
        File.CreateSymbolicLink(Path.Combine(_dir, "out", "lib"), "/nix/store/pf80kikyxr63wrw56k00i1kw6ba76qik-glibc/lib");
        File.WriteAllText(Path.Combine(_dir, "out", "cp65c8nk29qq5cl1wyy5qyw103cwmax7-name"), "");
        File.WriteAllText(Path.Combine(_dir, "plain"), "nothing");
        File.WriteAllText(Path.Combine(_dir, "needles"), "33l4p0pn0mybmqzaxfkpppyh7vx1c74p\r\npf80kikyxr63wrw56k00i1kw6ba76qik\r\ncp65c8nk29qq5cl1wyy5qyw103cwmax7\r\n");

        var result = ToolProcess.Run(["refscan", "--needles", P("needles"), P("out"), P("plain"), P("out/lib")]);
        Assert.True(result.ExitCode == 0, result.Stderr);
        Assert.Equal(
            $"{P("out")}: 33l4p0pn0mybmqzaxfkpppyh7vx1c74p pf80kikyxr63wrw56k00i1kw6ba76qik\n{P("plain")}:\n{P("out/lib")}: pf80kikyxr63wrw56k00i1kw6ba76qik\n",
            result.Stdout);
        Assert.Equal(string.Empty, result.Stderr);

        result = ToolProcess.Run(["refscan", "--needles", P("needles"), "--names", "-j", "1", P("out")]);
        Assert.Equal($"{P("out")}: 33l4p0pn0mybmqzaxfkpppyh7vx1c74p pf80kikyxr63wrw56k00i1kw6ba76qik cp65c8nk29qq5cl1wyy5qyw103cwmax7\n", result.Stdout);

        result = ToolProcess.Run(["refscan", "--needles", P("needles"), "--engine", "general", P("out")]);
        Assert.Equal($"{P("out")}: 33l4p0pn0mybmqzaxfkpppyh7vx1c74p pf80kikyxr63wrw56k00i1kw6ba76qik\n", result.Stdout);
    }

    [Fact]
    public void NeedlesFromStdinAndBytesThatAreNotText()
    {
        File.WriteAllBytes(Path.Combine(_dir, "bin"), [1, 2, 0xff, 0xfe, 3, (byte)' ', (byte)'\\']);
        File.WriteAllBytes(Path.Combine(_dir, "needles"), [0xff, 0xfe, (byte)'\n', (byte)' ', (byte)'\\']);
        var result = ToolProcess.Run(["refscan", "--needles", P("needles"), P("bin")]);
        Assert.Equal($"{P("bin")}: \\xff\\xfe \\x20\\x5c\n", result.Stdout);
        result = ToolProcess.Run(["refscan", "--needles", P("needles"), "--json", P("bin")]);
        var found = JsonDocument.Parse(result.Stdout).RootElement.GetProperty("paths")[0].GetProperty("found");
        Assert.Equal(Convert.ToBase64String([0xff, 0xfe]), found[0].GetProperty("needle_base64").GetString());
        Assert.Equal(" \\", found[1].GetProperty("needle").GetString());

        result = ToolProcess.Run(["refscan", "--needles", "-", P("bin")], stdin: "\\\nnope\n");
        Assert.Equal($"{P("bin")}: \\x5c\n", result.Stdout);
    }

    [Fact]
    public void ErrorsAreOneLineWithTheRightExitCode()
    {
        File.WriteAllText(Path.Combine(_dir, "needles"), "abc\n");
        File.WriteAllText(Path.Combine(_dir, "file"), "xabcx");

        // A missing path: the others are still scanned; exit 1.
        var result = ToolProcess.Run(["refscan", "--needles", P("needles"), P("missing"), P("file")]);
        Assert.Equal(1, result.ExitCode);
        Assert.Equal($"{P("file")}: abc\n", result.Stdout);
        Assert.Equal($"tvix-fuse-build: error: cannot stat {P("missing")}: No such file or directory\n", result.Stderr);

        result = ToolProcess.Run(["refscan", "--needles", P("nope"), P("file")]);
        Assert.Equal((1, "", $"tvix-fuse-build: error: cannot read needles file {P("nope")}: no such file\n"), (result.ExitCode, result.Stdout, result.Stderr));

        result = ToolProcess.Run(["refscan", "--needles", _dir, P("file")]);
        Assert.Equal((1, $"tvix-fuse-build: error: cannot read needles file {_dir}: is a directory\n"), (result.ExitCode, result.Stderr));

        File.WriteAllText(P("gap"), "abc\n\ndef\n");
        result = ToolProcess.Run(["refscan", "--needles", P("gap"), P("file")]);
        Assert.Equal((1, $"tvix-fuse-build: error: needles file {P("gap")}: line 2 is empty (an empty needle would match everything)\n"), (result.ExitCode, result.Stderr));

        result = ToolProcess.Run(["refscan", P("file")]);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--needles", result.Stderr);

        result = ToolProcess.Run(["refscan", "--needles", P("needles")]);
        Assert.Equal(2, result.ExitCode);

        result = ToolProcess.Run(["refscan", "--needles", P("needles"), "--engine", "nix", P("file")]);
        Assert.Equal(2, result.ExitCode);
        Assert.StartsWith("tvix-fuse-build: error: --engine nix needs every needle", result.Stderr);

        result = ToolProcess.Run(["refscan", "--needles", P("needles"), "-j", "0", P("file")]);
        Assert.Equal(
            (2, "tvix-fuse-build: error: --threads must be at least 1, not 0\nRun 'tvix-fuse-build refscan --help' for usage.\n"),
            (result.ExitCode, result.Stderr));
    }
}

/// <summary>
/// The scanner picks its code by instruction set; the runtime's switches let one machine run each path. These run the
/// framework-dependent tool always, also with <c>TVIX_FUSE_BUILD_TESTS_NATIVE=1</c>: the switches (DOTNET_EnableAVX2...)
/// and the JIT's summary that proves which loop ran exist only where there is a JIT, and the NativeAOT tool has none.
/// </summary>
public sealed class RefscanInstructionSetTests : IDisposable
{
    private static string Tool => ToolProcess.FrameworkDependentExecutable;

    private readonly string _dir = Directory.CreateTempSubdirectory("tvix-fuse-build-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("DOTNET_EnableAVX512", "Avx2Classifier")]
    [InlineData("DOTNET_EnableAVX2", "PortableClassifier")] // 128-bit vectors
    [InlineData("DOTNET_EnableHWIntrinsic", "PortableClassifier")] // bytewise
    public void EveryInstructionSetFindsTheSame(string switchOff, string expectedClassifier)
    {
        var random = new Random(switchOff.Length);
        const string Alphabet = "0123456789abcdfghijklmnpqrsvwxyz";
        var needles = Enumerable.Range(0, 50).Select(_ => new string(Enumerable.Range(0, 32).Select(_ => Alphabet[random.Next(32)]).ToArray())).ToArray();
        File.WriteAllLines(Path.Combine(_dir, "needles"), needles);
        Directory.CreateDirectory(Path.Combine(_dir, "tree"));
        for (int f = 0; f < 20; f++)
        {
            // Runs of alphabet bytes broken now and then, with some needles planted.
            var content = new byte[random.Next(100, 20000)];
            for (int i = 0; i < content.Length; i++)
            {
                content[i] = random.Next(40) == 0 ? (byte)'e' : (byte)Alphabet[random.Next(32)];
            }

            for (int k = random.Next(3); k > 0; k--)
            {
                System.Text.Encoding.ASCII.GetBytes(needles[random.Next(needles.Length)]).CopyTo(content, random.Next(content.Length - 32));
            }

            File.WriteAllBytes(Path.Combine(_dir, "tree", $"f{f}"), content);
        }

        string needlesFile = Path.Combine(_dir, "needles"), tree = Path.Combine(_dir, "tree");
        var normal = ToolProcess.Run(["refscan", "--needles", needlesFile, tree], executable: Tool);
        Assert.True(normal.ExitCode == 0, normal.Stderr);
        Assert.NotEqual($"{tree}:\n", normal.Stdout);
        var general = ToolProcess.Run(["refscan", "--needles", needlesFile, "--engine", "general", tree], executable: Tool);
        Assert.Equal(normal.Stdout, general.Stdout);
        // The JIT's summary of what it compiled proves which loop ran; precompiled code is turned off for it, since the
        // loops for AVX2 and below are precompiled (Build.csproj) and would not show up.
        string summary = Path.Combine(_dir, "jit-summary.txt");
        var reduced = ToolProcess.Run(
            ["refscan", "--needles", needlesFile, tree],
            environment: new Dictionary<string, string>
            {
                [switchOff] = "0", ["DOTNET_ReadyToRun"] = "0", ["DOTNET_JitDisasmSummary"] = "1", ["DOTNET_JitStdOutFile"] = summary,
            },
            executable: Tool);
        Assert.True(reduced.ExitCode == 0, reduced.Stderr);
        Assert.Equal(normal.Stdout, reduced.Stdout);
        string compiled = File.ReadAllText(summary);
        Assert.Contains($"NixHashSearcher:Search[TvixFuseBuild.Build.Refscan.NixHashSearcher+{expectedClassifier}]", compiled);
        Assert.DoesNotContain("NixHashSearcher+Avx512Classifier]", compiled);
        Assert.DoesNotContain("NixBase32Avx512:Classify", compiled);
    }
}
