using System.Collections.Immutable;
using System.Text;
using TvixFuseBuild.Build.Pipeline;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Sandbox;

namespace TvixFuseBuild.Build.Tests.Pipeline;

/// <summary>Real builds: a FUSE-mounted input, a namespace sandbox, outputs ingested into a local store and scanned.</summary>
[Collection(PipelineCollection.Name)]
public sealed class BuildRunnerTests(PipelineFixture fixture)
{
    private const string OutHash = "fhaj6gmwns62s6ypkcldbaj2ybvkhx3p";
    private const string DevHash = "33l4p0pn0mybmqzaxfkpppyh7vx1c74p";
    private const string LinkHash = "pf80kikyxr63wrw56k00i1kw6ba76qik";
    private const string BusyboxHash = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    private static string Out => $"/nix/store/{OutHash}-out";

    private static string Dev => $"/nix/store/{DevHash}-dev";

    private static string Link => $"/nix/store/{LinkHash}-link";

    private BuildSpec NixShaped(string script, params (string Key, string Value)[] extraEnv)
    {
        var env = new List<(string, string)>
        {
            ("HOME", "/homeless-shelter"),
            ("PATH", fixture.BusyboxPath + "/bin"),
            ("busybox", fixture.BusyboxPath),
            ("dev", Dev),
            ("link", Link),
            ("out", Out),
        };
        env.AddRange(extraEnv);
        return new BuildSpec
        {
            Inputs = [fixture.Busybox],
            CommandArgs = [fixture.BusyboxPath + "/bin/sh", "-e", "/build/builder.sh"],
            WorkingDir = "build",
            ScratchPaths = ["build", "nix/store"],
            InputsDir = "nix/store",
            Outputs = [Dev[1..], Out[1..], Link[1..]],
            EnvironmentVars = [.. env.OrderBy(e => e.Item1, StringComparer.Ordinal).Select(e => new EnvironmentVariable(e.Item1, e.Item2))],
            AdditionalFiles = [new AdditionalFile("build/builder.sh", Encoding.UTF8.GetBytes(script))],
            RefscanNeedles = [BusyboxHash, OutHash, DevHash, LinkHash],
        };
    }

    private const string FullScript = """
        mkdir -p $out/bin
        id -u > $out/uid
        id -g > $out/gid
        pwd > $out/cwd
        hostname > $out/hostname
        printf '#!%s/bin/sh\necho hello\n' "$busybox" > $out/bin/hello
        chmod 555 $out/bin/hello
        echo "$dev" > $out/dev-path
        echo "$out" > $dev
        ln -s $busybox/bin/busybox $link
        cat /build/data.txt > $out/data
        # The inputs stay read-only even though nix/store is writable.
        if touch $busybox/new 2>/dev/null; then echo "could write into an input"; exit 10; fi
        if rm $busybox/bin/sh 2>/dev/null; then echo "could delete an input's file"; exit 11; fi
        if mv $busybox /nix/store/moved 2>/dev/null; then echo "could rename an input"; exit 12; fi
        if rm -rf $busybox 2>/dev/null; then echo "could delete an input"; exit 13; fi
        test -x $busybox/bin/busybox
        echo build done
        """;

