using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Google.Protobuf;
using TvixBuild = Tvix.Build.V1;

namespace TvixFuseBuild.Tool.Tests;

/// <summary>
/// The NativeAOT tvix-fuse-build, published once per test run: scripts/test publishes it before the tests and names it
/// in <c>TVIX_FUSE_BUILD_NATIVE</c>; without that variable this fixture publishes it itself (a few minutes). The
/// executable and tvix-sandbox-init are copied side by side into a directory of their own, as the tool package
/// installs them, so nothing of the build tree is within reach.
/// </summary>
public sealed class NativeTool : IDisposable
{
    public const string Variable = "TVIX_FUSE_BUILD_NATIVE";

    private readonly string _directory = Directory.CreateTempSubdirectory("tvix-fuse-native-tool-").FullName;

    public NativeTool()
    {
        string? published = Environment.GetEnvironmentVariable(Variable);
        if (string.IsNullOrEmpty(published))
        {
            published = Publish();
        }

        Assert.True(File.Exists(published), $"{Variable} names no file: {published}");
        string from = Path.GetDirectoryName(Path.GetFullPath(published))!;
        // NativeAOT: no managed assemblies next to it (a framework-dependent build has TvixFuseBuild.Tool.dll there).
        Assert.Empty(Directory.GetFiles(from, "*.dll"));

        File.SetUnixFileMode(_directory, (UnixFileMode)0x1ED);
        Executable = Path.Combine(_directory, "tvix-fuse-build");
        File.Copy(published, Executable);
        File.Copy(Path.Combine(from, "tvix-sandbox-init"), Path.Combine(_directory, "tvix-sandbox-init"));
        Assert.Equal(2, Directory.GetFiles(_directory).Length);
    }

    public string Executable { get; }

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private static string Publish()
    {
        string repo = RepoRoot();
        var psi = new ProcessStartInfo("dotnet", ["publish", "src/Tool/Tool.csproj", "-c", "Release", "-r", "linux-x64", "-nologo", "-v", "q", "-clp:ErrorsOnly"])
        {
            WorkingDirectory = repo,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(30)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail("the NativeAOT publish of the tool did not finish in 30 minutes");
        }

        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"the NativeAOT publish of the tool failed:\n{stdout.Result}\n{stderr.Result}");
        return Path.Combine(repo, "src", "Tool", "bin", "Release", "net10.0", "linux-x64", "publish", "TvixFuseBuild.Tool");
    }

    private static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "TvixFuseBuild.sln")))
        {
            dir = dir.Parent;
        }

        Assert.True(dir is not null, $"cannot find the repository (TvixFuseBuild.sln) above {AppContext.BaseDirectory}, and {Variable} is not set");
        return dir.FullName;
    }
}

/// <summary>
/// Every command of the NativeAOT tool once, real processes throughout: what it prints is compared with the
/// framework-dependent tool built next to the tests (same arguments, its own store), which the other test classes
/// cover in depth.
/// </summary>
public sealed class NativeToolTests : IClassFixture<NativeTool>, IDisposable
{
    private const string BusyboxName = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-busybox";
    private const string OutPath = "nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo";
    private readonly NativeTool _native;
    private readonly string _temp = Directory.CreateTempSubdirectory("tvix-fuse-native-test-").FullName;
    private readonly List<Process> _processes = [];

    public NativeToolTests(NativeTool native)
    {
        _native = native;
        File.SetUnixFileMode(_temp, (UnixFileMode)0x1ED);
    }

    public void Dispose()
    {
        ToolProcess.StopAll(_processes);
        var chmod = Process.Start("chmod", ["-R", "u+rwX", _temp])!;
        chmod.WaitForExit();
        Directory.Delete(_temp, recursive: true);
    }

    private Dictionary<string, string> EnvironmentFor(string who) => new() { ["XDG_DATA_HOME"] = Path.Combine(_temp, who) };

    private ToolProcess.Result Native(string[] arguments, string? workingDirectory = null) =>
        ToolProcess.Run(arguments, EnvironmentFor("native"), workingDirectory: workingDirectory, executable: _native.Executable);

    private ToolProcess.Result Jit(string[] arguments) => ToolProcess.Run(arguments, EnvironmentFor("jit"));

    private static ToolProcess.Result Ok(ToolProcess.Result result)
    {
        Assert.True(result.ExitCode == 0, $"exit {result.ExitCode}: {result.Stderr}");
        return result;
    }

