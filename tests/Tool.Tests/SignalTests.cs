using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;

namespace TvixFuseBuild.Tool.Tests;

/// <summary>
/// SIGINT and SIGTERM during every command that can run for long: each ends with 128 + the signal's number, says it
/// was interrupted when it was in the middle of something, and leaves nothing behind (no mount, no process, no build
/// directory, no socket, no temporary file in the store).
/// </summary>
public sealed partial class SignalTests : IDisposable
{
    private static readonly TimeSpan EndsWithin = TimeSpan.FromSeconds(20);
    private readonly string _temp = Directory.CreateTempSubdirectory("tvix-fuse-signal-test-").FullName;
    private readonly List<Process> _processes = [];
    private readonly Dictionary<string, string> _environment;

    public SignalTests()
    {
        // As root, builds run as an unprivileged host user who must reach the build directories.
        File.SetUnixFileMode(_temp, (UnixFileMode)0x1ED);
        Directory.CreateDirectory(WorkRoot);
        File.SetUnixFileMode(WorkRoot, (UnixFileMode)0x1ED);
        _environment = new Dictionary<string, string> { ["XDG_DATA_HOME"] = Path.Combine(_temp, "data"), ["TMPDIR"] = WorkRoot };
    }

    private string WorkRoot => Path.Combine(_temp, "tmp");

    private string Store => Path.Combine(_temp, "data", "tvix-fuse-build", "store");

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "umount2", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Umount2(string target, int flags);

    public void Dispose()
    {
        ToolProcess.StopAll(_processes);
        foreach (string mount in MountsUnder(_temp))
        {
            Umount2(mount, 2 /* MNT_DETACH */);
        }

        using var chmod = Process.Start("chmod", ["-R", "u+rwX", _temp])!;
        chmod.WaitForExit();
        Directory.Delete(_temp, recursive: true);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(15)]
    public void BuildWaitingForARequestOnStdin(int signal)
    {
        var (process, stderr) = Start(["build"], redirectStdin: true);
        WaitFor(() => ReadsStdin(process.Id), "the tool to read stdin");

        AssertStops(process, stderr, signal, interrupted: true);
        process.StandardInput.Close();
    }

    [Theory]
    [InlineData(2)]
    [InlineData(15)]
    public void BuildWaitingOnAFifo(int signal)
    {
        string fifo = Path.Combine(_temp, "request.fifo");
        Run("mkfifo", fifo);
        var (process, stderr) = Start(["build", fifo]);

        // A writer can open a FIFO without blocking only once a reader has it open: then the tool is in its read.
        int writer = -1;
        WaitFor(() => (writer = Open(fifo, 1 /* O_WRONLY */ | 0x800 /* O_NONBLOCK */)) >= 0, "the tool to open the FIFO");
        try
        {
            AssertStops(process, stderr, signal, interrupted: true);
        }
        finally
        {
            Close(writer);
        }
    }

    [Theory]
    [InlineData(2)]
    [InlineData(15)]
    public async Task BuildWaitingForARemoteStore(int signal)
    {
        // A store that takes the connection and never answers. build starts on the main thread (a result-cache hit
        // starts no other); a remote store is still reached on another, and the signal ends the wait.
        string socketPath = Path.Combine(_temp, "store.sock");
        using var listener = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        listener.Bind(new UnixDomainSocketEndPoint(socketPath));
        listener.Listen();
        string request = Path.Combine(_temp, "request.json");
        File.WriteAllText(request, Request(ImportBusybox(), "echo never > $out").ToJsonString());
        var (process, stderr) = Start(["--store", "grpc+unix://" + socketPath, "build", request]);
        using var connection = await listener.AcceptAsync().WaitAsync(TimeSpan.FromMinutes(2));

        AssertStops(process, stderr, signal, interrupted: true);
    }

