using System.Diagnostics;
using System.Runtime.InteropServices;

namespace TvixFuseBuild.Sandbox.Tests;

/// <summary>
/// Builds kept apart from each other and from the host: a host uid per build (as root), read-only host paths that
/// cannot be turned into a way out, descriptors that do not leak from one build's start into another.
/// </summary>
[Collection("sandbox")]
public sealed partial class IsolationTests
{
    private const string B = SandboxTree.Busybox;

    [Fact]
    public async Task ConcurrentBuildsRunAsHostUsersOfTheirOwnThatCannotReachEachOther()
    {
        RequireRoot();
        using var treeA = new SandboxTree();
        using var treeB = new SandboxTree();
        string markerA = HostProcesses.Marker();
        string markerB = HostProcesses.Marker();
        using var stop = new CancellationTokenSource();
        var runA = Run.Async(treeA.Sh($"echo secret > /build/secret; {B} chmod 600 /build/secret; exec {B} sleep {markerA}"), stop.Token);
        var runB = Run.Async(treeB.Sh($"exec {B} sleep {markerB}"), stop.Token);
        try
        {
            int pidA = Assert.Single(await HostProcesses.AppearWithin(markerA, 1, TimeSpan.FromSeconds(60)));
            int pidB = Assert.Single(await HostProcesses.AppearWithin(markerB, 1, TimeSpan.FromSeconds(60)));

            // The shell's own command line holds the marker too: wait for its exec of sleep, after the chmod.
            while (File.ReadAllText($"/proc/{pidA}/cmdline").Split('\0')[1] != "sleep")
            {
                await Task.Delay(20);
            }

            int uidA = RealUid(pidA);
            int uidB = RealUid(pidB);
            Assert.NotEqual(uidA, uidB);
            Assert.True(BuildUser.IsBuildUid(uidA) && BuildUser.IsBuildUid(uidB), $"uids {uidA}, {uidB}");
            string secret = Path.Combine(treeA.Build, "secret");
            Assert.Equal($"{uidA} 600", Host("stat", "-c", "%u %a", secret).Stdout.Trim());

            // B's host uid is refused A's file and A's process; A's own uid is not (the attempt itself works).
            var read = AsUser(uidB, "/bin/busybox", "cat", secret);
            Assert.Equal($"cat: can't open '{secret}': Permission denied", read.Stderr.Trim());
            var signal = AsUser(uidB, "/bin/busybox", "kill", "-0", pidA.ToString());
            Assert.Equal($"kill: can't kill pid {pidA}: Operation not permitted", signal.Stderr.Trim());
            Assert.Equal("secret\n", AsUser(uidA, "/bin/busybox", "cat", secret).Stdout);
            Assert.Equal(0, AsUser(uidA, "/bin/busybox", "kill", "-0", pidA.ToString()).ExitCode);
        }
        finally
        {
            stop.Cancel();
            await Task.WhenAll(runA, runB);
        }

        Assert.Empty(HostProcesses.WithArgument(markerA));
    }

