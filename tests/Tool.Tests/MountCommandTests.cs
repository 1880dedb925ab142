using System.Diagnostics;
using System.Runtime.InteropServices;

namespace TvixFuseBuild.Tool.Tests;

/// <summary>
/// <c>tvix-fuse-build mount</c> as users run it: a separate process serving a real mount until SIGTERM, Ctrl-C or an
/// unmount; killed with SIGKILL (its watchdog must detach the mount, so readers fail fast and nothing stays; with the
/// watchdog killed too, the next start must clean up), and mounted by an unprivileged user through fusermount3. Every
/// test removes its mounts and processes, also when it fails.
/// </summary>
public sealed partial class MountCommandTests : IDisposable
{
    private readonly string _temp = Directory.CreateTempSubdirectory("tvix-fuse-mount-test-").FullName;
    private readonly List<Process> _processes = [];

    public MountCommandTests()
    {
        Source = Path.Combine(_temp, "src");
        Directory.CreateDirectory(Path.Combine(Source, "sub", "deeper"));
        File.WriteAllText(Path.Combine(Source, "hello.txt"), "hello, world\n");
        File.WriteAllBytes(Path.Combine(Source, "sub", "deeper", "data.bin"), Enumerable.Range(0, 300_000).Select(i => (byte)(i * 7)).ToArray());
        File.WriteAllText(Path.Combine(Source, "sub", "tool.sh"), "#!/bin/sh\necho hi\n");
        File.SetUnixFileMode(Path.Combine(Source, "sub", "tool.sh"), (UnixFileMode)0x1ED);
        File.CreateSymbolicLink(Path.Combine(Source, "link"), "hello.txt");
        Mountpoint = Path.Combine(_temp, "mnt");
        Directory.CreateDirectory(Mountpoint);
    }

    private string Source { get; }

    private string Mountpoint { get; }

    private string Store => "local://" + Path.Combine(_temp, "store");