    private string Tree()
    {
        string tree = Path.Combine(_temp, "tree");
        Directory.CreateDirectory(Path.Combine(tree, "sub"));
        File.WriteAllText(Path.Combine(tree, "hello"), "hello /nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo\n");
        File.WriteAllBytes(Path.Combine(tree, "sub", "data"), Enumerable.Range(0, 100_000).Select(i => (byte)i).ToArray());
        File.CreateSymbolicLink(Path.Combine(tree, "link"), "sub/data");
        return tree;
    }

    private static string Digest(string importJson) =>
        "blake3-" + JsonNode.Parse(importJson)!.AsArray()[0]!["directory"]!["digest"]!.GetValue<string>();

    [Fact]
    public void HelpVersionAndUsageErrorsAreThoseOfTheFrameworkDependentTool()
    {
        foreach (string[] arguments in new string[][] { ["--help"], ["--version"], ["build", "--help"], ["serve", "--help"], ["store", "info", "--help"] })
        {
            var native = Ok(Native(arguments));
            Assert.Equal(Jit(arguments).Stdout, native.Stdout);
        }

        foreach (string[] arguments in new string[][] { ["bogus"], ["build"], ["gc", "--max-size", "lots"] })
        {
            var native = Native(arguments);
            var jit = Jit(arguments);
            Assert.NotEqual(0, native.ExitCode);
            Assert.Equal((jit.ExitCode, jit.Stderr), (native.ExitCode, native.Stderr));
        }
    }

    [Fact]
    public void StoreCommandsWork()
    {
        string tree = Tree();
        var import = Ok(Native(["import", "--json", tree]));
        Assert.Equal(Ok(Jit(["import", "--json", tree])).Stdout, import.Stdout);
        string digest = Digest(import.Stdout);

        Assert.Equal(Ok(Jit(["ls", digest])).Stdout, Ok(Native(["ls", digest])).Stdout);
        Assert.Equal(File.ReadAllText(Path.Combine(tree, "hello")), Ok(Native(["cat", digest + "/hello"])).Stdout);

        string exported = Path.Combine(_temp, "exported");
        Ok(Native(["export", digest, exported]));
        Assert.Equal(File.ReadAllBytes(Path.Combine(tree, "sub", "data")), File.ReadAllBytes(Path.Combine(exported, "sub", "data")));
        Assert.Equal("sub/data", new FileInfo(Path.Combine(exported, "link")).LinkTarget);

        string needles = Path.Combine(_temp, "needles");
        File.WriteAllText(needles, "fhaj6gmwns62s6ypkcldbaj2ybvkhx3p\nnot-there\n");
        string[] refscan = ["refscan", "--needles", needles, "--json", tree];
        var found = Ok(Native(refscan));
        Assert.Equal(Ok(Jit(refscan)).Stdout, found.Stdout);
        Assert.Contains("fhaj6gmwns62s6ypkcldbaj2ybvkhx3p", found.Stdout);

        Ok(Native(["root", "add", "kept", digest]));
        Assert.Contains("kept", Ok(Native(["root", "list"])).Stdout);
        var info = JsonDocument.Parse(Ok(Native(["store", "info", "--json"])).Stdout).RootElement;
        Assert.Equal(JsonValueKind.Object, info.ValueKind);
        Ok(Native(["gc", "--older-than", "0s"]));
        Assert.Equal(File.ReadAllText(Path.Combine(tree, "hello")), Ok(Native(["cat", digest + "/hello"])).Stdout);
        Ok(Native(["root", "remove", "kept"]));
    }

