using System.Buffers.Binary;
using System.Text;

namespace TvixFuseBuild.Sandbox;

/// <summary>
/// What the init inside the namespaces sets up and runs: a validated <see cref="SandboxSpec"/> reduced to absolute
/// sandbox paths and host paths. Sent over the init's stdin as one length-prefixed frame.
/// </summary>
internal sealed class InitPlan
{
    public bool Network { get; set; }

    /// <summary>Writable mounts: absolute sandbox path, host directory.</summary>
    public List<(string Path, string Host)> Scratch { get; } = [];

    public string? InputsHost { get; set; }

    public string InputsPath { get; set; } = "/";

    public string[] InputNames { get; set; } = [];

    /// <summary>One read-only bind per input (the inputs directory is or holds writable paths), else one bind for all.</summary>
    public bool InputsPerEntry { get; set; }

    /// <summary>Host paths exposed read-only at the same path.</summary>
    public List<string> ReadOnlyPaths { get; } = [];

    /// <summary>Host file bound read-only at /bin/sh.</summary>
    public string? BinSh { get; set; }

    public List<(string Path, byte[] Content)> Files { get; } = [];

    public string[] Argv { get; set; } = [];

    public string[] Env { get; set; } = [];

    public string WorkingDirectory { get; set; } = "/";

    /// <summary>A tmpfs at /tmp unless a scratch path provides it.</summary>
    public bool PrivateTmp { get; set; } = true;

    /// <summary>Canonical host paths no read-only path may be, lie inside or contain (see <see cref="ReadOnlyPaths"/>).</summary>
    public List<string> ProtectedPaths { get; } = [];

    /// <summary>The host mounts as detached clones (file descriptors the init inherits); null until taken (<see cref="HostMounts"/>).</summary>
    public HostMounts? Mounts { get; set; }

    /// <summary>The seccomp BPF program the command runs under (never empty: the init refuses to start without one).</summary>
    public byte[] Seccomp { get; set; } = [];

    /// <summary>RLIMIT_NPROC of the command, on top of the init's own threads.</summary>
    public int MaxProcesses { get; set; } = SandboxLimits.DefaultMaxProcesses;

    /// <summary>Bytes of each of /tmp and /dev/shm.</summary>
    public long TmpSize { get; set; } = SandboxLimits.MinTmpSize;

    /// <summary>The build runs in cgroups of its own (the init moved into them before it entered the namespaces).</summary>
    public bool InCgroup { get; set; }

    public byte[] Encode()
    {
        var w = new Writer();
        w.Bool(Network);
        w.Int(Scratch.Count);
        foreach (var (path, host) in Scratch)
        {
            w.Str(path);
            w.Str(host);
        }

        w.Str(InputsHost);
        w.Str(InputsPath);
        w.Strs(InputNames);
        w.Bool(InputsPerEntry);
        w.Strs(ReadOnlyPaths);
        w.Str(BinSh);
        w.Int(Files.Count);
        foreach (var (path, content) in Files)
        {
            w.Str(path);
            w.Bytes(content);
        }

        w.Strs(Argv);
        w.Strs(Env);
        w.Str(WorkingDirectory);
        w.Bool(PrivateTmp);
        w.Strs(ProtectedPaths);
        w.Bool(Mounts is not null);
        if (Mounts is { } m)
        {
            w.Int(m.Inputs);
            w.Ints(m.Scratch);
            w.Int(m.ReadOnly.Count);
            foreach (var (path, fd, directory) in m.ReadOnly)
            {
                w.Str(path);
                w.Int(fd);
                w.Bool(directory);
            }

            w.Int(m.BinSh);
            w.Ints(m.Devices);
            w.Int(m.NetworkFiles.Count);
            foreach (var (path, fd) in m.NetworkFiles)
            {
                w.Str(path);
                w.Int(fd);
            }
        }

        w.Bytes(Seccomp);
        w.Int(MaxProcesses);
        w.Long(TmpSize);
        w.Bool(InCgroup);
        return w.ToFrame();
    }

