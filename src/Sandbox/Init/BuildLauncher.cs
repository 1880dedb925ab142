using System.Runtime.InteropServices;
using System.Text;
using TvixFuseBuild.Native;
using static TvixFuseBuild.Native.Libc;

namespace TvixFuseBuild.Sandbox.Init;

/// <summary>
/// Starts the command without privileges. Capabilities, the bounding set and no_new_privs belong to a thread, and a
/// child gets the credentials of the thread that spawns it: a dedicated thread sheds them all and then calls
/// posix_spawn (vfork-based, safe in a multi-threaded process), so the init itself keeps what it needs.
/// </summary>
internal static unsafe class BuildLauncher
{
    public static int Start(InitPlan plan, int outputFd)
    {
        string program = Resolve(plan);

        // Process-wide limits inherited by the command: no core dumps (they would go to the host's core_pattern),
        // and the usual soft fd limit instead of the hard one the runtime raised it to.
        RLimit limit;
        getrlimit(RLIMIT_CORE, &limit);
        limit.Cur = 0;
        setrlimit(RLIMIT_CORE, &limit);
        getrlimit(RLIMIT_NOFILE, &limit);
        limit.Cur = Math.Min(limit.Max, 1024);
        setrlimit(RLIMIT_NOFILE, &limit);

        // The count is per user namespace and uid (Linux 5.14 and later): the sandbox's own tasks, which are this
        // init's threads and the build (the process that entered the namespaces stays outside the user namespace). The
        // init needs no new thread from here on but the spawning one, which is gone before the build can fork. Under a
        // pids cgroup, which counts the same tasks and that outer process, the cgroup must be the one that says no: it
        // records that it did (pids.events), the rlimit does not.
        limit.Cur = limit.Max = (ulong)plan.MaxProcesses + (ulong)ThreadCount() + (plan.InCgroup ? 16UL : 0);
        SandboxSetupException.Check(setrlimit(RLIMIT_NPROC, &limit), "set RLIMIT_NPROC");

        // The OOM killer (of the build's memory cgroup, or of the host) takes the build's processes first: otherwise it
        // would pick the init, whose runtime is bigger than a shell filling /dev/shm, and the command's status would be
        // lost. Anyone may raise the score; the init may lower its own back to where it was.
        byte[] initOomScore = OomScore.Read();
        OomScore.Write("1000"u8);

        int pid = 0;
        Exception? error = null;
        var thread = new Thread(() =>
        {
            try
            {
                pid = SpawnUnprivileged(program, plan, outputFd);
            }
            catch (Exception e)
            {
                error = e;
            }
        }, 256 * 1024);
        thread.Start();
        thread.Join();
        OomScore.Write(initOomScore);
        return error is null ? pid : throw error;
    }

    private static int SpawnUnprivileged(string program, InitPlan plan, int outputFd)
    {
        SandboxSetupException.Check(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs");
        for (nuint cap = 0; cap < 64; cap++)
        {
            if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
            {
                if (Errno.Last == Errno.EINVAL)
                {
                    break; // past the last capability this kernel knows
                }

                throw SandboxSetupException.FromErrno($"drop capability {cap} from the bounding set", Errno.Last);
            }
        }

        SandboxSetupException.Check(prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear the ambient capabilities");
        uint* header = stackalloc uint[2] { 0x20080522 /* _LINUX_CAPABILITY_VERSION_3 */, 0 };
        uint* data = stackalloc uint[6];
        new Span<uint>(data, 6).Clear();
        SandboxSetupException.Check(capset(header, data), "drop all capabilities");
        if (plan.Seccomp.Length == 0)
        {
            throw new SandboxSetupException("the plan carries no seccomp filter; the command never runs without one");
        }

        SeccompFilter.Load(plan.Seccomp);

        int rc = PosixSpawn.Start(program, plan.Argv, plan.Env, plan.WorkingDirectory, stdin: -1, stdout: outputFd, stderr: outputFd, out int pid, out string step);
        if (rc != 0)
        {
            throw step == "spawn"
                ? SandboxSetupException.FromErrno($"cannot run {program} in {plan.WorkingDirectory}", rc)
                : SandboxSetupException.FromErrno($"posix_spawn {step}", rc);
        }

        return pid;
    }

    /// <summary>
    /// The init's /proc/self/oom_score_adj, opened while the init is still dumpable (then its /proc files are owned by
    /// root of the host, whom the user namespace cannot act for).
    /// </summary>
    internal static class OomScore
    {
        private static int s_fd = -1;

        public static void Open() =>
            s_fd = SandboxSetupException.Check(openat(AT_FDCWD, "/proc/self/oom_score_adj", O_RDWR | O_CLOEXEC, 0), "open /proc/self/oom_score_adj");

        public static byte[] Read()
        {
            byte* buf = stackalloc byte[16];
            nint n = pread(s_fd, buf, 16, 0);
            SandboxSetupException.Check((int)n, "read oom_score_adj");
            return new ReadOnlySpan<byte>(buf, (int)n).TrimEnd((byte)'\n').ToArray();
        }

        public static void Write(ReadOnlySpan<byte> value)
        {
            fixed (byte* p = value)
            {
                SandboxSetupException.Check((int)write(s_fd, p, (nuint)value.Length), "set oom_score_adj");
            }
        }
    }

    /// <summary>This process's threads, from /proc/self/status.</summary>
    public static int ThreadCount()
    {
        foreach (string line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith("Threads:", StringComparison.Ordinal))
            {
                return int.Parse(line.AsSpan(8).Trim(), System.Globalization.CultureInfo.InvariantCulture);
            }
        }

        throw new SandboxSetupException("cannot count the init's threads in /proc/self/status");
    }

    /// <summary>A command without a slash is looked up in the PATH of the build's environment, like execvp.</summary>
    private static string Resolve(InitPlan plan)
    {
        string name = plan.Argv[0];
        if (name.Contains('/'))
        {
            return name;
        }

        foreach (var entry in plan.Env)
        {
            if (!entry.StartsWith("PATH=", StringComparison.Ordinal))
            {
                continue;
            }

            foreach (var dir in entry[5..].Split(':'))
            {
                string candidate = (dir.Length == 0 ? "." : dir) + "/" + name;
                if (!candidate.StartsWith('/'))
                {
                    candidate = plan.WorkingDirectory.TrimEnd('/') + "/" + candidate;
                }

                int mode = StatMode(AT_FDCWD, candidate, 0);
                if (mode >= 0 && ((uint)mode & S_IFMT) == S_IFREG && (mode & 0x49) != 0)
                {
                    return candidate;
                }
            }
        }

        throw new SandboxSetupException($"cannot run {name}: not found in the PATH of the build's environment");
    }
}
