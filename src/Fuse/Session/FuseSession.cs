using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Fuse.Abi;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Fuse.Session;

/// <summary>Tunables of a session; the defaults are what the benchmark chose.</summary>
internal sealed record FuseSessionOptions
{
    /// <summary>The most worker threads reading requests; one starts with the session, more as all are busy.</summary>
    public int Threads { get; init; } = 4;

    /// <summary>Start all <see cref="Threads"/> workers with the session (the old behaviour; the bench compares).</summary>
    public bool EagerWorkers { get; init; }

    /// <summary>Give each worker its own cloned /dev/fuse file (its own processing queue) instead of sharing one.</summary>
    public bool CloneDevice { get; init; } = true;

    /// <summary>Background requests (readahead, async reads) the kernel keeps in flight; 12 is its stall-prone default.</summary>
    public ushort MaxBackground { get; init; } = 256;

    /// <summary>Pages per request: 256 = 1 MiB reads.</summary>
    public int MaxPages { get; init; } = FuseConstants.MaxPages;

    public bool ReaddirPlus { get; init; } = true;

    /// <summary>Ask for FUSE_PASSTHROUGH (the filesystem uses it only where it has a backing file and the kernel agrees).</summary>
    public bool Passthrough { get; init; }

    /// <summary>Offer to do without OPEN and RELEASE for files (FUSE_NO_OPEN_SUPPORT); the file system then answers OPEN with ENOSYS.</summary>
    public bool NoOpen { get; init; }

    public Action<string>? Log { get; init; }
}

/// <summary>
/// A FUSE connection being served: INIT negotiation, worker threads reading requests from /dev/fuse and dispatching
/// them to a <see cref="FuseFileSystem"/>, INTERRUPT of requests waiting for the store, and the end of it all
/// (the kernel tells readers ENODEV once the filesystem is unmounted).
/// </summary>
internal sealed class FuseSession : IDisposable
{
    /// <summary>The largest write we accept; only sizes the request buffer (the filesystem is read-only).</summary>
    internal const int MaxWrite = 128 * 1024;

    /// <summary>A request buffer the kernel accepts: headers + max_write, at least FUSE_MIN_READ_BUFFER.</summary>
    internal const int RequestBufferSize = MaxWrite + FuseConstants.PageSize;

    private const int ContextPoolLimit = 32;

    private readonly FuseChannel _channel;
    private readonly FuseFileSystem _fileSystem;
    private readonly FuseSessionOptions _options;
    private readonly List<FuseWorker> _workers = [];
    private readonly List<FuseChannel> _clones = [];
    private readonly ConcurrentDictionary<ulong, FuseRequestContext> _pending = new();
    private readonly ConcurrentQueue<FuseRequestContext> _contextPool = new();
    private readonly ulong[] _recentInterrupts = new ulong[16];
    private readonly TaskCompletionSource<FuseConnectionInfo> _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _recentInterruptNext;
    private int _stopFd = -1;
    private int _runningWorkers;
    private int _idleWorkers;
    private int _addingWorker;
    private bool _cloneFailureLogged;
    private int _destroyed;
    private volatile bool _stopping;

    public FuseSession(FuseChannel channel, FuseFileSystem fileSystem, FuseSessionOptions options)
    {
        _channel = channel;
        _fileSystem = fileSystem;
        _options = options;
        PayloadCapacity = Math.Clamp(options.MaxPages, 1, FuseConstants.MaxPages) * FuseConstants.PageSize;
    }

    /// <summary>Completes after INIT with what was negotiated; fails if the kernel's protocol is not acceptable.</summary>
    public Task<FuseConnectionInfo> Ready => _ready.Task;

    /// <summary>Completes when every worker has stopped (unmounted, aborted, or <see cref="RequestStop"/>).</summary>
    public Task Completion => _completion.Task;

    public FuseConnectionInfo? Connection { get; private set; }

    /// <summary>The reply payload a context can hold: the largest READ.</summary>
    internal int PayloadCapacity { get; }

    internal bool Stopping => _stopping;

    internal FuseFileSystem FileSystem => _fileSystem;

    internal FuseSessionOptions Options => _options;