    [Fact]
    public async Task AReleasedSlotIsClaimedAgainOnlyAfterWhatItsHolderLeftIsKilled()
    {
        RequireRoot();
        string marker = HostProcesses.Marker();
        var first = BuildUser.Claim();
        int uid = first.Uid;

        // What a holder killed mid-build leaves for a moment: a process of its uid, and a lock the kernel released.
        using var leftover = Process.Start(new ProcessStartInfo("setpriv",
            [$"--reuid={uid}", $"--regid={uid}", "--clear-groups", "--", "/bin/sleep", marker]) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        int pid = Assert.Single(await HostProcesses.AppearWithin(marker, 1, TimeSpan.FromSeconds(30)));

        // setpriv's own command line holds the marker too: wait for it to have become the slot's uid and run sleep.
        while (File.ReadAllText($"/proc/{pid}/cmdline").Split('\0')[0] != "/bin/sleep")
        {
            await Task.Delay(20);
        }

        Assert.Equal(uid, RealUid(pid));
        first.Dispose();

        // Claim until the freed slot comes round (other builds on this machine may hold lower ones).
        var held = new List<BuildUser>();
        try
        {
            BuildUser? reclaimed = null;
            while (reclaimed is null && held.Count < BuildUser.Slots)
            {
                var user = BuildUser.Claim();
                held.Add(user);
                reclaimed = user.Uid == uid ? user : null;
            }

            Assert.NotNull(reclaimed);
            Assert.Empty(HostProcesses.WithArgument(marker)); // killed before the claim returned
            await leftover.WaitForExitAsync();
        }
        finally
        {
            held.ForEach(u => u.Dispose());
        }
    }

    [Fact]
    public async Task AReadOnlyPathThroughAnotherBuildsSymlinkIsRefused()
    {
        // The attack of issue 12: build A links / into its /build; B names that link on the host.
        using var treeA = new SandboxTree();
        using var treeB = new SandboxTree();
        using var stop = new CancellationTokenSource();
        var ready = new TaskCompletionSource();
        var runA = SandboxRunner.RunAsync(treeA.Sh($"{B} ln -s / /build/hostroot; echo ready; exec {B} sleep 600"), (_, _) =>
        {
            ready.TrySetResult();
            return ValueTask.CompletedTask;
        }, stop.Token);
        try
        {
            await ready.Task.WaitAsync(TimeSpan.FromSeconds(60));
            string attack = Path.Combine(treeA.Build, "hostroot");
            var refused = await Assert.ThrowsAsync<SandboxRefusedException>(() =>
                Run.Async(SandboxEnvironmentTests.Copy(treeB.Sh($"{B} ls /proc/1"), readOnly: [attack])));
            Assert.StartsWith($"read-only path {attack} ", refused.Message);
            Assert.Contains(BuildUser.IsRoot ? "lies inside a build directory" : "is a symbolic link", refused.Message);
        }
        finally
        {
            stop.Cancel();
            await runA;
        }
    }

    [Fact]
    public async Task ReadOnlyPathsAreNeverResolvedThroughSymlinksOrDotDot()
    {
        using var tree = new SandboxTree();
        string dir = tree.Scratch("ro");
        Directory.CreateDirectory(Path.Combine(dir, "real", "sub"));
        File.CreateSymbolicLink(Path.Combine(dir, "link"), "real");
        File.CreateSymbolicLink(Path.Combine(dir, "etc-link"), "/etc");

        await Refused(tree, Path.Combine(dir, "link"), $"read-only path {dir}/link: {dir}/link is a symbolic link; read-only paths are never resolved through symlinks, name the target");
        await Refused(tree, Path.Combine(dir, "link", "sub"), $"read-only path {dir}/link/sub: {dir}/link is a symbolic link; read-only paths are never resolved through symlinks, name the target");
        await Refused(tree, Path.Combine(dir, "etc-link"), $"read-only path {dir}/etc-link: {dir}/etc-link is a symbolic link; read-only paths are never resolved through symlinks, name the target");
        await Refused(tree, $"{dir}/real/../link", $"read-only path {dir}/real/../link contains '..'; name the path itself");
        await Refused(tree, $"{dir}/missing", $"read-only path {dir}/missing does not exist");

        // The target itself is fine.
        Assert.Equal("sub\n", await Run.Ok(SandboxEnvironmentTests.Copy(tree.Sh($"{B} ls {dir}/real"), readOnly: [Path.Combine(dir, "real")])));
    }

    [Fact]
    public async Task ReadOnlyPathsNeverExposeProcSysTheStoreOrABuildDirectory()
    {
        using var tree = new SandboxTree();
        string store = tree.Scratch("the-store");
        Directory.CreateDirectory(Path.Combine(store, "blobs"));
        foreach (var (path, expected) in new[]
                 {
                     ("/", "read-only path / would expose the whole host, /proc and /sys included"),
                     ("/proc", "read-only path /proc is, lies inside or contains /proc, which a build never sees of the host"),
                     ("/proc/self", "read-only path /proc/self is, lies inside or contains /proc, which a build never sees of the host"),
                     ("/sys/kernel", "read-only path /sys/kernel is, lies inside or contains /sys, which a build never sees of the host"),
                     (Path.Combine(store, "blobs"), $"read-only path {store}/blobs lies inside {store} (build directories or the store), which a build never sees"),
                     (tree.Root, $"read-only path {tree.Root} contains {store} (build directories or the store), which a build never sees"),
                     (tree.Build, $"read-only path {tree.Build} lies inside {tree.Build} (build directories or the store), which a build never sees"),
                 })
        {
            await Refused(tree, path, expected, protectedPaths: [store]);
        }
    }

    [Fact]
    public async Task DeviceNodesInAReadOnlyDirectoryAreUnusableButOneListedOnItsOwnWorks()
    {
        RequireRoot(); // mknod
        using var tree = new SandboxTree();
        string dir = tree.Scratch("with-device");
        string listed = tree.Scratch("listed-device");
        Host("mknod", "-m", "666", Path.Combine(dir, "null"), "c", "1", "3");
        Host("mknod", "-m", "666", Path.Combine(listed, "null"), "c", "1", "3");
        string output = await Run.Ok(SandboxEnvironmentTests.Copy(
            tree.Sh($"echo x > {dir}/null 2>&1; echo x > {listed}/null && echo written"),
            readOnly: [dir, Path.Combine(listed, "null")]));
        Assert.Equal($"sh: can't create {dir}/null: Permission denied\nwritten\n", output);
    }

    [Fact]
    public async Task ADescriptorInheritedFromTheCallerIsClosedBeforeTheCommandStarts()
    {
        using var tree = new SandboxTree();
        string file = Path.Combine(tree.Root, "caller-descriptor");
        File.WriteAllText(file, "x");
        int fd = open(file, 0 /* O_RDONLY, without O_CLOEXEC: every child of this process inherits it */);
        Assert.True(fd >= 0);
        string marker = HostProcesses.Marker();
        using var stop = new CancellationTokenSource();
        var run = Run.Async(tree.Sh($"exec {B} sleep {marker}"), stop.Token);
        try
        {
            int command = Assert.Single(await HostProcesses.AppearWithin(marker, 1, TimeSpan.FromSeconds(60)));
            int init = ParentOf(command);
            Assert.Equal(["0", "1", "2"], Directory.EnumerateFileSystemEntries($"/proc/{command}/fd").Select(Path.GetFileName).Order());
            var initFiles = Directory.EnumerateFileSystemEntries($"/proc/{init}/fd").Select(l => new FileInfo(l).LinkTarget).ToList();
            Assert.NotEmpty(initFiles);
            Assert.DoesNotContain(file, initFiles);
        }
        finally
        {
            close(fd);
            stop.Cancel();
            await run;
        }
    }

    private static async Task Refused(SandboxTree tree, string path, string expected, IReadOnlyList<string>? protectedPaths = null)
    {
        var spec = SandboxEnvironmentTests.Copy(tree.Sh("echo ran"), readOnly: [path], protectedPaths: protectedPaths);
        var refused = await Assert.ThrowsAsync<SandboxRefusedException>(() => Run.Async(spec));
        Assert.Equal(expected, refused.Message);
    }

    private static void RequireRoot() =>
        Assert.True(Environment.IsPrivilegedProcess, "this test checks what happens when root runs the sandbox: run it as root");

    private static int RealUid(int pid) =>
        int.Parse(File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("Uid:", StringComparison.Ordinal)).Split('\t')[1]);

    private static int ParentOf(int pid) =>
        int.Parse(File.ReadLines($"/proc/{pid}/status").First(l => l.StartsWith("PPid:", StringComparison.Ordinal)).Split('\t')[1]);

    private static (int ExitCode, string Stdout, string Stderr) AsUser(int uid, params string[] command) =>
        Host("setpriv", [$"--reuid={uid}", $"--regid={uid}", "--clear-groups", "--", .. command], check: false);

    private static (int ExitCode, string Stdout, string Stderr) Host(string file, params string[] args) => Host(file, args, check: true);

    private static (int ExitCode, string Stdout, string Stderr) Host(string file, string[] args, bool check)
    {
        var psi = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(!check || p.ExitCode == 0, $"{file} {string.Join(' ', args)} exited {p.ExitCode}: {stderr}");
        return (p.ExitCode, stdout.Result, stderr);
    }

    [LibraryImport("libc", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int open(string path, int flags);

    [LibraryImport("libc")]
    private static partial int close(int fd);
}