    [Fact]
    public void BuildsRunInTheSandboxAndRepeatsComeFromTheResultCache()
    {
        string busybox = Path.Combine(_temp, BusyboxName);
        Directory.CreateDirectory(Path.Combine(busybox, "bin"));
        File.Copy("/bin/busybox", Path.Combine(busybox, "bin", "busybox"));
        foreach (string applet in new[] { "sh", "mkdir", "echo" })
        {
            File.CreateSymbolicLink(Path.Combine(busybox, "bin", applet), "busybox");
        }

        var input = JsonNode.Parse(Ok(Native(["import", "--json", busybox])).Stdout)!.AsArray()[0]!;
        static string Base64(string text) => Convert.ToBase64String(Encoding.UTF8.GetBytes(text));
        var request = new JsonObject
        {
            ["inputs"] = new JsonArray(input.DeepClone()),
            ["commandArgs"] = new JsonArray($"/nix/store/{BusyboxName}/bin/sh", "-c", $"echo building; mkdir $out; echo /nix/store/{BusyboxName} > $out/ref"),
            ["workingDir"] = "build",
            ["scratchPaths"] = new JsonArray("build", "nix/store"),
            ["inputsDir"] = "nix/store",
            ["outputs"] = new JsonArray(OutPath),
            ["environmentVars"] = new JsonArray(
                new JsonObject { ["key"] = "PATH", ["value"] = Base64($"/nix/store/{BusyboxName}/bin") },
                new JsonObject { ["key"] = "out", ["value"] = Base64("/" + OutPath) }),
            ["refscanNeedles"] = new JsonArray("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
        };
        string file = Path.Combine(_temp, "request.json");
        File.WriteAllText(file, request.ToJsonString());

        var built = Ok(Native(["build", file]));
        Assert.Contains("building", built.Stderr);
        var reply = JsonParser.Default.Parse<TvixBuild.Build>(built.Stdout);
        Assert.Equal([0UL], reply.OutputsNeedles.Single().Needles);
        string output = "blake3-" + reply.Outputs.Single().Directory.Digest.ToBase64();
        Assert.Equal($"/nix/store/{BusyboxName}\n", Ok(Native(["cat", output + "/ref"])).Stdout);

        var cached = Ok(Native(["build", file]));
        Assert.DoesNotContain("building", cached.Stderr);
        Assert.Equal(built.Stdout, cached.Stdout);

        // The JSON reader names the field it refuses, as in the framework-dependent tool.
        request["commandArgs"] = 5;
        File.WriteAllText(file, request.ToJsonString());
        var bad = Native(["build", file]);
        Assert.Equal(1, bad.ExitCode);
        Assert.Contains("BuildRequest.commandArgs", bad.Stderr);
        Assert.Equal(Jit(["build", file]).Stderr, bad.Stderr);

        // run: host paths imported, the command in the sandbox, the output exported.
        string work = Directory.CreateDirectory(Path.Combine(_temp, "work")).FullName;
        var run = Ok(Native(["run", "--input", busybox + "=tools", "--", "sh", "-c", "mkdir $out; echo ran > $out/x"], workingDirectory: work));
        Assert.Equal("ran\n", File.ReadAllText(Path.Combine(work, "result-out", "x")));
        Assert.StartsWith("out\t", run.Stdout, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ServeAnswersTheClientAndStopsOnSigterm()
    {
        string tree = Tree();
        string store = Path.Combine(_temp, "served");
        string digest = Digest(Ok(Native(["--store", "local://" + store, "import", "--json", tree])).Stdout);
        string socket = Path.Combine(_temp, "serve.sock");

        var server = ToolProcess.Start(["--store", "local://" + store, "serve", "--listen", "unix:" + socket], EnvironmentFor("native"), executable: _native.Executable);
        _processes.Add(server);
        var stderr = server.StandardError.ReadToEndAsync();
        using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60)))
        {
            Assert.Equal($"listening on unix:{socket}", await server.StandardOutput.ReadLineAsync(timeout.Token));
        }

        // The framework-dependent tool as the client.
        var ls = Ok(Jit(["--store", "grpc+unix://" + socket, "ls", digest]));
        Assert.Equal(Ok(Native(["--store", "local://" + store, "ls", digest])).Stdout, ls.Stdout);

        Assert.Equal(0, ToolProcess.Signal(server.Id, 15));
        Assert.True(server.WaitForExit(TimeSpan.FromSeconds(60)), "serve did not stop on SIGTERM");
        Assert.True(server.ExitCode == 143, await stderr); // 128 + SIGTERM, after the graceful stop
        Assert.Contains("SIGTERM", await stderr);
    }

    [Fact]
    public async Task MountServesTheTreeUntilSigterm()
    {
        string tree = Tree();
        string digest = Digest(Ok(Native(["import", "--json", tree])).Stdout);
        string mountpoint = Directory.CreateDirectory(Path.Combine(_temp, "mnt")).FullName;

        var mount = ToolProcess.Start(["mount", mountpoint, "--directory", digest], EnvironmentFor("native"), executable: _native.Executable);
        _processes.Add(mount);
        var stderr = mount.StandardError.ReadToEndAsync();
        using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60)))
        {
            string? line = await mount.StandardOutput.ReadLineAsync(timeout.Token);
            Assert.True(line == $"mounted {mountpoint}", $"{line}; {(mount.HasExited ? await stderr : "")}");
        }

        Assert.Equal(File.ReadAllBytes(Path.Combine(tree, "sub", "data")), File.ReadAllBytes(Path.Combine(mountpoint, "sub", "data")));

        Assert.Equal(0, ToolProcess.Signal(mount.Id, 15));
        Assert.True(mount.WaitForExit(TimeSpan.FromSeconds(60)), "mount did not stop on SIGTERM");
        Assert.True(mount.ExitCode == 143, await stderr); // 128 + SIGTERM, after unmounting
        Assert.DoesNotContain($" {mountpoint} ", File.ReadAllText("/proc/self/mountinfo"));
    }
}
