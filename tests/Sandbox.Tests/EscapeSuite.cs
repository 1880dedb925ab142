using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace TvixFuseBuild.Sandbox.Tests;

/// <summary>
/// The escape suite of issue 12: one table of real attempts to get out of the sandbox, each with the exact output
/// its denials print, run through <see cref="Driver"/> by root and by an unprivileged user the fixture creates. Every
/// attempt prints the same in both modes: the build is uid 1000 without capabilities in its own namespaces either way
/// (what differs, the host uid a build runs as, is in <see cref="IsolationTests"/> and <see cref="UnprivilegedTests"/>).
/// </summary>
[Collection("sandbox")]
public sealed class EscapeSuite(EscapeSuite.User user) : IClassFixture<EscapeSuite.User>
{
    private const string B = SandboxTree.Busybox;
    private const string Data = "/nix/store/1111111111111111111111111111111d-data";
    private const string FileInput = "/nix/store/2222222222222222222222222222222f-file";
    private const string LinkInput = "/nix/store/3333333333333333333333333333333l-link";
    private const string ToolsInput = "8888888888888888888888888888888e-escape-tools";
    private const string T = "/nix/store/" + ToolsInput;
    private const int PtraceAttach = 16;

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (string mode in new[] { "root", "unprivileged" })
        {
            foreach (string name in All.Keys)
            {
                data.Add(mode, name);
            }
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Escape(string mode, string name)
    {
        Assert.True(Environment.IsPrivilegedProcess, "the escape suite creates users and runs the sandbox as root: run it as root");
        using var tree = new SandboxTree();
        WriteTools(tree);
        using var attempt = new Attempt(tree, mode == "unprivileged" ? user : null);
        var script = All[name](attempt);
        if (attempt.User is { } caller)
        {
            User.Exec("chown", "-R", $"{caller.Name}:{caller.Name}", tree.Store, tree.Build);
        }

        using var driver = Driver.Start(tree, script.Text, attempt.User is { } u
            ? ["setpriv", $"--reuid={u.Name}", $"--regid={u.Name}", "--init-groups", "--"]
            : []);
        var stdout = driver.StandardOutput.ReadToEndAsync();
        var stderr = driver.StandardError.ReadToEndAsync();
        try
        {
            await driver.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(150));
        }
        finally
        {
            if (!driver.HasExited)
            {
                driver.Kill(entireProcessTree: true);
            }
        }

        string output = await stdout;
        Assert.True(driver.ExitCode == 0, $"driver exited {driver.ExitCode}: {output}{await stderr}");
        Assert.Equal(script.Expected, output);
        foreach (var check in attempt.After)
        {
            check();
        }
    }

    /// <summary>The programs the attempts use do what they say where nothing stops them: as root on the host.</summary>
    [Fact]
    public void TheEscapeProgramsWorkOnTheHost()
    {
        Assert.True(Environment.IsPrivilegedProcess, "run as root");
        using var tree = new SandboxTree();
        WriteTools(tree);
        string tools = Path.Combine(tree.Inputs, ToolsInput);
        using var sleeper = Process.Start("sleep", "600")!;
        try
        {
            Assert.Equal(0, Host($"{tools}/ptrace", PtraceAttach.ToString(), sleeper.Id.ToString()));
            Assert.Equal(0, Host("sh", "-c", $"exec {tools}/vmread $$"));
            Assert.Equal(3, Host($"{tools}/vmread", "999999999")); // ESRCH: no such pid
        }
        finally
        {
            sleeper.Kill();
            sleeper.WaitForExit();
        }

        string dir = tree.Scratch("mnt");
        Assert.Equal(0, Host($"{tools}/mount", "x", dir, "tmpfs", "0"));
        Assert.Equal(0, Host($"{tools}/umount2", dir, "2"));
        Assert.Equal(0, Host($"{tools}/mknod", Path.Combine(dir, "null"), "8630", "259"));
        Assert.Equal("character special file 1 3", HostOutput("stat", "-c", "%F %t %T", Path.Combine(dir, "null")).Trim());
        Assert.Equal(0, Host($"{tools}/chroot", "/"));
        Assert.Equal(0, Host("unshare", "--mount", "--propagation", "private", "sh", "-c", $"mount -t tmpfs x {dir} && cd {dir} && exec {tools}/pivot_root . ."));
    }