    [LibraryImport("libc", EntryPoint = "umount2", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Umount2(string target, int flags);

    public void Dispose()
    {
        ToolProcess.StopAll(_processes);
        foreach (int watchdog in WatchdogsFor(_temp))
        {
            ToolProcess.Signal(watchdog, 9);
        }

        foreach (string path in MountsUnder(_temp))
        {
            Umount2(path, 2 /* MNT_DETACH */);
        }

        if (Directory.Exists(Path.Combine(_temp, "store")))
        {
            Run("chmod", "-R", "u+w", Path.Combine(_temp, "store"));
        }

        Directory.Delete(_temp, recursive: true);
    }

    [Fact]
    public void HelpDescribesTheCommand()
    {
        var result = ToolProcess.Run(["mount", "--help"]);
        Assert.Equal(0, result.ExitCode);
        foreach (string option in new[] { "--directory", "--nodes", "--threads", "--allow-other", "--per-file-open", "--store", "watchdog", "NAME<TAB>KIND<TAB>DIGEST<TAB>SIZE" })
        {
            Assert.Contains(option, result.Stdout);
        }

        Assert.DoesNotContain("--zero-message-open", result.Stdout);
    }

    [Fact]
    public void UsageErrorsExitTwoAndFailuresOne()
    {
        Assert.Equal(2, ToolProcess.Run(["mount", Mountpoint]).ExitCode);
        File.WriteAllText(Path.Combine(_temp, "nodes"), "x\tfile\tblake3-nope\t1\n");
        var both = ToolProcess.Run(["mount", Mountpoint, "--directory", "blake3-x", "--nodes", Path.Combine(_temp, "nodes")]);
        Assert.Equal(2, both.ExitCode);
        Assert.Contains("exactly one of", both.Stderr);

        var badDigest = ToolProcess.Run(["--store", Store, "mount", Mountpoint, "--directory", "blake3-nonsense"]);
        Assert.Equal(2, badDigest.ExitCode);
        Assert.StartsWith("tvix-fuse-build: error: --directory: invalid digest", badDigest.Stderr);

        var badLine = ToolProcess.Run(["--store", Store, "mount", Mountpoint, "--nodes", Path.Combine(_temp, "nodes")]);
        Assert.Equal(2, badLine.ExitCode);
        Assert.Contains("nodes:1:", badLine.Stderr);

        var missingDirectory = ToolProcess.Run(["--store", Store, "mount", Mountpoint, "--directory", new string('a', 64)]);
        Assert.Equal(1, missingDirectory.ExitCode);
        Assert.Equal($"tvix-fuse-build: error: directory blake3-{Convert.ToBase64String(Convert.FromHexString(new string('a', 64)))} is not in the store", missingDirectory.Stderr.Trim());

        var missingMountpoint = ToolProcess.Run(["--store", Store, "mount", Path.Combine(_temp, "nope"), "--nodes", "-"], stdin: "");
        Assert.Equal(1, missingMountpoint.ExitCode);
        Assert.Contains("no such directory", missingMountpoint.Stderr);
        Assert.DoesNotContain("   at ", missingMountpoint.Stderr + badLine.Stderr + badDigest.Stderr);
        Assert.Empty(MountsUnder(_temp));
    }

    [Fact]
    public async Task ServesAnImportedTreeUntilSigterm()
    {
        string nodes = Path.Combine(_temp, "nodes.txt");
        File.WriteAllText(nodes, Import(json: false));
        var server = StartMount("--nodes", nodes);

        string mounted = Path.Combine(Mountpoint, "src");
        Assert.Equal("hello, world\n", File.ReadAllText(Path.Combine(mounted, "hello.txt")));
        Assert.Equal("hello, world\n", File.ReadAllText(Path.Combine(mounted, "link")));
        Assert.Equal(File.ReadAllBytes(Path.Combine(Source, "sub", "deeper", "data.bin")), File.ReadAllBytes(Path.Combine(mounted, "sub", "deeper", "data.bin")));
        Assert.Equal("hi\n", Run(Path.Combine(mounted, "sub", "tool.sh")));
        Assert.Equal("", Run("diff", "-r", "--no-dereference", Source, mounted));

        Assert.Single(WatchdogsFor(Mountpoint));
        Assert.Equal(0, ToolProcess.Signal(server.Id, 15));
        var exited = server.WaitForExitAsync();
        Assert.Same(exited, await Task.WhenAny(exited, Task.Delay(TimeSpan.FromSeconds(15))));
        Assert.Equal(143, server.ExitCode);
        Assert.Empty(MountsUnder(_temp));
        Assert.Empty(WatchdogsFor(_temp));
    }

    [Theory]
    [InlineData("SIGINT")]
    [InlineData("umount")]
    public async Task TheWatchdogLeavesWithTheServerOnCtrlCAndOnAnUnmount(string how)
    {
        var server = StartMountWithStdin(Import(json: false), "--nodes", "-");
        int watchdog = Assert.Single(WatchdogsFor(Mountpoint));
        Assert.Equal("hello, world\n", File.ReadAllText(Path.Combine(Mountpoint, "src", "hello.txt")));
        if (how == "SIGINT")
        {
            Assert.Equal(0, ToolProcess.Signal(server.Id, 2));
        }
        else
        {
            Run("umount", Mountpoint);
        }

        await server.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(15));
        Assert.Equal(how == "SIGINT" ? 130 : 0, server.ExitCode);
        Assert.Empty(MountsUnder(_temp));
        Assert.Empty(WatchdogsFor(_temp));
        Assert.False(Directory.Exists($"/proc/{watchdog}"), $"the watchdog {watchdog} is still there");
        string stderr = await server.StandardError.ReadToEndAsync();
        Assert.DoesNotContain("watchdog", stderr);
        Assert.DoesNotContain("is gone", stderr);
    }

    [Fact]
    public async Task ServesADirectoryDigestAndJsonNodesFromStdin()
    {
        string json = Import(json: true);
        string digest = System.Text.Json.JsonDocument.Parse(json).RootElement[0].GetProperty("directory").GetProperty("digest").GetString()!;
        string hex = Convert.ToHexStringLower(Convert.FromBase64String(digest));

        var byDigest = StartMount("--directory", hex);
        Assert.Equal("hello, world\n", File.ReadAllText(Path.Combine(Mountpoint, "hello.txt")));
        await StopAsync(byDigest);

        var byJson = StartMountWithStdin(json, "--nodes", "-");
        Assert.Equal("hello, world\n", File.ReadAllText(Path.Combine(Mountpoint, "src", "hello.txt")));
        await StopAsync(byJson);
        Assert.Empty(MountsUnder(_temp));
    }

    [Fact]
    public async Task PerFileOpenServesTheSameFilesAndTheOldOptInIsAccepted()
    {
        string nodes = Path.Combine(_temp, "nodes.txt");
        File.WriteAllText(nodes, Import(json: false));
        foreach (string option in new[] { "--per-file-open", "--zero-message-open" })
        {
            var server = StartMount("--nodes", nodes, option);
            Assert.Equal("hello, world\n", File.ReadAllText(Path.Combine(Mountpoint, "src", "hello.txt")));
            Assert.Equal(
                File.ReadAllBytes(Path.Combine(Source, "sub", "deeper", "data.bin")),
                File.ReadAllBytes(Path.Combine(Mountpoint, "src", "sub", "deeper", "data.bin")));
            await StopAsync(server);
            Assert.Empty(MountsUnder(_temp));
        }

        var both = ToolProcess.Run(["--store", Store, "mount", Mountpoint, "--nodes", nodes, "--per-file-open", "--zero-message-open"]);
        Assert.Equal(2, both.ExitCode);
        Assert.Contains("contradict", both.Stderr);
        Assert.Empty(MountsUnder(_temp));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AKilledServerFailsReadersFastAndLeavesNothingMounted(bool perFileOpen)
    {
        string nodes = Path.Combine(_temp, "nodes.txt");
        File.WriteAllText(nodes, Import(json: false));
        var server = perFileOpen ? StartMount("--nodes", nodes, "--per-file-open") : StartMount("--nodes", nodes);
        string file = Path.Combine(Mountpoint, "src", "sub", "deeper", "data.bin");

        // A reader that keeps going until reading fails: with zero-message open its file's content stays in the page
        // cache and opens never reach the server, so only the watchdog's unmount can stop it.
        var reader = Start("sh", "-c", $"while cat '{file}' > /dev/null; do :; done; echo failed >&2; exit 3");
        await Task.Delay(500);
        Assert.False(reader.HasExited);

        Assert.Equal(0, ToolProcess.Signal(server.Id, 9));
        await server.WaitForExitAsync();

        var readerDone = reader.WaitForExitAsync();
        Assert.Same(readerDone, await Task.WhenAny(readerDone, Task.Delay(TimeSpan.FromSeconds(5))));
        Assert.Equal(3, reader.ExitCode);

        // The watchdog detached the mount and left: the mountpoint's own empty directory shows (ENOENT, never a hang).
        await WaitUntilGoneAsync(Mountpoint);
        var (code, _, stderr) = RunWithCode("stat", file);
        Assert.NotEqual(0, code);
        Assert.Contains("No such file or directory", stderr);
        Assert.Empty(MountsUnder(_temp));
        Assert.Empty(Directory.GetFileSystemEntries(Mountpoint));
        Assert.Contains($"the server (pid {server.Id}) is gone; unmounted {Mountpoint}", await server.StandardError.ReadToEndAsync());
    }

    [Fact]
    public async Task WithTheWatchdogKilledTooTheNextStartRemovesTheDeadMount()
    {
        string nodes = Path.Combine(_temp, "nodes.txt");
        File.WriteAllText(nodes, Import(json: false));
        var server = StartMount("--nodes", nodes);
        string file = Path.Combine(Mountpoint, "src", "sub", "deeper", "data.bin");
        Assert.Equal(300_000, File.ReadAllBytes(file).Length);

        Assert.Equal(0, ToolProcess.Signal(Assert.Single(WatchdogsFor(Mountpoint)), 9));
        await WaitUntilGoneAsync(Mountpoint);
        Assert.Equal("hello, world\n", File.ReadAllText(Path.Combine(Mountpoint, "src", "hello.txt")));

        // The server says so once it has reaped the watchdog (a killed watchdog leaves /proc's list before that).
        using (var said = new CancellationTokenSource(TimeSpan.FromMinutes(1)))
        {
            string? line;
            while ((line = await server.StandardError.ReadLineAsync(said.Token)) is not null && !line.Contains("the unmount watchdog", StringComparison.Ordinal))
            {
            }

            Assert.Contains("exited; if this process is killed now", line);
        }

        Assert.Equal(0, ToolProcess.Signal(server.Id, 9));
        await server.WaitForExitAsync();

        // The mount stays behind, answering ENOTCONN at once (never hanging).
        var stat = Stopwatch.StartNew();
        var (code, _, stderr) = RunWithCode("stat", file);
        Assert.NotEqual(0, code);
        Assert.Contains("Transport endpoint is not connected", stderr);
        Assert.True(stat.Elapsed < TimeSpan.FromSeconds(5));
        Assert.Single(MountsUnder(_temp));

        // The next start on the same mountpoint removes the dead mount and serves again.
        var next = StartMount("--nodes", nodes);
        Assert.Equal("hello, world\n", File.ReadAllText(Path.Combine(Mountpoint, "src", "hello.txt")));
        Assert.True(MountsUnder(_temp).Count == 1, string.Join("\n", MountLines(_temp)));
        await StopAsync(next);
        Assert.Empty(MountsUnder(_temp));
        Assert.Empty(WatchdogsFor(_temp));
    }

    [Fact]
    public async Task TheWatchdogNeverUnmountsWhatItDidNotMount()
    {
        var server = StartMountWithStdin(Import(json: false), "--nodes", "-");
        int watchdog = Assert.Single(WatchdogsFor(Mountpoint));

        // Held still while the server dies and someone else takes the mountpoint over.
        Assert.Equal(0, ToolProcess.Signal(watchdog, 19 /* SIGSTOP */));
        try
        {
            Assert.Equal(0, ToolProcess.Signal(server.Id, 9));
            await server.WaitForExitAsync();
            Assert.Equal(0, Umount2(Mountpoint, 2 /* MNT_DETACH */));
            Run("mount", "-t", "tmpfs", "-o", "size=1m", "someone-else", Mountpoint);
            File.WriteAllText(Path.Combine(Mountpoint, "theirs"), "keep me\n");
        }
        finally
        {
            ToolProcess.Signal(watchdog, 18 /* SIGCONT */);
        }

        await WaitUntilGoneAsync(Mountpoint);
        Assert.Equal("keep me\n", File.ReadAllText(Path.Combine(Mountpoint, "theirs")));
        Assert.Contains(" - tmpfs someone-else ", Assert.Single(MountLines(_temp)));
        Assert.DoesNotContain("unmounted", await server.StandardError.ReadToEndAsync());
        Assert.Equal(0, Umount2(Mountpoint, 0));
    }

    [Fact]
    public async Task AnUnprivilegedUserMountsThroughFusermount()
    {
        const string User = "tfb-fuse-user";
        bool created = false;
        if (RunWithCode("id", "-u", User).ExitCode != 0)
        {
            Run("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", User);
            created = true;
        }

        // Users reach FUSE through /dev/fuse (fusermount3 opens it as the user): Debian's udev rule makes it 0666,
        // a /dev without udev may have it 0600. Bring it to the standard state rather than test something else.
        if ((File.GetUnixFileMode("/dev/fuse") & UnixFileMode.OtherWrite) == 0)
        {
            File.SetUnixFileMode("/dev/fuse", (UnixFileMode)0x1B6);
        }

        try
        {
            string uid = Run("id", "-u", User).Trim();
            Run("chown", "-R", $"{User}:", _temp);
            string[] asUser = ["setpriv", $"--reuid={User}", $"--regid={User}", "--init-groups", "--"];
            string nodes = Run([.. asUser, ToolProcess.Executable, "--store", Store, "import", Source]);

            var server = Start(
                [.. asUser, "env", "CI=true", $"HOME={_temp}", ToolProcess.Executable, "--store", Store, "mount", Mountpoint, "--nodes", "-", "--passthrough"],
                stdin: nodes);
            await WaitForReadyAsync(server);

            var mount = Assert.Single(MountLines(_temp));
            Assert.Contains($"user_id={uid}", mount);
            Assert.Contains("fuse.tvix-fuse-build", mount);
            Assert.Equal("hello, world\n", Run([.. asUser, "cat", Path.Combine(Mountpoint, "src", "hello.txt")]));

            // Without allow_other only the mounting user gets in, not even root.
            Assert.NotEqual(0, RunWithCode("stat", Path.Combine(Mountpoint, "src")).ExitCode);

            Assert.Equal(0, ToolProcess.Signal(server.Id, 15));
            await server.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(15));
            Assert.Equal(143, server.ExitCode);
            Assert.Empty(MountsUnder(_temp));

            // A user may not hand files to the kernel for passthrough: reads are then served by the process itself.
            Assert.Contains("passthrough refused", await server.StandardError.ReadToEndAsync());

            // Killed outright: the user's watchdog detaches the mount with fusermount3, and leaves.
            var killed = Start([.. asUser, "env", "CI=true", ToolProcess.Executable, "--store", Store, "mount", Mountpoint, "--nodes", "-"], stdin: nodes);
            await WaitForReadyAsync(killed);
            Assert.Equal(uid, Run("stat", "-c", "%u", $"/proc/{Assert.Single(WatchdogsFor(Mountpoint))}").Trim());
            Assert.Equal("hello, world\n", Run([.. asUser, "cat", Path.Combine(Mountpoint, "src", "hello.txt")]));
            Assert.Equal(0, ToolProcess.Signal(killed.Id, 9));
            await killed.WaitForExitAsync();
            await WaitUntilGoneAsync(Mountpoint);
            Assert.Empty(MountsUnder(_temp));
            Assert.Contains("is gone; unmounted", await killed.StandardError.ReadToEndAsync());
            var (code, _, stderr) = RunWithCode([.. asUser, "cat", Path.Combine(Mountpoint, "src", "hello.txt")]);
            Assert.NotEqual(0, code);
            Assert.Contains("No such file or directory", stderr);

            // With the watchdog killed first: readers get ENOTCONN, and the user's next start removes the dead mount.
            var orphan = Start([.. asUser, "env", "CI=true", ToolProcess.Executable, "--store", Store, "mount", Mountpoint, "--nodes", "-"], stdin: nodes);
            await WaitForReadyAsync(orphan);
            Assert.Equal(0, ToolProcess.Signal(Assert.Single(WatchdogsFor(Mountpoint)), 9));
            await WaitUntilGoneAsync(Mountpoint);
            Assert.Equal(0, ToolProcess.Signal(orphan.Id, 9));
            await orphan.WaitForExitAsync();
            (code, _, stderr) = RunWithCode([.. asUser, "stat", Path.Combine(Mountpoint, "src")]);
            Assert.NotEqual(0, code);
            Assert.Contains("Transport endpoint is not connected", stderr);

            var next = Start([.. asUser, "env", "CI=true", ToolProcess.Executable, "--store", Store, "mount", Mountpoint, "--nodes", "-"], stdin: nodes);
            await WaitForReadyAsync(next);
            Assert.Single(MountsUnder(_temp));
            Assert.Equal("hello, world\n", Run([.. asUser, "cat", Path.Combine(Mountpoint, "src", "hello.txt")]));
            Assert.Equal(0, ToolProcess.Signal(next.Id, 15));
            await next.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(15));
            Assert.Empty(MountsUnder(_temp));
            Assert.Empty(WatchdogsFor(_temp));
        }
        finally
        {
            foreach (string path in MountsUnder(_temp))
            {
                Umount2(path, 2 /* MNT_DETACH */);
            }

            RunWithCode("chown", "-R", "root:", _temp);
            if (created)
            {
                RunWithCode("userdel", User);
            }
        }
    }

