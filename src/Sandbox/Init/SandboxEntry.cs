using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using TvixFuseBuild.Native;
using static TvixFuseBuild.Native.Libc;

namespace TvixFuseBuild.Sandbox.Init;

/// <summary>
/// How the init gets into its namespaces, in two steps of the same executable. The caller starts
/// <c>tvix-sandbox-init enter OPTIONS</c> (see <see cref="Arguments"/>); that process moves itself into the build's
/// cgroups, drops to the build user when started as root, and clones a child into new user, mount, PID, UTS, IPC,
/// cgroup (and network) namespaces, then waits for it and exits with its status: the caller's process lives exactly as
/// long as the namespace. The child execs the same executable again (with <see cref="EnteredVariable"/> set): the .NET
/// runtime runs a finalizer thread from its start, and a process with more than one thread can neither
/// unshare(CLONE_NEWUSER) nor run .NET code after a raw clone, so it makes only system calls until that execve. The
/// exec'd init, PID 1 of the new PID namespace, maps its ids (<see cref="Entered"/>) and goes on as the init.
/// </summary>
internal static unsafe class SandboxEntry
{
    /// <summary>The first argument of the process the caller starts.</summary>
    public const string EnterArgument = "enter";

    /// <summary>
    /// In the exec'd init's environment: the outer uid and gid (UID:GID). Its command line is the executable's alone, as
    /// the build sees it in /proc/1/cmdline (the environment there is not readable), and the command's environment is
    /// the spec's.
    /// </summary>
    public const string EnteredVariable = "TVIX_SANDBOX_ENTERED";

    /// <summary>The build's uid and gid inside the namespace.</summary>
    public const int InnerUid = 1000;
    public const int InnerGid = 100;

    private const ulong Namespaces = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP;

    /// <summary>
    /// The command line of <c>enter</c>: as root the build user (<c>--uid</c>, <c>--gid</c>, <c>--groups</c>, comma
    /// separated, possibly empty); <c>--net</c> to keep the host's network; each <c>--cgroup DIR</c> to move into;
    /// <c>--pids-max FILE N</c>: the build's process limit, to which the init adds its own threads.
    /// </summary>
    public static List<string> Arguments(int? uid, int? gid, IReadOnlyCollection<int> groups, bool network, IReadOnlyList<string> cgroups, string? pidsMax, int maxProcesses)
    {
        var args = new List<string> { EnterArgument };
        if (uid is { } u && gid is { } g)
        {
            args.AddRange(["--uid", u.ToString(CultureInfo.InvariantCulture), "--gid", g.ToString(CultureInfo.InvariantCulture),
                "--groups", string.Join(',', groups.Select(x => x.ToString(CultureInfo.InvariantCulture)))]);
        }

        if (network)
        {
            args.Add("--net");
        }

        foreach (string dir in cgroups)
        {
            args.AddRange(["--cgroup", dir]);
        }

        if (pidsMax is not null)
        {
            args.AddRange(["--pids-max", pidsMax, maxProcesses.ToString(CultureInfo.InvariantCulture)]);
        }

        return args;
    }

