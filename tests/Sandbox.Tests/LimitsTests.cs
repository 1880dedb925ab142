using System.Globalization;

namespace TvixFuseBuild.Sandbox.Tests;

/// <summary>Processes, memory and tmpfs sizes: each limit holds, and a build that reaches one is told so.</summary>
[Collection("sandbox")]
public sealed class LimitsTests
{
    private const string B = SandboxTree.Busybox;

    [Fact]
    public async Task AForkBombStopsAtTheProcessLimit()
    {
        using var tree = new SandboxTree();
        var spec = With(tree.Sh($"f() {{ f | f & }}; f; {B} sleep 3; exit 7"), new SandboxLimits { MaxProcesses = 64 });
        using var watch = new CancellationTokenSource();
        var peak = Task.Run(() => PeakTasksOfOurBuilds(watch.Token));
        var (result, output) = await Run.Async(spec);
        watch.Cancel();
        Assert.Equal(7, result.ExitCode);
        Assert.Equal([SandboxLimit.Processes], result.LimitsHit);
        Assert.Contains("sh: can't fork: Resource temporarily unavailable\n", output);

        // On the host: the build's 64 and the init's few threads; never more (the issue saw 1,144).
        Assert.InRange(await peak, 1, 64 + 16);
    }

    [Fact]
    public async Task TheProcessLimitCountsTheBuildsTasks()
    {
        using var tree = new SandboxTree();
        var spec = With(tree.Sh(
            $"( while true; do {B} sleep 30 & echo $! >> /tmp/pids; done ) 2>/dev/null; " +
            "n=0; while read p; do n=$((n+1)); kill $p; done < /tmp/pids; echo $n"), new SandboxLimits { MaxProcesses = 20 });
        var (result, output) = await Run.Async(spec);
        Assert.True(result.Succeeded, output);
        // 20 tasks: the shell, the subshell and 18 sleeps (give or take a thread the init's runtime starts or ends meanwhile).
        Assert.InRange(int.Parse(output, System.Globalization.CultureInfo.InvariantCulture), 16, 19);
        Assert.Equal([SandboxLimit.Processes], result.LimitsHit);
    }

    [Fact]
    public async Task AMemoryHogIsKilledAtTheMemoryLimit()
    {
        using var tree = new SandboxTree();
        var spec = With(tree.Sh($"exec {B} dd if=/dev/zero of=/dev/shm/fill bs=1M count=256"),
            new SandboxLimits { MaxMemory = 64L << 20, TmpSize = 512L << 20 });
        var (result, output) = await Run.Async(spec);
        Assert.Equal(SandboxOutcome.Signaled, result.Outcome);
        Assert.Equal(9, result.Signal);
        Assert.Equal([SandboxLimit.Memory], result.LimitsHit);
        Assert.Equal("", output);
    }

    [Fact]
    public async Task TmpStopsAtItsSize()
    {
        using var tree = new SandboxTree();
        var spec = With(tree.Sh(
            $"{B} dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>&1 | {B} head -1; {B} df -k /tmp /dev/shm | {B} tail -2 | {B} tr -s ' '"),
            new SandboxLimits { TmpSize = 16L << 20 });
        var (result, output) = await Run.Async(spec);
        Assert.True(result.Succeeded, output);
        Assert.Equal(
            "dd: error writing '/tmp/fill': No space left on device\ntmpfs 16384 16384 0 100% /tmp\ntmpfs 16384 0 16384 0% /dev/shm\n", output);
        Assert.Equal([SandboxLimit.Tmp], result.LimitsHit);

        var (shm, _) = await Run.Async(With(tree.Sh($"{B} dd if=/dev/zero of=/dev/shm/fill bs=1M count=64 2>/dev/null; exit 1"), new SandboxLimits { TmpSize = 16L << 20 }));
        Assert.Equal([SandboxLimit.DevShm], shm.LimitsHit);
    }

    [Fact]
    public async Task TheDefaultsFollowTheHostsMemory()
    {
        using var tree = new SandboxTree();
        string output = await Run.Ok(tree.Sh($"{B} df -k /tmp /dev/shm | {B} tail -2 | {B} tr -s ' ' | {B} cut -d' ' -f2; {B} grep processes /proc/self/limits | {B} tr -s ' '"));
        long kib = SandboxLimits.Default.TmpSize / 1024;
        Assert.Equal(SandboxLimits.MemTotal / 8 >> 20 << 20, SandboxLimits.Default.TmpSize);
        Assert.StartsWith($"{kib}\n{kib}\nMax processes ", output);
        Assert.Equal(4096, SandboxLimits.Default.MaxProcesses);
        Assert.Equal(SandboxLimits.MemTotal / 2, SandboxLimits.Default.MaxMemory);
    }

