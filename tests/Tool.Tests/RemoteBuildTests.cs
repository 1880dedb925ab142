using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace TvixFuseBuild.Tool.Tests;

/// <summary>
/// <c>build --builder</c> against real <c>serve</c> processes on loopback: a remote build answers as a local one does,
/// uploads only what the builder's store lacks, and several builders sharing one castore take builds as one, also
/// when one of them is killed mid-run.
/// </summary>
public sealed partial class RemoteBuildTests : IDisposable
{
    private const string OutPath = "nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo";
    private const string Busybox = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-busybox";
    private readonly string _temp = Directory.CreateTempSubdirectory("tvix-fuse-remote-test-").FullName;
    private readonly List<Process> _processes = [];
    private readonly Dictionary<string, string> _client;

    public RemoteBuildTests()
    {
        File.SetUnixFileMode(_temp, (UnixFileMode)0x1ED);
        _client = Environment("client");
    }

    public void Dispose()
    {
        ToolProcess.StopAll(_processes);
        var chmod = Process.Start("chmod", ["-R", "u+rwX", _temp])!;
        chmod.WaitForExit();
        Directory.Delete(_temp, recursive: true);
    }

    /// <summary>A process's own data (store, result cache) and build directories.</summary>
    private Dictionary<string, string> Environment(string name)
    {
        string tmp = Path.Combine(_temp, name + "-tmp");
        Directory.CreateDirectory(tmp);
        File.SetUnixFileMode(tmp, (UnixFileMode)0x1ED);
        return new Dictionary<string, string> { ["XDG_DATA_HOME"] = Path.Combine(_temp, name + "-data"), ["TMPDIR"] = tmp };
    }

    private ToolProcess.Result Tool(string[] arguments, Dictionary<string, string>? environment = null) =>
        ToolProcess.Run(arguments, environment ?? _client);

    private JsonNode ImportBusybox()
    {
        string tree = Path.Combine(_temp, Busybox);
        Directory.CreateDirectory(Path.Combine(tree, "bin"));
        File.Copy("/bin/busybox", Path.Combine(tree, "bin", "busybox"));
        foreach (string applet in new[] { "sh", "echo", "mkdir", "sleep" })
        {
            File.CreateSymbolicLink(Path.Combine(tree, "bin", applet), "busybox");
        }

        var import = Tool(["import", "--json", tree]);
        Assert.True(import.ExitCode == 0, import.Stderr);
        return JsonNode.Parse(import.Stdout)!.AsArray()[0]!;
    }

