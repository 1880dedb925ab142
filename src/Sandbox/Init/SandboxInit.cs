using System.Buffers.Binary;
#if !TVIX_NATIVE_INIT
using System.Reflection;
#endif
using System.Text;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Sandbox.Init;

/// <summary>
/// The sandbox init: PID 1 of the new PID namespace, in which it has all capabilities (see <see cref="SandboxEntry"/>
/// for how it gets there: the caller starts this executable with <c>enter</c>, which clones and re-execs it). It reads the <see cref="InitPlan"/> from stdin, builds the root, starts the command
/// without privileges, reaps every process until the command exits, reports the status on stdout and exits; its exit
/// makes the kernel kill whatever is left in the namespace. EOF (or <see cref="InitMessage.Kill"/>) on stdin kills
/// everything at once: only the caller holds the write end, so its death is noticed too.
/// </summary>
internal static unsafe class SandboxInit
{
    private const int ControlFd = 0;
    private const int StatusFd = 1;
    private const int OutputFd = 2;

    // The NativeAOT tool compiles this assembly's entry point too, but never calls it: the managed init only runs as
    // `dotnet exec TvixFuseBuild.Sandbox.dll` (untrimmed, every referenced assembly present).
    [System.Diagnostics.CodeAnalysis.UnconditionalSuppressMessage("Trimming", "IL2026",
        Justification = "GetReferencedAssemblies runs only in the managed init, which is never trimmed.")]
    private static int Main(string[] args)
    {
        try
        {
            if (!SandboxEntry.Entered())
            {
                if (args is [SandboxEntry.EnterArgument, ..])
                {
                    return SandboxEntry.Enter(args);
                }

                throw new SandboxSetupException($"the sandbox init runs only as '{SandboxEntry.EnterArgument}', started by tvix-fuse-build");
            }

            Trace("main");
#if !TVIX_NATIVE_INIT
            // The managed init (TVIX_SANDBOX_INIT=managed): after pivot_root the runtime's own files are gone, so
            // whatever it needs must be loaded first. The native init (src/Sandbox.Init) has all its code in itself.
            foreach (var name in typeof(SandboxInit).Assembly.GetReferencedAssemblies())
            {
                Assembly.Load(name);
            }

            Trace("assemblies loaded");
#endif
            var plan = ReadPlan();
            Trace("plan read");
            if (plan is null)
            {
                return 1; // the caller went away before sending anything
            }

            CloseInherited(plan);
            BuildLauncher.OomScore.Open();
            Libc.prctl(Libc.PR_SET_DUMPABLE, 0, 0, 0, 0);
            Libc.umask(0x12); // 022, whatever the caller had; the command inherits it
            var watchdog = new Thread(Watchdog) { IsBackground = true, Name = "sandbox-watchdog" };
            watchdog.Start();

            new RootBuilder(plan).Build();
            Trace("root built");
            int pid = BuildLauncher.Start(plan, OutputFd);
            Trace("command started");
            Send(InitMessage.Started, []);
            int status = ReapUntil(pid);
            Span<byte> payload = stackalloc byte[8];
            BinaryPrimitives.WriteInt32LittleEndian(payload, status);
            BinaryPrimitives.WriteInt32LittleEndian(payload[4..], (int)FullTmpfs(plan));
            Send(InitMessage.Exited, payload);
            Libc._exit(0);
        }
        catch (Exception e)
        {
            Send(InitMessage.Error, Encoding.UTF8.GetBytes(e.Message));
            Libc._exit(1);
        }

        return 1;
    }

    private static readonly bool s_trace = Environment.GetEnvironmentVariable("TVIX_SANDBOX_TRACE") == "1";

