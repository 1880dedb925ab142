using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace TvixFuseBuild.Sandbox.Tests;

/// <summary>Each test is a real attempt, inside the sandbox, to get out of it; each must fail.</summary>
[Collection("sandbox")]
public sealed class EscapeTests
{
    private const string B = SandboxTree.Busybox;
    private const string Data = "/nix/store/1111111111111111111111111111111d-data";
    private const string FileInput = "/nix/store/2222222222222222222222222222222f-file";
    private const string LinkInput = "/nix/store/3333333333333333333333333333333l-link";

    /// <summary>Runs each attempt in the same sandbox; every one must print "blocked".</summary>
    private static async Task AllBlocked(SandboxTree tree, params string[] attempts)
    {
        string script = string.Join("\n", attempts.Select((a, i) => $"if ( {a} ) >/dev/null 2>&1; then echo 'ESCAPED {i}: {a.Replace("'", "")}'; else echo blocked; fi"));
        string output = await Run.Ok(tree.Sh(script));
        Assert.Equal(string.Concat(attempts.Select(_ => "blocked\n")), output);
    }

    [Fact]
    public async Task CannotWriteToInputsOrOutsideTheScratchPaths()
    {
        using var tree = new SandboxTree();
        await AllBlocked(tree,
            $"echo x > {Data}/file",
            $"echo x >> {FileInput}",
            $"{B} touch {Data}/new",
            $"{B} chmod 777 {Data}",
            $"{B} truncate -s 0 {FileInput}",
            "echo x > /etc/passwd",
            "echo x > /new-file",
            $"{B} mkdir /nix/new-dir",
            "echo x > /dev/new-node",
            $"{B} rm /etc/hosts",
            $"{B} ln -s / /bin-link");
        Assert.Equal("input contents\n", File.ReadAllText(Path.Combine(tree.Inputs, "1111111111111111111111111111111d-data", "file")));
        Assert.Equal("a file input\n", File.ReadAllText(Path.Combine(tree.Inputs, "2222222222222222222222222222222f-file")));
    }

    [Fact]
    public async Task CannotRenameOrDeleteAnInputInAWritableInputsDir()
    {
        using var tree = new SandboxTree();
        await AllBlocked(tree,
            $"{B} mv {Data} /nix/store/renamed",
            $"{B} mv {FileInput} /nix/store/renamed-file",
            $"{B} mv {LinkInput} /nix/store/renamed-link",
            $"{B} rm -rf {Data}",
            $"{B} rm -f {FileInput}",
            $"{B} rm -f {LinkInput}",
            $"{B} rmdir {Data}",
            $"{B} ln -sf /etc/passwd {LinkInput}",
            $"{B} mv /build {Data}",
            $"{B} test -e /nix/store/renamed -o -e /nix/store/renamed-file -o -e /nix/store/renamed-link");
        Assert.True(File.Exists(Path.Combine(tree.Inputs, "1111111111111111111111111111111d-data", "file")));
        Assert.Equal("1111111111111111111111111111111d-data/file",
            new FileInfo(Path.Combine(tree.Inputs, "3333333333333333333333333333333l-link")).LinkTarget);
    }

    [Fact]
    public async Task CannotReadHostFilesThatWereNotExposed()
    {
        using var tree = new SandboxTree();
        string hostStore = tree.Scratch("host-store");
        File.WriteAllText(Path.Combine(hostStore, "blob"), "secret");
        string toolFile = typeof(SandboxRunner).Assembly.Location;
        string dotnet = Path.GetDirectoryName(typeof(object).Assembly.Location)!;
        await AllBlocked(tree,
            $"{B} cat /etc/shadow",
            $"{B} ls /root",
            $"{B} cat {hostStore}/blob",
            $"{B} ls {tree.Root}",
            $"{B} cat {toolFile}",
            $"{B} ls {dotnet}",
            $"{B} ls /usr/bin/unshare",
            $"{B} ls /proc/1/root/",
            $"{B} cat /proc/1/environ",
            $"{B} readlink /proc/1/exe",
            $"{B} ls /proc/1/cwd/",
            $"{B} cat /sys/kernel/uevent_seqnum");
    }

    [Fact]
    public async Task NoNetworkWithoutNetworkAccessButTheHostIsReachableWithIt()
    {
        using var tree = new SandboxTree();
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var received = new List<string>();
        using var stop = new CancellationTokenSource();
        var server = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                using var client = await listener.AcceptTcpClientAsync(stop.Token);
                using var reader = new StreamReader(client.GetStream(), Encoding.UTF8);
                string text = await reader.ReadToEndAsync(stop.Token);
                lock (received)
                {
                    received.Add(text);
                }
            }
        });

        string connect = $"echo from-sandbox | {B} nc -w 3 127.0.0.1 {port}";
        await AllBlocked(tree, connect, $"{B} ip link set lo down", $"{B} ip link add dummy0 type dummy");
        lock (received)
        {
            Assert.Empty(received);
        }

        string output = await Run.Ok(SandboxEnvironmentTests.Copy(tree.Sh(connect + " && echo connected"), network: true));
        Assert.Equal("connected\n", output);
        await Task.Delay(200);
        lock (received)
        {
            Assert.Equal(["from-sandbox\n"], received);
        }

