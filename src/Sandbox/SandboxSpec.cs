namespace TvixFuseBuild.Sandbox;

/// <summary>
/// What to run and how the sandbox around it looks. Sandbox paths may be written with or without a leading slash
/// (<c>nix/store</c> and <c>/nix/store</c> are the same); host paths must be absolute. Nothing of the host is
/// visible inside except what is named here.
/// </summary>
public sealed class SandboxSpec
{
    /// <summary>The static busybox that <c>scripts/setup</c> installs (Debian's busybox-static); bind it at /bin/sh with <see cref="BinSh"/>.</summary>
    public const string BusyboxShell = "/bin/busybox";

    /// <summary>argv. The first element is the program: a sandbox path, or a name looked up in <see cref="Environment"/>'s PATH.</summary>
    public required IReadOnlyList<string> Command { get; init; }

    /// <summary>The command's exact environment; nothing is inherited from the host.</summary>
    public IReadOnlyDictionary<string, string> Environment { get; init; } = new Dictionary<string, string>();

    /// <summary>The working directory inside the sandbox (usually a scratch path).</summary>
    public string WorkingDirectory { get; init; } = "/";

    /// <summary>Writable directories: sandbox path to the host directory that backs it (created by the caller).</summary>
    public IReadOnlyDictionary<string, string> ScratchPaths { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// The read-only inputs: a host directory (such as the FUSE mountpoint) exposed at <see cref="InputsDir"/>. When
    /// <see cref="InputsDir"/> is or holds a scratch path, each of <see cref="InputNames"/> is bound read-only on
    /// its own, so the build can add entries next to them but not change, rename or delete them.
    /// </summary>
    public string? InputsHostDirectory { get; init; }

    /// <summary>Where the inputs appear inside the sandbox, e.g. <c>nix/store</c>.</summary>
    public string InputsDir { get; init; } = "nix/store";

    /// <summary>The top-level names in <see cref="InputsHostDirectory"/> (used when the inputs are bound one by one).</summary>
    public IReadOnlyList<string> InputNames { get; init; } = [];

    /// <summary>Files written before the command starts: sandbox path to contents.</summary>
    public IReadOnlyDictionary<string, ReadOnlyMemory<byte>> AdditionalFiles { get; init; } = new Dictionary<string, ReadOnlyMemory<byte>>();

    /// <summary>
    /// Host paths exposed read-only at the same path. Each is resolved without following any symlink and must not
    /// contain '..'; a path that is, lies inside or contains /proc, /sys, a build directory or one of
    /// <see cref="ProtectedHostPaths"/> is refused. A device node named here (e.g. <c>/dev/kvm</c>) stays usable;
    /// device nodes inside a directory named here do not (nodev).
    /// </summary>
    public IReadOnlyList<string> ReadOnlyHostPaths { get; init; } = [];

    /// <summary>Host paths no read-only path may be, lie inside or contain: the build directories, the store.</summary>
    public IReadOnlyList<string> ProtectedHostPaths { get; init; } = [];

    /// <summary>The host identity the build runs as (<see cref="BuildUser.Claim"/>); null: one is claimed for this run.</summary>
    public BuildUser? User { get; init; }

    /// <summary>A host file (a static shell, see <see cref="BusyboxShell"/>) bound read-only at /bin/sh; null for none.</summary>
    public string? BinSh { get; init; }

    /// <summary>Share the host's network (and its /etc/resolv.conf, /etc/hosts, /etc/services); otherwise only a private <c>lo</c>.</summary>
    public bool Network { get; init; }

    /// <summary>Wall-clock limit from the start of the sandbox; null for none.</summary>
    public TimeSpan? Timeout { get; init; }

    /// <summary>Kill the build when it writes nothing for this long; null for none.</summary>
    public TimeSpan? SilenceTimeout { get; init; }

    /// <summary>Kill the build when its output exceeds this many bytes; null for none.</summary>
    public long? LogLimit { get; init; }

    /// <summary>A host file that receives the output too (created or truncated).</summary>
    public string? LogFile { get; init; }

    /// <summary>The system the build needs (e.g. <c>x86_64-linux</c>); refused before anything starts when this host cannot run it.</summary>
    public string? System { get; init; }

    /// <summary>Bytes of memory the build needs; refused before anything starts when the host has less available.</summary>
    public long MinMemory { get; init; }

    /// <summary>Processes, memory and the sizes of /tmp and /dev/shm the build may use.</summary>
    public SandboxLimits Limits { get; init; } = SandboxLimits.Default;
}
