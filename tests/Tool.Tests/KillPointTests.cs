using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Google.Protobuf;
using TvixBuild = Tvix.Build.V1;

namespace TvixFuseBuild.Tool.Tests;

/// <summary>Alone: its checks look at every process of the build uid range and every mount.</summary>
[CollectionDefinition(nameof(KillPointTests), DisableParallelization = true)]
public sealed class KillPointCollection;

/// <summary>
/// Issue 12: the tool SIGKILLed at any of ten points of a build (the TVIX_FUSE_BUILD_KILL_AT test hook) leaves nothing
/// behind once the next build has swept: no mount, no process, no build directory, no cgroup, no held lock, no store
/// temp file, no temp root of the dead process; and the next build succeeds.
/// </summary>
[Collection(nameof(KillPointTests))]
public sealed class KillPointTests : IDisposable
{
    private const string Out = "nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo";
    private const string Doc = "nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-foo-doc";
    private const string Busybox = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-busybox";
    private const long FirstBuildUid = 0x35000000;
    private readonly string _temp;
    private readonly string _tmp;
    private readonly string _marker = "kill-point-marker-" + Guid.NewGuid().ToString("N");
    private readonly Dictionary<string, string> _environment;

    public KillPointTests()
    {
        Assert.True(Environment.IsPrivilegedProcess, "these tests run the tool as root");
        _temp = Directory.CreateTempSubdirectory("tvix-fuse-build-kill-test-").FullName;
        File.SetUnixFileMode(_temp, (UnixFileMode)0x1ED);
        _tmp = Path.Combine(_temp, "tmp");
        Directory.CreateDirectory(_tmp);
        _environment = new Dictionary<string, string> { ["XDG_DATA_HOME"] = Path.Combine(_temp, "data"), ["TMPDIR"] = _tmp };
    }

    public void Dispose()
    {
        var chmod = System.Diagnostics.Process.Start("chmod", ["-R", "u+rwX", _temp])!;
        chmod.WaitForExit();
        Directory.Delete(_temp, recursive: true);
    }

    private string Store => Path.Combine(_temp, "data", "tvix-fuse-build", "store");

    /// <summary>The points of the TVIX_FUSE_BUILD_KILL_AT hook (src/Sandbox/KillPoint.cs), in the order a build reaches them.</summary>
    private static readonly string[] PointNames =
    [
        "after-uid-claimed", "after-build-dir-created", "after-inputs-mounted", "after-cgroup-created", "after-sandbox-started",
        "while-command-runs", "after-command-exited", "during-ingest", "after-result-cache-written", "during-teardown",
    ];

    public static TheoryData<string> Points() => new(PointNames);

    public static TheoryData<string> RunPoints() => ["while-command-runs", "during-ingest", "during-teardown"];

    [Theory]
    [MemberData(nameof(Points))]
    public async Task ABuildKilledAtAnyPointLeavesNothingBehind(string point)
    {
        var busybox = ImportBusybox(_temp);
        string killed = Path.Combine(_temp, "killed.json");
        File.WriteAllText(killed, Request(busybox, $"echo {_marker}; mkdir $out $doc; echo out > $out/x; echo doc > $doc/y").ToJsonString());
        int pid = await RunKilledAsync(["build", killed], point, null);
        AssertLeftByTheKill(point, pid);

        // The next build of the same request sweeps, even when the result cache answers it (after the cache was written).
        var second = ToolProcess.Run(["build", killed], _environment);
        Assert.True(second.ExitCode == 0, $"after a kill at {point}: {second.Stderr}");
        Assert.Equal(Array.IndexOf(PointNames, point) >= Array.IndexOf(PointNames, "after-result-cache-written"), second.Stderr.Contains("not running it again", StringComparison.Ordinal));
        var reply = JsonParser.Default.Parse<TvixBuild.Build>(second.Stdout);
        Assert.Equal(["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-foo-doc", "fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo"],
            reply.Outputs.Select(o => o.Directory.Name.ToStringUtf8()));
        var ls = ToolProcess.Run(["ls", "blake3-" + reply.Outputs[1].Directory.Digest.ToBase64()], _environment);
        Assert.True(ls.ExitCode == 0, ls.Stderr);
        Assert.Contains(" x", ls.Stdout);
        var cat = ToolProcess.Run(["cat", "blake3-" + reply.Outputs[1].Directory.Digest.ToBase64() + "/x"], _environment);
        Assert.Equal("out\n", cat.Stdout);

        AssertNothingLeft(point, pid);
    }