        stop.Cancel();
        listener.Stop();
        await Task.WhenAny(server, Task.Delay(1000));
    }

    [Fact]
    public async Task CannotSeeOrSignalHostProcesses()
    {
        using var tree = new SandboxTree();
        string marker = HostProcesses.Marker();
        using var sleeper = Process.Start("sleep", marker)!;
        try
        {
            int pid = sleeper.Id;
            await AllBlocked(tree,
                $"{B} kill -0 {pid}",
                $"{B} kill -9 {pid}",
                $"{B} ls /proc/{pid}",
                $"{B} ps -o args | {B} grep -q '^sleep {marker}'");

            // kill(-1) reaches every process the caller may signal: here, only the sandbox's own.
            var (result, _) = await Run.Async(tree.Sh($"{B} kill -9 -1; {B} sleep 5"));
            Assert.Equal(SandboxOutcome.Signaled, result.Outcome);
            Assert.False(sleeper.HasExited);
        }
        finally
        {
            sleeper.Kill();
        }
    }

    [Fact]
    public async Task CannotCreateDeviceNodesOrMountOrGainCapabilities()
    {
        using var tree = new SandboxTree();
        await AllBlocked(tree,
            $"{B} mknod /build/null c 1 3",
            $"{B} mknod /tmp/sda b 8 0",
            $"{B} mount -o remount,rw {Data}",
            $"{B} mount -o remount,rw /",
            $"{B} mount -o remount,rw,suid /build",
            $"{B} mount -t tmpfs none /build",
            $"{B} umount -l {Data}",
            $"{B} umount -l /nix/store",
            $"{B} unshare -r -m {B} sh -c '{B} mount -o remount,rw {Data} && echo x > {Data}/file'",
            $"{B} unshare -r -m {B} sh -c '{B} umount -l {Data} && {B} rm -rf {Data}' && ! {B} test -d {Data}",
            $"{B} chroot / {B} true",
            $"{B} hostname other",
            $"{B} sysctl -w kernel.hostname=other");
        Assert.Equal("input contents\n", File.ReadAllText(Path.Combine(tree.Inputs, "1111111111111111111111111111111d-data", "file")));
    }

    [Fact]
    public async Task ASetuidRootBinaryInTheInputsDoesNotRunAsRoot()
    {
        using var tree = new SandboxTree();
        // A 136-byte static x86-64 program that exits with its effective uid (modulo 256), so nothing in it
        // drops privileges by itself the way busybox does.
        string dir = Path.Combine(tree.Inputs, "6666666666666666666666666666666s-suid");
        Directory.CreateDirectory(dir);
        string euid = Path.Combine(dir, "euid");
        File.WriteAllBytes(euid, EuidElf());
        File.SetUnixFileMode(euid, (UnixFileMode)0x9ED); // 04755
        var chown = Process.Start("chown", ["root:root", euid])!;
        chown.WaitForExit();
        Assert.Equal(0, chown.ExitCode);
        File.SetUnixFileMode(euid, (UnixFileMode)0x9ED); // chown clears the setuid bit

        var host = Process.Start(new ProcessStartInfo("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", euid]))!;
        host.WaitForExit();
        Assert.Equal(0, host.ExitCode); // on the host the setuid bit does make it root: the test binary works

        var spec = tree.Spec(B, "sh", "-c", $"{B} cp -p /nix/store/6666666666666666666666666666666s-suid/euid /build/euid-copy 2>/dev/null; /nix/store/6666666666666666666666666666666s-suid/euid; echo $?; /build/euid-copy; echo $?");
        var withInput = new SandboxSpec
        {
            Command = spec.Command, Environment = spec.Environment, WorkingDirectory = spec.WorkingDirectory,
            ScratchPaths = spec.ScratchPaths, InputsHostDirectory = spec.InputsHostDirectory,
            InputNames = [.. tree.InputNames, "6666666666666666666666666666666s-suid"],
        };
        Assert.Equal("232\n232\n", await Run.Ok(withInput)); // 1000 % 256: the build user, never root
    }

    [Fact]
    public async Task NoProcessOutlivesTheBuild()
    {
        using var tree = new SandboxTree();
        string marker = HostProcesses.Marker();
        string output = await Run.Ok(tree.Sh(
            $"( {B} setsid {B} sleep {marker} </dev/null >/dev/null 2>&1 & ) ; " +
            $"{B} nohup {B} sleep {marker} >/dev/null 2>&1 & echo started"));
        Assert.Equal("started\n", output);
        Assert.Empty(HostProcesses.WithArgument(marker)); // gone when the call returned, not just soon after
    }

    /// <summary>mov eax,107 (geteuid); syscall; mov edi,eax; mov eax,60 (exit); syscall.</summary>
    internal static byte[] EuidElf()
    {
        byte[] code = [0xb8, 107, 0, 0, 0, 0x0f, 0x05, 0x89, 0xc7, 0xb8, 60, 0, 0, 0, 0x0f, 0x05];
        const ulong Base = 0x400000;
        using var ms = new MemoryStream();
        using var w = new BinaryWriter(ms);
        w.Write([0x7f, (byte)'E', (byte)'L', (byte)'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        w.Write((ushort)2); // ET_EXEC
        w.Write((ushort)0x3e); // x86-64
        w.Write(1u);
        w.Write(Base + 120); // entry: after the headers
        w.Write(64UL); // phoff
        w.Write(0UL); // shoff
        w.Write(0u); // flags
        w.Write((ushort)64);
        w.Write((ushort)56);
        w.Write((ushort)1);
        w.Write((ushort)0);
        w.Write((ushort)0);
        w.Write((ushort)0);
        w.Write(1u); // PT_LOAD
        w.Write(5u); // R+X
        w.Write(0UL);
        w.Write(Base);
        w.Write(Base);
        w.Write((ulong)(120 + code.Length));
        w.Write((ulong)(120 + code.Length));
        w.Write(0x1000UL);
        w.Write(code);
        return ms.ToArray();
    }
}