    /// <summary>The connection's main /dev/fuse file (for ioctls such as passthrough's backing files).</summary>
    internal FuseChannel Channel => _channel;

    /// <summary>How many workers got a cloned /dev/fuse file.</summary>
    public int ClonedChannels
    {
        get
        {
            lock (_workers)
            {
                return _clones.Count;
            }
        }
    }

    /// <summary>Workers started so far (for tests and the bench).</summary>
    internal int WorkerCount
    {
        get
        {
            lock (_workers)
            {
                return _workers.Count;
            }
        }
    }

    public void Start()
    {
        _stopFd = Libc.eventfd(0, Libc.EFD_CLOEXEC | Libc.EFD_NONBLOCK);
        if (_stopFd < 0)
        {
            throw FuseException.FromErrno("eventfd");
        }

        int threads = _options.EagerWorkers ? Math.Max(1, _options.Threads) : 1;
        for (int i = 0; i < threads; i++)
        {
            AddWorker(throwOnFailure: true);
        }
    }

    /// <summary>
    /// A worker took a request. When no other one is left waiting, start another (up to <see cref="FuseSessionOptions.Threads"/>)
    /// so a request that blocks this one in the store does not hold up the next (as go-fuse does with its readers). The
    /// start runs on the thread pool, beside the request rather than before it.
    /// </summary>
    internal void OnWorkerBusy(bool mayBlock)
    {
        if (Interlocked.Decrement(ref _idleWorkers) == 0 && mayBlock && !_stopping && Volatile.Read(ref _runningWorkers) < _options.Threads &&
            Interlocked.CompareExchange(ref _addingWorker, 1, 0) == 0)
        {
            ThreadPool.UnsafeQueueUserWorkItem(
                static session => session.AddWorker(throwOnFailure: false),
                this,
                preferLocal: false);
        }
    }

    internal void OnWorkerIdle() => Interlocked.Increment(ref _idleWorkers);

    private void AddWorker(bool throwOnFailure)
    {
        lock (_workers)
        {
            // Cleared before the new worker can take a request: when it too finds no one waiting, it asks for another.
            Volatile.Write(ref _addingWorker, 0);

            // None running: the session ended (or is ending), and Completion may already be set.
            if (_stopping || _workers.Count >= Math.Max(1, _options.Threads) || (_workers.Count > 0 && _runningWorkers == 0))
            {
                return;
            }

            int index = _workers.Count;
            FuseChannel? clone = null;
            FuseWorker worker;
            try
            {
                if (index > 0 && _options.CloneDevice)
                {
                    clone = _channel.TryClone(out int errno);
                    if (clone is null && !_cloneFailureLogged)
                    {
                        _cloneFailureLogged = true;
                        Log($"cannot clone /dev/fuse ({Errno.Text(errno)}); the workers share one file");
                    }
                }

                worker = new FuseWorker(this, clone ?? _channel, _stopFd, index);
            }
            catch (Exception e) when (!throwOnFailure)
            {
                clone?.Dispose();
                Log($"cannot start another FUSE worker: {Describe(e)}");
                return;
            }

            if (clone is not null)
            {
                _clones.Add(clone);
            }

            _workers.Add(worker);
            _runningWorkers++;
            Interlocked.Increment(ref _idleWorkers);
            worker.Start();
        }
    }

    /// <summary>Asks every worker to stop after its current request.</summary>
    public void RequestStop()
    {
        _stopping = true;
        if (_stopFd >= 0)
        {
            ulong one = 1;
            unsafe
            {
                Libc.write(_stopFd, &one, sizeof(ulong));
            }
        }
    }

    internal FuseRequestContext RentContext() =>
        _contextPool.TryDequeue(out var context) ? context : new FuseRequestContext(this, PayloadCapacity);

    internal void ReturnContext(FuseRequestContext context)
    {
        if (_contextPool.Count < ContextPoolLimit)
        {
            _contextPool.Enqueue(context);
        }
    }

    internal void RegisterPending(FuseRequestContext context)
    {
        _pending[context.Unique] = context;
        if (TakeRecentInterrupt(context.Unique))
        {
            context.Interrupt();
        }
    }

