using System.Diagnostics;
using System.Runtime.InteropServices;
using TvixFuseBuild.Native;
using TvixFuseBuild.Fuse.Session;

namespace TvixFuseBuild.Fuse.Mounting;

/// <summary>How a FUSE filesystem is mounted (the kernel side; what it serves is the session's business).</summary>
internal sealed record MountSettings(string FsName, string Subtype, bool AllowOther, uint Uid, uint Gid);

/// <summary>
/// A FUSE mount: <c>mount(2)</c> with a fresh /dev/fuse file when we may (root), else <c>fusermount3</c>, which mounts
/// for us and hands the /dev/fuse file back over a unix socket. Always read-only, nosuid, nodev, default_permissions.
/// If the serving process dies, readers get ENOTCONN and the mount stays until its watchdog
/// (<see cref="MountWatchdog"/>) or the next start (<see cref="StaleMounts"/>) removes it.
/// </summary>
internal sealed unsafe class KernelMount : IDisposable
{
    private const string FusermountEnvironment = "_FUSE_COMMFD";


    private readonly Action<string> _log;
    private int _unmounted;

    private KernelMount(string mountpoint, FuseChannel channel, bool viaFusermount, Action<string> log)
    {
        Mountpoint = mountpoint;
        Channel = channel;
        ViaFusermount = viaFusermount;
        _log = log;
    }

    public string Mountpoint { get; }

    /// <summary>The /dev/fuse file of the new connection (owned by the caller from here on).</summary>
    public FuseChannel Channel { get; }

    public bool ViaFusermount { get; }

    public static KernelMount Mount(string mountpoint, MountSettings settings, Action<string> log)
    {
        if (Libc.geteuid() == 0)
        {
            var channel = FuseChannel.OpenDevice();
            string data = $"fd={channel.Fd},rootmode=40000,user_id={settings.Uid},group_id={settings.Gid},default_permissions" +
                (settings.AllowOther ? ",allow_other" : string.Empty);
            if (Libc.mount(settings.FsName, mountpoint, "fuse." + settings.Subtype,
                    Libc.MS_RDONLY | Libc.MS_NOSUID | Libc.MS_NODEV, data) == 0)
            {
                return new KernelMount(mountpoint, channel, viaFusermount: false, log);
            }

            int errno = Marshal.GetLastPInvokeError();
            channel.Dispose();
            if (errno != Errno.EPERM)
            {
                throw FuseException.FromErrno($"mount FUSE at {mountpoint}", errno);
            }

            // Root without CAP_SYS_ADMIN in this mount namespace: fusermount3 may still do it.
            log($"mount(2) at {mountpoint} not permitted; trying fusermount3");
        }

        return MountWithFusermount(mountpoint, settings, log);
    }

    private static KernelMount MountWithFusermount(string mountpoint, MountSettings settings, Action<string> log)
    {
        string fusermount = FindFusermount() ??
            throw new FuseException("mounting as a user needs fusermount3 (Debian package fuse3), which is not installed");

        int* pair = stackalloc int[2];
        if (Libc.socketpair(Libc.AF_UNIX, Libc.SOCK_STREAM | Libc.SOCK_CLOEXEC, 0, pair) < 0)
        {
            throw FuseException.FromErrno("socketpair");
        }

        int ours = pair[0], theirs = pair[1];
        Process? process = null;
        try
        {
            // Only fusermount3 may inherit its end (a build started from this process later must not).
            Libc.fcntl(theirs, Libc.F_SETFD, 0);
            string options = $"ro,nosuid,nodev,default_permissions,fsname={settings.FsName},subtype={settings.Subtype}" +
                (settings.AllowOther ? ",allow_other" : string.Empty);
            var start = new ProcessStartInfo(fusermount)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            start.ArgumentList.Add("-o");
            start.ArgumentList.Add(options);
            start.ArgumentList.Add("--");
            start.ArgumentList.Add(mountpoint);
            start.Environment[FusermountEnvironment] = theirs.ToString(System.Globalization.CultureInfo.InvariantCulture);
            var stderr = new System.Text.StringBuilder();
            process = Process.Start(start) ?? throw new FuseException($"cannot start {fusermount}");
            process.ErrorDataReceived += (_, e) =>
            {
                if (e.Data is { } line)
                {
                    lock (stderr)
                    {
                        stderr.AppendLine(line);
                    }
                }
            };
            process.OutputDataReceived += static (_, _) => { };
            process.BeginErrorReadLine();
            process.BeginOutputReadLine();
            Libc.close(theirs);
            theirs = -1;

            int fd = ReceiveFd(ours);
            if (fd < 0)
            {
                // The untimed wait also drains the redirected output, so the message below is complete.
                if (process.WaitForExit(10_000))
                {
                    process.WaitForExit();
                }

                string message;
                lock (stderr)
                {
                    message = stderr.ToString().Trim().ReplaceLineEndings(" ");
                }

                throw new FuseException($"fusermount3 could not mount {mountpoint}: {(message.Length > 0 ? message : "no reason given")}");
            }

            var channel = FuseChannel.Adopt(fd);
            if (!process.WaitForExit(10_000))
            {
                log($"fusermount3 did not exit after mounting {mountpoint}");
            }

            return new KernelMount(mountpoint, channel, viaFusermount: true, log);
        }
        finally
        {
            if (theirs >= 0)
            {
                Libc.close(theirs);
            }

            if (ours >= 0)
            {
                Libc.close(ours);
            }

            process?.Dispose();
        }
    }