    /// <summary>Each attempt: a script for the sandbox, the exact output it must print and how the build ends.</summary>
    private static readonly Dictionary<string, Func<Attempt, Script>> All = new()
    {
        ["write-inputs-and-host"] = a =>
        {
            a.After.Add(a.InputsUnchanged);
            return Lines(
                ($"echo x > {Data}/file", $"sh: can't create {Data}/file: Read-only file system"),
                ($"echo x >> {FileInput}", $"sh: can't create {FileInput}: Permission denied"),
                ($"{B} touch {Data}/new", $"touch: {Data}/new: Read-only file system"),
                ($"{B} chmod 777 {Data}", $"chmod: {Data}: Read-only file system"),
                ($"{B} truncate -s 0 {FileInput}", $"truncate: {FileInput}: open: Permission denied"),
                ("echo x > /etc/passwd", "sh: can't create /etc/passwd: Read-only file system"),
                ("echo x > /new-file", "sh: can't create /new-file: Read-only file system"),
                ($"{B} mkdir /nix/new-dir", "mkdir: can't create directory '/nix/new-dir': Read-only file system"),
                ("echo x > /dev/new-node", "sh: can't create /dev/new-node: Read-only file system"),
                ($"{B} rm /etc/hosts", "rm: can't remove '/etc/hosts': Read-only file system"),
                ($"{B} ln -s / /bin-link", "ln: /bin-link: Read-only file system"));
        },
        ["rename-or-delete-inputs"] = a =>
        {
            a.After.Add(a.InputsUnchanged);
            return Lines(
                ($"{B} mv {Data} /nix/store/renamed", $"mv: can't rename '{Data}': Device or resource busy"),
                ($"{B} mv {FileInput} /nix/store/renamed-file", $"mv: can't rename '{FileInput}': Device or resource busy"),
                ($"{B} mv {LinkInput} /nix/store/renamed-link", $"mv: can't rename '{LinkInput}': Device or resource busy"),
                ($"{B} rm -rf {Data}", $"rm: can't remove '{Data}/file': Read-only file system"),
                ($"{B} rm -f {FileInput}", $"rm: can't remove '{FileInput}': Device or resource busy"),
                ($"{B} rm -f {LinkInput}", $"rm: can't remove '{LinkInput}': Device or resource busy"),
                ($"{B} rmdir {Data}", $"rmdir: '{Data}': Device or resource busy"),
                ($"{B} ln -sf /etc/passwd {LinkInput}", $"ln: {LinkInput}: File exists"),
                ($"{B} mv /build {Data}", $"mv: can't create directory '{Data}/build': Read-only file system"),
                ($"{B} ls /nix/store | {B} grep -c renamed", "0"));
        },
        ["read-host-files"] = a =>
        {
            string hostStore = a.Tree.Scratch("host-store");
            File.WriteAllText(Path.Combine(hostStore, "blob"), "secret");
            string toolFile = typeof(SandboxRunner).Assembly.Location;
            string dotnet = Path.GetDirectoryName(typeof(object).Assembly.Location)!;
            return Lines(
                ($"{B} cat /etc/shadow", "cat: can't open '/etc/shadow': No such file or directory"),
                ($"{B} ls /etc", "group\nhosts\npasswd"),
                ($"{B} ls /root", "ls: /root: No such file or directory"),
                ($"{B} cat {hostStore}/blob", $"cat: can't open '{hostStore}/blob': No such file or directory"),
                ($"{B} ls {a.Tree.Root}", $"ls: {a.Tree.Root}: No such file or directory"),
                ($"{B} cat {toolFile}", $"cat: can't open '{toolFile}': No such file or directory"),
                ($"{B} ls {dotnet}", $"ls: {dotnet}: No such file or directory"),
                ($"{B} ls /usr/bin/unshare", "ls: /usr/bin/unshare: No such file or directory"));
        },
        ["proc-1-is-the-sandbox-init"] = a =>
        {
            // The host's pid 1 is another program (a test would prove nothing if the two were the same).
            string hostInit = File.ReadAllText("/proc/1/cmdline").Replace('\0', ' ');
            Assert.DoesNotContain(InitLauncher.NativeInitName, hostInit);
            return Lines(
                ($"{B} tr '\\0' ' ' < /proc/1/cmdline | {B} grep -c '/{InitLauncher.NativeInitName} $'", "1"),
                ($"{B} grep -E '^(Name|PPid|Uid)' /proc/1/status", "Name:\ttvix-sandbox-in\nPPid:\t0\nUid:\t1000\t1000\t1000\t1000"),
                ($"{B} ls /proc/1/root/", "ls: /proc/1/root/: Permission denied"),
                ($"{B} ls /proc/1/cwd/", "ls: /proc/1/cwd/: Permission denied"),
                ($"{B} cat /proc/1/environ", "cat: can't open '/proc/1/environ': Permission denied"),
                ($"{B} readlink /proc/1/exe; echo $?", "1"),
                ($"{B} nsenter -t 1 -m {B} true", "nsenter: can't open '/proc/1/ns/mnt': Permission denied"));
        },
        ["host-processes"] = a =>
        {
            // A process of the caller's own host uid: the one an unprivileged build runs as.
            int pid = a.HostSleeper();
            var script = Lines(
                ($"{B} kill -0 {pid}", $"kill: can't kill pid {pid}: No such process"),
                ($"{B} kill -9 {pid}", $"kill: can't kill pid {pid}: No such process"),
                ($"{B} ls /proc/{pid}", $"ls: /proc/{pid}: No such file or directory"),
                ($"{B} ps -o args | {B} grep -c '^sleep 600$'", "0"),
                ($"{T}/ptrace {PtraceAttach} {pid}; echo $?", "3"), // ESRCH: not in the build's pid namespace
                ($"{T}/vmread {pid}; echo $?", "3"),

                // The sandbox's init: same uid, but it holds capabilities the build has not.
                ($"{T}/ptrace {PtraceAttach} 1; echo $?", "1"), // EPERM
                ($"{T}/vmread 1; echo $?", "1"),

                // The programs work: the build may trace and read its own processes, as in Nix.
                ($"{B} sleep 600 & {T}/ptrace {PtraceAttach} $!; echo $?; kill -9 $!", "0"),
                ($"{B} sh -c 'exec {T}/vmread $$'; echo $?", "0"));

            // kill(-1) reaches every process the build may signal: only its own, the shell included.
            return script with { Text = script.Text + $"\n{B} kill -9 -1; {B} sleep 5; echo survived", Result = "killed by signal 9" };
        },
        ["mount-umount-remount"] = a =>
        {
            a.After.Add(a.InputsUnchanged);
            const string Denied = "mount: permission denied (are you root?)";
            return Lines(
                ($"{B} mount -o remount,rw /", Denied),
                ($"{B} mount -o remount,rw {Data}", Denied),
                ($"{B} mount -o remount,rw,suid /build", Denied),
                ($"{B} mount -t tmpfs x /tmp", Denied),
                ($"{B} mount -o bind / /build", Denied),
                ($"{B} umount /nix/store", "umount: can't unmount /nix/store: Operation not permitted"),
                ($"{B} umount -l {Data}", $"umount: can't unmount {Data}: Operation not permitted"),
                ($"{B} umount /proc", "umount: can't unmount /proc: Operation not permitted"),

                // busybox says the same for EPERM and EACCES; the system calls themselves get EPERM.
                ($"{T}/mount none / none 32; echo $?", "1"), // MS_REMOUNT
                ($"{T}/mount x /tmp tmpfs 0; echo $?", "1"),
                ($"{T}/mount / /build none 4096; echo $?", "1"), // MS_BIND
                ($"{T}/umount2 /nix/store 2; echo $?", "1"), // MNT_DETACH

                // A user namespace of its own gives capabilities, but over mounts it cannot change (locked).
                ($"{B} unshare -r -m {B} sh -c '{B} mount -o remount,rw {Data} && echo x > {Data}/file'", Denied),
                ($"{B} unshare -r -m {B} sh -c '{B} umount -l {Data}'", $"umount: can't unmount {Data}: Invalid argument"),
                ($"{B} unshare -r -m {T}/umount2 {Data} 2; echo $?", "22")); // EINVAL
        },
        ["chroot-pivot-root"] = _ => Lines(
            ($"{B} chroot / {B} true", "chroot: can't change root directory to '/': Operation not permitted"),
            ($"{B} chroot /build {B} true", "chroot: can't change root directory to '/build': Operation not permitted"),
            ($"{T}/chroot /build; echo $?", "1"),
            ($"{B} pivot_root /build /build", "pivot_root: (null): Operation not permitted"), // busybox's own wording
            ($"{T}/pivot_root /build /build; echo $?", "1")),
        ["mknod"] = _ => Lines(
            ($"{B} mknod /build/null c 1 3", "mknod: /build/null: Operation not permitted"),
            ($"{B} mknod /tmp/sda b 8 0", "mknod: /tmp/sda: Operation not permitted"),
            ($"{T}/mknod /build/null 8630 259; echo $?", "1"), // S_IFCHR|0666, 1:3: EPERM
            ($"{B} mknod /build/fifo p && {B} ls /build", "fifo")), // what needs no privilege still works
        ["proc-sys-and-sys"] = a =>
        {
            string hostname = File.ReadAllText("/proc/sys/kernel/hostname");
            a.After.Add(() => Assert.Equal(hostname, File.ReadAllText("/proc/sys/kernel/hostname")));
            return Lines(
                ("echo other > /proc/sys/kernel/hostname", "sh: can't create /proc/sys/kernel/hostname: Permission denied"),
                ("echo 3 > /proc/sys/vm/drop_caches", "sh: can't create /proc/sys/vm/drop_caches: Permission denied"),
                ($"{B} sysctl -w kernel.hostname=other", "sysctl: error setting key 'kernel.hostname': Permission denied"),
                ($"{B} hostname other", "hostname: sethostname: Operation not permitted"),
                ($"{B} hostname", "localhost"),
                ($"{B} ls /sys", "ls: /sys: No such file or directory"), // no /sys at all
                ($"{B} mkdir /sys", "mkdir: can't create directory '/sys': Read-only file system"),
                ($"{B} cat /sys/kernel/uevent_seqnum", "cat: can't open '/sys/kernel/uevent_seqnum': No such file or directory"),
                ("echo x > /sys/kernel/uevent_helper", "sh: can't create /sys/kernel/uevent_helper: nonexistent directory"));
        },
        ["setuid-and-acl"] = _ => Lines(
            ($"echo x > f; {B} chmod 4755 f", "chmod: f: Operation not permitted"),
            ($"{B} chmod g+s f", "chmod: f: Operation not permitted"),
            ($"{B} chmod 750 f && {B} stat -c %a f", "750"), // plain modes still work
            ($"{B} mkdir d; {B} chmod g+s d; {B} stat -c %a d", "chmod: d: Operation not permitted\n755"),
            ($"{T}/setxattr /build/f system.posix_acl_access; echo $?", "95"), // ENOTSUP, as in Nix
            ($"{T}/setxattr /build/f security.capability; echo $?", "95")),
        ["setuid-root-input"] = a =>
        {
            // A setuid-root program that exits with its effective uid (so nothing in it drops privileges the way
            // busybox does). On the host it does run as root.
            string dir = Path.Combine(a.Tree.Inputs, "6666666666666666666666666666666s-suid");
            Directory.CreateDirectory(dir);
            string euid = Path.Combine(dir, "euid");
            File.WriteAllBytes(euid, EuidElf());
            User.Exec("chown", "root:root", euid);
            File.SetUnixFileMode(euid, (UnixFileMode)0x9ED); // 04755, after chown (which clears it)
            Assert.Equal(0, Host("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", euid));
            const string Program = "/nix/store/6666666666666666666666666666666s-suid/euid";
            return Lines(
                ($"{Program}; echo $?", "232"), // 1000 % 256: the build user, never root
                ($"{B} cp {Program} /build/copy; {B} chmod 4755 /build/copy", "chmod: /build/copy: Operation not permitted"),
                ($"/build/copy; echo $?", "232"));
        },
        ["network-without-access"] = a =>
        {
            int port = a.HostListener();
            return Lines(
                ($"echo from-sandbox | {B} nc -w 3 127.0.0.1 {port}", "nc: can't connect to remote host (127.0.0.1): Connection refused"),
                ($"echo from-sandbox | {B} nc -w 3 192.0.2.1 80", "nc: can't connect to remote host (192.0.2.1): Network is unreachable"),
                ($"{B} ip link set lo down", "ip: SIOCSIFFLAGS: Operation not permitted"),
                ($"{B} ip link add dummy0 type dummy", "ip: RTNETLINK answers: Operation not permitted"));
        },
        ["daemon-left-behind"] = a =>
        {
            string marker = HostProcesses.Marker();
            a.After.Add(() => Assert.Empty(HostProcesses.WithArgument(marker))); // gone when the build returned, not just soon after

            // A daemon by double fork and setsid, and one that ignores the hangup and termination signals, left running
            // when the build ends. The script names the marker in two halves, so only their command lines hold it whole.
            return Lines(
                ($"m={marker[..3]}; m=${{m}}{marker[3..]}; ( ( {B} setsid {B} sleep $m </dev/null >/dev/null 2>&1 & ) & ); " +
                 $"( trap '' HUP INT TERM; exec {B} sleep $m ) </dev/null >/dev/null 2>&1 & " +
                 $"until [ \"$({B} ps -o args | {B} grep -c \"sleep $m\\$\")\" = 2 ]; do {B} sleep 0.1; done; echo running", "running"));
        },
    };