    internal void UnregisterPending(FuseRequestContext context) =>
        _pending.TryRemove(new KeyValuePair<ulong, FuseRequestContext>(context.Unique, context));

    /// <summary>FUSE_INTERRUPT for <paramref name="unique"/>.</summary>
    internal void Interrupt(ulong unique)
    {
        if (_pending.TryGetValue(unique, out var context))
        {
            context.Interrupt();
            return;
        }

        // Not waiting for the store (yet): it is either being answered right now, or about to wait. Remember it, so
        // that a request that starts waiting afterwards is interrupted at once.
        lock (_recentInterrupts)
        {
            _recentInterrupts[_recentInterruptNext] = unique;
            _recentInterruptNext = (_recentInterruptNext + 1) % _recentInterrupts.Length;
        }
    }

    private bool TakeRecentInterrupt(ulong unique)
    {
        lock (_recentInterrupts)
        {
            int i = Array.IndexOf(_recentInterrupts, unique);
            if (i < 0)
            {
                return false;
            }

            _recentInterrupts[i] = 0;
            return true;
        }
    }

    /// <summary>Waits for a request that went asynchronous, then recycles its context.</summary>
    internal async void ObserveAsync(ValueTask handler, FuseRequestContext context)
    {
        try
        {
            await handler.ConfigureAwait(false);
        }
        catch (Exception e)
        {
            FailRequest(context, e);
        }
        finally
        {
            if (!context.Replied)
            {
                Log($"{context.Opcode} of node {context.NodeId} finished without a reply; answering EIO");
                context.ReplyError(Errno.EIO);
            }

            ReturnContext(context);
        }
    }

    /// <summary>A handler threw: EINTR when it was cancelled, else EIO and a log line.</summary>
    internal void FailRequest(FuseRequestContext context, Exception e)
    {
        if (e is OperationCanceledException && context.Token.IsCancellationRequested)
        {
            context.ReplyError(Errno.EINTR);
            return;
        }

        if (!context.Replied)
        {
            Log($"{context.Opcode} of node {context.NodeId}: {Describe(e)}");
        }

        context.ReplyError(Errno.EIO);
    }

    internal static string Describe(Exception e) => e switch
    {
        CastoreException or IOException => e.Message,
        _ => $"{e.GetType().Name}: {e.Message}",
    };

    internal void OnReplyFailed(FuseRequestContext context, int errno)
    {
        // ENOENT: the request is gone (interrupted or aborted); ENODEV: the filesystem is unmounted.
        if (errno is not (Errno.ENOENT or Errno.ENODEV))
        {
            Log($"writing the reply to {context.Opcode} (unique {context.Unique}) failed: {Errno.Text(errno)}");
        }
    }

    internal void Log(string message)
    {
        try
        {
            _options.Log?.Invoke(message);
        }
        catch (Exception)
        {
            // A failing logger must not take the filesystem down.
        }
    }

