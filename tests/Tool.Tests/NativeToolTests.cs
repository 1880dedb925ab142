using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Health.V1;
using Grpc.Reflection.V1Alpha;
using TvixFuseBuild.Castore.Grpc;
using TvixFuseBuild.Server.Tests;
using ServingStatus = Grpc.Health.V1.HealthCheckResponse.Types.ServingStatus;
using TvixBuild = Tvix.Build.V1;

namespace TvixFuseBuild.Tool.Tests;

/// <summary>
/// The NativeAOT tvix-fuse-build, published once per test run: scripts/test publishes it before the tests and names it
/// in <c>TVIX_FUSE_BUILD_NATIVE</c>; without that variable this fixture publishes it itself (a few minutes). The
/// executable, tvix-sandbox-init and the SIMD kernels libraries are copied side by side into a directory of their own,
/// as the tool package installs them, so nothing of the build tree is within reach.
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
        // NativeAOT: no managed assemblies next to it (a framework-dependent build has TvixFuseBuild.Tool.dll there), nor
        // what the referenced projects would bring (the Sandbox Exe's apphost, runtimeconfig and deps files, symbols).
        Assert.Empty(Directory.GetFiles(from, "*.dll"));
        Assert.Empty(Directory.GetFiles(from, "*.json"));
        Assert.Empty(Directory.GetFiles(from, "*.pdb"));
        Assert.False(File.Exists(Path.Combine(from, "TvixFuseBuild.Sandbox")), "the Sandbox project's apphost is next to the native tool");

        File.SetUnixFileMode(_directory, (UnixFileMode)0x1ED);
        Executable = Path.Combine(_directory, "tvix-fuse-build");
        File.Copy(published, Executable);
        foreach (string file in (string[])[FullToolName, "tvix-sandbox-init", .. KernelsLibraries])
        {
            File.Copy(Path.Combine(from, file), Path.Combine(_directory, file));
        }

        Assert.Equal(5, Directory.GetFiles(_directory).Length);
    }

    /// <summary>The whole tool, next to the front executable (which runs it for serve, remote stores and builders).</summary>
    public const string FullToolName = "tvix-fuse-build-full";

    /// <summary>The directory of the executables, as a package installs them.</summary>
    public string InstallDirectory => _directory;

    public string FullExecutable => Path.Combine(_directory, FullToolName);

    /// <summary>The SIMD kernels libraries the package carries next to the executable (src/Kernels).</summary>
    public static readonly string[] KernelsLibraries = ["tvix-kernels-x86-64-v3.so", "tvix-kernels-x86-64-v4.so"];

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

    public static string RepoRoot()
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
public sealed partial class NativeToolTests : IClassFixture<NativeTool>, IDisposable
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

    /// <summary>3 MiB of random bytes with a store path inside: past what the tool hashes before it loads its kernels library.</summary>
    private string LargeTree()
    {
        string tree = Path.Combine(_temp, "large");
        Directory.CreateDirectory(tree);
        var data = new byte[3 << 20];
        new Random(16).NextBytes(data);
        "fhaj6gmwns62s6ypkcldbaj2ybvkhx3p"u8.CopyTo(data.AsSpan(1_500_001));
        File.WriteAllBytes(Path.Combine(tree, "blob"), data);
        File.WriteAllText(Path.Combine(tree, "small"), "/nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo\n");
        return tree;
    }

    private const string KernelsVariable = "TVIX_FUSE_BUILD_SIMD_KERNELS";

    private ToolProcess.Result NativeWithKernels(string mode, string[] arguments, string? executable = null) =>
        ToolProcess.Run(
            arguments,
            new Dictionary<string, string>(EnvironmentFor("native-" + mode)) { [KernelsVariable] = mode },
            executable: executable ?? _native.Executable);

    [Fact]
    public void HashesAndScansAtTheCpusWidthWithItsKernelsLibrary()
    {
        // `required`: the library for this CPU is loaded at the first kernel call, or the command fails. The JIT-compiled
        // tool runs its own AVX-512/AVX2 kernels; `off` runs the native tool's own 128-bit ones. All three agree.
        string tree = LargeTree();
        string needles = Path.Combine(_temp, "needles");
        File.WriteAllText(needles, "fhaj6gmwns62s6ypkcldbaj2ybvkhx3p\n00000000000000000000000000000000\n");
        string[] import = ["import", "--json", tree];
        string[] refscan = ["refscan", "--needles", needles, "--json", tree];

        string expectedImport = Ok(Jit(import)).Stdout;
        string expectedRefscan = Ok(Jit(refscan)).Stdout;
        Assert.Contains("fhaj6gmwns62s6ypkcldbaj2ybvkhx3p", expectedRefscan);
        foreach (string mode in new[] { "required", "off" })
        {
            Assert.Equal(expectedImport, Ok(NativeWithKernels(mode, import)).Stdout);
            Assert.Equal(expectedRefscan, Ok(NativeWithKernels(mode, refscan)).Stdout);
        }

        // And by default, with the library loaded after the first MiB.
        Assert.Equal(expectedImport, Ok(Native(import)).Stdout);
    }

    [Fact]
    public void WithoutItsKernelsLibraryTheToolStillWorksAndRequiredSaysWhatIsMissing()
    {
        string alone = Path.Combine(_temp, "without-kernels");
        Directory.CreateDirectory(alone);
        string executable = Path.Combine(alone, "tvix-fuse-build");
        File.Copy(_native.Executable, executable);
        string tree = LargeTree();
        string[] import = ["import", "--json", tree];

        string expected = Ok(Jit(import)).Stdout;
        Assert.Equal(expected, Ok(ToolProcess.Run(import, EnvironmentFor("alone"), executable: executable)).Stdout);

        var required = NativeWithKernels("required", import, executable);
        Assert.Equal(1, required.ExitCode);
        Assert.Matches($"^tvix-fuse-build: error: {KernelsVariable}=required, but neither tvix-kernels-x86-64-v4.so nor tvix-kernels-x86-64-v3.so is in {Regex.Escape(alone)}/?\n$", required.Stderr);

        var bogus = NativeWithKernels("fast", import);
        Assert.Equal(1, bogus.ExitCode);
        Assert.Equal($"tvix-fuse-build: error: {KernelsVariable} is 'fast'; it takes 'off' or 'required' (or is unset)\n", bogus.Stderr);
    }

    [Fact]
    public void UnderATightAddressSpaceLimitTheKernelsLibraryIsLeftAlone()
    {
        // The library's runtime would stop the process if it could not reserve its heap: with `ulimit -v` at 550 MB (the
        // tool's own runtime sizes its heap from the limit and leaves 170–240 MiB, depending on its threads; at 600 MB
        // the front executable sometimes has 260 MiB left, and at 520 MB it sometimes fails to start a pool thread) it
        // is not loaded, and `required` says why.
        string tree = LargeTree();
        string[] import = ["import", "--json", tree];
        string expected = Ok(Jit(import)).Stdout;
        string[] limited = ["-c", "ulimit -v 550000 && exec \"$0\" \"$@\"", _native.Executable, .. import];

        Assert.Equal(expected, Ok(ToolProcess.Run(limited, EnvironmentFor("limited"), executable: "/bin/sh")).Stdout);
        var required = ToolProcess.Run(
            limited, new Dictionary<string, string>(EnvironmentFor("limited")) { [KernelsVariable] = "required" }, executable: "/bin/sh");
        Assert.Equal(1, required.ExitCode);
        Assert.Matches("^tvix-fuse-build: error: the address-space limit \\(ulimit -v\\) leaves [0-9]+ MiB; the SIMD kernels library needs 256 MiB\n$", required.Stderr);
    }

    /// <summary>busybox (with sh, mkdir and echo) in a host directory named as a store path.</summary>
    private string Busybox()
    {
        string busybox = Path.Combine(_temp, BusyboxName);
        Directory.CreateDirectory(Path.Combine(busybox, "bin"));
        File.Copy("/bin/busybox", Path.Combine(busybox, "bin", "busybox"));
        foreach (string applet in new[] { "sh", "mkdir", "echo" })
        {
            File.CreateSymbolicLink(Path.Combine(busybox, "bin", applet), "busybox");
        }

        return busybox;
    }

    /// <summary>A BuildRequest (JSON) over <paramref name="input"/> whose output refers to the input.</summary>
    private static JsonObject Request(JsonNode input)
    {
        static string Base64(string text) => Convert.ToBase64String(Encoding.UTF8.GetBytes(text));
        return new JsonObject
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
    }

    [Fact]
    public void BuildsRunInTheSandboxAndRepeatsComeFromTheResultCache()
    {
        string busybox = Busybox();
        var input = JsonNode.Parse(Ok(Native(["import", "--json", busybox])).Stdout)!.AsArray()[0]!;
        var request = Request(input);
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
    public void AResultCacheHitStartsNoPoolThread()
    {
        var input = JsonNode.Parse(Ok(Native(["import", "--json", Busybox()])).Stdout)!.AsArray()[0]!;
        string file = Path.Combine(_temp, "request.json");
        File.WriteAllText(file, Request(input).ToJsonString());
        string built = Path.Combine(_temp, "built.json");
        Ok(Native(["build", "--quiet", "--out", built, file]));

        // The same request again, with stderr a FIFO the test has filled: the tool's line saying that the result cache
        // answered blocks there, and its threads are looked at while it does (the reply is not written yet).
        string fifo = Path.Combine(_temp, "stderr.fifo");
        using (var mkfifo = Process.Start("mkfifo", [fifo]))
        {
            mkfifo.WaitForExit();
            Assert.Equal(0, mkfifo.ExitCode);
        }

        int fd = Open(fifo, 2 /* O_RDWR */ | 0x800 /* O_NONBLOCK */);
        Assert.True(fd >= 0, "cannot open the FIFO");
        try
        {
            byte[] filler = new byte[4096];
            while (Write(fd, filler, filler.Length) > 0 || Write(fd, filler, 1) > 0)
            {
            }

            string cached = Path.Combine(_temp, "cached.json");
            var environment = EnvironmentFor("native");
            environment["FIFO"] = fifo;
            using var process = ToolProcess.Start(
                ["-c", "exec \"$0\" \"$@\" 2>\"$FIFO\"", _native.Executable, "build", "--quiet", "--out", cached, file], environment, executable: "sh");
            _processes.Add(process);
            string write = RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? "64" : "1";
            var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(2);
            string[] threads;
            while (true)
            {
                Assert.False(process.HasExited, "the tool ended without writing to its stderr");
                Assert.True(DateTime.UtcNow < deadline, "the tool never blocked writing to its stderr");
                var tasks = Directory.EnumerateDirectories($"/proc/{process.Id}/task").ToList();
                if (tasks.Any(t => WritesTo(process.Id, ReadOrEmpty(Path.Combine(t, "syscall")).Split(' '), write, fifo)))
                {
                    threads = [.. tasks.Select(t => ReadOrEmpty(Path.Combine(t, "comm")).TrimEnd('\n'))];
                    break;
                }

                Thread.Sleep(10);
            }

            Assert.False(File.Exists(cached), "the reply was written before the line that the result cache answered");
            byte[] drain = new byte[65536];
            var log = new MemoryStream();
            while (!process.WaitForExit(10))
            {
                long n = Read(fd, drain, drain.Length);
                if (n > 0)
                {
                    log.Write(drain, 0, (int)n);
                }
            }

            for (long n; (n = Read(fd, drain, drain.Length)) > 0;)
            {
                log.Write(drain, 0, (int)n);
            }

            string said = Encoding.UTF8.GetString(log.ToArray()).TrimStart('\0');
            Assert.True(process.ExitCode == 0, $"exit {process.ExitCode}: {said}");
            Assert.Contains("was built before", said);
            Assert.Equal(File.ReadAllText(built), File.ReadAllText(cached));
            // The runtime's finalizer and signal threads only: no pool worker or gate, no thread for the request or the store.
            Assert.DoesNotContain(threads, t => t.StartsWith(".NET TP", StringComparison.Ordinal) || t.StartsWith(".NET Long", StringComparison.Ordinal));
            Assert.True(threads.Length <= 3, $"threads: {string.Join(", ", threads)}");
        }
        finally
        {
            Close(fd);
        }
    }

    /// <summary>Whether <paramref name="call"/> (a line of /proc/PID/task/TID/syscall) is a write(2) to <paramref name="path"/> (stderr is written through a duplicate).</summary>
    private static bool WritesTo(int pid, string[] call, string write, string path)
    {
        try
        {
            return call.Length > 1 && call[0] == write && call[1].StartsWith("0x", StringComparison.Ordinal) &&
                   new FileInfo($"/proc/{pid}/fd/{Convert.ToInt32(call[1][2..], 16)}").LinkTarget == path;
        }
        catch (IOException)
        {
            return false;
        }
    }

    private static string ReadOrEmpty(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (IOException)
        {
            return "";
        }
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "write", SetLastError = true)]
    private static partial nint Write(int fd, byte[] buffer, nint count);

    [LibraryImport("libc", EntryPoint = "read", SetLastError = true)]
    private static partial nint Read(int fd, byte[] buffer, nint count);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);

    /// <summary>A running native <c>serve</c>: its process, what it printed after the ready line, and its TMPDIR.</summary>
    private sealed class Served(Process process, string address, Task<string> stderr, string tmp)
    {
        public Process Process => process;

        /// <summary>As serve prints it: <c>unix:/PATH</c> or <c>127.0.0.1:PORT</c>.</summary>
        public string Address => address;

        public Task<string> Stderr => stderr;

        public string Tmp => tmp;
    }

    private async Task<Served> ServeAsync(string name, params string[] arguments)
    {
        var environment = EnvironmentFor(name);
        string tmp = Directory.CreateDirectory(Path.Combine(_temp, name + "-tmp")).FullName;
        File.SetUnixFileMode(tmp, (UnixFileMode)0x1ED);
        environment["TMPDIR"] = tmp; // the build directories: seen empty once serve is gone
        var server = ToolProcess.Start(["--store", "local://" + Path.Combine(_temp, name + "-store"), "serve", .. arguments], environment, executable: _native.Executable);
        _processes.Add(server);
        var stderr = server.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        string? line = await server.StandardOutput.ReadLineAsync(timeout.Token);
        Assert.True(line?.StartsWith("listening on ", StringComparison.Ordinal) == true, $"serve did not start: {line}; {(server.HasExited ? await stderr : "")}");
        return new Served(server, line!["listening on ".Length..], stderr, tmp);
    }

    /// <summary>SIGTERM: exit 143 after the graceful stop, saying why; no build directory, mount or child left.</summary>
    private async Task<string> StopAsync(Served served)
    {
        Assert.Equal(0, ToolProcess.Signal(served.Process.Id, 15));
        Assert.True(served.Process.WaitForExit(TimeSpan.FromSeconds(60)), "serve did not stop on SIGTERM");
        string stderr = await served.Stderr;
        Assert.True(served.Process.ExitCode == 143, stderr); // 128 + SIGTERM
        Assert.Contains("SIGTERM", stderr);
        Assert.Empty(Directory.EnumerateFiles(served.Tmp, "*", SearchOption.AllDirectories));
        string builds = Path.Combine(served.Tmp, "tvix-fuse-builds-0");
        Assert.False(Directory.Exists(builds) && Directory.EnumerateFileSystemEntries(builds).Any(), "a build directory is left behind");
        Assert.DoesNotContain(_temp, File.ReadAllText("/proc/self/mountinfo"));
        foreach (string pid in Directory.EnumerateDirectories("/proc").Select(Path.GetFileName).Where(n => n!.All(char.IsAsciiDigit))!)
        {
            try
            {
                string cmdline = File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ');
                Assert.False(cmdline.Contains(served.Tmp, StringComparison.Ordinal) || cmdline.Contains(_native.Executable, StringComparison.Ordinal), $"process {pid} is left behind: {cmdline}");
            }
            catch (IOException)
            {
            }
        }

        return stderr;
    }

    [Fact]
    public async Task ServeIsACastoreOverAUnixSocketWithATokenAndStopsOnSigterm()
    {
        string tree = Tree();
        string token = Path.Combine(_temp, "token");
        File.WriteAllText(token, "unix-socket-token\n");
        string socket = Path.Combine(_temp, "serve.sock");
        var served = await ServeAsync("served", "--listen", "unix:" + socket, "--token-file", token);
        Assert.Equal("unix:" + socket, served.Address);
        string store = $"grpc+unix://{socket}?token-file={token}";

        // Up and back with the native tool as the client: import into the served store, export from it.
        string digest = Digest(Ok(Native(["--store", store, "import", "--json", tree])).Stdout);
        string exported = Path.Combine(_temp, "exported");
        Ok(Native(["--store", store, "export", digest, exported]));
        Assert.Equal(File.ReadAllBytes(Path.Combine(tree, "sub", "data")), File.ReadAllBytes(Path.Combine(exported, "sub", "data")));
        Assert.Equal(File.ReadAllText(Path.Combine(tree, "hello")), File.ReadAllText(Path.Combine(exported, "hello")));
        Assert.Equal("sub/data", new FileInfo(Path.Combine(exported, "link")).LinkTarget);

        // The framework-dependent tool as the client (the token from the environment) sees the same tree.
        var jit = ToolProcess.Run(["--store", "grpc+unix://" + socket, "ls", digest], new Dictionary<string, string>(EnvironmentFor("jit")) { [GrpcChannels.TokenFileVariable] = token });
        Assert.True(jit.ExitCode == 0, jit.Stderr);
        Assert.Equal(Ok(Native(["--store", store, "ls", digest])).Stdout, jit.Stdout);

        // Without the token: refused, saying so.
        var refused = Native(["--store", "grpc+unix://" + socket, "ls", digest]);
        Assert.Equal(1, refused.ExitCode);
        Assert.Contains("token", refused.Stderr);
        Assert.DoesNotContain("   at ", refused.Stderr);

        await StopAsync(served);
        Assert.False(File.Exists(socket), "serve left its socket behind");
    }

    /// <summary>
    /// serve as a builder on TCP with TLS (a test CA made with openssl) and a bearer token: the health service and
    /// reflection answer without the token; the native tool builds on it with <c>build --builder</c> and gets what a
    /// local build gives; without the token or without trusting the CA it is refused, saying why.
    /// </summary>
    [Fact]
    public async Task ServeWithTlsAndATokenTakesRemoteBuildsFromTheNativeTool()
    {
        using var pki = TestCertificates.Create();
        string token = Path.Combine(_temp, "token");
        File.WriteAllText(token, "tls-builder-token\n");
        var input = JsonNode.Parse(Ok(Native(["import", "--json", Busybox()])).Stdout)!.AsArray()[0]!;
        string request = Path.Combine(_temp, "request.json");
        File.WriteAllText(request, Request(input).ToJsonString());

        var served = await ServeAsync(
            "builder", "--listen", "127.0.0.1:0", "--tls-cert", pki.ServerCertificate, "--tls-key", pki.ServerKey, "--token-file", token, "--verbose");
        int port = int.Parse(served.Address.Split(':')[^1], System.Globalization.CultureInfo.InvariantCulture);
        string trusted = $"grpc+https://localhost:{port}?ca={pki.CaCertificate}";

        // Over TLS: health answers without the token (for orchestrators' probes), reflection with it.
        using (var channel = GrpcChannels.Create(GrpcEndpoint.Parse(trusted)))
        {
            var deadline = DateTime.UtcNow.AddMinutes(1);
            var health = new Health.HealthClient(channel);
            Assert.Equal(ServingStatus.Serving, (await health.CheckAsync(new HealthCheckRequest(), deadline: deadline)).Status);
            Assert.Equal(ServingStatus.Serving, (await health.CheckAsync(new HealthCheckRequest { Service = "tvix.build.v1.BuildService" }, deadline: deadline)).Status);

            var reflection = new ServerReflection.ServerReflectionClient(channel);
            using (var anonymous = reflection.ServerReflectionInfo(deadline: deadline))
            {
                // Refused before any request is read.
                var refused = await Assert.ThrowsAsync<RpcException>(() => anonymous.ResponseStream.MoveNext());
                Assert.Equal(StatusCode.Unauthenticated, refused.StatusCode);
            }

            var bearer = new Metadata { { "authorization", "Bearer tls-builder-token" } };
            using var call = reflection.ServerReflectionInfo(bearer, deadline: deadline);
            await call.RequestStream.WriteAsync(new ServerReflectionRequest { ListServices = "" });
            Assert.True(await call.ResponseStream.MoveNext());
            var listed = call.ResponseStream.Current.ListServicesResponse.Service.Select(s => s.Name).ToHashSet();
            await call.RequestStream.WriteAsync(new ServerReflectionRequest { FileContainingSymbol = "tvix.build.v1.BuildService" });
            Assert.True(await call.ResponseStream.MoveNext());
            var files = call.ResponseStream.Current.FileDescriptorResponse.FileDescriptorProto
                .Select(b => Google.Protobuf.Reflection.FileDescriptorProto.Parser.ParseFrom(b)).ToList();
            await call.RequestStream.CompleteAsync();
            Assert.Superset(
                new HashSet<string>([
                    "tvix.castore.v1.BlobService", "tvix.castore.v1.DirectoryService", "snix.castore.v1.BlobService", "snix.castore.v1.DirectoryService",
                    "tvix.build.v1.BuildService", "snix.build.v1.BuildService", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"]),
                listed);
            Assert.Contains(files, f => f.Package == "tvix.build.v1" && f.Service.Any(s => s.Name == "BuildService" && s.Method.Single().Name == "DoBuild"));
        }

        // A remote build from the native tool answers as a local one does; its output comes back into the local store.
        var remote = Ok(Native(["build", "--builder", $"{trusted}&token-file={token}", request]));
        Assert.Matches(@"uploaded [1-9]\d* blobs? \(\d+ bytes\), [1-9]\d* director", remote.Stderr);
        var local = Ok(Native(["build", "--rebuild", "--quiet", request]));
        Assert.Equal(local.Stdout, remote.Stdout);
        string output = "blake3-" + JsonParser.Default.Parse<TvixBuild.Build>(remote.Stdout).Outputs.Single().Directory.Digest.ToBase64();
        Assert.Equal($"/nix/store/{BusyboxName}\n", Ok(Native(["--offline", "cat", output + "/ref"])).Stdout);

        // Without the token, or without trusting the test CA: refused, saying why, and no build ran.
        var noToken = Native(["build", "--rebuild", "--builder", trusted, request]);
        Assert.Equal(1, noToken.ExitCode);
        Assert.Contains("unauthenticated (no bearer token", noToken.Stderr);
        var untrusted = Native(["build", "--rebuild", "--builder", $"grpc+https://localhost:{port}?token-file={token}", request]);
        Assert.Equal(1, untrusted.ExitCode);
        Assert.Contains("certificate", untrusted.Stderr);
        Assert.DoesNotContain("   at ", noToken.Stderr + untrusted.Stderr);

        string log = await StopAsync(served);
        Assert.Single(Regex.Matches(log, ": accepted "));
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
