using System.Diagnostics;

namespace TvixFuseBuild.Sandbox.Tests;

/// <summary>Every process of the build is gone after a timeout, a cancellation, a limit, and the caller's SIGKILL.</summary>
[Collection("sandbox")]
public sealed class LifecycleTests
{
    private const string B = SandboxTree.Busybox;

    /// <summary>A build that forks a daemon and then sleeps; both carry the marker.</summary>
    private static string Sleeper(string marker) =>
        $"( {B} setsid {B} sleep {marker} </dev/null >/dev/null 2>&1 & ); echo ready; {B} sleep {marker}";

    [Fact]
    public async Task TimeoutKillsTheTree()
    {
        using var tree = new SandboxTree();
        string marker = HostProcesses.Marker();
        var spec = SandboxEnvironmentTests.Copy(tree.Sh(Sleeper(marker)), timeout: TimeSpan.FromSeconds(2));
        var sw = Stopwatch.StartNew();
        var (result, output) = await Run.Async(spec);
        Assert.Equal(SandboxOutcome.TimedOut, result.Outcome);
        Assert.Equal("ready\n", output);
        Assert.InRange(sw.Elapsed.TotalSeconds, 1.9, 30);
        Assert.Empty(HostProcesses.WithArgument(marker));
    }

    [Fact]
    public async Task SilenceTimeoutKillsTheTree()
    {
        using var tree = new SandboxTree();
        string marker = HostProcesses.Marker();
        var spec = SandboxEnvironmentTests.Copy(
            tree.Sh($"for i in 1 2 3; do echo tick; {B} sleep 0.3; done; {B} sleep {marker}"), silence: TimeSpan.FromSeconds(1.5));
        var (result, output) = await Run.Async(spec);
        Assert.Equal(SandboxOutcome.SilenceTimedOut, result.Outcome);
        Assert.Equal("tick\ntick\ntick\n", output);
        Assert.Empty(HostProcesses.WithArgument(marker));
    }

    [Fact]
    public async Task LogLimitKillsTheTreeAndTruncatesTheLog()
    {
        using var tree = new SandboxTree();
        string marker = HostProcesses.Marker();
        var spec = SandboxEnvironmentTests.Copy(tree.Sh($"( {B} sleep {marker} & ); {B} yes"), logLimit: 100_000);
        var (result, output) = await Run.Async(spec);
        Assert.Equal(SandboxOutcome.LogLimitExceeded, result.Outcome);
        Assert.Equal(100_000, output.Length);
        Assert.Equal(100_000, result.LogBytes);
        Assert.Empty(HostProcesses.WithArgument(marker));
    }

    [Fact]
    public async Task CancellationKillsTheTree()
    {
        using var tree = new SandboxTree();
        string marker = HostProcesses.Marker();
        using var cts = new CancellationTokenSource();
        var ready = new TaskCompletionSource();
        var run = SandboxRunner.RunAsync(tree.Sh(Sleeper(marker)), (chunk, _) =>
        {
            ready.TrySetResult();
            return ValueTask.CompletedTask;
        }, cts.Token);
        await ready.Task.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(2, (await HostProcesses.AppearWithin(marker, 2, TimeSpan.FromSeconds(10))).Count);
        cts.Cancel();
        var result = await run;
        Assert.Equal(SandboxOutcome.Cancelled, result.Outcome);
        Assert.Empty(HostProcesses.WithArgument(marker));
    }

