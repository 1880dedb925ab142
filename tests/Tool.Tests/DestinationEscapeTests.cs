using System.Text;
using System.Text.Json.Nodes;
using Google.Protobuf;
using TvixFuseBuild.Castore.Tests;
using TvixBuild = Tvix.Build.V1;

namespace TvixFuseBuild.Tool.Tests;

/// <summary>
/// Never replace what is not ours (issue 12): the tool, run as root as a real process, pointed at device nodes, FIFOs,
/// symlinks and directories where it writes — <c>build --out</c>, <c>--log-file</c>, <c>export</c>, <c>run</c>'s
/// results, <c>--store</c>. Each device must still be the same device afterwards, each FIFO's reader must get the
/// bytes, and each refusal must say what it refused. Fails (never skips) when not root.
/// </summary>
public sealed class DestinationEscapeTests : IDisposable
{
    private const string OutPath = "nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo";
    private const string Busybox = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-busybox";
    private readonly string _temp;
    private readonly Dictionary<string, string> _environment;

    public DestinationEscapeTests()
    {
        SpecialFiles.RequireRoot();
        _temp = Directory.CreateTempSubdirectory("tvix-fuse-build-dest-test-").FullName;
        File.SetUnixFileMode(_temp, (UnixFileMode)0x1ED);
        _environment = new Dictionary<string, string> { ["XDG_DATA_HOME"] = Path.Combine(_temp, "data") };
    }

    public void Dispose()
    {
        var chmod = System.Diagnostics.Process.Start("chmod", ["-R", "u+rwX", _temp])!;
        chmod.WaitForExit();
        Directory.Delete(_temp, recursive: true);
    }

    private ToolProcess.Result Tool(string[] arguments, string? workingDirectory = null) =>
        ToolProcess.Run(arguments, _environment, workingDirectory: workingDirectory);

    private string Temp(string name) => Path.Combine(_temp, name);

    /// <summary>A busybox tree with the applets the scripts use, as a host directory.</summary>
    private string BusyboxTree()
    {
        string tree = Temp("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-busybox");
        if (!Directory.Exists(tree))
        {
            Directory.CreateDirectory(Path.Combine(tree, "bin"));
            File.Copy("/bin/busybox", Path.Combine(tree, "bin", "busybox"));
            foreach (string applet in new[] { "sh", "echo", "mkdir" })
            {
                File.CreateSymbolicLink(Path.Combine(tree, "bin", applet), "busybox");
            }
        }

        return tree;
    }

    /// <summary>A request whose command logs LOG-LINE and makes a directory output; returns the request file.</summary>
    private string WriteRequest()
    {
        var import = Tool(["import", "--json", BusyboxTree()]);
        Assert.True(import.ExitCode == 0, import.Stderr);
        var busybox = JsonNode.Parse(import.Stdout)!.AsArray()[0]!;
        var request = new JsonObject
        {
            ["inputs"] = new JsonArray(busybox.DeepClone()),
            ["commandArgs"] = new JsonArray($"{Busybox}/bin/sh", "-c", "echo LOG-LINE; mkdir $out; echo x > $out/x"),
            ["workingDir"] = "build",
            ["scratchPaths"] = new JsonArray("build", "nix/store"),
            ["inputsDir"] = "nix/store",
            ["outputs"] = new JsonArray(OutPath),
            ["environmentVars"] = new JsonArray(
                new JsonObject { ["key"] = "PATH", ["value"] = Base64($"{Busybox}/bin") },
                new JsonObject { ["key"] = "out", ["value"] = Base64("/" + OutPath) }),
        };
        string path = Temp("request.json");
        File.WriteAllText(path, request.ToJsonString());
        return path;
    }

    private static string Base64(string text) => Convert.ToBase64String(Encoding.UTF8.GetBytes(text));

    private static void AssertReply(string json) =>
        Assert.Equal("fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo", JsonParser.Default.Parse<TvixBuild.Build>(json).Outputs.Single().Directory.Name.ToStringUtf8());

    private static void AssertOneErrorLine(ToolProcess.Result result, string expectedStart)
    {
        Assert.True(result.ExitCode == 1, $"exit {result.ExitCode}: {result.Stderr}");
        string last = result.Stderr.TrimEnd().Split('\n')[^1];
        Assert.StartsWith($"tvix-fuse-build: error: {expectedStart}", last);
        Assert.DoesNotContain("   at ", result.Stderr);
    }

    [Fact]
    public void BuildOutAndLogFileWriteThroughACharacterDeviceThatStaysADevice()
    {
        string request = WriteRequest();
        string device = Temp("null");
        SpecialFiles.MakeNullDevice(device);

        var result = Tool(["build", "--quiet", "--out", device, "--log-file", device, request]);
        Assert.True(result.ExitCode == 0, result.Stderr);
        Assert.Equal(string.Empty, result.Stdout); // the reply went to --out
        Assert.Equal(SpecialFiles.NullDevice, SpecialFiles.Describe(device));
        Assert.DoesNotContain(Directory.EnumerateFileSystemEntries(_temp), e => Path.GetFileName(e).StartsWith(".null", StringComparison.Ordinal));
    }