    /// <summary>
    /// A script of attempts, each with its output merged (stderr into stdout), and what it must print; it ends with
    /// <c>echo end</c>, so no attempt stopped the shell unnoticed.
    /// </summary>
    private static Script Lines(params (string Attempt, string Output)[] attempts) => new(
        string.Join("\n", attempts.Select(a => $"{a.Attempt} 2>&1").Append("echo end")),
        string.Concat(attempts.Where(a => a.Output.Length > 0).Select(a => a.Output + "\n")) + "end\n");

    /// <summary>The driver prints the build's output, then its result.</summary>
    internal sealed record Script(string Text, string Output, string Result = "exited with code 0")
    {
        public string Expected => $"{Output}RESULT: {Result}\n";
    }

    /// <summary>mov eax,107 (geteuid); syscall; mov edi,eax; mov eax,60 (exit); syscall.</summary>
    private static byte[] EuidElf() => TinyElf.Elf64([0xb8, 107, 0, 0, 0, 0x0f, 0x05, 0x89, 0xc7, 0xb8, 60, 0, 0, 0, 0x0f, 0x05]);

    private static void WriteTools(SandboxTree tree)
    {
        string dir = Path.Combine(tree.Inputs, ToolsInput);
        Directory.CreateDirectory(dir);
        var tools = new Dictionary<string, byte[]>
        {
            ["ptrace"] = TinyElf.Syscall64(101, [TinyElf.Arg.Number(1), TinyElf.Arg.Number(2), TinyElf.Arg.Const(0), TinyElf.Arg.Const(0)]),

            // process_vm_readv(PID, {buffer, 8}, 1, {0x400000, 8}, 1, 0): 8 bytes at the program's own load address.
            ["vmread"] = TinyElf.Syscall64(310,
                [TinyElf.Arg.Number(1), TinyElf.Arg.Data(0), TinyElf.Arg.Const(1), TinyElf.Arg.Data(16), TinyElf.Arg.Const(1), TinyElf.Arg.Const(0)],
                address => [.. BitConverter.GetBytes(address + 32), .. BitConverter.GetBytes(8UL), .. BitConverter.GetBytes(0x400000UL), .. BitConverter.GetBytes(8UL), .. new byte[8]]),
            ["mount"] = TinyElf.Syscall64(165, [TinyElf.Arg.Text(1), TinyElf.Arg.Text(2), TinyElf.Arg.Text(3), TinyElf.Arg.Number(4), TinyElf.Arg.Const(0)]),
            ["umount2"] = TinyElf.Syscall64(166, [TinyElf.Arg.Text(1), TinyElf.Arg.Number(2)]),
            ["chroot"] = TinyElf.Syscall64(161, [TinyElf.Arg.Text(1)]),
            ["pivot_root"] = TinyElf.Syscall64(155, [TinyElf.Arg.Text(1), TinyElf.Arg.Text(2)]),
            ["setxattr"] = TinyElf.SetXattr64(),
            ["mknod"] = TinyElf.Syscall64(133, [TinyElf.Arg.Text(1), TinyElf.Arg.Number(2), TinyElf.Arg.Number(3)]),
        };
        foreach (var (name, bytes) in tools)
        {
            File.WriteAllBytes(Path.Combine(dir, name), bytes);
            File.SetUnixFileMode(Path.Combine(dir, name), (UnixFileMode)0x1ED);
        }
    }