    [Fact]
    public async Task TheCgroupsOfACallerKilledMidBuildGoWithTheNextBuild()
    {
        using var tree = new SandboxTree();
        string marker = HostProcesses.Marker();
        using var driver = Driver.Start(tree, $"echo ready; {B} sleep {marker}");
        try
        {
            var line = await driver.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60));
            Assert.True(line == "ready", $"driver said '{line}'");
            Assert.NotEmpty(CgroupsOf(driver.Id)); // as root on this host: pids and memory
        }
        finally
        {
            driver.Kill(); // SIGKILL: no chance to clean up
            await driver.WaitForExitAsync();
        }

        Assert.Empty(await HostProcesses.GoneWithin(marker, TimeSpan.FromSeconds(5)));
        Assert.NotEmpty(CgroupsOf(driver.Id));
        await Run.Ok(tree.Sh("true"));
        Assert.Empty(CgroupsOf(driver.Id));
    }

    [Fact]
    public async Task AConfiguredCgroupV2ThatCannotBeUsedFailsTheBuildNamingWhy()
    {
        // The admin's choice is not overridden by a silent fallback to v1 (this host's real cgroup2 mount).
        string? mount = File.ReadLines("/proc/self/mountinfo").Select(l => l.Split(" - ")).Where(p => p.Length == 2 && p[1].StartsWith("cgroup2 ", StringComparison.Ordinal))
            .Select(p => p[0].Split(' ')[4]).FirstOrDefault();
        Assert.True(mount is not null, "no cgroup2 file system is mounted on this host");
        using var tree = new SandboxTree();
        string configured = mount + "/no-such-cgroup";
        using var driver = Driver.Start(tree, "echo ran", new Dictionary<string, string> { [BuildCgroups.Variable] = configured });
        string output = await driver.StandardOutput.ReadToEndAsync();
        await driver.WaitForExitAsync();
        Assert.Equal(
            $"ERROR: {BuildCgroups.Variable}={configured} cannot hold the builds' cgroups: it is not a cgroup directory in the cgroup2 file system at {mount}\n",
            output);
        Assert.Equal(1, driver.ExitCode);
        Assert.Empty(CgroupsOf(driver.Id));
    }

    /// <summary>The build cgroups a caller with pid <paramref name="pid"/> created, in every v1 hierarchy.</summary>
    private static List<string> CgroupsOf(int pid)
    {
        var found = new List<string>();
        foreach (string hierarchy in new[] { "/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory" })
        {
            Assert.True(Directory.Exists(hierarchy), $"{hierarchy} is missing: these tests expect cgroup v1 controllers, as on CI");
            found.AddRange(Directory.EnumerateDirectories(hierarchy, $"tvix-fuse-build-{pid}-*", SearchOption.AllDirectories));
        }

        return found;
    }

    private static SandboxSpec With(SandboxSpec spec, SandboxLimits limits) => new()
    {
        Command = spec.Command, Environment = spec.Environment, WorkingDirectory = spec.WorkingDirectory,
        ScratchPaths = spec.ScratchPaths, InputsHostDirectory = spec.InputsHostDirectory, InputNames = spec.InputNames,
        Timeout = spec.Timeout, Limits = limits,
    };

    /// <summary>
    /// The most tasks (threads included) the host saw at once in this process's build cgroups, until cancelled: read
    /// from /proc, not from the cgroup's own counter.
    /// </summary>
    private static int PeakTasksOfOurBuilds(CancellationToken cancellationToken)
    {
        string marker = $":pids:/tvix-fuse-build-{Environment.ProcessId}-";
        int peak = 0;
        while (!cancellationToken.IsCancellationRequested)
        {
            int count = 0;
            foreach (string dir in Directory.EnumerateDirectories("/proc"))
            {
                try
                {
                    if (int.TryParse(Path.GetFileName(dir), out _) && File.ReadAllText(Path.Combine(dir, "cgroup")).Contains(marker, StringComparison.Ordinal))
                    {
                        count += Directory.EnumerateDirectories(Path.Combine(dir, "task")).Count();
                    }
                }
                catch (IOException)
                {
                }
                catch (UnauthorizedAccessException)
                {
                }
            }

            peak = Math.Max(peak, count);
        }

        return peak;
    }
}