    /// <summary>The outer process: enters, waits for the init, returns its exit code (128 + signal when killed).</summary>
    public static int Enter(string[] args)
    {
        int pid;
        try
        {
            pid = Start(args);
        }
        catch (Exception e) when (e is SandboxSetupException or FormatException or IOException or UnauthorizedAccessException)
        {
            ReportError(e.Message);
            return 1;
        }

        int status;
        while (waitpid(pid, &status, 0) < 0)
        {
            if (Errno.Last != Errno.EINTR)
            {
                ReportError(SandboxSetupException.FromErrno("wait for the sandbox init", Errno.Last).Message);
                return 1;
            }
        }

        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f);
    }

    private static int Start(string[] args)
    {
        uint? uid = null;
        uint? gid = null;
        uint[] groups = [];
        bool network = false;
        var cgroups = new List<string>();
        (string File, long Processes)? pidsMax = null;
        for (int i = 1; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--uid" when i + 1 < args.Length:
                    uid = uint.Parse(args[++i], NumberStyles.None, CultureInfo.InvariantCulture);
                    break;
                case "--gid" when i + 1 < args.Length:
                    gid = uint.Parse(args[++i], NumberStyles.None, CultureInfo.InvariantCulture);
                    break;
                case "--groups" when i + 1 < args.Length:
                    var list = args[++i].Split(',', StringSplitOptions.RemoveEmptyEntries);
                    groups = new uint[list.Length];
                    for (int j = 0; j < list.Length; j++)
                    {
                        groups[j] = uint.Parse(list[j], NumberStyles.None, CultureInfo.InvariantCulture);
                    }

                    break;
                case "--net":
                    network = true;
                    break;
                case "--cgroup" when i + 1 < args.Length:
                    cgroups.Add(args[++i]);
                    break;
                case "--pids-max" when i + 2 < args.Length:
                    pidsMax = (args[++i], long.Parse(args[++i], NumberStyles.None, CultureInfo.InvariantCulture));
                    break;
                default:
                    throw new SandboxSetupException($"unknown argument {args[i]}");
            }
        }

        if (uid is null != gid is null)
        {
            throw new SandboxSetupException("--uid and --gid go together");
        }

        // What the child will exec, read while this process's /proc files are still its own (a process that changed its
        // uid is not dumpable: they belong to root then).
        var commandLine = ProcFile("/proc/self/cmdline");
        var environment = ProcFile("/proc/self/environ");
        string executable = Executable();
        int enter = 0;
        while (enter < commandLine.Count && !commandLine[enter].AsSpan().SequenceEqual("enter"u8))
        {
            enter++;
        }

        if (enter < 1 || enter == commandLine.Count)
        {
            throw new SandboxSetupException($"cannot find '{EnterArgument}' in the init's command line");
        }

        // 1. Into the build's cgroups, with the caller's identity, before anything of the build exists: every process
        // of it starts inside. The pids limit leaves room for this process's threads and the init's (the same
        // runtime, so as many) plus its watchdog.
        if (pidsMax is { } max)
        {
            int threads = BuildLauncher.ThreadCount();
            WriteSmall(max.File, (max.Processes + 2 * threads + 1).ToString(CultureInfo.InvariantCulture), "set the build's pids limit");
        }

        foreach (string dir in cgroups)
        {
            WriteSmall(dir + "/cgroup.procs", "0", "move into the build's cgroup");
        }

        // 2. As root, the build user; what setpriv --reuid --regid --groups did (the capabilities go with uid 0).
        if (uid is { } u && gid is { } g)
        {
            fixed (uint* list = groups)
            {
                Check(setgroups((nuint)groups.Length, list), "set the build user's groups");
            }

            Check(setresgid(g, g, g), $"become group {g}");
            Check(setresuid(u, u, u), $"become user {u}");
            uint r, e, s;
            if (getresuid(&r, &e, &s) < 0 || r != u || e != u || s != u || getresgid(&r, &e, &s) < 0 || r != g || e != g || s != g)
            {
                throw new SandboxSetupException($"the build user {u} was not fully taken");
            }
        }

        // 3. Everything the child needs, prepared here: it may only make system calls.
        byte** argv = Strings(commandLine.GetRange(0, enter), []);
        byte** envp = Strings(environment, [$"{EnteredVariable}={getuid()}:{getgid()}"]);
        byte* exe = Utf8(executable);

        // Like unshare --fork: the terminal's interrupt is for the caller, which ends the build through the init.
        signal(SIGINT, SIG_IGN);
        signal(SIGTERM, SIG_IGN);
        Prepare();

        int pid = CloneIntoNamespaces(Namespaces | (network ? 0 : CLONE_NEWNET));
        if (pid == 0)
        {
            ExecInit(exe, argv, envp); // never returns
        }

        if (pid < 0)
        {
            throw SandboxSetupException.FromErrno("create the sandbox's namespaces", Errno.Last);
        }

        return pid;
    }

    /// <summary>
    /// The child of the clone: PID 1 of the new namespaces with every capability in them. Keeps the capabilities across
    /// its execve as ambient ones (the init runs as uid 1000 there, which execve would strip them from; what
    /// unshare --keep-caps did), and dies with the outer process.
    /// </summary>
    private static void ExecInit(byte* exe, byte** argv, byte** envp)
    {
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) == 0)
        {
            uint* header = stackalloc uint[2] { 0x20080522 /* _LINUX_CAPABILITY_VERSION_3 */, 0 };
            uint* data = stackalloc uint[6]; // effective, permitted, inheritable; twice (capabilities 0-31, 32-63)
            if (capget(header, data) == 0)
            {
                data[2] = data[1];
                data[5] = data[4];
                if (capset(header, data) == 0)
                {
                    for (nuint cap = 0; cap < 64 && prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++)
                    {
                        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0);
                    }

                    execve(exe, argv, envp);
                }
            }
        }

        ReadOnlySpan<byte> message = "tvix-sandbox-init: cannot start the init in its namespaces\n"u8;
        fixed (byte* p = message)
        {
            write(2, p, (nuint)message.Length);
        }

        _exit(127);
    }

    /// <summary>
    /// Binds and compiles what the child calls, here: .NET resolves a P/Invoke at its first call (and the managed init
    /// compiles a method at its first call), which takes locks and allocates; the child must find everything ready.
    /// Each call here changes nothing.
    /// </summary>
    private static void Prepare()
    {
#if !TVIX_NATIVE_INIT
        System.Runtime.CompilerServices.RuntimeHelpers.PrepareMethod(
            typeof(SandboxEntry).GetMethod(nameof(ExecInit), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!.MethodHandle);
#endif
        signal(SIGINT, SIG_IGN);
        prctl(PR_CAPBSET_READ, 0, 0, 0, 0);
        uint* header = stackalloc uint[2] { 0x20080522, 0 };
        uint* data = stackalloc uint[6];
        if (capget(header, data) == 0)
        {
            capset(header, data);
        }

        byte empty = 0;
        execve(&empty, null, null); // ENOENT
        write(2, &empty, 0);
    }

    /// <summary>This executable's path (execve of /proc/self/exe would name the init "exe" in ps and /proc/1/comm).</summary>
    private static string Executable()
    {
        byte* buffer = stackalloc byte[4096];
        nint n = readlinkat(AT_FDCWD, "/proc/self/exe", buffer, 4096);
        if (n <= 0 || n >= 4096)
        {
            throw SandboxSetupException.FromErrno("find the init's executable (/proc/self/exe)", n < 0 ? Errno.Last : Errno.ERANGE);
        }

        return Encoding.UTF8.GetString(buffer, (int)n);
    }

    /// <summary>
    /// The exec'd init, if its environment says so: maps the outer uid and gid to 1000 and 100 (one each, as
    /// unshare --map-user --map-group did; setgroups is denied, so the build keeps the groups it entered with) and makes
    /// every mount private. False when this is not the exec'd init.
    /// </summary>
    public static bool Entered()
    {
        if (Environment.GetEnvironmentVariable(EnteredVariable)?.Split(':') is not [var outerUid, var outerGid])
        {
            return false;
        }

        WriteSmall("/proc/self/uid_map", $"{InnerUid} {outerUid} 1", "map the build's uid");
        WriteSmall("/proc/self/setgroups", "deny", "deny setgroups");
        WriteSmall("/proc/self/gid_map", $"{InnerGid} {outerGid} 1", "map the build's gid");
        Check(mount("none", "/", null, MS_REC | MS_PRIVATE, null), "make the mounts private");
        return true;
    }

    /// <summary>Reports an error as the init would, on the status channel (stdout), so the caller names it.</summary>
    private static void ReportError(string message)
    {
        byte[] text = Encoding.UTF8.GetBytes(message);
        byte[] frame = new byte[5 + text.Length];
        frame[0] = InitMessage.Error;
        BinaryPrimitives.WriteInt32LittleEndian(frame.AsSpan(1), text.Length);
        text.CopyTo(frame.AsSpan(5));
        fixed (byte* p = frame)
        {
            write(1, p, (nuint)frame.Length);
        }
    }

    private static void WriteSmall(string path, string content, string what)
    {
        int fd = openat(AT_FDCWD, path, O_WRONLY | O_CLOEXEC, 0);
        if (fd < 0)
        {
            throw SandboxSetupException.FromErrno($"{what} ({path})", Errno.Last);
        }

        try
        {
            byte[] bytes = Encoding.UTF8.GetBytes(content);
            fixed (byte* p = bytes)
            {
                if (write(fd, p, (nuint)bytes.Length) != bytes.Length)
                {
                    throw SandboxSetupException.FromErrno($"{what} ({path})", Errno.Last);
                }
            }
        }
        finally
        {
            close(fd);
        }
    }

    /// <summary>A /proc file of NUL-terminated strings (cmdline, environ), split.</summary>
    private static List<byte[]> ProcFile(string path)
    {
        var items = new List<byte[]>();
        var content = File.ReadAllBytes(path).AsSpan();
        while (content.Length > 0)
        {
            int end = content.IndexOf((byte)0);
            end = end < 0 ? content.Length : end;
            items.Add(content[..end].ToArray());
            content = content[Math.Min(content.Length, end + 1)..];
        }

        return items;
    }

    /// <summary>A NULL-terminated native array of C strings; never freed (the process execs or exits).</summary>
    private static byte** Strings(List<byte[]> items, string[] more)
    {
        foreach (string item in more)
        {
            items.Add(Encoding.UTF8.GetBytes(item));
        }

        var array = (byte**)NativeMemory.Alloc((nuint)(items.Count + 1), (nuint)sizeof(byte*));
        for (int i = 0; i < items.Count; i++)
        {
            var p = (byte*)NativeMemory.Alloc((nuint)items[i].Length + 1);
            items[i].CopyTo(new Span<byte>(p, items[i].Length));
            p[items[i].Length] = 0;
            array[i] = p;
        }

        array[items.Count] = null;
        return array;
    }

    private static byte* Utf8(string value) => Strings([], [value])[0];

    private static int Check(int rc, string operation) => SandboxSetupException.Check(rc, operation);
}