    private static int Host(string file, params string[] args)
    {
        using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardError = true })!;
        p.WaitForExit();
        return p.ExitCode;
    }

    private static string HostOutput(string file, params string[] args)
    {
        using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardOutput = true })!;
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return output;
    }

    /// <summary>What one attempt set up on the host, and the checks to make there after the build.</summary>
    internal sealed class Attempt(SandboxTree tree, User? user) : IDisposable
    {
        private readonly List<IDisposable> _owned = [];

        public SandboxTree Tree { get; } = tree;

        /// <summary>The unprivileged caller, or null when root runs the build.</summary>
        public User? User { get; } = user;

        public List<Action> After { get; } = [];

        public void InputsUnchanged()
        {
            Assert.Equal("input contents\n", File.ReadAllText(Path.Combine(Tree.Inputs, "1111111111111111111111111111111d-data", "file")));
            Assert.Equal("a file input\n", File.ReadAllText(Path.Combine(Tree.Inputs, "2222222222222222222222222222222f-file")));
            Assert.Equal("1111111111111111111111111111111d-data/file",
                new FileInfo(Path.Combine(Tree.Inputs, "3333333333333333333333333333333l-link")).LinkTarget);
        }

        /// <summary>A sleeping host process of the caller's uid; checked afterwards to be alive and untraced.</summary>
        public int HostSleeper()
        {
            var sleeper = Process.Start(User is { } u
                ? new ProcessStartInfo("setpriv", [$"--reuid={u.Name}", $"--regid={u.Name}", "--init-groups", "--", "sleep", "600"])
                : new ProcessStartInfo("sleep", ["600"]))!;
            _owned.Add(new Killer(sleeper));
            After.Add(() =>
            {
                Assert.False(sleeper.HasExited);
                Assert.Contains("TracerPid:\t0", File.ReadAllLines($"/proc/{sleeper.Id}/status"));
            });
            return sleeper.Id;
        }

        /// <summary>A TCP listener on the host's loopback; checked afterwards to have had no connection.</summary>
        public int HostListener()
        {
            var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            _owned.Add(listener);
            After.Add(() => Assert.False(listener.Pending(), "a connection reached the host"));
            return ((IPEndPoint)listener.LocalEndpoint).Port;
        }

        public void Dispose() => _owned.ForEach(o => o.Dispose());

        private sealed class Killer(Process process) : IDisposable
        {
            public void Dispose()
            {
                process.Kill();
                process.WaitForExit();
                process.Dispose();
            }
        }
    }

    /// <summary>The unprivileged caller: a system user created for this class's tests and removed after them.</summary>
    public sealed class User : IDisposable
    {
        public User()
        {
            Name = $"tvixesc{Random.Shared.Next(100000):D5}";
            Exec("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "--user-group", Name);
        }

        public string Name { get; }

        public void Dispose() => Exec("userdel", Name);

        internal static string Exec(string file, params string[] args)
        {
            var psi = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true };
            using var p = Process.Start(psi)!;
            string output = p.StandardOutput.ReadToEnd();
            string error = p.StandardError.ReadToEnd();
            p.WaitForExit();
            if (p.ExitCode != 0)
            {
                throw new InvalidOperationException($"{file} {string.Join(' ', args)} exited {p.ExitCode}: {error}");
            }

            return output;
        }
    }
}