    /// <summary>Receives the /dev/fuse descriptor fusermount3 sends (SCM_RIGHTS); -1 when it closed the socket instead.</summary>
    private static int ReceiveFd(int socket)
    {
        byte data;
        var iov = new Libc.IoVec { Base = &data, Length = 1 };

        // CMSG_SPACE(sizeof(int)): the 16-byte header plus the int, padded to 8.
        const int ControlSize = 24;
        byte* control = stackalloc byte[ControlSize];
        new Span<byte>(control, ControlSize).Clear();
        var message = new Libc.MsgHdr { Iov = &iov, IovLength = 1, Control = control, ControlLength = ControlSize };
        while (true)
        {
            nint n = Libc.recvmsg(socket, &message, Libc.MSG_CMSG_CLOEXEC);
            if (n < 0 && Marshal.GetLastPInvokeError() == Errno.EINTR)
            {
                continue;
            }

            if (n <= 0)
            {
                return -1;
            }

            var header = (Libc.CMsgHdr*)control;
            if (message.ControlLength >= (nuint)sizeof(Libc.CMsgHdr) + sizeof(int) &&
                header->Level == Libc.SOL_SOCKET && header->Type == Libc.SCM_RIGHTS)
            {
                return *(int*)(control + sizeof(Libc.CMsgHdr));
            }

            return -1;
        }
    }

    internal static string? FindFusermount()
    {
        foreach (string name in new[] { "fusermount3", "fusermount" })
        {
            foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':'))
            {
                string candidate = Path.Combine(dir.Length == 0 ? "." : dir, name);
                if (File.Exists(candidate))
                {
                    return candidate;
                }
            }
        }

        return null;
    }

    /// <summary>Detaches the mount (lazily: open files keep working until closed). Idempotent; logs failures.</summary>
    public void Unmount()
    {
        if (Interlocked.Exchange(ref _unmounted, 1) != 0)
        {
            return;
        }

        if (!ViaFusermount)
        {
            if (Libc.umount2(Mountpoint, Libc.MNT_DETACH) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno != Errno.EINVAL && errno != Errno.ENOENT)
                {
                    _log($"unmounting {Mountpoint} failed: {Errno.Text(errno)}");
                }
            }

            return;
        }

        RunFusermountUnmount(Mountpoint, _log);
    }

    /// <summary><c>fusermount3 -u -z</c>: how a user detaches a FUSE mount of theirs.</summary>
    internal static bool RunFusermountUnmount(string mountpoint, Action<string> log)
    {
        string? fusermount = FindFusermount();
        if (fusermount is null)
        {
            log($"cannot unmount {mountpoint}: fusermount3 is not installed");
            return false;
        }

        var start = new ProcessStartInfo(fusermount) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        foreach (string arg in new[] { "-u", "-z", "-q", "--", mountpoint })
        {
            start.ArgumentList.Add(arg);
        }

        using var process = Process.Start(start);
        if (process is null)
        {
            return false;
        }

        string error = process.StandardError.ReadToEnd();
        process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0)
        {
            log($"fusermount3 -u {mountpoint}: {error.Trim()}");
        }

        return process.ExitCode == 0;
    }

    public void Dispose()
    {
        Unmount();
    }
}