    /// <summary>FUSE_INIT: negotiates the protocol and replies. Runs on the worker that read it.</summary>
    internal void HandleInit(FuseRequestContext context, ReadOnlySpan<byte> payload)
    {
        FuseInitIn init = default;
        payload[..Math.Min(payload.Length, Unsafe.SizeOf<FuseInitIn>())].CopyTo(MemoryMarshal.AsBytes(new Span<FuseInitIn>(ref init)));
        if (init.Major < FuseConstants.KernelMajor || (init.Major == FuseConstants.KernelMajor && init.Minor < FuseConstants.OldestMinor))
        {
            context.ReplyError(Errno.EPROTO);
            _ready.TrySetException(new FuseException(
                $"the kernel speaks FUSE {init.Major}.{init.Minor}; tvix-fuse-build needs {FuseConstants.KernelMajor}.{FuseConstants.OldestMinor} or newer"));
            return;
        }

        if (init.Major > FuseConstants.KernelMajor)
        {
            // Reply with our major version only; the kernel then sends INIT again in ours.
            context.Reply(new FuseInitOut { Major = FuseConstants.KernelMajor, Minor = FuseConstants.KernelMinor });
            return;
        }

        var offered = (FuseInitFlags)init.Flags;
        if ((offered & FuseInitFlags.InitExt) != 0)
        {
            offered |= (FuseInitFlags)((ulong)init.Flags2 << 32);
        }

        var wanted = FuseInitFlags.AsyncRead | FuseInitFlags.ParallelDirops | FuseInitFlags.MaxPages |
            FuseInitFlags.CacheSymlinks | FuseInitFlags.InitExt | FuseInitFlags.NoExportSupport;
        if (_options.ReaddirPlus)
        {
            wanted |= FuseInitFlags.DoReaddirplus | FuseInitFlags.ReaddirplusAuto;
        }

        if (_options.Passthrough)
        {
            wanted |= FuseInitFlags.Passthrough;
        }
        else if (_options.NoOpen)
        {
            wanted |= FuseInitFlags.NoOpenSupport;
        }

        var agreed = wanted & offered;
        bool passthrough = (agreed & FuseInitFlags.Passthrough) != 0;
        int maxPages = Math.Clamp(_options.MaxPages, 1, FuseConstants.MaxPages);
        ushort maxBackground = Math.Max((ushort)1, _options.MaxBackground);
        var reply = new FuseInitOut
        {
            Major = FuseConstants.KernelMajor,
            Minor = Math.Min(init.Minor, FuseConstants.KernelMinor),
            MaxReadahead = init.MaxReadahead,
            Flags = (uint)agreed,
            Flags2 = (uint)((ulong)agreed >> 32),
            MaxBackground = maxBackground,
            CongestionThreshold = (ushort)Math.Max(1, maxBackground * 3 / 4),
            MaxWrite = MaxWrite,
            TimeGran = 1,
            MaxPages = (ushort)maxPages,

            // Passthrough stacks us on the backing files' filesystem; 1 leaves room for an overlayfs on top of us.
            MaxStackDepth = passthrough ? 1u : 0u,
        };

        var connection = new FuseConnectionInfo(reply.Minor, agreed, maxPages * FuseConstants.PageSize, passthrough);
        Connection = connection;
        _fileSystem.OnInit(this, connection);
        if (!context.Reply(reply))
        {
            _ready.TrySetException(new FuseException("the kernel did not accept our FUSE_INIT reply"));
            return;
        }

        _ready.TrySetResult(connection);
    }

    internal void HandleDestroy(FuseRequestContext context)
    {
        Destroy();
        context.ReplyEmpty();
        RequestStop();
    }

    private void Destroy()
    {
        if (Interlocked.Exchange(ref _destroyed, 1) == 0)
        {
            try
            {
                _fileSystem.OnDestroy();
            }
            catch (Exception e)
            {
                Log($"releasing the filesystem failed: {Describe(e)}");
            }
        }
    }

    /// <summary>A worker ended: on ENODEV (unmounted), a fatal read error, or a stop request.</summary>
    internal void OnWorkerExit(string? fatal)
    {
        if (fatal is not null)
        {
            Log(fatal);
            _ready.TrySetException(new FuseException(fatal));
            RequestStop();
        }

        bool last;
        lock (_workers)
        {
            last = --_runningWorkers == 0;
        }

        if (last)
        {
            _ready.TrySetException(new FuseException("the FUSE connection ended before it was initialized"));
            Destroy();
            _completion.TrySetResult();
        }
    }

    /// <summary>Waits for the workers to end; true when they all did in time.</summary>
    public bool Join(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        FuseWorker[] workers;
        lock (_workers)
        {
            workers = [.. _workers];
        }

        foreach (var worker in workers)
        {
            var left = deadline - DateTime.UtcNow;
            if (!worker.Join(left < TimeSpan.Zero ? TimeSpan.Zero : left))
            {
                return false;
            }
        }

        return true;
    }

    public void Dispose()
    {
        RequestStop();
        if (!Join(TimeSpan.FromSeconds(10)))
        {
            Log("FUSE workers did not stop within 10 s");
        }

        lock (_workers)
        {
            foreach (var worker in _workers)
            {
                worker.Dispose();
            }

            foreach (var clone in _clones)
            {
                clone.Dispose();
            }
        }

        if (_stopFd >= 0)
        {
            Libc.close(_stopFd);
            _stopFd = -1;
        }

        Destroy();
        _completion.TrySetResult();
    }
}