    [Fact]
    public async Task NixShapedBuildProducesEveryKindOfOutputWithItsReferences()
    {
        var spec = NixShaped(FullScript) with
        {
            AdditionalFiles = [
                new AdditionalFile("build/builder.sh", Encoding.UTF8.GetBytes(FullScript)),
                new AdditionalFile("build/data.txt", "additional file contents\n"u8.ToArray()),
            ],
        };
        var log = new StringBuilder();
        var run = await fixture.Runner().RunAsync(spec, BuildProtocol.Tvix, Capture(log));

        Assert.False(run.Cached);
        Assert.Contains("build done", log.ToString());
        Assert.Equal(3, run.Result.Outputs.Length);

        // Outputs come in request order: dev, out, link.
        var dev = Assert.IsType<FileNode>(run.Result.Outputs[0].Node);
        var outDir = Assert.IsType<DirectoryNode>(run.Result.Outputs[1].Node);
        var link = Assert.IsType<SymlinkNode>(run.Result.Outputs[2].Node);
        Assert.Equal($"{DevHash}-dev", dev.Name.ToString());
        Assert.Equal($"{OutHash}-out", outDir.Name.ToString());
        Assert.Equal(fixture.BusyboxPath + "/bin/busybox", link.Target.ToString());

        Assert.Equal([1], run.Result.Outputs[0].Needles.ToArray());          // dev holds $out
        Assert.Equal([0, 2], run.Result.Outputs[1].Needles.ToArray());       // out holds $busybox (#!) and $dev
        Assert.Equal([0], run.Result.Outputs[2].Needles.ToArray());          // link points into busybox

        var directory = await fixture.Store.Directories.GetAsync(outDir.Digest);
        Assert.NotNull(directory);
        Assert.Equal("1000\n", await ReadFileAsync(directory, "uid"));
        Assert.Equal("100\n", await ReadFileAsync(directory, "gid"));
        Assert.Equal("/build\n", await ReadFileAsync(directory, "cwd"));
        Assert.Equal("localhost\n", await ReadFileAsync(directory, "hostname"));
        Assert.Equal("additional file contents\n", await ReadFileAsync(directory, "data"));
        var bin = await fixture.Store.Directories.GetAsync(((DirectoryNode)directory.Find("bin")!).Digest);
        Assert.True(Assert.IsType<FileNode>(bin!.Find("hello")).Executable);
        Assert.False(Assert.IsType<FileNode>(directory.Find("uid")).Executable);
        Assert.Equal(Out + "\n", await ReadBlobAsync(dev));

        // The replies: tvix names outputs by their last component; snix keeps request order, anonymous.
        var tvix = run.Result.ToTvixBuild(spec);
        Assert.Equal(spec.ToTvix(), tvix.BuildRequest);
        Assert.Equal($"{DevHash}-dev", tvix.Outputs[0].File.Name.ToStringUtf8());
        Assert.Equal([1UL], tvix.OutputsNeedles[0].Needles);
        var snix = run.Result.ToSnixResponse(spec);
        Assert.True(snix.Outputs[1].Output_.Directory.Name.IsEmpty);
        Assert.Equal([0UL, 2UL], snix.Outputs[1].Needles);

        Assert.Empty(fixture.LeftoverBuildDirectories());
    }