    [Fact]
    public void BuildStuckReadingItsRequestStillExits()
    {
        // build reads a regular request file on the main thread. When that read never returns (here: the file is on a
        // FUSE mount whose server is stopped, as a hung network filesystem would be), the signal cannot interrupt it;
        // the tool still exits, as a command on the pool does, once the stop timeout has passed.
        string mountpoint = Path.Combine(_temp, "mnt");
        Directory.CreateDirectory(mountpoint);
        string tree = Path.Combine(_temp, "requests");
        Directory.CreateDirectory(tree);
        File.WriteAllText(Path.Combine(tree, "request.json"), "{}");
        var import = ToolProcess.Run(["import", tree], _environment);
        Assert.True(import.ExitCode == 0, import.Stderr);
        var (server, _) = Start(["mount", mountpoint, "--directory", import.Stdout.Split('\t')[2]]);
        Assert.Equal($"mounted {mountpoint}", FirstLine(server));
        Assert.Equal(0, ToolProcess.Signal(server.Id, 19 /* SIGSTOP */));
        try
        {
            var (process, stderr) = Start(["build", Path.Combine(mountpoint, "request.json")]);
            WaitFor(() => WaitsForFuse(process.Id), "the tool to wait for the stopped FUSE server");

            Assert.Equal(0, ToolProcess.Signal(process.Id, 2));
            var stopTimeout = TimeSpan.FromSeconds(30);
            if (!process.WaitForExit(stopTimeout + EndsWithin))
            {
                Assert.Fail($"still running {(stopTimeout + EndsWithin).TotalSeconds} s after SIGINT; stderr: {Text(stderr)}");
            }

            process.WaitForExit();
            string log = Text(stderr);
            Assert.True(process.ExitCode == 130, $"exit {process.ExitCode}; stderr: {log}");
            Assert.Contains("tvix-fuse-build: error: did not stop within 30 s of SIGINT; exiting\n", log);
            Assert.DoesNotContain("   at ", log);
        }
        finally
        {
            ToolProcess.Signal(server.Id, 18 /* SIGCONT */);
        }

        AssertStops(server, new StringBuilder(), 15, interrupted: false);
    }

