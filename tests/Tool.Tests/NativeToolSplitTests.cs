using System.IO.Compression;
using System.Text.Json.Nodes;
using Google.Protobuf;
using TvixBuild = Tvix.Build.V1;

namespace TvixFuseBuild.Tool.Tests;

/// <summary>
/// The NativeAOT tool as two executables: the front (tvix-fuse-build, without the gRPC server and client) runs the full
/// one next to it (tvix-fuse-build-full) in its own process for serve, remote stores and remote builders, and nothing
/// else; without it, it says what is missing.
/// </summary>
public sealed partial class NativeToolTests
{
    private ToolProcess.Result Full(string[] arguments) =>
        ToolProcess.Run(arguments, EnvironmentFor("native"), executable: _native.FullExecutable);

    [Fact]
    public void TheFrontAndTheFullToolPrintTheSameHelpVersionAndUsageErrors()
    {
        // The same command tree: only what the actions can do differs.
        foreach (string[] arguments in new string[][] { ["--help"], ["--version"], ["serve", "--help"], ["build", "--help"], ["run", "--help"], ["store", "info", "--help"] })
        {
            var front = Ok(Native(arguments));
            Assert.Equal(front, Ok(Full(arguments)));
        }

        // Refused by the parser (the front itself), and by serve's action (in the full tool, after the hand-over).
        foreach (string[] arguments in new string[][] { ["serve"], ["serve", "--listen", "unix:" + Path.Combine(_temp, "s.sock"), "--max-builds", "0"], ["build", "--timeout", "0", "r.json"] })
        {
            var front = Native(arguments);
            Assert.Equal(2, front.ExitCode);
            Assert.Equal(Full(arguments), front);
        }
    }

    [Fact]
    public async Task ServeRunsInTheFullToolInTheSameProcessWithItsArgumentsAndStopsOnSigterm()
    {
        string socket = Path.Combine(_temp, "same-pid.sock");
        var served = await ServeAsync("same-pid", "--listen", "unix:" + socket);
        int pid = served.Process.Id;

        // The process the test started is now the full executable, with the arguments it was given.
        Assert.Equal(_native.FullExecutable, new FileInfo($"/proc/{pid}/exe").LinkTarget);
        string[] argv = File.ReadAllText($"/proc/{pid}/cmdline").TrimEnd('\0').Split('\0');
        Assert.Equal([_native.Executable, "--store", "local://" + Path.Combine(_temp, "same-pid-store"), "serve", "--listen", "unix:" + socket], argv);

        // SIGTERM to that pid: the graceful stop, exit 143.
        await StopAsync(served);
        Assert.False(File.Exists(socket));
    }

    [Fact]
    public async Task RemoteStoresHandOverWithStdinArgumentsEnvironmentAndExitCode()
    {
        string socket = Path.Combine(_temp, "remote.sock");
        var served = await ServeAsync("remote", "--listen", "unix:" + socket);
        string store = "grpc+unix://" + socket;

        // --store: the import goes to the served store.
        var input = JsonNode.Parse(Ok(Native(["--store", store, "import", "--json", Busybox()])).Stdout)!.AsArray()[0]!;
        var request = Request(input);

        // The environment's default store, and the request on stdin.
        var environment = new Dictionary<string, string>(EnvironmentFor("native"))
        {
            ["BLOB_SERVICE_ADDR"] = store,
            ["DIRECTORY_SERVICE_ADDR"] = store,
        };
        var built = ToolProcess.Run(["build", "--quiet", "-"], environment, stdin: request.ToJsonString(), executable: _native.Executable);
        Assert.True(built.ExitCode == 0, built.Stderr);
        string output = "blake3-" + JsonParser.Default.Parse<TvixBuild.Build>(built.Stdout).Outputs.Single().Directory.Digest.ToBase64();
        Assert.Equal($"/nix/store/{BusyboxName}\n", Ok(Native(["--store", store, "cat", output + "/ref"])).Stdout);

        // A refused request on stdin: the full tool's exit code and message, as when it is run directly.
        request["commandArgs"] = 5;
        var front = ToolProcess.Run(["build", "-"], environment, stdin: request.ToJsonString(), executable: _native.Executable);
        var full = ToolProcess.Run(["build", "-"], environment, stdin: request.ToJsonString(), executable: _native.FullExecutable);
        Assert.Equal(1, front.ExitCode);
        Assert.Contains("BuildRequest.commandArgs", front.Stderr);
        Assert.Equal(full, front);

        await StopAsync(served);
    }

