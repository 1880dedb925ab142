using System.Text.Json;

namespace TvixFuseBuild.Tool.Tests;

public sealed class StoreCommandTests : IDisposable
{
    private readonly string _temp = Directory.CreateTempSubdirectory("tvix-fuse-tool-test-").FullName;

    private string Store => "local://" + Path.Combine(_temp, "store");

    public void Dispose()
    {
        foreach (var dir in new DirectoryInfo(_temp).EnumerateDirectories("*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 }))
        {
            if (dir.LinkTarget is null)
            {
                dir.UnixFileMode |= UnixFileMode.UserWrite | UnixFileMode.UserRead | UnixFileMode.UserExecute;
            }
        }

        Directory.Delete(_temp, recursive: true);
    }

    private ToolProcess.Result Tool(params string[] arguments) => ToolProcess.Run(["--store", Store, .. arguments]);

    [Fact]
    public void HelpListsTheCommands()
    {
        var result = ToolProcess.Run(["--help"]);
        Assert.Equal(0, result.ExitCode);
        foreach (string command in new[] { "import", "export", "ls", "cat" })
        {
            Assert.Contains($"  {command} ", result.Stdout);
        }
    }

    [Theory]
    [InlineData("tvix-fuse-build imp", "import")]
    [InlineData("tvix-fuse-build import --", "--json")]
    [InlineData("tvix-fuse-build build --protocol ", "snix\ntvix")]
    [InlineData("tvix-fuse-build --store x ls -", "--recursive")]
    public void CompletionAsTheReadmesBashFunctionAsksForIt(string line, string expected)
    {
        // What the README's bash function runs: the [suggest:POSITION] directive with the whole command line.
        var result = ToolProcess.Run([$"[suggest:{line.Length}]", line]);
        Assert.True(result.ExitCode == 0, result.Stderr);
        Assert.Contains(expected, result.Stdout);
    }

    [Fact]
    public void UsageErrorsExitTwoWithOneLine()
    {
        var missing = ToolProcess.Run(["import"]);
        Assert.Equal(2, missing.ExitCode);
        Assert.StartsWith("tvix-fuse-build: ", missing.Stderr);

        var unknown = ToolProcess.Run(["frobnicate"]);
        Assert.Equal(2, unknown.ExitCode);

        var badDigest = Tool("cat", "blake3-nonsense");
        Assert.Equal(2, badDigest.ExitCode);
        Assert.DoesNotContain("   at ", badDigest.Stderr);
    }

    [Fact]
    public void FailuresExitOneWithOneClearLine()
    {
        var result = Tool("import", Path.Combine(_temp, "does-not-exist"));
        Assert.Equal(1, result.ExitCode);
        Assert.Equal($"tvix-fuse-build: error: cannot import {Path.Combine(_temp, "does-not-exist")}: no such file or directory", result.Stderr.Trim());

        // A store address that cannot be parsed is bad usage; one that names something that is not a store is a failure.
        var badStore = ToolProcess.Run(["--store", "sled:///x", "import", "/etc/hostname"]);
        Assert.Equal(2, badStore.ExitCode);
        Assert.StartsWith("tvix-fuse-build: error: invalid store address 'sled:///x': unknown scheme 'sled'", badStore.Stderr);

        var notAStore = ToolProcess.Run(["--store", "local:///etc/passwd", "import", "/etc/hostname"]);
        Assert.Equal((1, "tvix-fuse-build: error: cannot open the store local:///etc/passwd: /etc/passwd is a file, not a directory\n"), (notAStore.ExitCode, notAStore.Stderr));
    }

    [Fact]
    public void ImportPrintsNodesAndLsCatExportReadThemBack()
    {
        string tree = MakeTree();
        var import = Tool("import", tree);
        Assert.True(import.ExitCode == 0, import.Stderr);
        var fields = import.Stdout.Trim().Split('\t');
        Assert.Equal(["tree", "directory"], fields[..2]);
        string digest = fields[2];

        var ls = Tool("ls", digest);
        Assert.Equal(0, ls.ExitCode);
        Assert.Contains("hello.txt", ls.Stdout);
        Assert.Contains("-r-xr-xr-x", ls.Stdout);
        Assert.Contains("link -> hello.txt", ls.Stdout);

        var cat = Tool("cat", digest + "/sub/deep.txt");
        Assert.Equal(0, cat.ExitCode);
        Assert.Equal("deep contents\n", cat.Stdout);

        string exported = Path.Combine(_temp, "exported");
        var export = Tool("export", digest, exported);
        Assert.True(export.ExitCode == 0, export.Stderr);
        Assert.Equal("deep contents\n", File.ReadAllText(Path.Combine(exported, "sub", "deep.txt")));
        Assert.Equal("hello.txt", new FileInfo(Path.Combine(exported, "link")).LinkTarget);
    }

    [Fact]
    public void JsonNodesRoundTripThroughExportNodes()
    {
        string tree = MakeTree();
        var import = Tool("import", "--json", tree, Path.Combine(tree, "hello.txt"));
        Assert.True(import.ExitCode == 0, import.Stderr);
        using var json = JsonDocument.Parse(import.Stdout);
        Assert.Equal(2, json.RootElement.GetArrayLength());
        Assert.True(json.RootElement[0].TryGetProperty("directory", out _));
        Assert.True(json.RootElement[1].TryGetProperty("file", out _));

        string nodes = Path.Combine(_temp, "nodes.json");
        File.WriteAllText(nodes, import.Stdout);
        string into = Path.Combine(_temp, "into");
        Directory.CreateDirectory(into);
        var export = Tool("export", "--nodes", nodes, into);
        Assert.True(export.ExitCode == 0, export.Stderr);
        Assert.Equal("Hello World!", File.ReadAllText(Path.Combine(into, "hello.txt")));
        Assert.Equal("deep contents\n", File.ReadAllText(Path.Combine(into, "tree", "sub", "deep.txt")));
    }

    [Fact]
    public void TwoProcessesImportingTheSameTreeIntoOneStoreAtOnce()
    {
        const string tree = "/usr/lib/python3";
        var first = ToolProcess.Start(["--store", Store, "import", tree]);
        var second = ToolProcess.Start(["--store", Store, "import", tree]);
        var outputs = new[] { first, second }.Select(p =>
        {
            string stdout = p.StandardOutput.ReadToEnd();
            string stderr = p.StandardError.ReadToEnd();
            Assert.True(p.WaitForExit(TimeSpan.FromMinutes(5)), "import did not finish");
            Assert.True(p.ExitCode == 0, stderr);
            p.Dispose();
            return stdout;
        }).ToList();
        Assert.Equal(outputs[0], outputs[1]);

        // The store is whole: exporting it gives the original tree back, and no temporary file is left.
        string digest = outputs[0].Split('\t')[2];
        string exported = Path.Combine(_temp, "python3");
        var export = Tool("export", digest, exported);
        Assert.True(export.ExitCode == 0, export.Stderr);
        var diff = System.Diagnostics.Process.Start("diff", ["-r", "--no-dereference", tree, exported])!;
        diff.WaitForExit();
        Assert.Equal(0, diff.ExitCode);
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(_temp, "store", "tmp")));
    }

    private string MakeTree()
    {
        string tree = Path.Combine(_temp, "tree");
        Directory.CreateDirectory(Path.Combine(tree, "sub"));
        File.WriteAllText(Path.Combine(tree, "hello.txt"), "Hello World!");
        File.WriteAllText(Path.Combine(tree, "sub", "deep.txt"), "deep contents\n");
        File.WriteAllText(Path.Combine(tree, "run"), "#!/bin/sh\n");
        File.SetUnixFileMode(Path.Combine(tree, "run"), (UnixFileMode)0x1ED);
        File.CreateSymbolicLink(Path.Combine(tree, "link"), "hello.txt");
        return tree;
    }
}