    /// <summary>Whether a thread of <paramref name="pid"/> waits for a FUSE server's answer.</summary>
    private static bool WaitsForFuse(int pid)
    {
        foreach (string task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
        {
            try
            {
                if (File.ReadAllText(Path.Combine(task, "wchan")).Contains("request_wait_answer", StringComparison.Ordinal))
                {
                    return true;
                }
            }
            catch (IOException)
            {
            }
        }

        return false;
    }

    [Theory]
    [InlineData(2)]
    [InlineData(15)]
    public void BuildRunningACommand(int signal)
    {
        string request = Path.Combine(_temp, "request.json");
        File.WriteAllText(request, Request(ImportBusybox(), "echo started; sleep 617; echo never > $out").ToJsonString());
        var (process, stderr) = Start(["build", request]);
        WaitFor(() => Text(stderr).Contains("started", StringComparison.Ordinal), "the build to start");

        AssertStops(process, stderr, signal, interrupted: true);
        AssertNoProcess("sleep 617");
    }

    [Theory]
    [InlineData(2)]
    [InlineData(15)]
    public void RunRunningACommand(int signal)
    {
        string work = Path.Combine(_temp, "work");
        Directory.CreateDirectory(work);
        var (process, stderr) = Start(
            ["run", "--input", BusyboxTree() + "=tools", "--", "sh", "-c", "echo started; sleep 618; mkdir $out"], workingDirectory: work);
        WaitFor(() => Text(stderr).Contains("started", StringComparison.Ordinal), "the build to start");

        AssertStops(process, stderr, signal, interrupted: true);
        AssertNoProcess("sleep 618");
        Assert.Empty(Leftovers(work));
    }

    [Theory]
    [InlineData(2)]
    [InlineData(15)]
    public void ImportOfALargeTree(int signal)
    {
        // /usr is large enough that the import is still going when the signal comes.
        var (process, stderr) = Start(["import", "/usr"]);
        WaitFor(
            () => Directory.Exists(Path.Combine(Store, "blobs")) &&
                  Directory.EnumerateFiles(Path.Combine(Store, "blobs"), "*", SearchOption.AllDirectories).Any(),
            "the import to store a blob");

        AssertStops(process, stderr, signal, interrupted: true);
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(Store, "tmp")));
    }

    [Theory]
    [InlineData(2)]
    [InlineData(15)]
    public void Mount(int signal)
    {
        string mountpoint = Path.Combine(_temp, "mnt");
        Directory.CreateDirectory(mountpoint);
        string digest = ImportTree();
        var (process, stderr) = Start(["mount", mountpoint, "--directory", digest]);
        Assert.Equal($"mounted {mountpoint}", FirstLine(process));
        Assert.Equal("hello\n", File.ReadAllText(Path.Combine(mountpoint, "hello.txt")));

        AssertStops(process, stderr, signal, interrupted: false);
    }

    [Theory]
    [InlineData(2)]
    [InlineData(15)]
    public void Serve(int signal)
    {
        string socket = Path.Combine(_temp, "serve.sock");
        var (process, stderr) = Start(["serve", "--listen", "unix:" + socket]);
        Assert.Equal($"listening on unix:{socket}", FirstLine(process));

        AssertStops(process, stderr, signal, interrupted: false);
        Assert.False(File.Exists(socket), "the socket file is left behind");
    }

    /// <summary>Sends the signal and checks the exit status, the message and that nothing is left behind.</summary>
    private void AssertStops(Process process, StringBuilder stderr, int signal, bool interrupted)
    {
        Assert.Equal(0, ToolProcess.Signal(process.Id, signal));
        if (!process.WaitForExit(EndsWithin))
        {
            Assert.Fail($"still running {EndsWithin.TotalSeconds} s after signal {signal}; stderr: {Text(stderr)}");
        }

        process.WaitForExit();
        string log = Text(stderr);
        Assert.True(process.ExitCode == 128 + signal, $"exit {process.ExitCode}; stderr: {log}");
        string name = signal == 2 ? "SIGINT" : "SIGTERM";
        if (interrupted)
        {
            Assert.Contains($"tvix-fuse-build: error: interrupted by {name}\n", log);
        }

        Assert.DoesNotContain("   at ", log);
        Assert.Empty(MountsUnder(_temp));
        Assert.Empty(Leftovers(WorkRoot));
        AssertNoProcess(_temp);
    }

    /// <summary>What is in <paramref name="directory"/>, looking into the builds' parent (which stays, empty, on purpose).</summary>
    private static string[] Leftovers(string directory) =>
    [
        .. Directory.EnumerateFileSystemEntries(directory).Where(e => !Path.GetFileName(e).StartsWith("tvix-fuse-builds-", StringComparison.Ordinal)),
        .. Directory.EnumerateDirectories(directory, "tvix-fuse-builds-*").SelectMany(Directory.EnumerateFileSystemEntries),
    ];

    private (Process Process, StringBuilder Stderr) Start(string[] arguments, bool redirectStdin = false, string? workingDirectory = null)
    {
        var process = ToolProcess.Start(arguments, _environment, redirectStdin, workingDirectory);
        _processes.Add(process);
        var stderr = new StringBuilder();
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (stderr)
                {
                    stderr.Append(e.Data).Append('\n');
                }
            }
        };
        process.BeginErrorReadLine();
        return (process, stderr);
    }

    private static string? FirstLine(Process process) =>
        process.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromMinutes(2)).GetAwaiter().GetResult();

    private static string Text(StringBuilder builder)
    {
        lock (builder)
        {
            return builder.ToString();
        }
    }

    private static void WaitFor(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromMinutes(2);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"waited too long for {what}");
            Thread.Sleep(20);
        }
    }

    /// <summary>Whether a thread of <paramref name="pid"/> is blocked in read(2) on its stdin (or a duplicate of it).</summary>
    private static bool ReadsStdin(int pid)
    {
        string read = RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? "63" : "0";
        string? stdin = new FileInfo($"/proc/{pid}/fd/0").LinkTarget;
        foreach (string task in Directory.EnumerateDirectories($"/proc/{pid}/task"))
        {
            try
            {
                string[] call = File.ReadAllText(Path.Combine(task, "syscall")).Split(' ');
                if (call.Length > 1 && call[0] == read && call[1].StartsWith("0x", StringComparison.Ordinal) &&
                    new FileInfo($"/proc/{pid}/fd/{Convert.ToInt32(call[1][2..], 16)}").LinkTarget == stdin)
                {
                    return true;
                }
            }
            catch (IOException)
            {
            }
        }

        return false;
    }

    private static void AssertNoProcess(string marker)
    {
        foreach (string pid in Directory.EnumerateDirectories("/proc").Select(Path.GetFileName).Where(n => n!.All(char.IsAsciiDigit))!)
        {
            try
            {
                string cmdline = File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ');
                Assert.False(cmdline.Contains(marker, StringComparison.Ordinal), $"process {pid} is left behind: {cmdline}");
            }
            catch (IOException)
            {
            }
        }
    }

    private static List<string> MountsUnder(string under) =>
        [.. File.ReadAllLines("/proc/self/mountinfo").Select(line => line.Split(' ')[4]).Where(p => p.StartsWith(under + "/", StringComparison.Ordinal))];

    private static void Run(string program, params string[] arguments)
    {
        using var process = Process.Start(program, arguments)!;
        process.WaitForExit();
        Assert.Equal(0, process.ExitCode);
    }

    private string ImportTree()
    {
        string tree = Path.Combine(_temp, "tree");
        Directory.CreateDirectory(tree);
        File.WriteAllText(Path.Combine(tree, "hello.txt"), "hello\n");
        var import = ToolProcess.Run(["import", tree], _environment);
        Assert.True(import.ExitCode == 0, import.Stderr);
        return import.Stdout.Split('\t')[2];
    }

    /// <summary>busybox in bin/ with the applets the commands here use.</summary>
    private string BusyboxTree()
    {
        string tree = Path.Combine(_temp, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-busybox");
        if (!Directory.Exists(tree))
        {
            Directory.CreateDirectory(Path.Combine(tree, "bin"));
            File.Copy("/bin/busybox", Path.Combine(tree, "bin", "busybox"));
            foreach (string applet in new[] { "sh", "echo", "sleep", "mkdir" })
            {
                File.CreateSymbolicLink(Path.Combine(tree, "bin", applet), "busybox");
            }
        }

        return tree;
    }

    private JsonNode ImportBusybox()
    {
        var import = ToolProcess.Run(["import", "--json", BusyboxTree()], _environment);
        Assert.True(import.ExitCode == 0, import.Stderr);
        return JsonNode.Parse(import.Stdout)!.AsArray()[0]!;
    }

    private static JsonObject Request(JsonNode busybox, string script) => new()
    {
        ["inputs"] = new JsonArray(busybox.DeepClone()),
        ["commandArgs"] = new JsonArray("/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-busybox/bin/sh", "-c", script),
        ["workingDir"] = "build",
        ["scratchPaths"] = new JsonArray("build", "nix/store"),
        ["inputsDir"] = "nix/store",
        ["outputs"] = new JsonArray("nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo"),
        ["environmentVars"] = new JsonArray(
            new JsonObject { ["key"] = "PATH", ["value"] = Convert.ToBase64String("/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-busybox/bin"u8) },
            new JsonObject { ["key"] = "out", ["value"] = Convert.ToBase64String("/nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo"u8) }),
    };
}