    /// <summary>With TVIX_SANDBOX_TRACE=1 in the caller's environment: milliseconds since the process started, on the output.</summary>
    private static void Trace(string what)
    {
        if (!s_trace)
        {
            return;
        }

        // /proc/self/stat field 22 is the start time in clock ticks since boot; /proc/uptime is seconds since boot.
        string stat = File.ReadAllText("/proc/self/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        double started = double.Parse(fields[19], System.Globalization.CultureInfo.InvariantCulture) / 100;
        double now = double.Parse(File.ReadAllText("/proc/uptime").Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
        string loaded = what == "command started" ? " " + string.Join(",", AppDomain.CurrentDomain.GetAssemblies().Select(a => a.GetName().Name)) : "";
        byte[] line = Encoding.UTF8.GetBytes($"sandbox-init: {what} at {(now - started) * 1000:0} ms (cpu {Environment.CpuUsage.TotalTime.TotalMilliseconds:0} ms){loaded}\n");
        fixed (byte* p = line)
        {
            Libc.write(OutputFd, p, (nuint)line.Length);
        }
    }

    private static InitPlan? ReadPlan()
    {
        Span<byte> header = stackalloc byte[4];
        if (!ReadExact(ControlFd, header))
        {
            return null;
        }

        var payload = new byte[BinaryPrimitives.ReadInt32LittleEndian(header)];
        return ReadExact(ControlFd, payload) ? InitPlan.Decode(payload) : null;
    }

    /// <summary>
    /// Closes every descriptor this process inherited but does not use. The caller's Process.Start passes every
    /// descriptor not marked close-on-exec, so a concurrent build's could arrive here. The runtime opens its own with
    /// O_CLOEXEC: whatever lacks the flag came through exec. The command never gets any (it starts with closefrom(3)).
    /// </summary>
    private static void CloseInherited(InitPlan plan)
    {
        var keep = new HashSet<int>(plan.Mounts?.All ?? []) { ControlFd, StatusFd, OutputFd };
        var open = new List<int>();
        foreach (string entry in Directory.EnumerateFileSystemEntries("/proc/self/fd"))
        {
            if (int.TryParse(Path.GetFileName(entry), out int fd))
            {
                open.Add(fd);
            }
        }

        foreach (int fd in open)
        {
            int flags = Libc.fcntl(fd, Libc.F_GETFD, 0);
            if (flags >= 0 && (flags & Libc.FD_CLOEXEC) == 0 && !keep.Contains(fd))
            {
                Trace($"closing inherited descriptor {fd}");
                Libc.close(fd);
            }
        }
    }

    /// <summary>Which of the build's tmpfs mounts have no free block left.</summary>
    private static InitMessage.FullTmpfs FullTmpfs(InitPlan plan)
    {
        var full = InitMessage.FullTmpfs.None;
        Libc.StatFs fs;
        if (plan.PrivateTmp && Libc.statfs("/tmp", &fs) == 0 && fs.BlocksAvailable == 0)
        {
            full |= InitMessage.FullTmpfs.Tmp;
        }

        if (Libc.statfs("/dev/shm", &fs) == 0 && fs.BlocksAvailable == 0)
        {
            full |= InitMessage.FullTmpfs.DevShm;
        }

        return full;
    }

    /// <summary>Blocks on the control pipe; EOF or a kill request ends the init and with it the namespace.</summary>
    private static void Watchdog()
    {
        byte b;
        while (true)
        {
            nint n = Libc.read(ControlFd, &b, 1);
            if (n < 0 && Errno.Last == Errno.EINTR)
            {
                continue;
            }

            if (n <= 0 || b == InitMessage.Kill)
            {
                Libc._exit(137);
            }
        }
    }

    /// <summary>PID 1 inherits every orphan of the build; reap them all, return the command's wait status.</summary>
    private static int ReapUntil(int pid)
    {
        int status;
        while (true)
        {
            int rc = Libc.waitpid(-1, &status, Libc.WALL);
            if (rc == pid)
            {
                return status;
            }

            if (rc < 0)
            {
                int errno = Errno.Last;
                if (errno != Errno.EINTR)
                {
                    throw SandboxSetupException.FromErrno("waitpid", errno);
                }
            }
        }
    }

    private static void Send(byte type, ReadOnlySpan<byte> payload)
    {
        var frame = new byte[5 + payload.Length];
        frame[0] = type;
        BinaryPrimitives.WriteInt32LittleEndian(frame.AsSpan(1), payload.Length);
        payload.CopyTo(frame.AsSpan(5));
        fixed (byte* p = frame)
        {
            int done = 0;
            while (done < frame.Length)
            {
                nint n = Libc.write(StatusFd, p + done, (nuint)(frame.Length - done));
                if (n < 0 && Errno.Last == Errno.EINTR)
                {
                    continue;
                }

                if (n <= 0)
                {
                    return; // the caller is gone; nothing to report to
                }

                done += (int)n;
            }
        }
    }

    private static bool ReadExact(int fd, Span<byte> buffer)
    {
        fixed (byte* p = buffer)
        {
            int done = 0;
            while (done < buffer.Length)
            {
                nint n = Libc.read(fd, p + done, (nuint)(buffer.Length - done));
                if (n < 0 && Errno.Last == Errno.EINTR)
                {
                    continue;
                }

                if (n <= 0)
                {
                    return false;
                }

                done += (int)n;
            }
        }

        return true;
    }
}