    [Theory]
    [MemberData(nameof(RunPoints))]
    public async Task ARunKilledLeavesNothingBehind(string point)
    {
        string work = Path.Combine(_temp, "work");
        Directory.CreateDirectory(work);
        string tree = Path.Combine(_temp, "tools");
        Directory.CreateDirectory(Path.Combine(tree, "bin"));
        File.Copy("/bin/busybox", Path.Combine(tree, "bin", "busybox"));
        foreach (string applet in new[] { "sh", "mkdir", "echo" })
        {
            File.CreateSymbolicLink(Path.Combine(tree, "bin", applet), "busybox");
        }

        string[] run(string script) =>
            ["run", "--input", tree + "=tools", "--output", "out", "--output", "doc", "--", "sh", "-c", script];
        int pid = await RunKilledAsync(run($"echo {_marker}; mkdir $out $doc; echo out > $out/x; echo doc > $doc/y"), point, work);
        AssertLeftByTheKill(point, pid);

        var second = ToolProcess.Run(run("mkdir $out $doc; echo second > $out/x; echo doc > $doc/y"), _environment, workingDirectory: work);
        Assert.True(second.ExitCode == 0, $"after a kill at {point}: {second.Stderr}");
        Assert.Equal("second\n", File.ReadAllText(Path.Combine(work, "result-out", "x")));
        Assert.Equal("doc\n", File.ReadAllText(Path.Combine(work, "result-doc", "y")));

        AssertNothingLeft(point, pid);
    }