    [Fact]
    public void BuildOutAndLogFileWriteThroughFifosToTheirReaders()
    {
        string request = WriteRequest();
        string replyFifo = Temp("reply.fifo");
        string logFifo = Temp("log.fifo");
        SpecialFiles.MakeFifo(replyFifo);
        SpecialFiles.MakeFifo(logFifo);

        var reply = new SpecialFiles.FifoReader(replyFifo);
        var log = new SpecialFiles.FifoReader(logFifo);
        var result = Tool(["build", "--quiet", "--out", replyFifo, "--log-file", logFifo, request]);
        byte[] replyBytes = reply.Finish(), logBytes = log.Finish();
        Assert.True(result.ExitCode == 0, result.Stderr);
        AssertReply(Encoding.UTF8.GetString(replyBytes));
        Assert.Equal("LOG-LINE\n", Encoding.UTF8.GetString(logBytes));
        Assert.Equal("fifo 0:0", SpecialFiles.Describe(replyFifo));
        Assert.Equal("fifo 0:0", SpecialFiles.Describe(logFifo));
    }

    [Fact]
    public void BuildRefusesASymlinkOrADirectoryAtOutOrLogFileAndLeavesThemAlone()
    {
        string request = WriteRequest();
        string outside = Temp("outside");
        Directory.CreateDirectory(outside);
        string precious = Path.Combine(outside, "precious");
        File.WriteAllText(precious, "keep me");
        string link = Temp("link");
        File.CreateSymbolicLink(link, precious);
        string dangling = Temp("dangling");
        File.CreateSymbolicLink(dangling, Path.Combine(outside, "created-through-a-link"));
        string directory = Temp("dir");
        Directory.CreateDirectory(directory);

        foreach (var (path, kind) in new[] { (link, "a symbolic link"), (dangling, "a symbolic link"), (directory, "a directory") })
        {
            // --rebuild: the log file is opened (and refused) before the command would run.
            AssertOneErrorLine(Tool(["build", "--quiet", "--rebuild", "--log-file", path, request]), $"refusing to replace {path}: it is {kind}");
            AssertOneErrorLine(Tool(["build", "--quiet", "--out", path, request]), $"refusing to replace {path}: it is {kind}");
        }

        Assert.Equal("keep me", File.ReadAllText(precious));
        Assert.Equal([precious], Directory.EnumerateFileSystemEntries(outside));
        Assert.Equal(precious, new FileInfo(link).LinkTarget);
        Assert.Empty(Directory.EnumerateFileSystemEntries(directory));
    }

    [Fact]
    public void BuildReplacesARegularFileAtOutByRename()
    {
        string request = WriteRequest();
        string reply = Temp("reply.json");
        File.WriteAllText(reply, "old");
        string hardLink = Temp("hard-link");
        var ln = System.Diagnostics.Process.Start("ln", [reply, hardLink])!;
        ln.WaitForExit();
        Assert.Equal(0, ln.ExitCode);

        var result = Tool(["build", "--quiet", "--out", reply, request]);
        Assert.True(result.ExitCode == 0, result.Stderr);
        AssertReply(File.ReadAllText(reply));
        Assert.Equal("old", File.ReadAllText(hardLink)); // written beside and renamed, not truncated in place
    }

    private (string File, string Tree) ImportFileAndTree()
    {
        string tree = Temp("content");
        Directory.CreateDirectory(tree);
        File.WriteAllText(Path.Combine(tree, "a"), "file a\n");
        var file = Tool(["import", Path.Combine(tree, "a")]);
        Assert.True(file.ExitCode == 0, file.Stderr);
        var directory = Tool(["import", tree]);
        Assert.True(directory.ExitCode == 0, directory.Stderr);
        // `import` prints NAME<TAB>KIND<TAB>DIGEST...; the digest is the third field.
        return (file.Stdout.Split('\t')[2].Trim(), directory.Stdout.Split('\t')[2].Trim());
    }

    [Fact]
    public void ExportWritesAFileThroughADeviceOrFifoRefusesATreeAndNeverFollowsALink()
    {
        var (file, tree) = ImportFileAndTree();
        string device = Temp("null");
        SpecialFiles.MakeNullDevice(device);
        string fifo = Temp("pipe");
        SpecialFiles.MakeFifo(fifo);

        var toDevice = Tool(["export", file, device]);
        Assert.True(toDevice.ExitCode == 0, toDevice.Stderr);
        var reader = new SpecialFiles.FifoReader(fifo);
        var toFifo = Tool(["export", file, fifo]);
        Assert.Equal("file a\n", Encoding.UTF8.GetString(reader.Finish()));
        Assert.True(toFifo.ExitCode == 0, toFifo.Stderr);

        AssertOneErrorLine(Tool(["export", tree, device]), $"refusing to export a directory to {device}: it is a character device");
        Assert.Equal(SpecialFiles.NullDevice, SpecialFiles.Describe(device));
        Assert.Equal("fifo 0:0", SpecialFiles.Describe(fifo));

        string precious = Temp("precious");
        File.WriteAllText(precious, "keep me");
        string link = Temp("link");
        File.CreateSymbolicLink(link, precious);
        AssertOneErrorLine(Tool(["export", file, link]), $"cannot export to {link}: it already exists");
        AssertOneErrorLine(Tool(["export", tree, link]), $"cannot export to {link}: it already exists");
        Assert.Equal("keep me", File.ReadAllText(precious));
        Assert.Equal(precious, new FileInfo(link).LinkTarget);
    }

