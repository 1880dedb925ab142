using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Fuse.Abi;
using TvixFuseBuild.Fuse.CastoreFs;
using TvixFuseBuild.Fuse.Session;

namespace TvixFuseBuild.Fuse.Tests.Support;

/// <summary>
/// Plays the kernel's side of /dev/fuse over a SOCK_SEQPACKET socket pair (one message per request and per reply,
/// as on the device), so tests can send requests a real kernel would not send on demand and read the raw replies.
/// Only for unit tests of the session and the filesystem; the real-mount tests cover the kernel itself.
/// </summary>
internal sealed unsafe partial class FakeKernel : IDisposable
{
    private readonly Socket _socket;
    private ulong _unique = 2;

    private FakeKernel(Socket socket, FuseSession session, CastoreFileSystem fileSystem, FuseChannel channel, List<string> log)
    {
        _socket = socket;
        Log = log;
        Session = session;
        FileSystem = fileSystem;
        Channel = channel;
    }

    public FuseSession Session { get; }

    public CastoreFileSystem FileSystem { get; }

    public FuseChannel Channel { get; }

    /// <summary>What the filesystem logged (lock it to read).</summary>
    public List<string> Log { get; }

    [LibraryImport("libc", EntryPoint = "socketpair", SetLastError = true)]
    private static partial int SocketPair(int domain, int type, int protocol, int* sv);

    public static FakeKernel Start(
        IEnumerable<Node> nodes, IBlobService blobs, IDirectoryService directories, bool passthrough = false, bool listRoot = true)
    {
        int* pair = stackalloc int[2];
        const int AF_UNIX = 1, SOCK_SEQPACKET = 5, SOCK_CLOEXEC = 0x80000;
        Assert.Equal(0, SocketPair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair));
        var socket = new Socket(new SafeSocketHandle(pair[0], ownsHandle: true)) { ReceiveTimeout = 5000 };
        var channel = FuseChannel.Adopt(pair[1]);
        var log = new List<string>();
        void Log(string line)
        {
            lock (log)
            {
                log.Add(line);
            }
        }

        var fileSystem = new CastoreFileSystem(
            new DirectoryListing(CastoreDirectory.FromNodes(nodes), null), blobs, directories,
            new CastoreFsOptions { Uid = 1000, Gid = 100, Passthrough = passthrough, ListRoot = listRoot, Log = Log });
        var session = new FuseSession(channel, fileSystem, new FuseSessionOptions
        {
            Threads = 1,
            CloneDevice = false,
            Passthrough = passthrough,
            Log = Log,
        });
        session.Start();
        return new FakeKernel(socket, session, fileSystem, channel, log);
    }

    /// <summary>Sends a request; returns its unique.</summary>
    public ulong Send(FuseOpcode opcode, ulong nodeId, ReadOnlySpan<byte> payload, ulong? unique = null)
    {
        ulong id = unique ?? (_unique += 2);
        var message = new byte[sizeof(FuseInHeader) + payload.Length];
        var header = new FuseInHeader
        {
            Len = (uint)message.Length,
            Opcode = opcode,
            Unique = id,
            NodeId = nodeId,
            Uid = 1000,
            Gid = 100,
            Pid = 42,
        };
        MemoryMarshal.Write(message, in header);
        payload.CopyTo(message.AsSpan(sizeof(FuseInHeader)));
        Assert.Equal(message.Length, _socket.Send(message));
        return id;
    }

    public ulong Send<T>(FuseOpcode opcode, ulong nodeId, in T argument, ReadOnlySpan<byte> tail = default, ulong? unique = null)
        where T : unmanaged
    {
        var payload = new byte[sizeof(T) + tail.Length];
        MemoryMarshal.Write(payload, in argument);
        tail.CopyTo(payload.AsSpan(sizeof(T)));
        return Send(opcode, nodeId, payload, unique);
    }

    /// <summary>Sends a name-carrying request (LOOKUP): the name NUL-terminated.</summary>
    public ulong SendName(FuseOpcode opcode, ulong nodeId, string name) =>
        Send(opcode, nodeId, [.. System.Text.Encoding.UTF8.GetBytes(name), 0]);

    /// <summary>The next reply (fails after 5 s).</summary>
    public (FuseOutHeader Header, byte[] Payload) Receive()
    {
        var buffer = new byte[2 << 20];
        int n = _socket.Receive(buffer);
        Assert.True(n >= sizeof(FuseOutHeader), $"reply of {n} bytes");
        var header = MemoryMarshal.Read<FuseOutHeader>(buffer);
        Assert.Equal((uint)n, header.Len);
        return (header, buffer[sizeof(FuseOutHeader)..n]);
    }

    /// <summary>True when no reply arrives within <paramref name="milliseconds"/>.</summary>
    public bool NothingWithin(int milliseconds) => !_socket.Poll(milliseconds * 1000, SelectMode.SelectRead);

    public (FuseOutHeader Header, byte[] Payload) Expect(ulong unique)
    {
        var reply = Receive();
        Assert.Equal(unique, reply.Header.Unique);
        return reply;
    }

    public T ExpectStruct<T>(ulong unique)
        where T : unmanaged
    {
        var (header, payload) = Expect(unique);
        Assert.Equal(0, header.Error);
        Assert.Equal(sizeof(T), payload.Length);
        return MemoryMarshal.Read<T>(payload);
    }

    public int ExpectError(ulong unique) => -Expect(unique).Header.Error;

    /// <summary>INIT as a 7.45 kernel offering everything; returns the reply.</summary>
    public FuseInitOut Init(uint minor = 45, FuseInitFlags offered = (FuseInitFlags)ulong.MaxValue)
    {
        var init = new FuseInitIn
        {
            Major = 7,
            Minor = minor,
            MaxReadahead = 128 * 1024,
            Flags = (uint)offered,
            Flags2 = (uint)((ulong)offered >> 32),
        };
        ulong unique = Send(FuseOpcode.Init, 0, init);
        return ExpectStruct<FuseInitOut>(unique);
    }

    public void Dispose()
    {
        _socket.Dispose();
        Session.Dispose();
        Channel.Dispose();
    }
}