    public static InitPlan Decode(ReadOnlySpan<byte> payload)
    {
        var r = new Reader(payload);
        var plan = new InitPlan { Network = r.Bool() };
        for (int i = r.Int(); i > 0; i--)
        {
            plan.Scratch.Add((r.Str()!, r.Str()!));
        }

        plan.InputsHost = r.Str();
        plan.InputsPath = r.Str()!;
        plan.InputNames = r.Strs();
        plan.InputsPerEntry = r.Bool();
        plan.ReadOnlyPaths.AddRange(r.Strs());
        plan.BinSh = r.Str();
        for (int i = r.Int(); i > 0; i--)
        {
            plan.Files.Add((r.Str()!, r.Bytes()));
        }

        plan.Argv = r.Strs();
        plan.Env = r.Strs();
        plan.WorkingDirectory = r.Str()!;
        plan.PrivateTmp = r.Bool();
        plan.ProtectedPaths.AddRange(r.Strs());
        if (r.Bool())
        {
            var m = new HostMounts { Inputs = r.Int() };
            m.Scratch.AddRange(r.Ints());
            for (int i = r.Int(); i > 0; i--)
            {
                m.ReadOnly.Add((r.Str()!, r.Int(), r.Bool()));
            }

            m.BinSh = r.Int();
            m.Devices = r.Ints();
            for (int i = r.Int(); i > 0; i--)
            {
                m.NetworkFiles.Add((r.Str()!, r.Int()));
            }

            plan.Mounts = m;
        }

        plan.Seccomp = r.Bytes();
        plan.MaxProcesses = r.Int();
        plan.TmpSize = r.Long();
        plan.InCgroup = r.Bool();
        return plan;
    }

    private sealed class Writer
    {
        private byte[] _buffer = new byte[4096];
        private int _length = 4; // room for the frame length

        public void Bool(bool value) => Int(value ? 1 : 0);

        public void Int(int value)
        {
            Ensure(4);
            BinaryPrimitives.WriteInt32LittleEndian(_buffer.AsSpan(_length), value);
            _length += 4;
        }

        public void Long(long value)
        {
            Ensure(8);
            BinaryPrimitives.WriteInt64LittleEndian(_buffer.AsSpan(_length), value);
            _length += 8;
        }

        public void Str(string? value)
        {
            if (value is null)
            {
                Int(-1);
                return;
            }

            int count = Encoding.UTF8.GetByteCount(value);
            Int(count);
            Ensure(count);
            _length += Encoding.UTF8.GetBytes(value, _buffer.AsSpan(_length));
        }

        public void Strs(IReadOnlyCollection<string> values)
        {
            Int(values.Count);
            foreach (var v in values)
            {
                Str(v);
            }
        }

        public void Ints(IReadOnlyCollection<int> values)
        {
            Int(values.Count);
            foreach (var v in values)
            {
                Int(v);
            }
        }

        public void Bytes(ReadOnlySpan<byte> value)
        {
            Int(value.Length);
            Ensure(value.Length);
            value.CopyTo(_buffer.AsSpan(_length));
            _length += value.Length;
        }

        public byte[] ToFrame()
        {
            BinaryPrimitives.WriteInt32LittleEndian(_buffer, _length - 4);
            return _buffer.AsSpan(0, _length).ToArray();
        }

        private void Ensure(int more)
        {
            if (_length + more > _buffer.Length)
            {
                Array.Resize(ref _buffer, Math.Max(_buffer.Length * 2, _length + more));
            }
        }
    }

    private ref struct Reader(ReadOnlySpan<byte> data)
    {
        private ReadOnlySpan<byte> _data = data;

        public bool Bool() => Int() != 0;

        public int Int()
        {
            int v = BinaryPrimitives.ReadInt32LittleEndian(_data);
            _data = _data[4..];
            return v;
        }

        public long Long()
        {
            long v = BinaryPrimitives.ReadInt64LittleEndian(_data);
            _data = _data[8..];
            return v;
        }

        public string? Str()
        {
            int n = Int();
            if (n < 0)
            {
                return null;
            }

            string s = Encoding.UTF8.GetString(_data[..n]);
            _data = _data[n..];
            return s;
        }

        public string[] Strs()
        {
            var result = new string[Int()];
            for (int i = 0; i < result.Length; i++)
            {
                result[i] = Str()!;
            }

            return result;
        }

        public int[] Ints()
        {
            var result = new int[Int()];
            for (int i = 0; i < result.Length; i++)
            {
                result[i] = Int();
            }

            return result;
        }

        public byte[] Bytes()
        {
            int n = Int();
            byte[] b = _data[..n].ToArray();
            _data = _data[n..];
            return b;
        }
    }
}

/// <summary>Messages the init writes to its stdout: a type byte, a little-endian length, the payload.</summary>
internal static class InitMessage
{
    /// <summary>The root is set up and the command started.</summary>
    public const byte Started = (byte)'S';

    /// <summary>Setting up failed; the payload is the UTF-8 message. Nothing was started.</summary>
    public const byte Error = (byte)'E';

    /// <summary>The command exited; the payload is its wait status (int32), then <see cref="FullTmpfs"/> flags (int32).</summary>
    public const byte Exited = (byte)'X';

    /// <summary>Flags of <see cref="Exited"/>: /tmp or /dev/shm had no free block left when the command ended.</summary>
    [Flags]
    public enum FullTmpfs
    {
        None = 0,
        Tmp = 1,
        DevShm = 2,
    }

    /// <summary>Sent by the caller on the init's stdin: kill everything now. EOF means the same.</summary>
    public const byte Kill = (byte)'K';
}
