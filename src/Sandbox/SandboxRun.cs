using System.Buffers;
using System.Buffers.Binary;
using System.ComponentModel;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Sandbox;

/// <summary>
/// One run seen from the caller's side: starts the init (which enters the namespaces), sends the plan, pumps the output, enforces the
/// timeouts and limits, and on any kill asks the init to exit (or kills it), then waits until the namespace is gone.
/// </summary>
internal sealed class SandboxRun(SandboxSpec spec, InitPlan plan, InitLauncher launcher, SandboxOutput? output)
{
    private const int TailBytes = 64 * 1024;

    private readonly TaskCompletionSource<SandboxOutcome> _kill = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly LogTail _tail = new(TailBytes);
    private long _logBytes;
    private long _lastOutput = Stopwatch.GetTimestamp();
    private long _started;
    private Exception? _sinkError;
    private readonly SemaphoreSlim _controlLock = new(1, 1);
    private IBuildCgroup? _cgroup;
    private IReadOnlyList<SandboxLimit> _hits = [];

    /// <summary>Serializes the starts that hand descriptors to an init, so one build's never reach another's.</summary>
    private static readonly Lock s_startLock = new();

    public async Task<SandboxResult> ExecuteAsync(CancellationToken cancellationToken)
    {
        // Released only after the sandbox is gone: the init's outer process exits after every process of the namespace.
        BuildUser? claimed = spec.User is null ? BuildUser.Claim() : null;
        try
        {
            return await ExecuteAsync(spec.User ?? claimed!, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            claimed?.Dispose();
        }
    }

    private async Task<SandboxResult> ExecuteAsync(BuildUser user, CancellationToken cancellationToken)
    {
        long start = Stopwatch.GetTimestamp();
        var groups = PrepareHost(user);
        _cgroup = BuildCgroups.Create(spec.Limits);
        KillPoint.Reach(KillPoint.AfterCgroupCreated);
        plan.InCgroup = _cgroup is not null;
        using var cgroup = _cgroup;
        FileStream? log = spec.LogFile is null ? null : OpenLog(spec.LogFile);
        Process process;
        try
        {
            process = Start(launcher.CreateStartInfo(plan.Network, groups, user, _cgroup, spec.Limits.MaxProcesses));
        }
        catch (Win32Exception e)
        {
            log?.Dispose();
            throw new SandboxException($"cannot start {launcher.Init[0]}: {e.Message}");
        }
        catch
        {
            log?.Dispose();
            throw;
        }

        using (process)
        await using (log)
        {
            try
            {
                return await SuperviseAsync(process, log, start, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                // Whatever went wrong on this side, the namespace must not outlive the call.
                if (!process.HasExited)
                {
                    KillTree(process);
                    await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
                }
            }
        }
    }

    /// <summary>
    /// Starts the init. As root, the host mounts are taken here (see <see cref="HostMounts"/>) and reach
    /// the init as inherited descriptors: close-on-exec is cleared only while the lock is held, so no other sandbox
    /// start of this process inherits them. Another Process.Start of this process (a fusermount3, say) may still
    /// inherit them for the moment it runs; it cannot use them, and the init closes whatever it inherited but does not
    /// use. Here they are closed as soon as the init has them.
    /// </summary>
    private Process Start(ProcessStartInfo startInfo)
    {
        if (!BuildUser.IsRoot)
        {
            return Process.Start(startInfo) ?? throw new SandboxException($"cannot start {launcher.Init[0]}");
        }

        HostMounts mounts;
        try
        {
            mounts = HostMounts.Take(plan);
        }
        catch (SandboxSetupException e)
        {
            throw new SandboxException($"cannot set up the sandbox: {e.Message}");
        }

        try
        {
            plan.Mounts = mounts;
            lock (s_startLock)
            {
                foreach (int fd in mounts.All)
                {
                    SandboxSetupException.Check(Libc.fcntl(fd, Libc.F_SETFD, 0), "pass a mount to the sandbox");
                }

                return Process.Start(startInfo) ?? throw new SandboxException($"cannot start {launcher.Init[0]}");
            }
        }
        catch (SandboxSetupException e)
        {
            throw new SandboxException($"cannot set up the sandbox: {e.Message}");
        }
        finally
        {
            mounts.Close();
        }
    }

    private async Task<SandboxResult> SuperviseAsync(Process process, FileStream? log, long start, CancellationToken cancellationToken)
    {
        var control = process.StandardInput.BaseStream;
        var outputTask = PumpOutputAsync(process.StandardError.BaseStream, log, cancellationToken);
        var statusTask = ReadStatusAsync(process.StandardOutput.BaseStream);
        // False when the init died before reading its plan; its status (or the lack of one) says why.
        _ = await WriteControlAsync(control, plan.Encode()).ConfigureAwait(false);
        KillPoint.Reach(KillPoint.AfterSandboxStarted);

        SandboxOutcome? killed = null;
        using (cancellationToken.Register(static s => ((SandboxRun)s!)._kill.TrySetResult(SandboxOutcome.Cancelled), this))
        {
            killed = await WatchAsync(statusTask, start).ConfigureAwait(false);
        }

        if (killed is not null)
        {
            await KillAsync(process, control).ConfigureAwait(false);
        }

        var status = await statusTask.ConfigureAwait(false);
        await DisposeControlAsync(control).ConfigureAwait(false);
        await WaitForExitAsync(process).ConfigureAwait(false);
        await outputTask.ConfigureAwait(false);
        KillPoint.Reach(KillPoint.AfterCommandExited);
        long end = Stopwatch.GetTimestamp();

        if (_sinkError is not null)
        {
            throw _sinkError;
        }

        var hits = new List<SandboxLimit>(_cgroup?.Hits() ?? []);
        if (status is (InitMessage.Exited, { Length: >= 8 } exited))
        {
            var full = (InitMessage.FullTmpfs)BinaryPrimitives.ReadInt32LittleEndian(exited.AsSpan(4));
            if (full.HasFlag(InitMessage.FullTmpfs.Tmp))
            {
                hits.Add(SandboxLimit.Tmp);
            }

            if (full.HasFlag(InitMessage.FullTmpfs.DevShm))
            {
                hits.Add(SandboxLimit.DevShm);
            }
        }

        _hits = hits;

        TimeSpan setup = _started == 0 ? Stopwatch.GetElapsedTime(start, end) : Stopwatch.GetElapsedTime(start, _started);
        TimeSpan run = _started == 0 ? TimeSpan.Zero : Stopwatch.GetElapsedTime(_started, end);
        if (killed is { } reason)
        {
            return Result(reason, null, null, setup, run);
        }

        switch (status)
        {
            case (InitMessage.Exited, var payload):
                int wait = BinaryPrimitives.ReadInt32LittleEndian(payload);
                return (wait & 0x7f) == 0
                    ? Result(SandboxOutcome.Exited, (wait >> 8) & 0xff, null, setup, run)
                    : Result(SandboxOutcome.Signaled, null, wait & 0x7f, setup, run);
            case (InitMessage.Error, var payload):
                throw new SandboxException($"cannot set up the sandbox: {Encoding.UTF8.GetString(payload)}");
            case null when hits.Contains(SandboxLimit.Memory):
                // The kernel's OOM killer chose the init itself: the whole build went with it.
                return Result(SandboxOutcome.Signaled, null, 9, setup, run);
            default:
                string tail = _tail.ToString().Trim();
                throw new SandboxException(
                    $"the sandbox ended before the command did (exit code {process.ExitCode} of {Path.GetFileName(process.StartInfo.FileName)})" +
                    (tail.Length > 0 ? ": " + tail : ""));
        }
    }

    /// <summary>Waits for the end, a kill request, or a deadline; returns why it must kill, or null when the init reported.</summary>
    private async Task<SandboxOutcome?> WatchAsync(Task statusTask, long start)
    {
        while (true)
        {
            if (statusTask.IsCompleted)
            {
                return null;
            }

            if (_kill.Task.IsCompleted)
            {
                return _kill.Task.Result;
            }

            TimeSpan wait = Timeout.InfiniteTimeSpan;
            long now = Stopwatch.GetTimestamp();
            if (spec.Timeout is { } timeout)
            {
                TimeSpan left = timeout - Stopwatch.GetElapsedTime(start, now);
                if (left <= TimeSpan.Zero)
                {
                    return SandboxOutcome.TimedOut;
                }

                wait = left;
            }

            if (spec.SilenceTimeout is { } silence)
            {
                TimeSpan left = silence - Stopwatch.GetElapsedTime(Volatile.Read(ref _lastOutput), now);
                if (left <= TimeSpan.Zero)
                {
                    return SandboxOutcome.SilenceTimedOut;
                }

                wait = wait == Timeout.InfiniteTimeSpan || left < wait ? left : wait;
            }

            using var delay = new CancellationTokenSource();
            var delayTask = Task.Delay(wait, delay.Token);
            await Task.WhenAny(statusTask, _kill.Task, delayTask).ConfigureAwait(false);
            delay.Cancel();
        }
    }

    /// <summary>Asks the init to end the namespace; kills the process tree if it does not within seconds.</summary>
    private async Task KillAsync(Process process, Stream control)
    {
        await WriteControlAsync(control, [InitMessage.Kill]).ConfigureAwait(false);
        await DisposeControlAsync(control).ConfigureAwait(false);
        using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        try
        {
            await process.WaitForExitAsync(grace.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            KillTree(process);
        }
    }

    /// <summary>The init's outer process exits only after the init is reaped, and the kernel reaps the init only after every process of its namespace.</summary>
    private static async Task WaitForExitAsync(Process process)
    {
        using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        try
        {
            await process.WaitForExitAsync(grace.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            KillTree(process);
            await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
        }
    }

    private static void KillTree(Process process)
    {
        try
        {
            process.Kill(entireProcessTree: true);
        }
        catch (InvalidOperationException)
        {
            // already gone
        }
    }

    /// <summary>Writes to the init's stdin (the plan, the go-ahead and the kill request come from different tasks).</summary>
    private async Task<bool> WriteControlAsync(Stream control, byte[] data)
    {
        await _controlLock.WaitAsync().ConfigureAwait(false);
        try
        {
            await control.WriteAsync(data, CancellationToken.None).ConfigureAwait(false);
            await control.FlushAsync(CancellationToken.None).ConfigureAwait(false);
            return true;
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            return false;
        }
        finally
        {
            _controlLock.Release();
        }
    }

    private async Task DisposeControlAsync(Stream control)
    {
        await _controlLock.WaitAsync().ConfigureAwait(false);
        try
        {
            await control.DisposeAsync().ConfigureAwait(false);
        }
        catch (IOException)
        {
        }
        finally
        {
            _controlLock.Release();
        }
    }

    private async Task<(byte Type, byte[] Payload)?> ReadStatusAsync(Stream status)
    {
        var header = new byte[5];
        while (true)
        {
            if (!await ReadExactAsync(status, header).ConfigureAwait(false))
            {
                return null;
            }

            var payload = new byte[BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(1))];
            if (!await ReadExactAsync(status, payload).ConfigureAwait(false))
            {
                return null;
            }

            if (header[0] == InitMessage.Started)
            {
                _started = Stopwatch.GetTimestamp();
                Volatile.Write(ref _lastOutput, _started);
                KillPoint.Reach(KillPoint.WhileCommandRuns);
                continue;
            }

            return (header[0], payload);
        }
    }

    private static async Task<bool> ReadExactAsync(Stream stream, byte[] buffer)
    {
        int done = 0;
        while (done < buffer.Length)
        {
            int n = await stream.ReadAsync(buffer.AsMemory(done), CancellationToken.None).ConfigureAwait(false);
            if (n == 0)
            {
                return false;
            }

            done += n;
        }

        return true;
    }

    /// <summary>Reads until every writer is gone (all processes of the namespace), forwarding up to the log limit.</summary>
    private async Task PumpOutputAsync(Stream stream, FileStream? log, CancellationToken cancellationToken)
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent(64 * 1024);
        try
        {
            while (true)
            {
                int n = await stream.ReadAsync(buffer, CancellationToken.None).ConfigureAwait(false);
                if (n == 0)
                {
                    return;
                }

                Volatile.Write(ref _lastOutput, Stopwatch.GetTimestamp());
                int keep = n;
                if (spec.LogLimit is { } limit && _logBytes + n > limit)
                {
                    keep = (int)Math.Max(0, limit - _logBytes);
                    _kill.TrySetResult(SandboxOutcome.LogLimitExceeded);
                }

                _logBytes += keep;
                if (keep == 0 || _sinkError is not null)
                {
                    continue; // keep draining so the build does not block until it is killed
                }

                var chunk = buffer.AsMemory(0, keep);
                _tail.Append(chunk.Span);
                try
                {
                    if (log is not null)
                    {
                        await log.WriteAsync(chunk, CancellationToken.None).ConfigureAwait(false);
                    }

                    if (output is not null)
                    {
                        await output(chunk, cancellationToken).ConfigureAwait(false);
                    }
                }
                catch (Exception e)
                {
                    _sinkError = e;
                    _kill.TrySetResult(SandboxOutcome.Cancelled);
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private SandboxResult Result(SandboxOutcome outcome, int? exitCode, int? signal, TimeSpan setup, TimeSpan run) => new()
    {
        Outcome = outcome,
        ExitCode = exitCode,
        Signal = signal,
        LogTail = _tail.ToString(),
        LogBytes = _logBytes,
        SetupTime = setup,
        RunTime = run,
        Limits = spec.Limits,
        LimitsHit = _hits,
        LimitsWatched = [.. _cgroup?.Watched ?? [], SandboxLimit.Tmp, SandboxLimit.DevShm],
    };

    /// <summary>
    /// Never through a symlink (O_NOFOLLOW), and only a regular file (truncated), a character device or a FIFO. The
    /// tool does not come here: it writes its --log-file with Castore's HostFile, which also never truncates in place.
    /// </summary>
    private static FileStream OpenLog(string path)
    {
        int fd = Libc.openat(Libc.AT_FDCWD, path, Libc.O_WRONLY | Libc.O_CREAT | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0x1B6);
        if (fd < 0)
        {
            int errno = Errno.Last;
            throw new SandboxException(
                $"cannot open the log file {path}: {(errno == Errno.ELOOP ? "it is a symbolic link" : Errno.Text(errno))}");
        }

        var handle = new SafeFileHandle(fd, ownsHandle: true);
        int type = Libc.StatMode(fd, "", Libc.AT_EMPTY_PATH) & (int)Libc.S_IFMT;
        if (type == (int)Libc.S_IFREG)
        {
            RandomAccess.SetLength(handle, 0);
        }
        else if (type != (int)Libc.S_IFCHR && type != (int)Libc.S_IFIFO)
        {
            handle.Dispose();
            throw new SandboxException($"cannot open the log file {path}: it is not a regular file, character device or FIFO");
        }

        return new FileStream(handle, FileAccess.Write, 4096);
    }

    /// <summary>
    /// As root, the build's user must own the scratch directories, and it keeps the groups that give access to the
    /// read-only host paths (such as kvm for /dev/kvm). Unprivileged, the read-only paths are checked here so that a
    /// refusal is one (the init resolves them again in its namespace).
    /// </summary>
    private IReadOnlyCollection<int> PrepareHost(BuildUser user)
    {
        if (!BuildUser.IsRoot)
        {
            foreach (var path in plan.ReadOnlyPaths)
            {
                Libc.close(ReadOnlyPaths.Open(path, plan.ProtectedPaths, out _));
            }

            return [];
        }

        foreach (var (_, host) in plan.Scratch)
        {
            // The directory itself, not its contents: scratch directories are created empty by the caller.
            if (Libc.lchown(host, user.Uid, user.Gid) < 0)
            {
                throw new SandboxException(SandboxSetupException.FromErrno($"chown {host} to the build user {user.Uid}", Errno.Last).Message);
            }
        }

        var groups = new SortedSet<int>();
        foreach (var path in plan.ReadOnlyPaths)
        {
            int gid = Libc.GetGid(path);
            if (gid > 0)
            {
                groups.Add(gid);
            }
        }

        return groups;
    }

    /// <summary>The last bytes of the output, kept in a ring.</summary>
    private sealed class LogTail(int capacity)
    {
        private readonly byte[] _ring = new byte[capacity];
        private long _total;

        public void Append(ReadOnlySpan<byte> data)
        {
            if (data.Length >= _ring.Length)
            {
                data = data[^_ring.Length..];
            }

            int at = (int)(_total % _ring.Length);
            int first = Math.Min(data.Length, _ring.Length - at);
            data[..first].CopyTo(_ring.AsSpan(at));
            data[first..].CopyTo(_ring);
            _total += data.Length;
        }

        public override string ToString()
        {
            if (_total <= _ring.Length)
            {
                return Encoding.UTF8.GetString(_ring, 0, (int)_total);
            }

            int at = (int)(_total % _ring.Length);
            var ordered = new byte[_ring.Length];
            _ring.AsSpan(at).CopyTo(ordered);
            _ring.AsSpan(0, at).CopyTo(ordered.AsSpan(_ring.Length - at));
            return Encoding.UTF8.GetString(ordered);
        }
    }
}