    private string Request(JsonNode busybox, string script, string name = "request")
    {
        var request = new JsonObject
        {
            ["inputs"] = new JsonArray(busybox.DeepClone()),
            ["commandArgs"] = new JsonArray($"/nix/store/{Busybox}/bin/sh", "-c", script),
            ["workingDir"] = "build",
            ["scratchPaths"] = new JsonArray("build", "nix/store"),
            ["inputsDir"] = "nix/store",
            ["outputs"] = new JsonArray(OutPath),
            ["environmentVars"] = new JsonArray(
                new JsonObject { ["key"] = "PATH", ["value"] = Base64($"/nix/store/{Busybox}/bin") },
                new JsonObject { ["key"] = "out", ["value"] = Base64("/" + OutPath) }),
            ["refscanNeedles"] = new JsonArray("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "fhaj6gmwns62s6ypkcldbaj2ybvkhx3p"),
        };
        string file = Path.Combine(_temp, name + ".json");
        File.WriteAllText(file, request.ToJsonString());
        return file;
    }

    private static string Base64(string text) => Convert.ToBase64String(Encoding.UTF8.GetBytes(text));

    /// <summary>A running <c>serve</c>, its address and its stderr (the build events with <c>--verbose</c>).</summary>
    private sealed class Server(Process process, string address, StringBuilder log)
    {
        public Process Process => process;

        public string Address => address;

        public string Log
        {
            get
            {
                lock (log)
                {
                    return log.ToString();
                }
            }
        }
    }

    private async Task<Server> StartServerAsync(string name, string[] arguments)
    {
        var process = ToolProcess.Start(arguments, Environment(name));
        _processes.Add(process);
        var log = new StringBuilder();
        process.ErrorDataReceived += (_, e) =>
        {
            lock (log)
            {
                log.AppendLine(e.Data);
            }
        };
        process.BeginErrorReadLine();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        string? line = await process.StandardOutput.ReadLineAsync(timeout.Token);
        Assert.True(line?.StartsWith("listening on ", StringComparison.Ordinal) == true, $"serve {name} did not start: {line}; {log}");
        return new Server(process, line!["listening on ".Length..].Split(' ')[0], log);
    }

    private static async Task StopAsync(Server server)
    {
        ToolProcess.Signal(server.Process.Id, 15);
        await server.Process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
    }

    /// <summary>From the error line on: what a failed build prints, wherever it ran.</summary>
    private static string ErrorPart(string stderr) => stderr[stderr.IndexOf("tvix-fuse-build: error:", StringComparison.Ordinal)..];

    [Fact]
    public async Task ARemoteBuildAnswersAsALocalOneAndUploadsOnlyWhatTheBuilderLacks()
    {
        var busybox = ImportBusybox();
        var builder = await StartServerAsync("builder", ["--store", "local://" + Path.Combine(_temp, "builder-store"), "serve", "--listen", "unix:" + Path.Combine(_temp, "b.sock"), "--verbose"]);
        string address = builder.Address; // unix:/PATH, as serve prints it

        // Success: the same reply as a local build, the output in the local store, everything uploaded once.
        string request = Request(busybox, "echo building; mkdir $out; echo /nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-busybox > $out/ref");
        var remote = Tool(["build", "--builder", address, request]);
        Assert.True(remote.ExitCode == 0, remote.Stderr);
        Assert.Matches(@"uploaded [1-9]\d* blobs? \(\d+ bytes\), [1-9]\d* director", remote.Stderr);
        var local = Tool(["build", "--rebuild", "--quiet", request]);
        Assert.True(local.ExitCode == 0, local.Stderr);
        Assert.Equal(local.Stdout, remote.Stdout);
        string digest = JsonNode.Parse(remote.Stdout)!["outputs"]![0]!["directory"]!["digest"]!.GetValue<string>();
        var cat = Tool(["--offline", "cat", $"blake3-{digest}/ref"]);
        Assert.True(cat.ExitCode == 0, cat.Stderr);
        Assert.Contains("accepted", builder.Log);

        // Again on the builder (--rebuild: past the local result cache): nothing is uploaded.
        var again = Tool(["build", "--rebuild", "--builder", address, request]);
        Assert.True(again.ExitCode == 0, again.Stderr);
        Assert.Contains("uploaded nothing to ", again.Stderr);
        Assert.Equal(remote.Stdout, again.Stdout);
        Assert.Equal(2, Regex.Matches(builder.Log, ": accepted ").Count);

        // A failing command: the same exit code and message (reason, log tail) as locally.
        string failing = Request(busybox, "echo line one; echo line two; exit 7", "failing");
        var remoteFailure = Tool(["build", "--builder", address, failing]);
        var localFailure = Tool(["build", "--quiet", failing]);
        Assert.Equal(1, localFailure.ExitCode);
        Assert.Equal(localFailure.ExitCode, remoteFailure.ExitCode);
        Assert.Contains("tvix-fuse-build: error: build failed: the command exited with status 7\n", remoteFailure.Stderr);
        Assert.Contains("  line one\n  line two\n", remoteFailure.Stderr);
        Assert.Equal(ErrorPart(localFailure.Stderr), ErrorPart(remoteFailure.Stderr));
        Assert.Contains("failed: the command exited with status 7", builder.Log);

        // An invalid request: the same message and exit code, and nothing reaches the builder.
        var invalidJson = JsonNode.Parse(File.ReadAllText(request))!;
        invalidJson["outputs"] = new JsonArray("nix/store/b", "nix/store/a");
        string invalid = Path.Combine(_temp, "invalid.json");
        File.WriteAllText(invalid, invalidJson.ToJsonString());
        var remoteInvalid = Tool(["build", "--builder", address, invalid]);
        var localInvalid = Tool(["build", invalid]);
        Assert.Equal(1, localInvalid.ExitCode);
        Assert.Equal(localInvalid.ExitCode, remoteInvalid.ExitCode);
        Assert.Equal(localInvalid.Stderr, remoteInvalid.Stderr);
        Assert.StartsWith("tvix-fuse-build: error: invalid request: ", remoteInvalid.Stderr);
        Assert.Equal(3, Regex.Matches(builder.Log, ": accepted ").Count);

        // A builder that is not there: exit 1, saying which.
        var unreachable = Tool(["build", "--rebuild", "--builder", "unix:" + Path.Combine(_temp, "nobody.sock"), request]);
        Assert.Equal(1, unreachable.ExitCode);
        Assert.Contains("nobody.sock", unreachable.Stderr);
        Assert.DoesNotContain("   at ", unreachable.Stderr);

        // Local-only settings are refused with --builder rather than ignored; several builders need their shared store.
        Assert.Equal(2, Tool(["build", "--builder", address, "--keep-failed", request]).ExitCode);
        var noStore = Tool(["build", "--builder", "127.0.0.1:1", "--builder", "127.0.0.1:2", request]);
        Assert.Equal(2, noStore.ExitCode);
        Assert.Contains("--builder-store", noStore.Stderr);

        await StopAsync(builder);
    }

    /// <summary>
    /// One castore server, three builders building from it, 30 builds from the CLI with the three as --builder; one
    /// builder is SIGKILLed while it runs a build. Every build comes back right, and every builder took some.
    /// </summary>
    [Fact]
    public async Task ThreeBuildersShareThirtyBuildsAndOneDiesMidRun()
    {
        var busybox = ImportBusybox();
        var castore = await StartServerAsync("castore", ["--store", "local://" + Path.Combine(_temp, "castore"), "serve", "--listen", "unix:" + Path.Combine(_temp, "castore.sock")]);
        string shared = "grpc+unix://" + castore.Address["unix:".Length..];
        var builders = new List<Server>();
        for (int i = 0; i < 3; i++)
        {
            builders.Add(await StartServerAsync($"builder{i}", ["--store", shared, "serve", "--listen", "127.0.0.1:0", "--verbose", "-j", "4"]));
        }

        const int count = 30;
        var requests = Enumerable.Range(0, count)
            .Select(i => Request(busybox, $"sleep 1; mkdir $out; echo build-{i} > $out/which", $"farm-{i}"))
            .ToArray();
        string[] builderOptions = [.. builders.SelectMany(b => new[] { "--builder", b.Address }), "--builder-store", shared];

        var victim = builders[1];
        var results = new ToolProcess.Result[count];
        using var slots = new SemaphoreSlim(6);
        bool killed = false;
        var killer = Task.Run(async () =>
        {
            // Killed while one of its builds runs: accepted, not done.
            while (Regex.Matches(victim.Log, ": accepted ").Count <= Regex.Matches(victim.Log, ": done ").Count + Regex.Matches(victim.Log, ": failed").Count)
            {
                await Task.Delay(20);
            }

            ToolProcess.Signal(victim.Process.Id, 9);
            killed = true;
        });
        var runs = Enumerable.Range(0, count).Select(i => Task.Run(async () =>
        {
            await slots.WaitAsync();
            try
            {
                results[i] = Tool(["build", .. builderOptions, requests[i]]);
            }
            finally
            {
                slots.Release();
            }
        }));
        await Task.WhenAll(runs);
        await killer.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(killed);

        for (int i = 0; i < count; i++)
        {
            Assert.True(results[i].ExitCode == 0, $"build {i}: {results[i].Stderr}");
            string digest = JsonNode.Parse(results[i].Stdout)!["outputs"]![0]!["directory"]!["digest"]!.GetValue<string>();
            var which = Tool(["--offline", "cat", $"blake3-{digest}/which"]);
            Assert.True(which.ExitCode == 0, which.Stderr);
            Assert.Equal($"build-{i}\n", which.Stdout);
        }

        foreach (var builder in builders)
        {
            Assert.True(Regex.Matches(builder.Log, ": accepted ").Count > 0, $"builder {builder.Address} got no build");
        }

        // The victim died with at least one build accepted and not done; every build still came back right, so the
        // channel retried those on the other two (transparently: no response had started), which did all the rest.
        int victimDone = Regex.Matches(victim.Log, ": done ").Count;
        Assert.True(Regex.Matches(victim.Log, ": accepted ").Count > victimDone);
        Assert.True(Regex.Matches(builders[0].Log, ": done ").Count + Regex.Matches(builders[2].Log, ": done ").Count >= count - victimDone);

        // The killed builder's leftovers (mounts, build directories) go when it starts again, as after any crash.
        await victim.Process.WaitForExitAsync();
        var restarted = await StartServerAsync("builder1", ["--store", shared, "serve", "--listen", "127.0.0.1:0"]);
        await StopAsync(restarted);
        foreach (var server in builders.Where(b => b != victim).Append(castore))
        {
            await StopAsync(server);
        }

        Assert.DoesNotContain(_temp, File.ReadAllText("/proc/self/mountinfo"));
    }
}