    [Fact]
    public async Task AllowOtherLetsAnotherUserIn()
    {
        const string User = "nobody";
        string nodes = Import(json: false);
        string[] asUser = ["setpriv", $"--reuid={User}", "--regid=nogroup", "--clear-groups", "--"];
        File.SetUnixFileMode(_temp, (UnixFileMode)0x1ED);
        string hello = Path.Combine(Mountpoint, "src", "hello.txt");

        var closed = StartMountWithStdin(nodes, "--nodes", "-");
        var (code, _, stderr) = RunWithCode([.. asUser, "cat", hello]);
        Assert.NotEqual(0, code);
        Assert.Contains("Permission denied", stderr);
        await StopAsync(closed);

        var open = StartMountWithStdin(nodes, "--nodes", "-", "--allow-other");
        Assert.Equal("hello, world\n", Run([.. asUser, "cat", hello]));
        await StopAsync(open);
        Assert.Empty(MountsUnder(_temp));
    }

    private string Import(bool json) =>
        Run([ToolProcess.Executable, "--store", Store, "import", .. (json ? new[] { "--json" } : []), Source]);

    private Process StartMount(params string[] arguments) => StartMountWithStdin(null, arguments);

    private Process StartMountWithStdin(string? stdin, params string[] arguments)
    {
        var process = Start([ToolProcess.Executable, "--store", Store, "mount", Mountpoint, .. arguments], stdin);
        WaitForReadyAsync(process).GetAwaiter().GetResult();
        return process;
    }