    [Fact]
    public void RunResultsWriteAFileThroughADeviceOrFifoRefuseATreeThereAndReplaceALinkNotItsTarget()
    {
        string work = Temp("work");
        Directory.CreateDirectory(work);
        string tools = BusyboxTree();
        string result = Path.Combine(work, "result-out");
        string[] fileOutput = ["run", "--quiet", "--input", tools + "=tools", "--", "sh", "-c", "echo hi > $out"];

        SpecialFiles.MakeNullDevice(result);
        var toDevice = Tool(fileOutput, work);
        Assert.True(toDevice.ExitCode == 0, toDevice.Stderr);
        AssertOneErrorLine(
            Tool(["run", "--quiet", "--input", tools + "=tools", "--", "sh", "-c", "mkdir $out"], work),
            $"refusing to export a directory to {result}: it is a character device");
        Assert.Equal(SpecialFiles.NullDevice, SpecialFiles.Describe(result));

        File.Delete(result);
        SpecialFiles.MakeFifo(result);
        var reader = new SpecialFiles.FifoReader(result);
        var toFifo = Tool(fileOutput, work);
        Assert.Equal("hi\n", Encoding.UTF8.GetString(reader.Finish()));
        Assert.True(toFifo.ExitCode == 0, toFifo.Stderr);
        Assert.Equal("fifo 0:0", SpecialFiles.Describe(result));

        // A symlink there is an earlier result (a symlink output) or a plant: the link itself is replaced, never followed.
        File.Delete(result);
        string precious = Temp("precious");
        File.WriteAllText(precious, "keep me");
        File.CreateSymbolicLink(result, precious);
        var overLink = Tool(fileOutput, work);
        Assert.True(overLink.ExitCode == 0, overLink.Stderr);
        Assert.Null(new FileInfo(result).LinkTarget);
        Assert.Equal("hi\n", File.ReadAllText(result));
        Assert.Equal("keep me", File.ReadAllText(precious));
        Assert.Equal(["result-out"], Directory.EnumerateFileSystemEntries(work).Select(e => Path.GetFileName(e)));
    }

    [Fact]
    public void AStoreWhoseBlobsDirectoryIsASymlinkIsRefusedAndNothingIsWrittenThroughIt()
    {
        string outside = Temp("outside");
        Directory.CreateDirectory(outside);
        string store = Temp("store");
        Directory.CreateDirectory(store);
        Directory.CreateSymbolicLink(Path.Combine(store, "blobs"), outside);
        string input = Temp("input");
        File.WriteAllText(input, "data");

        AssertOneErrorLine(
            Tool(["--store", "local://" + store, "import", input]),
            $"refusing to use the store at {store}: {Path.Combine(store, "blobs")} is a symbolic link, not a directory");
        Assert.Empty(Directory.EnumerateFileSystemEntries(outside));

        var onDev = Tool(["--store", "local:///dev", "import", input]);
        AssertOneErrorLine(onDev, "/dev is not empty and is not a tvix-fuse-build store");
        Assert.Equal(SpecialFiles.NullDevice, SpecialFiles.Describe("/dev/null"));
    }

    /// <summary>The issue's own case: the host's /dev/null, for real, as every command that writes a path is pointed at it.</summary>
    [Fact]
    public void TheHostsDevNullSurvivesEveryCommandPointedAtIt()
    {
        Assert.Equal(SpecialFiles.NullDevice, SpecialFiles.Describe("/dev/null"));
        string request = WriteRequest();
        var (file, tree) = ImportFileAndTree();

        var build = Tool(["build", "--quiet", "--rebuild", "--out", "/dev/null", "--log-file", "/dev/null", request]);
        Assert.True(build.ExitCode == 0, build.Stderr);
        Assert.Equal(SpecialFiles.NullDevice, SpecialFiles.Describe("/dev/null"));

        var export = Tool(["export", file, "/dev/null"]);
        Assert.True(export.ExitCode == 0, export.Stderr);
        AssertOneErrorLine(Tool(["export", tree, "/dev/null"]), "refusing to export a directory to /dev/null: it is a character device");
        Assert.Equal(SpecialFiles.NullDevice, SpecialFiles.Describe("/dev/null"));

        // run writes only PREFIX-NAME (always with a dash), never /dev/null itself: its device case is the mknod test above.
    }
}
