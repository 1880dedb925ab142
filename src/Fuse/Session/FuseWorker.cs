using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TvixFuseBuild.Fuse.Abi;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Fuse.Session;

/// <summary>
/// A dedicated thread that reads requests from one /dev/fuse file and answers them. The file is non-blocking: the
/// worker reads until EAGAIN, then sleeps in epoll on the file (EPOLLEXCLUSIVE, so one request wakes one worker) and
/// on the session's stop eventfd. The session starts one and adds more while all are busy.
/// </summary>
internal sealed unsafe class FuseWorker : IDisposable
{
    private readonly FuseSession _session;
    private readonly FuseChannel _channel;
    private readonly Thread _thread;
    private readonly int _epoll;
    private byte* _request;
    private FuseRequestContext _context;

    public FuseWorker(FuseSession session, FuseChannel channel, int stopFd, int index)
    {
        _session = session;
        _channel = channel;
        _epoll = Libc.epoll_create1(Libc.EPOLL_CLOEXEC);
        if (_epoll < 0)
        {
            throw FuseException.FromErrno("epoll_create1");
        }

        var device = new Libc.EpollEvent { Events = Libc.EPOLLIN | Libc.EPOLLEXCLUSIVE, Data = 0 };
        var stop = new Libc.EpollEvent { Events = Libc.EPOLLIN, Data = 1 };
        if (Libc.epoll_ctl(_epoll, Libc.EPOLL_CTL_ADD, channel.Fd, &device) < 0 ||
            Libc.epoll_ctl(_epoll, Libc.EPOLL_CTL_ADD, stopFd, &stop) < 0)
        {
            var error = FuseException.FromErrno("epoll_ctl");
            Libc.close(_epoll);
            throw error;
        }

        _request = (byte*)NativeMemory.AlignedAlloc(FuseSession.RequestBufferSize, FuseConstants.PageSize);
        _context = session.RentContext();
        _thread = new Thread(Run) { IsBackground = true, Name = $"fuse-worker-{index}" };
    }

    public void Start() => _thread.Start();

    public bool Join(TimeSpan timeout) => _thread.Join(timeout);

    private void Run()
    {
        string? fatal = null;
        try
        {
            fatal = Loop();
        }
        catch (Exception e)
        {
            fatal = $"FUSE worker failed: {e}";
        }
        finally
        {
            _session.OnWorkerExit(fatal);
        }
    }

    /// <summary>Serves until unmounted or stopped; returns a message when it ends because of an error.</summary>
    private string? Loop()
    {
        while (!_session.Stopping)
        {
            int n = _channel.Read(_request, FuseSession.RequestBufferSize);
            if (n == 0)
            {
                // /dev/fuse never reads 0 bytes; a socket standing in for it (tests) does at its end.
                return null;
            }

            if (n > 0)
            {
                _session.OnWorkerBusy(MayBlock(n));
                try
                {
                    Dispatch(n);
                }
                finally
                {
                    _session.OnWorkerIdle();
                }

                continue;
            }

            switch (-n)
            {
                case Errno.EAGAIN:
                    if (!WaitForRequest())
                    {
                        return null;
                    }

                    break;
                case Errno.EINTR:
                case Errno.ENOENT: // the request was interrupted before we read it
                    break;
                case Errno.ENODEV: // unmounted
                case Errno.ECONNABORTED: // aborted
                    return null;
                default:
                    return $"reading /dev/fuse failed: {Errno.Text(-n)} (errno {-n})";
            }
        }

        return null;
    }

    /// <summary>False for requests answered at once without the store (INIT, FORGET, INTERRUPT): no other worker needed for them.</summary>
    private bool MayBlock(int length) =>
        length < sizeof(FuseInHeader) ||
        ((FuseInHeader*)_request)->Opcode is not (FuseOpcode.Init or FuseOpcode.Forget or FuseOpcode.BatchForget or FuseOpcode.Interrupt);

