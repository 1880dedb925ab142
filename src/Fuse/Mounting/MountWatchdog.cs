using System.Globalization;
using System.Runtime.InteropServices;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Fuse.Mounting;

/// <summary>
/// Detaches a mount when its server dies, SIGKILL included, the way libfuse's <c>auto_unmount</c> does: a process of
/// its own (its own session, so Ctrl-C in a terminal does not reach it) blocks reading a pipe whose only writer is the
/// server. A byte means the server unmounted itself; end of file means it died, and the watchdog then detaches the
/// mount at the mountpoint if, and only if, it is still the one the server made: same unique mount id and device.
/// fusermount3's own auto_unmount is not used: it finds the mount by path only, and Debian 12's probes a dead mount as
/// root, gets EACCES (not ENOTCONN) without allow_other and then leaves the mount in place.
/// </summary>
internal sealed unsafe class MountWatchdog : IDisposable
{
    public const string Mount = "mount";
    public const string Fusermount = "fusermount";

    private const byte ReadyByte = (byte)'r';
    private static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(60);

    private readonly int _pid;
    private readonly Thread _reaper;
    private readonly Action<string> _log;
    private int _writeFd;
    private volatile bool _released;

    private MountWatchdog(int pid, int writeFd, Action<string> log)
    {
        _pid = pid;
        _writeFd = writeFd;
        _log = log;
        _reaper = new Thread(Reap) { IsBackground = true, Name = "mount watchdog reaper" };
        _reaper.Start();
    }

    /// <summary>
    /// Starts <paramref name="command"/> followed by what <see cref="Run"/> reads: the mountpoint, the mount's id, its
    /// device and how it was mounted. Throws <see cref="FuseException"/> when the mount cannot be identified or the
    /// process cannot be started.
    /// </summary>
    public static MountWatchdog Start(IReadOnlyList<string> command, string mountpoint, bool viaFusermount, Action<string> log)
    {
        var identity = MountIdentity.Of(mountpoint, out int errno) ??
            throw (errno == 0
                ? new FuseException($"cannot identify the mount at {mountpoint}: the kernel reports no mount id (Linux 5.8 or later needed)")
                : FuseException.FromErrno($"identify the mount at {mountpoint} (statx)", errno));
        string[] argv =
        [
            .. command,
            mountpoint,
            identity.Format(),
            viaFusermount ? Fusermount : Mount,
            Environment.ProcessId.ToString(CultureInfo.InvariantCulture),
        ];

        // stdin: a pipe only this process writes to (a byte: unmounted; end of file: gone). stdout: a pipe on which the
        // watchdog says it is ready, so the mount is not reported ready with a watchdog that never ran.
        int control = -1, controlWrite = -1, ready = -1, readyWrite = -1;
        try
        {
            (control, controlWrite) = Pipe();
            (ready, readyWrite) = Pipe();
            int pid = Spawn(argv, control, readyWrite);
            Libc.close(readyWrite);
            readyWrite = -1;
            WaitUntilReady(pid, ready, argv[0]);
            var watchdog = new MountWatchdog(pid, controlWrite, log);
            controlWrite = -1;
            return watchdog;
        }
        finally
        {
            foreach (int fd in (ReadOnlySpan<int>)[control, controlWrite, ready, readyWrite])
            {
                if (fd >= 0)
                {
                    Libc.close(fd);
                }
            }
        }
    }

    private static (int Read, int Write) Pipe()
    {
        int* fds = stackalloc int[2];
        if (Libc.pipe2(fds, Libc.O_CLOEXEC) < 0)
        {
            throw FuseException.FromErrno("pipe2");
        }

        int read = AboveStandard(fds[0]);
        int write = AboveStandard(fds[1]);
        if (read < 0 || write < 0)
        {
            int errno = Errno.Last;
            Libc.close(read >= 0 ? read : write);
            throw FuseException.FromErrno("fcntl F_DUPFD_CLOEXEC", errno);
        }

        return (read, write);
    }

    /// <summary>Moves a descriptor that took a closed standard one's number (which the file actions reuse) to 3 or above; -1 on failure (closed).</summary>
    private static int AboveStandard(int fd)
    {
        if (fd >= 3)
        {
            return fd;
        }

        int moved = Libc.fcntl(fd, Libc.F_DUPFD_CLOEXEC, 3);
        int errno = Errno.Last;
        Libc.close(fd);
        Marshal.SetLastPInvokeError(errno);
        return moved;
    }