    [Fact]
    public void WithoutTheFullToolTheFrontRunsEverythingLocalAndSaysWhatIsMissingForTheRest()
    {
        string alone = Directory.CreateDirectory(Path.Combine(_temp, "front-alone")).FullName;
        string front = Path.Combine(alone, "tvix-fuse-build");
        File.Copy(_native.Executable, front);
        foreach (string name in (string[])["tvix-sandbox-init", .. NativeTool.KernelsLibraries])
        {
            File.Copy(Path.Combine(_native.InstallDirectory, name), Path.Combine(alone, name));
        }

        var environment = EnvironmentFor("alone");
        ToolProcess.Result Run(string[] arguments, IDictionary<string, string>? extra = null, string? stdin = null) =>
            ToolProcess.Run(arguments, extra is null ? environment : new Dictionary<string, string>(environment.Concat(extra)), stdin: stdin, executable: front);

        // What needs no network runs in the front alone: help, version, the local store, a build and its cache hit.
        foreach (string[] arguments in new string[][] { ["--help"], ["--version"], ["serve", "--help"] })
        {
            Assert.Equal(Ok(Native(arguments)).Stdout, Ok(Run(arguments)).Stdout);
        }

        Ok(Run(["store", "info"]));
        var input = JsonNode.Parse(Ok(Run(["import", "--json", Busybox()])).Stdout)!.AsArray()[0]!;
        string file = Path.Combine(_temp, "alone-request.json");
        File.WriteAllText(file, Request(input).ToJsonString());
        var built = Ok(Run(["build", file]));
        Assert.Contains("building", built.Stderr);
        var cached = Ok(Run(["build", file]));
        Assert.DoesNotContain("building", cached.Stderr);
        Assert.Equal(built.Stdout, cached.Stdout);
        Assert.Equal(2, Run(["serve"]).ExitCode); // a usage error, found by the front's parser

        // What needs the full tool: one line naming it, exit 1 as for the sandbox init missing, nothing started or written.
        string socket = Path.Combine(_temp, "never.sock");
        string store = "grpc+unix://" + socket;
        string Missing(string what) =>
            $"tvix-fuse-build: error: {what} needs {alone}/tvix-fuse-build-full, which is missing: reinstall the tool (dotnet tool update --global TvixFuseBuild.Tool)\n";
        var cases = new (string[] Arguments, Dictionary<string, string>? Environment, string What)[]
        {
            (["serve", "--listen", "unix:" + socket], null, "serve"),
            (["--store", store, "store", "info"], null, "a remote store"),
            (["--blob-service-addr", store, "store", "info"], null, "a remote store"),
            (["store", "info"], new() { ["DIRECTORY_SERVICE_ADDR"] = store }, "a remote store"),
            (["build", "--builder", "unix:" + socket, file], null, "a remote builder"),
            (["build", file], new() { ["TVIX_FUSE_BUILD_BUILDERS"] = "unix:" + socket }, "a remote builder"),
        };
        foreach (var (arguments, extra, what) in cases)
        {
            var result = Run(arguments, extra, stdin: "");
            Assert.Equal((1, "", Missing(what)), (result.ExitCode, result.Stdout, result.Stderr));
        }

        Assert.False(File.Exists(socket));

        // There but not executable: said so.
        string full = Path.Combine(alone, NativeTool.FullToolName);
        File.Copy(_native.FullExecutable, full);
        File.SetUnixFileMode(full, (UnixFileMode)0x1A4);
        var denied = Run(["serve", "--listen", "unix:" + socket]);
        Assert.Equal((1, $"tvix-fuse-build: error: serve needs {full}, which cannot be run: permission denied\n"), (denied.ExitCode, denied.Stderr));
        Assert.False(File.Exists(socket));
    }

    [Fact]
    public async Task TheLinuxX64ToolPackageCarriesBothExecutables()
    {
        // Packed as scripts/pack packs it; after scripts/test's publish the NativeAOT compiles are up to date.
        string feed = Directory.CreateDirectory(Path.Combine(_temp, "feed")).FullName;
        var psi = new System.Diagnostics.ProcessStartInfo(
            "dotnet", ["pack", "src/Tool/Tool.csproj", "-c", "Release", "-r", "linux-x64", "-o", feed, "-p:PackageVersion=0.0.0-split-test", "-nologo", "-v", "q", "-clp:ErrorsOnly"])
        {
            WorkingDirectory = NativeTool.RepoRoot(),
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using (var pack = System.Diagnostics.Process.Start(psi)!)
        {
            var stdout = pack.StandardOutput.ReadToEndAsync();
            var stderr = pack.StandardError.ReadToEndAsync();
            using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(30));
            await pack.WaitForExitAsync(timeout.Token);
            Assert.True(pack.ExitCode == 0, $"dotnet pack -r linux-x64 failed:\n{await stdout}\n{await stderr}");
        }

        using var package = ZipFile.OpenRead(Path.Combine(feed, "TvixFuseBuild.Tool.linux-x64.0.0.0-split-test.nupkg"));
        const string Tools = "tools/any/linux-x64/";
        var files = package.Entries.Where(e => e.FullName.StartsWith(Tools, StringComparison.Ordinal)).Select(e => e.FullName[Tools.Length..]).Order().ToArray();
        Assert.Equal(
            ["DotnetToolSettings.xml", "TvixFuseBuild.Tool", NativeTool.FullToolName, "tvix-kernels-x86-64-v3.so", "tvix-kernels-x86-64-v4.so", "tvix-sandbox-init"],
            files);

        // Both NativeAOT executables, the front the smaller one (without the server and the client).
        long Size(string name) => package.GetEntry(Tools + name)!.Length;
        Assert.True(Size("TvixFuseBuild.Tool") < Size(NativeTool.FullToolName) * 3 / 4, $"front {Size("TvixFuseBuild.Tool")} bytes, full {Size(NativeTool.FullToolName)}");
        using var settings = new StreamReader(package.GetEntry(Tools + "DotnetToolSettings.xml")!.Open());
        Assert.Contains("EntryPoint=\"TvixFuseBuild.Tool\"", settings.ReadToEnd());
    }
}