    /// <summary>Sleeps until a request is queued (true) or the session stops (false).</summary>
    private bool WaitForRequest()
    {
        Libc.EpollEvent* events = stackalloc Libc.EpollEvent[2];
        while (true)
        {
            int n = Libc.epoll_wait(_epoll, events, 2, -1);
            if (n < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == Errno.EINTR)
                {
                    continue;
                }

                throw FuseException.FromErrno("epoll_wait", errno);
            }

            for (int i = 0; i < n; i++)
            {
                if (events[i].Data == 1)
                {
                    return false;
                }
            }

            return true;
        }
    }

    private void Dispatch(int length)
    {
        if (length < sizeof(FuseInHeader))
        {
            _session.Log($"short FUSE request ({length} bytes) ignored");
            return;
        }

        ref readonly FuseInHeader header = ref *(FuseInHeader*)_request;
        if (header.Len != (uint)length)
        {
            _session.Log($"FUSE request length {header.Len} does not match the {length} bytes read; ignored");
            return;
        }

        var payload = new ReadOnlySpan<byte>(_request + sizeof(FuseInHeader), length - sizeof(FuseInHeader));
        var context = _context;
        context.Begin(_channel, header);
        ValueTask handler;
        try
        {
            handler = Handle(context, header, payload);
        }
        catch (Exception e)
        {
            _session.FailRequest(context, e);
            return;
        }

        if (!handler.IsCompleted || context.IsAsync)
        {
            // The request waits for the store: the context now belongs to it, and this worker takes another.
            context.MarkAsync();
            _session.ObserveAsync(handler, context);
            _context = _session.RentContext();
            return;
        }

        try
        {
            handler.GetAwaiter().GetResult();
        }
        catch (Exception e)
        {
            _session.FailRequest(context, e);
        }

        if (!context.Replied && !FuseOpcodes.ExpectsNoReply(header.Opcode))
        {
            _session.Log($"{header.Opcode} of node {header.NodeId} finished without a reply; answering EIO");
            context.ReplyError(Errno.EIO);
        }
    }

    private ValueTask Handle(FuseRequestContext context, in FuseInHeader header, ReadOnlySpan<byte> payload)
    {
        var fs = _session.FileSystem;
        ulong node = header.NodeId;
        switch (header.Opcode)
        {
            case FuseOpcode.Init:
                _session.HandleInit(context, payload);
                return default;
            case FuseOpcode.Lookup:
                if (!context.SetName(payload))
                {
                    context.ReplyError(Errno.EINVAL);
                    return default;
                }

                return fs.LookupAsync(context, node);
            case FuseOpcode.Forget:
                fs.Forget(node, Read<FuseForgetIn>(payload).NLookup);
                context.MarkNoReply();
                return default;
            case FuseOpcode.BatchForget:
                BatchForget(payload);
                context.MarkNoReply();
                return default;
            case FuseOpcode.GetAttr:
                return fs.GetAttrAsync(context, node);
            case FuseOpcode.ReadLink:
                return fs.ReadLinkAsync(context, node);
            case FuseOpcode.Open:
                return fs.OpenAsync(context, node, (int)Read<FuseOpenIn>(payload).Flags);
            case FuseOpcode.Read:
            {
                var read = Read<FuseReadIn>(payload);
                if (read.Offset > long.MaxValue)
                {
                    context.ReplyError(Errno.EINVAL);
                    return default;
                }

                return fs.ReadAsync(context, node, read.Fh, (long)read.Offset, (int)Math.Min(read.Size, (uint)_session.PayloadCapacity));
            }

            case FuseOpcode.Release:
                fs.Release(context, node, Read<FuseReleaseIn>(payload).Fh);
                return default;
            case FuseOpcode.OpenDir:
                return fs.OpenDirAsync(context, node, (int)Read<FuseOpenIn>(payload).Flags);
            case FuseOpcode.ReadDir:
            case FuseOpcode.ReadDirPlus:
            {
                var read = Read<FuseReadIn>(payload);
                return fs.ReadDirAsync(
                    context, node, read.Fh, (long)Math.Min(read.Offset, long.MaxValue),
                    (int)Math.Min(read.Size, (uint)_session.PayloadCapacity), header.Opcode == FuseOpcode.ReadDirPlus);
            }

            case FuseOpcode.ReleaseDir:
                fs.ReleaseDir(context, node, Read<FuseReleaseIn>(payload).Fh);
                return default;
            case FuseOpcode.StatFs:
                fs.StatFs(context, node);
                return default;
            case FuseOpcode.GetXAttr:
            {
                var xattr = Read<FuseGetXAttrIn>(payload);
                if (!context.SetName(payload[sizeof(FuseGetXAttrIn)..]))
                {
                    context.ReplyError(Errno.EINVAL);
                    return default;
                }

                return fs.GetXAttrAsync(context, node, (int)Math.Min(xattr.Size, int.MaxValue));
            }

            case FuseOpcode.ListXAttr:
                return fs.ListXAttrAsync(context, node, (int)Math.Min(Read<FuseGetXAttrIn>(payload).Size, int.MaxValue));
            case FuseOpcode.Access:
                return fs.AccessAsync(context, node, Read<FuseAccessIn>(payload).Mask);
            case FuseOpcode.Flush:
                // Nothing to flush on a read-only filesystem. ENOSYS makes the kernel stop sending FLUSH on every close,
                // which zero-message opens (no NOFLUSH open flag to give) would otherwise cost.
                context.ReplyError(Errno.ENOSYS);
                return default;
            case FuseOpcode.LSeek:
            {
                var seek = Read<FuseLSeekIn>(payload);
                return fs.LSeekAsync(context, node, seek.Fh, (long)Math.Min(seek.Offset, long.MaxValue), seek.Whence);
            }

            case FuseOpcode.Interrupt:
                _session.Interrupt(Read<FuseInterruptIn>(payload).Unique);
                context.MarkNoReply();
                return default;
            case FuseOpcode.Destroy:
                _session.HandleDestroy(context);
                return default;
            case FuseOpcode.NotifyReply:
                // Answers a notification we never send; the kernel expects nothing back.
                context.MarkNoReply();
                return default;
            default:
                // FSYNC/FSYNCDIR/SYNCFS: ENOSYS makes the kernel treat them as done from then on; POLL, IOCTL, locks,
                // BMAP, DAX mappings, STATX: ENOSYS makes it fall back to its own handling.
                context.ReplyError(FuseOpcodes.Writes(header.Opcode) ? Errno.EROFS : Errno.ENOSYS);
                return default;
        }
    }

    private void BatchForget(ReadOnlySpan<byte> payload)
    {
        var batch = Read<FuseBatchForgetIn>(payload);
        var entries = MemoryMarshal.Cast<byte, FuseForgetOne>(payload[sizeof(FuseBatchForgetIn)..]);
        int count = (int)Math.Min(batch.Count, (uint)entries.Length);
        var fs = _session.FileSystem;
        for (int i = 0; i < count; i++)
        {
            fs.Forget(entries[i].NodeId, entries[i].NLookup);
        }
    }

    private static T Read<T>(ReadOnlySpan<byte> payload)
        where T : unmanaged
    {
        if (payload.Length < sizeof(T))
        {
            ThrowShortRequest(typeof(T).Name, payload.Length);
        }

        return Unsafe.ReadUnaligned<T>(ref MemoryMarshal.GetReference(payload));
    }

    private static void ThrowShortRequest(string what, int length) =>
        throw new FuseException($"FUSE request too short for {what}: {length} bytes");

    public void Dispose()
    {
        if (_thread.IsAlive)
        {
            // Still inside a request: leave its buffer alone rather than free memory in use.
            return;
        }

        if (_request is not null)
        {
            NativeMemory.AlignedFree(_request);
            _request = null;
        }

        Libc.close(_epoll);
    }
}
