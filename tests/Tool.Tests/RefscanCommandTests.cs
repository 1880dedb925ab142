using System.Text;
using System.Text.Json;

namespace TvixFuseBuild.Tool.Tests;

public sealed class RefscanCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("tvix-fuse-build-test-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

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
            var result = ToolProcess.Run(["refscan", "--needles", "needles", "--json", "haystack"], workingDirectory: _dir);
            if (needles.Length == 0)
            {
                // The command refuses an empty needles file rather than scanning for nothing.
                Assert.Equal(1, result.ExitCode);
                Assert.Equal("tvix-fuse-build: error: needles file needles is empty\n", result.Stderr);
                continue;
            }

            Assert.True(result.ExitCode == 0, result.Stderr);
            var path = Assert.Single(JsonDocument.Parse(result.Stdout).RootElement.GetProperty("paths").EnumerateArray());
            Assert.Equal("haystack", path.GetProperty("path").GetString());
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

        var result = ToolProcess.Run(["refscan", "--needles", "needles", "out", "plain", "out/lib"], workingDirectory: _dir);
        Assert.True(result.ExitCode == 0, result.Stderr);
        Assert.Equal(
            "out: 33l4p0pn0mybmqzaxfkpppyh7vx1c74p pf80kikyxr63wrw56k00i1kw6ba76qik\nplain:\nout/lib: pf80kikyxr63wrw56k00i1kw6ba76qik\n",
            result.Stdout);
        Assert.Equal(string.Empty, result.Stderr);

        result = ToolProcess.Run(["refscan", "--needles", "needles", "--names", "-j", "1", "out"], workingDirectory: _dir);
        Assert.Equal("out: 33l4p0pn0mybmqzaxfkpppyh7vx1c74p pf80kikyxr63wrw56k00i1kw6ba76qik cp65c8nk29qq5cl1wyy5qyw103cwmax7\n", result.Stdout);

        result = ToolProcess.Run(["refscan", "--needles", "needles", "--engine", "general", "out"], workingDirectory: _dir);
        Assert.Equal("out: 33l4p0pn0mybmqzaxfkpppyh7vx1c74p pf80kikyxr63wrw56k00i1kw6ba76qik\n", result.Stdout);
    }

    [Fact]
    public void NeedlesFromStdinAndBytesThatAreNotText()
    {
        File.WriteAllBytes(Path.Combine(_dir, "bin"), [1, 2, 0xff, 0xfe, 3, (byte)' ', (byte)'\\']);
        File.WriteAllBytes(Path.Combine(_dir, "needles"), [0xff, 0xfe, (byte)'\n', (byte)' ', (byte)'\\']);
        var result = ToolProcess.Run(["refscan", "--needles", "needles", "bin"], workingDirectory: _dir);
        Assert.Equal("bin: \\xff\\xfe \\x20\\x5c\n", result.Stdout);
        result = ToolProcess.Run(["refscan", "--needles", "needles", "--json", "bin"], workingDirectory: _dir);
        var found = JsonDocument.Parse(result.Stdout).RootElement.GetProperty("paths")[0].GetProperty("found");
        Assert.Equal(Convert.ToBase64String([0xff, 0xfe]), found[0].GetProperty("needle_base64").GetString());
        Assert.Equal(" \\", found[1].GetProperty("needle").GetString());

        result = ToolProcess.Run(["refscan", "--needles", "-", "bin"], stdin: "\\\nnope\n", workingDirectory: _dir);
        Assert.Equal("bin: \\x5c\n", result.Stdout);
    }

    [Fact]
    public void ErrorsAreOneLineWithTheRightExitCode()
    {
        File.WriteAllText(Path.Combine(_dir, "needles"), "abc\n");
        File.WriteAllText(Path.Combine(_dir, "file"), "xabcx");

        // A missing path: the others are still scanned; exit 1.
        var result = ToolProcess.Run(["refscan", "--needles", "needles", "missing", "file"], workingDirectory: _dir);
        Assert.Equal(1, result.ExitCode);
        Assert.Equal("file: abc\n", result.Stdout);
        Assert.Equal("tvix-fuse-build: error: cannot stat missing: No such file or directory\n", result.Stderr);

        result = ToolProcess.Run(["refscan", "--needles", "nope", "file"], workingDirectory: _dir);
        Assert.Equal((1, "", "tvix-fuse-build: error: cannot read needles file nope: no such file\n"), (result.ExitCode, result.Stdout, result.Stderr));

        result = ToolProcess.Run(["refscan", "--needles", ".", "file"], workingDirectory: _dir);
        Assert.Equal((1, "tvix-fuse-build: error: cannot read needles file .: is a directory\n"), (result.ExitCode, result.Stderr));

        File.WriteAllText(Path.Combine(_dir, "gap"), "abc\n\ndef\n");
        result = ToolProcess.Run(["refscan", "--needles", "gap", "file"], workingDirectory: _dir);
        Assert.Equal((1, "tvix-fuse-build: error: needles file gap: line 2 is empty (an empty needle would match everything)\n"), (result.ExitCode, result.Stderr));

        result = ToolProcess.Run(["refscan", "file"], workingDirectory: _dir);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--needles", result.Stderr);

        result = ToolProcess.Run(["refscan", "--needles", "needles"], workingDirectory: _dir);
        Assert.Equal(2, result.ExitCode);

        result = ToolProcess.Run(["refscan", "--needles", "needles", "--engine", "nix", "file"], workingDirectory: _dir);
        Assert.Equal(2, result.ExitCode);
        Assert.StartsWith("tvix-fuse-build: --engine nix needs every needle", result.Stderr);

        result = ToolProcess.Run(["refscan", "--needles", "needles", "-j", "0", "file"], workingDirectory: _dir);
        Assert.Equal((2, "tvix-fuse-build: --threads must be at least 1, not 0\n"), (result.ExitCode, result.Stderr));

        Assert.Single(result.Stderr.TrimEnd('\n').Split('\n'));
    }
}