    private async Task StopAsync(Process process)
    {
        Assert.Equal(0, ToolProcess.Signal(process.Id, 15));
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(15));
        Assert.Equal(143, process.ExitCode);
    }

    private static async Task WaitForReadyAsync(Process process)
    {
        var line = process.StandardOutput.ReadLineAsync();
        var done = await Task.WhenAny(line, Task.Delay(TimeSpan.FromSeconds(30)));
        if (done != line || line.Result is null || !line.Result.StartsWith("mounted ", StringComparison.Ordinal))
        {
            string stderr = process.HasExited ? await process.StandardError.ReadToEndAsync() : "(still running)";
            Assert.Fail($"the mount did not become ready: {(done == line ? line.Result : "timeout")}; stderr: {stderr}");
        }
    }

    private Process Start(params string[] command) => Start(command, null);

    private Process Start(string[] command, string? stdin)
    {
        var start = new ProcessStartInfo(command[0])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (string argument in command[1..])
        {
            start.ArgumentList.Add(argument);
        }

        start.Environment["CI"] = "true";
        var process = Process.Start(start)!;
        _processes.Add(process);
        process.StandardInput.Write(stdin ?? "");
        process.StandardInput.Close();
        return process;
    }

    private static string Run(params string[] command)
    {
        var (code, stdout, stderr) = RunWithCode(command);
        Assert.True(code == 0, $"{string.Join(' ', command)} exited {code}: {stderr}");
        return stdout;
    }

    private static (int ExitCode, string Stdout, string Stderr) RunWithCode(params string[] command)
    {
        var start = new ProcessStartInfo(command[0]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string argument in command[1..])
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(60_000))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{string.Join(' ', command)} hung");
        }

        return (process.ExitCode, stdout.Result, stderr.Result);
    }

    /// <summary>Watchdog processes whose mountpoint is <paramref name="under"/> or below it (from /proc/PID/cmdline).</summary>
    private static List<int> WatchdogsFor(string under)
    {
        var pids = new List<int>();
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid))
            {
                continue;
            }

            string[] args;
            try
            {
                args = File.ReadAllText(Path.Combine(dir, "cmdline")).Split('\0');
            }
            catch (IOException)
            {
                continue;
            }

            int entry = Array.IndexOf(args, "__mount-watchdog");
            if (entry >= 0 && entry + 1 < args.Length && (args[entry + 1] == under || args[entry + 1].StartsWith(under + "/", StringComparison.Ordinal)))
            {
                pids.Add(pid);
            }
        }

        return pids;
    }

    /// <summary>Waits (up to a minute, then fails) until no watchdog of <paramref name="mountpoint"/> runs.</summary>
    private static async Task WaitUntilGoneAsync(string mountpoint)
    {
        for (int i = 0; i < 600 && WatchdogsFor(mountpoint).Count > 0; i++)
        {
            await Task.Delay(100);
        }

        Assert.Empty(WatchdogsFor(mountpoint));
    }

    private static List<string> MountLines(string under) =>
        File.ReadAllLines("/proc/self/mountinfo").Where(line => line.Split(' ')[4].StartsWith(under + "/", StringComparison.Ordinal)).ToList();

    private static List<string> MountsUnder(string under) => MountLines(under).Select(line => line.Split(' ')[4]).ToList();
}