    [Fact]
    public async Task CancelledBeforeStartThrows()
    {
        using var tree = new SandboxTree();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => SandboxRunner.RunAsync(tree.Sh("true"), null, new CancellationToken(true)));
    }

    [Fact]
    public async Task SigkillOfTheCallerLeavesNothingBehind()
    {
        using var tree = new SandboxTree();
        string marker = HostProcesses.Marker();
        using var driver = Driver.Start(tree, Sleeper(marker));
        string pidNamespace;
        try
        {
            var line = await driver.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60));
            Assert.True(line == "ready", $"driver said '{line}'");
            var sleepers = (await HostProcesses.AppearWithin(marker, 3, TimeSpan.FromSeconds(10))).Where(p => p != driver.Id).ToList();
            Assert.Equal(2, sleepers.Count); // the build's sleep and its daemon (the driver's command line has the marker too)
            pidNamespace = new FileInfo($"/proc/{sleepers[0]}/ns/pid").LinkTarget!;
            Assert.NotEqual(new FileInfo("/proc/self/ns/pid").LinkTarget, pidNamespace);
        }
        finally
        {
            driver.Kill(); // SIGKILL: no chance to clean up
            await driver.WaitForExitAsync();
        }

        Assert.Empty(await HostProcesses.GoneWithin(marker, TimeSpan.FromSeconds(5)));

        // Not even the init: it may still be on its way out when the build's processes are gone.
        var deadline = DateTime.UtcNow.AddSeconds(5);
        while (InNamespace(pidNamespace).Count > 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        Assert.Empty(InNamespace(pidNamespace));
    }

    [Fact]
    public async Task RefusesWhatTheHostCannotGiveBeforeStarting()
    {
        using var tree = new SandboxTree();
        string marker = Path.Combine(tree.Build, "ran");
        var touch = tree.Sh($"{B} touch /build/ran");

        var system = await Assert.ThrowsAsync<SandboxRefusedException>(() => Run.Async(SandboxEnvironmentTests.Copy(touch, system: "riscv64-linux")));
        Assert.Contains("riscv64-linux", system.Message);
        Assert.Contains("x86_64-linux", system.Message);

        var memory = await Assert.ThrowsAsync<SandboxRefusedException>(() => Run.Async(SandboxEnvironmentTests.Copy(touch, minMemory: 1L << 50)));
        Assert.Contains("memory", memory.Message);
        Assert.False(File.Exists(marker));

        await Run.Ok(SandboxEnvironmentTests.Copy(touch, system: "x86_64-linux", minMemory: 1 << 20));
        Assert.True(File.Exists(marker));
    }

    [Fact]
    public async Task RefusesMalformedSpecs()
    {
        using var tree = new SandboxTree();
        var ok = tree.Sh("true");
        await Assert.ThrowsAsync<SandboxRefusedException>(() => SandboxRunner.RunAsync(new SandboxSpec { Command = [] }));
        await Assert.ThrowsAsync<SandboxRefusedException>(() => SandboxRunner.RunAsync(new SandboxSpec
        {
            Command = ok.Command, ScratchPaths = new Dictionary<string, string> { ["proc/x"] = tree.Build },
        }));
        await Assert.ThrowsAsync<SandboxRefusedException>(() => SandboxRunner.RunAsync(new SandboxSpec
        {
            Command = ok.Command, ScratchPaths = new Dictionary<string, string> { ["../escape"] = tree.Build },
        }));
        await Assert.ThrowsAsync<SandboxRefusedException>(() => SandboxRunner.RunAsync(new SandboxSpec
        {
            Command = ok.Command, ScratchPaths = new Dictionary<string, string> { ["build"] = "relative/host" },
        }));
        await Assert.ThrowsAsync<SandboxRefusedException>(() => SandboxRunner.RunAsync(new SandboxSpec
        {
            Command = ok.Command, InputsHostDirectory = tree.Inputs, InputNames = ["a/b"],
        }));
    }

    [Fact]
    public async Task SetupFailuresAreClearErrors()
    {
        using var tree = new SandboxTree();
        var missingInput = new SandboxSpec
        {
            Command = [B, "true"], ScratchPaths = new Dictionary<string, string> { ["nix/store"] = tree.Store },
            InputsHostDirectory = tree.Inputs, InputNames = [.. tree.InputNames, "7777777777777777777777777777777m-missing"],
        };
        var e = await Assert.ThrowsAsync<SandboxException>(() => SandboxRunner.RunAsync(missingInput));
        Assert.Contains("7777777777777777777777777777777m-missing", e.Message);

        var missingProgram = await Assert.ThrowsAsync<SandboxException>(() => SandboxRunner.RunAsync(tree.Spec("/no/such/program")));
        Assert.Contains("/no/such/program", missingProgram.Message);
    }

    private static List<int> InNamespace(string pidNamespace)
    {
        var found = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(dir), out int pid))
            {
                try
                {
                    if (new FileInfo(Path.Combine(dir, "ns", "pid")).LinkTarget == pidNamespace)
                    {
                        found.Add(pid);
                    }
                }
                catch (IOException)
                {
                }
                catch (UnauthorizedAccessException)
                {
                }
            }
        }

        return found;
    }
}