    /// <summary>Waits for the watchdog's ready byte; otherwise kills and reaps it and throws.</summary>
    private static void WaitUntilReady(int pid, int ready, string program)
    {
        var poll = new Libc.PollFd { Fd = ready, Events = Libc.POLLIN };
        int rc;
        while ((rc = Libc.poll(&poll, 1, (int)ReadyTimeout.TotalMilliseconds)) < 0 && Errno.Last == Errno.EINTR)
        {
        }

        byte answer = 0;
        if (rc > 0 && Libc.read(ready, &answer, 1) == 1 && answer == ReadyByte)
        {
            return;
        }

        Libc.kill(pid, Libc.SIGKILL);
        int status = 0;
        while (Libc.waitpid(pid, &status, 0) < 0 && Errno.Last == Errno.EINTR)
        {
        }

        throw new FuseException(rc == 0
            ? $"the unmount watchdog ({program}) was not ready within {ReadyTimeout.TotalSeconds:0} s"
            : (status & 0x7f) == 0
                ? $"the unmount watchdog ({program}) exited with {(status >> 8) & 0xff} before it was ready"
                : $"the unmount watchdog ({program}) was killed by signal {status & 0x7f} before it was ready");
    }

    /// <summary>Tells the watchdog that the mount is gone (call after unmounting) and waits for it to exit.</summary>
    public void Dispose()
    {
        // It exits as soon as it reads the byte (a loaded machine may still be starting its runtime).
        if (Release() && !_reaper.Join(TimeSpan.FromSeconds(30)))
        {
            _log($"the unmount watchdog (pid {_pid}) did not exit; killing it");
            Libc.kill(_pid, Libc.SIGKILL);
            _reaper.Join();
        }
    }

    /// <summary>Tells the watchdog that the mount is gone without waiting (at process exit). False when already told.</summary>
    public bool Release()
    {
        int fd = Interlocked.Exchange(ref _writeFd, -1);
        if (fd < 0)
        {
            return false;
        }

        _released = true;
        byte done = (byte)'q';
        Libc.write(fd, &done, 1);
        Libc.close(fd);
        return true;
    }

    private void Reap()
    {
        int status;
        while (Libc.waitpid(_pid, &status, 0) < 0 && Errno.Last == Errno.EINTR)
        {
        }

        if (!_released)
        {
            _log($"the unmount watchdog (pid {_pid}) exited; if this process is killed now, its mount stays until the next mount removes it");
        }
    }

    /// <summary>
    /// posix_spawn (vfork-based, safe in a multi-threaded process): stdin and stdout the pipes, stderr ours, a session of
    /// its own, in / (so that it keeps no directory busy).
    /// </summary>
    private static int Spawn(string[] argv, int stdin, int stdout)
    {
        var environment = new List<string>();
        foreach (System.Collections.DictionaryEntry entry in Environment.GetEnvironmentVariables())
        {
            environment.Add($"{entry.Key}={entry.Value}");
        }

        int rc = PosixSpawn.Start(argv[0], argv, environment, "/", stdin, stdout, stderr: -1, out int pid, out string step);
        if (rc != 0)
        {
            throw step == "spawn"
                ? FuseException.FromErrno($"start the unmount watchdog {argv[0]}", rc)
                : FuseException.FromErrno($"prepare the unmount watchdog ({step})", rc);
        }

        return pid;
    }

