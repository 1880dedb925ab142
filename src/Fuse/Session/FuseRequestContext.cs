using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TvixFuseBuild.Fuse.Abi;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Fuse.Session;

/// <summary>
/// One request being answered, and the buffer its reply is built in. A worker reuses its context for every request
/// that completes synchronously (no allocation); a handler that has to wait for the store calls <see cref="Track{T}"/>,
/// which hands the context over to the pending operation (the worker takes a fresh one) and makes it interruptible.
/// Exactly one reply is sent: the handler's, or EINTR if the kernel interrupts the request first.
/// </summary>
internal sealed unsafe class FuseRequestContext
{
    public const int OutHeaderSize = 16;

    /// <summary>Longest name in a request we look at (the kernel's FUSE_NAME_MAX).</summary>
    public const int MaxName = 1024;

    private readonly FuseSession _session;
    private readonly byte[] _buffer;
    private readonly byte* _bufferPointer;
    private readonly byte[] _name = new byte[MaxName];
    private int _nameLength;
    private CancellationTokenSource _cancellation = new();
    private int _replied;

    public FuseRequestContext(FuseSession session, int payloadCapacity)
    {
        _session = session;
        _buffer = GC.AllocateUninitializedArray<byte>(OutHeaderSize + payloadCapacity, pinned: true);
        _bufferPointer = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_buffer));
    }

    public FuseChannel Channel { get; private set; } = null!;

    public FuseOpcode Opcode { get; private set; }

    public ulong Unique { get; private set; }

    public ulong NodeId { get; private set; }

    public uint Uid { get; private set; }

    public uint Gid { get; private set; }

    public uint Pid { get; private set; }

    /// <summary>True once the request waits for the store: it then completes on another thread.</summary>
    public bool IsAsync { get; private set; }

    public bool Replied => Volatile.Read(ref _replied) != 0;

    /// <summary>Cancelled when the kernel interrupts the request.</summary>
    public CancellationToken Token => _cancellation.Token;

    /// <summary>Where a reply's payload is built (READ data, directory entries, structs).</summary>
    public Span<byte> Payload => new(_bufferPointer + OutHeaderSize, _buffer.Length - OutHeaderSize);

    public Memory<byte> PayloadMemory => _buffer.AsMemory(OutHeaderSize);

    /// <summary>The name argument of LOOKUP and GETXATTR, copied out of the request buffer.</summary>
    public ReadOnlySpan<byte> Name => _name.AsSpan(0, _nameLength);

    /// <summary>Scratch space for a handler (READDIRPLUS records the node ids it counted, to undo them).</summary>
    public List<ulong> Scratch { get; } = [];

    internal void Begin(FuseChannel channel, in FuseInHeader header)
    {
        Channel = channel;
        Opcode = header.Opcode;
        Unique = header.Unique;
        NodeId = header.NodeId;
        Uid = header.Uid;
        Gid = header.Gid;
        Pid = header.Pid;
        IsAsync = false;
        _nameLength = 0;
        Scratch.Clear();
        _replied = 0;
        if (_cancellation.IsCancellationRequested)
        {
            _cancellation.Dispose();
            _cancellation = new CancellationTokenSource();
        }
    }

    /// <summary>Copies a NUL-terminated name; false when it is missing or too long.</summary>
    internal bool SetName(ReadOnlySpan<byte> terminated)
    {
        int end = terminated.IndexOf((byte)0);
        if (end < 0 || end > MaxName)
        {
            return false;
        }

        terminated[..end].CopyTo(_name);
        _nameLength = end;
        return true;
    }

    /// <summary>Passes a store call through; if it did not complete synchronously, the request becomes asynchronous.</summary>
    public ValueTask<T> Track<T>(ValueTask<T> pending)
    {
        if (!pending.IsCompleted)
        {
            MarkAsync();
        }

        return pending;
    }

    internal void MarkAsync()
    {
        if (!IsAsync)
        {
            IsAsync = true;
            _session.RegisterPending(this);
        }
    }

    /// <summary>For requests the kernel expects no answer to (FORGET, INTERRUPT, ...).</summary>
    internal void MarkNoReply() => _replied = 1;

    public bool ReplyError(int errno) => Send(errno, 0);

    public bool ReplyEmpty() => Send(0, 0);

    /// <summary>Replies with the first <paramref name="length"/> bytes of <see cref="Payload"/>.</summary>
    public bool ReplyPayload(int length) => Send(0, length);

    public bool Reply<T>(in T value)
        where T : unmanaged
    {
        Unsafe.WriteUnaligned(_bufferPointer + OutHeaderSize, value);
        return Send(0, sizeof(T));
    }

    public bool ReplyBytes(ReadOnlySpan<byte> bytes)
    {
        bytes.CopyTo(Payload);
        return Send(0, bytes.Length);
    }

    private bool Send(int errno, int payloadLength)
    {
        if (Interlocked.Exchange(ref _replied, 1) != 0)
        {
            return false;
        }

        if (IsAsync)
        {
            _session.UnregisterPending(this);
        }

        var header = (FuseOutHeader*)_bufferPointer;
        header->Len = (uint)(OutHeaderSize + payloadLength);
        header->Error = -errno;
        header->Unique = Unique;
        int error = Channel.Write(_bufferPointer, OutHeaderSize + payloadLength);
        if (error != 0)
        {
            _session.OnReplyFailed(this, error);
        }

        return error == 0;
    }

    /// <summary>The kernel interrupted the request: reply EINTR now (if no reply went out yet) and cancel the store call.</summary>
    internal void Interrupt()
    {
        if (Interlocked.Exchange(ref _replied, 1) != 0)
        {
            return;
        }

        _session.UnregisterPending(this);

        // The handler may still be filling _buffer; the EINTR reply is built apart from it.
        FuseOutHeader header = new() { Len = OutHeaderSize, Error = -Errno.EINTR, Unique = Unique };
        Channel.Write((byte*)&header, OutHeaderSize);
        try
        {
            _cancellation.Cancel();
        }
        catch (AggregateException e)
        {
            _session.Log($"cancelling an interrupted request failed: {e.InnerException?.Message}");
        }
    }
}