    /// <summary>Runs the tool with the hook set; asserts that it died by SIGKILL (137); returns its pid.</summary>
    private async Task<int> RunKilledAsync(string[] arguments, string point, string? workingDirectory)
    {
        var environment = new Dictionary<string, string>(_environment) { ["TVIX_FUSE_BUILD_KILL_AT"] = point };
        using var process = ToolProcess.Start(arguments, environment, workingDirectory: workingDirectory);
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(5));
        Assert.True(process.ExitCode == 137, $"killed at {point}: exit code {process.ExitCode} (137 is SIGKILL): {await stderr}");
        await stdout;
        return process.Id;
    }

    /// <summary>
    /// What the kill left for the next build to sweep, so that the checks after it are not vacuous: the build directory
    /// (from its creation to its removal), the dead FUSE mount (while the command's side runs), the build's cgroup
    /// (where the host has a v1 pids hierarchy) and the temp roots file of the dead process.
    /// </summary>
    private void AssertLeftByTheKill(string point, int pid)
    {
        int at = Array.IndexOf(PointNames, point);
        string parent = Path.Combine(_tmp, "tvix-fuse-builds-0");
        if (at >= 1)
        {
            Assert.Single(Directory.EnumerateDirectories(parent));
        }

        bool mounted = File.ReadAllLines("/proc/self/mountinfo").Any(l => l.Contains(_tmp, StringComparison.Ordinal));
        Assert.Equal(at is >= 2 and <= 6, mounted);
        if (PidsHierarchy() is { } pids)
        {
            Assert.Equal(at is >= 3 and <= 6, Directory.EnumerateDirectories(pids, $"tvix-fuse-build-{pid}-*").Any());
        }

        Assert.NotEmpty(Directory.EnumerateFiles(Path.Combine(Store, "temproots"), $"{pid}-*"));
    }

    /// <summary>The caller's cgroup in the v1 pids hierarchy, where build cgroups are made; null without one.</summary>
    private static string? PidsHierarchy()
    {
        foreach (string line in File.ReadAllLines("/proc/self/cgroup"))
        {
            var fields = line.Split(':', 3);
            if (fields.Length == 3 && fields[1] == "pids" && Directory.Exists("/sys/fs/cgroup/pids" + fields[2]))
            {
                return "/sys/fs/cgroup/pids" + fields[2];
            }
        }

        return null;
    }

    private void AssertNothingLeft(string point, int pid)
    {
        string at = $"after a kill at {point}";

        // No mount under the build's TMPDIR.
        Assert.DoesNotContain(File.ReadAllLines("/proc/self/mountinfo"), l => l.Contains(_tmp, StringComparison.Ordinal));

        // No process of the build: none with its marker in argv, and none of a build uid running this test's sandbox init
        // (other builds on the host may run as build uids of their own).
        string init = Path.Combine(AppContext.BaseDirectory, "TvixFuseBuild.Sandbox.dll");
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out int other))
            {
                continue;
            }

            try
            {
                string cmdline = File.ReadAllText(Path.Combine(dir, "cmdline")).Replace('\0', ' ');
                var status = File.ReadAllLines(Path.Combine(dir, "status"));
                string state = status.Single(l => l.StartsWith("State:", StringComparison.Ordinal));
                if (state.Contains("zombie", StringComparison.Ordinal) || state.Contains("dead", StringComparison.Ordinal))
                {
                    continue;
                }

                string uid = status.Single(l => l.StartsWith("Uid:", StringComparison.Ordinal)).Split('\t', StringSplitOptions.RemoveEmptyEntries)[1];
                long id = long.Parse(uid, CultureInfo.InvariantCulture);
                bool buildUid = id >= FirstBuildUid && id < FirstBuildUid + 256;
                Assert.False(
                    cmdline.Contains(_marker, StringComparison.Ordinal) || (buildUid && cmdline.Contains(init, StringComparison.Ordinal)),
                    $"{at}: process {other} (uid {id}, {state}) still runs: {cmdline}");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // gone meanwhile
            }
        }

        // No build directory, no lock file of one.
        string parent = Path.Combine(_tmp, "tvix-fuse-builds-0");
        if (Directory.Exists(parent))
        {
            Assert.True(!Directory.EnumerateFileSystemEntries(parent).Any(), $"{at}: left {string.Join(", ", Directory.EnumerateFileSystemEntries(parent))}");
        }

        // No cgroup the dead process made (BuildCgroup names them tvix-fuse-build-PID-RANDOM).
        foreach (string line in File.ReadAllLines("/proc/self/cgroup"))
        {
            var fields = line.Split(':', 3);
            if (fields.Length == 3 && fields[1] is "pids" or "memory")
            {
                string hierarchy = "/sys/fs/cgroup/" + fields[1] + fields[2];
                if (Directory.Exists(hierarchy))
                {
                    Assert.Empty(Directory.EnumerateDirectories(hierarchy, $"tvix-fuse-build-{pid}-*"));
                }
            }
        }

        // No lock (build user slot, build directory, temp roots) still held by the dead process.
        string self = " " + pid.ToString(CultureInfo.InvariantCulture) + " ";
        Assert.DoesNotContain(File.ReadAllLines("/proc/locks"), l => l.Contains(self, StringComparison.Ordinal));

        // No temp file of the dead process in the store (opening the store removes them), and none of its temp roots
        // once a collection has run (it removes the files of owners that are gone).
        string prefix = pid.ToString(CultureInfo.InvariantCulture) + "-";
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(Store, "tmp"), prefix + "*"));
        var gc = ToolProcess.Run(["gc"], _environment);
        Assert.True(gc.ExitCode == 0, gc.Stderr);
        string temproots = Path.Combine(Store, "temproots");
        Assert.True(!Directory.Exists(temproots) || !Directory.EnumerateFileSystemEntries(temproots, prefix + "*").Any(), $"{at}: a temp root of {pid} is left");
    }

    private JsonNode ImportBusybox(string temp)
    {
        string tree = Path.Combine(temp, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-busybox");
        Directory.CreateDirectory(Path.Combine(tree, "bin"));
        File.Copy("/bin/busybox", Path.Combine(tree, "bin", "busybox"));
        foreach (string applet in new[] { "sh", "echo", "mkdir" })
        {
            File.CreateSymbolicLink(Path.Combine(tree, "bin", applet), "busybox");
        }

        var import = ToolProcess.Run(["import", "--json", tree], _environment);
        Assert.True(import.ExitCode == 0, import.Stderr);
        return JsonNode.Parse(import.Stdout)!.AsArray()[0]!;
    }

    private static string Base64(string text) => Convert.ToBase64String(Encoding.UTF8.GetBytes(text));

    /// <summary>Two outputs, so that a kill can fall between their ingestions.</summary>
    private static JsonObject Request(JsonNode busybox, string script) => new()
    {
        ["inputs"] = new JsonArray(busybox.DeepClone()),
        ["commandArgs"] = new JsonArray(Busybox + "/bin/sh", "-c", script),
        ["workingDir"] = "build",
        ["scratchPaths"] = new JsonArray("build", "nix/store"),
        ["inputsDir"] = "nix/store",
        ["outputs"] = new JsonArray(Doc, Out),
        ["environmentVars"] = new JsonArray(
            new JsonObject { ["key"] = "PATH", ["value"] = Base64(Busybox + "/bin") },
            new JsonObject { ["key"] = "doc", ["value"] = Base64("/" + Doc) },
            new JsonObject { ["key"] = "out", ["value"] = Base64("/" + Out) }),
        ["refscanNeedles"] = new JsonArray("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "fhaj6gmwns62s6ypkcldbaj2ybvkhx3p"),
    };
}