    /// <summary>
    /// The watchdog's side: waits for the server's pipe on stdin; at end of file (the server died) detaches the mount
    /// if it is still the server's. Returns the exit code: 0, or 2 for arguments it does not understand.
    /// </summary>
    public static int Run(IReadOnlyList<string> args, Action<string> log)
    {
        if (args.Count != 4 || !MountIdentity.TryParse(args[1], out var identity) || args[2] is not (Mount or Fusermount))
        {
            log("the unmount watchdog takes MOUNTPOINT u|mMOUNT-ID@MAJOR:MINOR mount|fusermount SERVER-PID");
            return 2;
        }

        string mountpoint = args[0];
        byte b = ReadyByte;
        Libc.write(1, &b, 1);
        nint n;
        while ((n = Libc.read(0, &b, 1)) < 0 && Errno.Last == Errno.EINTR)
        {
        }

        if (n == 1)
        {
            return 0; // the server unmounted it
        }

        int fd = Libc.open(mountpoint, Libc.O_PATH | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        if (fd < 0)
        {
            return 0;
        }

        try
        {
            if (MountIdentity.Of(fd) != identity)
            {
                return 0; // unmounted, or something else is mounted there now: not ours to touch
            }

            Abort(identity);
            bool done = args[2] == Mount && Libc.umount2($"/proc/self/fd/{fd}", Libc.MNT_DETACH) == 0;
            if (!done)
            {
                done = KernelMount.RunFusermountUnmount(mountpoint, log);
            }

            log(done
                ? $"the server (pid {args[3]}) is gone; unmounted {mountpoint}"
                : $"the server (pid {args[3]}) is gone; cannot unmount {mountpoint}");
            return 0;
        }
        finally
        {
            Libc.close(fd);
        }
    }

    /// <summary>Aborts the FUSE connection (fusectl), so requests still queued fail at once; quietly nothing without fusectl.</summary>
    private static void Abort(MountIdentity identity)
    {
        // fusectl names a connection by the kernel's dev_t: (major << 20) | minor.
        ulong dev = ((ulong)identity.DevMajor << 20) | identity.DevMinor;
        int fd = Libc.open($"/sys/fs/fuse/connections/{dev}/abort", Libc.O_WRONLY | Libc.O_CLOEXEC, 0);
        if (fd >= 0)
        {
            byte one = (byte)'1';
            Libc.write(fd, &one, 1);
            Libc.close(fd);
        }
    }
}

/// <summary>What tells a mount from any other at the same path: its mount id (unique since Linux 6.8) and device.</summary>
internal readonly record struct MountIdentity(bool Unique, ulong MountId, uint DevMajor, uint DevMinor)
{
    /// <summary>The mount at <paramref name="path"/> (the top one), or null with the errno (0: no mount id reported).</summary>
    public static MountIdentity? Of(string path, out int errno)
    {
        int fd = Libc.open(path, Libc.O_PATH | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        if (fd < 0)
        {
            errno = Errno.Last;
            return null;
        }

        var identity = Of(fd);
        errno = identity is null ? Errno.Last : 0;
        Libc.close(fd);
        return identity;
    }

    /// <summary>
    /// The mount <paramref name="fd"/> is on. AT_STATX_DONT_SYNC: never a request to the filesystem, which may be dead
    /// (FUSE answers from what it holds).
    /// </summary>
    public static unsafe MountIdentity? Of(int fd)
    {
        Libc.Statx stat;
        if (Libc.statx(fd, "", Libc.AT_EMPTY_PATH | Libc.AT_STATX_DONT_SYNC, Libc.STATX_MNT_ID_UNIQUE, &stat) < 0)
        {
            return null;
        }

        if ((stat.Mask & (Libc.STATX_MNT_ID_UNIQUE | Libc.STATX_MNT_ID)) == 0)
        {
            Marshal.SetLastPInvokeError(0);
            return null;
        }

        return new MountIdentity((stat.Mask & Libc.STATX_MNT_ID_UNIQUE) != 0, stat.MountId, stat.DevMajor, stat.DevMinor);
    }

    public string Format() =>
        string.Create(CultureInfo.InvariantCulture, $"{(Unique ? 'u' : 'm')}{MountId}@{DevMajor}:{DevMinor}");

    public static bool TryParse(string text, out MountIdentity identity)
    {
        identity = default;
        int at = text.IndexOf('@', StringComparison.Ordinal);
        int colon = text.IndexOf(':', StringComparison.Ordinal);
        if (text.Length < 2 || text[0] is not ('u' or 'm') || at < 0 || colon < at)
        {
            return false;
        }

        if (!ulong.TryParse(text.AsSpan(1, at - 1), NumberStyles.None, CultureInfo.InvariantCulture, out ulong id) ||
            !uint.TryParse(text.AsSpan(at + 1, colon - at - 1), NumberStyles.None, CultureInfo.InvariantCulture, out uint major) ||
            !uint.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out uint minor))
        {
            return false;
        }

        identity = new MountIdentity(text[0] == 'u', id, major, minor);
        return true;
    }
}