    [Fact]
    public async Task TheCommandSeesExactlyTheRequestedEnvironment()
    {
        var spec = new BuildSpec
        {
            Inputs = [fixture.Busybox],
            CommandArgs = [fixture.BusyboxPath + "/bin/env"],
            WorkingDir = "build",
            ScratchPaths = ["build"],
            InputsDir = "nix/store",
            EnvironmentVars = [new EnvironmentVariable("A", "1"), new EnvironmentVariable("B", "two words"), new EnvironmentVariable("out", "/x")],
        };
        var log = new StringBuilder();
        await fixture.Runner().RunAsync(spec, BuildProtocol.Tvix, Capture(log));
        Assert.Equal(["A=1", "B=two words", "out=/x"], log.ToString().Trim().Split('\n').Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task AFailingCommandFailsWithItsStatusAndLog()
    {
        var spec = NixShaped("echo about to fail\necho second line\nexit 3\n");
        var failure = await Assert.ThrowsAsync<BuildFailedException>(() => fixture.Runner().RunAsync(spec, BuildProtocol.Tvix));
        Assert.Equal("the command exited with status 3", failure.Message);
        Assert.Equal(["about to fail", "second line"], failure.LastLogLines(10));
        Assert.Null(failure.KeptDirectory);
        Assert.Empty(fixture.LeftoverBuildDirectories());
    }

    [Fact]
    public async Task AKilledCommandSaysWhichSignal()
    {
        var spec = NixShaped("kill -9 $$\n");
        var failure = await Assert.ThrowsAsync<BuildFailedException>(() => fixture.Runner().RunAsync(spec, BuildProtocol.Tvix));
        Assert.Equal("the command was killed by signal 9 (SIGKILL)", failure.Message);
    }

    [Fact]
    public async Task AMissingOutputFailsNamingIt()
    {
        var spec = NixShaped("mkdir -p $out\necho \"$out\" > $dev\n");
        var failure = await Assert.ThrowsAsync<BuildFailedException>(() => fixture.Runner().RunAsync(spec, BuildProtocol.Tvix));
        Assert.Equal($"the command succeeded but did not produce the output {Link[1..]}", failure.Message);
        Assert.Empty(fixture.LeftoverBuildDirectories());
    }

    [Fact]
    public async Task KeepFailedKeepsTheBuildDirectory()
    {
        var spec = NixShaped("mkdir -p $out\necho partial > $out/file\nexit 1\n");
        var failure = await Assert.ThrowsAsync<BuildFailedException>(() => fixture.Runner(keepFailed: true).RunAsync(spec, BuildProtocol.Tvix));
        try
        {
            Assert.NotNull(failure.KeptDirectory);
            Assert.True(Directory.Exists(failure.KeptDirectory));
            var partial = Directory.EnumerateFiles(failure.KeptDirectory, "file", SearchOption.AllDirectories).Single();
            Assert.Equal("partial\n", File.ReadAllText(partial));
        }
        finally
        {
            Castore.Transfer.HostTree.Remove(failure.KeptDirectory!);
        }
    }

    [Fact]
    public async Task BuildDirectoriesAreSpreadOverTheFilesystem()
    {
        await fixture.Runner().RunAsync(NixShaped("mkdir -p $out\necho x > $dev\nln -s x $link\n"), BuildProtocol.Tvix);

        // ext4 (and the filesystems with inode flags) mark the parent "top of hierarchy" (chattr +T); others refuse lsattr.
        var lsattr = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("lsattr", ["-d", fixture.BuildDirectories])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!;
        string attributes = lsattr.StandardOutput.ReadToEnd();
        string error = lsattr.StandardError.ReadToEnd();
        lsattr.WaitForExit();
        if (lsattr.ExitCode != 0)
        {
            Assert.Contains("Inappropriate ioctl", error);
            return;
        }

        Assert.Contains('T', attributes.Split(' ')[0]);
    }

    [Fact]
    public async Task TheResultCacheAnswersWithoutRunning()
    {
        var cache = fixture.NewResultCache();
        var spec = NixShaped("echo ran\nmkdir -p $out\necho \"$out\" > $dev\nln -s x $link\n");
        var firstLog = new StringBuilder();
        var first = await fixture.Runner(cache: cache).RunAsync(spec, BuildProtocol.Tvix, Capture(firstLog));
        Assert.False(first.Cached);
        Assert.Contains("ran", firstLog.ToString());

        var secondLog = new StringBuilder();
        var second = await fixture.Runner(cache: cache).RunAsync(spec, BuildProtocol.Tvix, Capture(secondLog));
        Assert.True(second.Cached);
        Assert.Null(second.Sandbox);
        Assert.Equal(string.Empty, secondLog.ToString());
        Assert.Equal(first.Result, second.Result);

        // A rebuild with the same result leaves the entry as it is (no new file, no fsync)...
        string entry = Path.Combine(cache.Directory, spec.ComputeDigest().ToHex());
        byte[] recorded = File.ReadAllBytes(entry);
        var past = new DateTime(2020, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        File.SetLastWriteTimeUtc(entry, past);
        var forced = await fixture.Runner(cache: cache, rebuild: true).RunAsync(spec, BuildProtocol.Tvix);
        Assert.False(forced.Cached);
        Assert.Equal(first.Result, forced.Result);
        Assert.Equal(past, File.GetLastWriteTimeUtc(entry));
        Assert.Equal(recorded, File.ReadAllBytes(entry));

        // ...and replaces one that says something else.
        File.WriteAllBytes(entry, [.. recorded.AsSpan(0, recorded.Length - 1), (byte)(recorded[^1] ^ 1)]);
        await fixture.Runner(cache: cache, rebuild: true).RunAsync(spec, BuildProtocol.Tvix);
        Assert.Equal(recorded, File.ReadAllBytes(entry));
        Assert.Empty(Directory.EnumerateFiles(cache.Directory, ".*"));
    }

    [Fact]
    public async Task ARecordedResultWhoseOutputsLeftTheStoreIsNotUsed()
    {
        var cache = fixture.NewResultCache();
        var spec = NixShaped("mkdir -p $out/sub\necho only-here > $out/sub/unique-" + Guid.NewGuid() + "\necho \"$out\" > $dev\nln -s x $link\n");
        var first = await fixture.Runner(cache: cache).RunAsync(spec, BuildProtocol.Tvix);
        var outDir = (DirectoryNode)first.Result.Outputs[1].Node;
        File.Delete(LocalDirectoryPath(outDir.Digest));

        var second = await fixture.Runner(cache: cache).RunAsync(spec, BuildProtocol.Tvix);
        Assert.False(second.Cached);
        Assert.NotNull(await fixture.Store.Directories.GetAsync(outDir.Digest));
    }

    private string LocalDirectoryPath(B3Digest digest)
    {
        string hex = digest.ToHex();
        return Path.Combine(fixture.Root, "store", "directories", hex[..2], hex);
    }

    [Fact]
    public async Task AMissingInputIsAClearErrorBeforeAnythingRuns()
    {
        var missing = new DirectoryNode(PathComponent.Create("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-gone"), Castore.Hashing.Blake3.Hash("gone"u8), 2);
        var spec = NixShaped("true\n") with { Inputs = [fixture.Busybox, missing] };
        var error = await Assert.ThrowsAsync<ObjectNotFoundException>(() => fixture.Runner().RunAsync(spec, BuildProtocol.Tvix));
        Assert.Contains("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-gone", error.Message);
        Assert.Contains(missing.Digest.ToString(), error.Message);
        Assert.Empty(fixture.LeftoverBuildDirectories());
    }

    [Fact]
    public async Task AnInvalidRequestIsRefusedWithTvixsMessage()
    {
        var spec = NixShaped("true\n") with { WorkingDir = "/build" };
        var error = await Assert.ThrowsAsync<BuildRequestValidationException>(() => fixture.Runner().RunAsync(spec, BuildProtocol.Tvix));
        Assert.Equal("invalid working_dir", error.Message);
    }

    [Fact]
    public async Task AnUnrunnableSystemIsRefusedBeforeAnythingStarts()
    {
        var spec = NixShaped("true\n") with { Constraints = new BuildConstraints("riscv64-linux") };
        var error = await Assert.ThrowsAsync<SandboxRefusedException>(() => fixture.Runner().RunAsync(spec, BuildProtocol.Tvix));
        Assert.Contains("riscv64-linux", error.Message);
        Assert.Empty(fixture.LeftoverBuildDirectories());
    }

    [Fact]
    public async Task CancellationStopsTheBuildAndLeavesNothing()
    {
        var spec = NixShaped("echo started\nsleep 1000\n");
        using var cts = new CancellationTokenSource();
        var started = new TaskCompletionSource();
        SandboxOutput output = (chunk, _) =>
        {
            started.TrySetResult();
            return ValueTask.CompletedTask;
        };
        var build = fixture.Runner().RunAsync(spec, BuildProtocol.Tvix, output, cts.Token);
        await started.Task.WaitAsync(TimeSpan.FromMinutes(1));
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => build);
        Assert.Empty(fixture.LeftoverBuildDirectories());
        Assert.DoesNotContain(File.ReadAllText("/proc/mounts").Split('\n'), l => l.Contains(fixture.Root, StringComparison.Ordinal));
    }

    [Fact]
    public async Task ConcurrentBuildsDoNotDisturbEachOther()
    {
        var builds = Enumerable.Range(0, 4).Select(i =>
            fixture.Runner().RunAsync(NixShaped($"mkdir -p $out\necho {i} > $out/n\necho \"$out\" > $dev\nln -s {i} $link\n"), BuildProtocol.Tvix));
        var results = await Task.WhenAll(builds);
        Assert.Equal(4, results.Select(r => ((SymlinkNode)r.Result.Outputs[2].Node).Target.ToString()).Distinct().Count());
        Assert.Empty(fixture.LeftoverBuildDirectories());
    }

    [Fact]
    public async Task BuildDirectoriesAreNobodyElsesToReach()
    {
        var spec = NixShaped("stat -c %a /build\necho ready\nsleep 1000\n");
        using var cts = new CancellationTokenSource();
        var log = new StringBuilder();
        var ready = new TaskCompletionSource();
        SandboxOutput output = (chunk, _) =>
        {
            lock (log)
            {
                log.Append(Encoding.UTF8.GetString(chunk.Span));
                if (log.ToString().Contains("ready\n", StringComparison.Ordinal))
                {
                    ready.TrySetResult();
                }
            }

            return ValueTask.CompletedTask;
        };
        var build = fixture.Runner().RunAsync(spec, BuildProtocol.Tvix, output, cts.Token);
        try
        {
            await ready.Task.WaitAsync(TimeSpan.FromMinutes(1));
            Assert.StartsWith("700\n", log.ToString());
            Assert.Equal($"{Owner.Euid} 700", Owner.Describe(fixture.BuildDirectories));
            string directory = Assert.Single(Directory.EnumerateDirectories(fixture.BuildDirectories));
            Assert.True(File.Exists(directory + ".lock"));
            var (uid, mode) = Owner.Of(directory);
            Assert.Equal("700", mode);
            Assert.Equal(Environment.IsPrivilegedProcess, BuildUser.IsBuildUid(uid));
            Assert.True(Environment.IsPrivilegedProcess || uid == Owner.Euid);
            foreach (string inside in Directory.EnumerateDirectories(Path.Combine(directory, "scratch")).Append(Path.Combine(directory, "scratch")))
            {
                Assert.Equal((uid, "700"), Owner.Of(inside));
            }
        }
        finally
        {
            cts.Cancel();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => build);
        }

        Assert.Empty(fixture.LeftoverBuildDirectories());
    }

    [Fact]
    public async Task ReadOnlyPathsIntoTheBuildDirectoriesOrTheStoreAreRefused()
    {
        string store = Path.Combine(fixture.Root, "store");
        Directory.CreateDirectory(fixture.BuildDirectories);
        foreach (var (path, expected) in new[]
                 {
                     (fixture.BuildDirectories, $"read-only path {fixture.BuildDirectories} lies inside {fixture.BuildDirectories}"),
                     (store + "/blobs", $"read-only path {store}/blobs lies inside {store}"),
                     (fixture.Root, $"read-only path {fixture.Root} contains "),
                 })
        {
            var spec = NixShaped("mkdir -p $out $link $dev\n") with
            {
                Constraints = new BuildConstraints(SandboxRunner.SupportedSystems[0], AvailableReadOnlyPaths: [path]),
            };
            var refused = await Assert.ThrowsAsync<SandboxRefusedException>(() => fixture.Runner(rebuild: true).RunAsync(spec, BuildProtocol.Tvix));
            Assert.StartsWith(expected, refused.Message);
        }

        Assert.Empty(fixture.LeftoverBuildDirectories());
    }

    [Fact]
    public async Task OnlyAllowedReadOnlyPathsAreTaken()
    {
        string allowed = Path.Combine(fixture.Root, "allowed");
        Directory.CreateDirectory(Path.Combine(allowed, "sub"));
        File.WriteAllText(Path.Combine(allowed, "sub", "f"), "allowed\n");
        var runner = new BuildRunner(fixture.Store, new BuildRunnerOptions { WorkRoot = Path.Combine(fixture.Root, "work"), AllowedReadOnlyPaths = [allowed] });
        BuildSpec WithReadOnly(string path) => NixShaped($"mkdir -p $out\ncat {path}/f > $out/f\necho \"$out\" > $dev\nln -s x $link\n") with
        {
            Constraints = new BuildConstraints(SandboxRunner.SupportedSystems[0], AvailableReadOnlyPaths: [path]),
        };

        var refused = await Assert.ThrowsAsync<SandboxRefusedException>(() => runner.RunAsync(WithReadOnly("/etc"), BuildProtocol.Tvix));
        Assert.Equal($"read-only path /etc is not allowed: this server allows only paths under {allowed}", refused.Message);
        refused = await Assert.ThrowsAsync<SandboxRefusedException>(() => runner.RunAsync(WithReadOnly(allowed + "-other"), BuildProtocol.Tvix));
        Assert.Equal($"read-only path {allowed}-other is not allowed: this server allows only paths under {allowed}", refused.Message);

        var run = await runner.RunAsync(WithReadOnly(Path.Combine(allowed, "sub")), BuildProtocol.Tvix);
        var outDir = await fixture.Store.Directories.GetAsync(((DirectoryNode)run.Result.Outputs[1].Node).Digest);
        Assert.Equal("allowed\n", await ReadFileAsync(outDir!, "f"));
    }

    [Fact]
    public void TheDirectoryOfABuildWhoseOwnerIsGoneIsRemovedWithItsMounts()
    {
        // What a build killed with SIGKILL leaves: its lock file (nobody holds it), its directory, a mount in it.
        string parent = fixture.BuildDirectories;
        Directory.CreateDirectory(parent);
        File.SetUnixFileMode(parent, (UnixFileMode)0x1C0);
        string dead = Path.Combine(parent, "00000000deadbeef");
        Directory.CreateDirectory(Path.Combine(dead, "inputs"));
        Directory.CreateDirectory(Path.Combine(dead, "scratch", "0", "sub"));
        File.WriteAllText(Path.Combine(dead, "scratch", "0", "sub", "f"), "left");
        File.WriteAllText(dead + ".lock", "");
        bool mounted = Environment.IsPrivilegedProcess;
        if (mounted)
        {
            var mount = System.Diagnostics.Process.Start("mount", ["-t", "tmpfs", "none", Path.Combine(dead, "inputs")])!;
            mount.WaitForExit();
            Assert.Equal(0, mount.ExitCode);
        }

        // A live build: its lock is held.
        string live = Path.Combine(parent, "00000000000a11fe");
        Directory.CreateDirectory(live);
        using (var held = new FileStream(live + ".lock", FileMode.Create, FileAccess.ReadWrite, FileShare.None))
        {
            var log = new List<string>();
            Assert.Equal(1, fixture.Runner(log: log).RemoveStaleBuilds());
            Assert.False(Directory.Exists(dead));
            Assert.False(File.Exists(dead + ".lock"));
            Assert.DoesNotContain(File.ReadAllLines("/proc/self/mountinfo"), l => l.Contains(dead, StringComparison.Ordinal));
            Assert.Contains($"removed the build directory {dead}: the process that ran its build is gone", log);
            Assert.True(Directory.Exists(live));
        }

        Directory.Delete(live);
        File.Delete(live + ".lock");
    }

    private async Task<string> ReadFileAsync(CastoreDirectory directory, string name) =>
        await ReadBlobAsync(Assert.IsType<FileNode>(directory.Find(name)));

    private async Task<string> ReadBlobAsync(FileNode file)
    {
        using var reader = await fixture.Store.Blobs.OpenReadAsync(file.Digest);
        Assert.NotNull(reader);
        var bytes = new byte[reader.Length];
        await reader.ReadAtAsync(0, bytes);
        return Encoding.UTF8.GetString(bytes);
    }

    private static SandboxOutput Capture(StringBuilder log) => (chunk, _) =>
    {
        lock (log)
        {
            log.Append(Encoding.UTF8.GetString(chunk.Span));
        }

        return ValueTask.CompletedTask;
    };
}

/// <summary>Owners and modes of host files, as stat(1) reports them.</summary>
internal static partial class Owner
{
    public static uint Euid => geteuid();

    public static string Describe(string path)
    {
        var (uid, mode) = Of(path);
        return $"{uid} {mode}";
    }

    public static (uint Uid, string Mode) Of(string path)
    {
        var stat = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("stat", ["-c", "%u %a", path]) { RedirectStandardOutput = true })!;
        string[] fields = stat.StandardOutput.ReadToEnd().Trim().Split(' ');
        stat.WaitForExit();
        return (uint.Parse(fields[0]), fields[1]);
    }

    [System.Runtime.InteropServices.LibraryImport("libc")]
    private static partial uint geteuid();
}
