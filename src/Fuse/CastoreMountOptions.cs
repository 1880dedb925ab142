namespace TvixFuseBuild.Fuse;

/// <summary>How a <see cref="CastoreMount"/> is set up. The defaults are the measured ones (see docs/benchmarks.md).</summary>
public sealed record CastoreMountOptions
{
    /// <summary>The most worker threads answering the kernel: one starts with the mount, another whenever all are busy.</summary>
    public int Threads { get; init; } = DefaultThreads;

    /// <summary>Let users other than the mounting one in (for a sandbox that runs the build as another uid).</summary>
    public bool AllowOther { get; init; }

    /// <summary>Whether the root can be listed; when off, its names can only be looked up (readdir is EPERM, as in tvix).</summary>
    public bool ListRoot { get; init; } = true;

    /// <summary>
    /// Hand blobs that the store keeps as whole local files to the kernel (FUSE passthrough, kernel 6.9+, needs
    /// CAP_SYS_ADMIN): reads then never reach this process. Falls back to serving reads itself when refused.
    /// Off by default: measured slower here on a cold read of a real tree (see docs/benchmarks.md, FUSE).
    /// </summary>
    public bool Passthrough { get; init; }

    /// <summary>
    /// Let the kernel open files without asking (FUSE_NO_OPEN_SUPPORT): no OPEN and RELEASE round trip per opened
    /// file, which is most of what re-reading a tree from the page cache costs. A blob is then opened on the file's
    /// first READ and kept open while the kernel keeps the inode (the least recently opened are closed beyond
    /// 1,024). Off by default: if this process dies and the mount stays, files whose content is in the page cache go
    /// on opening and reading without error (the bytes are still right: content never changes), where otherwise every
    /// open fails with ENOTCONN at once; with a <see cref="WatchdogCommand"/> the mount does not stay. Ignored with
    /// <see cref="Passthrough"/>, which hands the kernel a file at OPEN.
    /// </summary>
    public bool ZeroMessageOpen { get; init; }

    /// <summary>
    /// A command line, its program an absolute path, that ends up calling <see cref="CastoreMount.RunWatchdog"/> with the
    /// arguments the mount appends (for the tool: its own executable and a hidden first argument). When set, the mount
    /// starts it as a separate process that detaches the mount as soon as this process dies, SIGKILL included: new
    /// opens then fail (the mountpoint's own, empty directory shows through) instead of reaching a dead server. It
    /// touches only the mount this process made, identified by its mount id and device, never whatever else is
    /// mounted there later.
    /// </summary>
    public IReadOnlyList<string>? WatchdogCommand { get; init; }

    /// <summary>Start every worker at the mount instead of one, then more while all are busy (the bench compares).</summary>
    internal bool EagerWorkers { get; init; }

    /// <summary>Blobs kept open for zero-message opens (a test lowers it).</summary>
    internal int MaxLazyReaders { get; init; } = 1024;

    /// <summary>Owner reported for every file; default: the effective uid of this process.</summary>
    public uint? Uid { get; init; }

    /// <summary>Group reported for every file; default: the effective gid of this process.</summary>
    public uint? Gid { get; init; }

    /// <summary>Receives one line per problem (a missing blob, a corrupt directory, a refused mount option).</summary>
    public Action<string>? Log { get; init; }

    /// <summary>Give each worker a cloned /dev/fuse file (its own kernel processing queue) rather than sharing one.</summary>
    public bool CloneDevice { get; init; } = true;

    /// <summary>Requests the kernel may have in flight in the background (readahead); peers use 64 to 1024.</summary>
    public ushort MaxBackground { get; init; } = 256;

    /// <summary>READDIRPLUS: directory listings carry the entries' attributes.</summary>
    public bool ReaddirPlus { get; init; } = true;

    /// <summary>st_blksize reported for files (the buffer size tools such as cat and cp choose).</summary>
    public uint BlockSize { get; init; } = 4096;

    /// <summary>How long the kernel may cache names and attributes; content never changes, so very long.</summary>
    public TimeSpan CacheTimeout { get; init; } = TimeSpan.FromDays(365);

    // Cold reads block a worker in the store (disk, hashing) while readahead keeps others busy: 8 beat 4 and 1 here.
    internal static int DefaultThreads => Math.Clamp(Environment.ProcessorCount * 4, 8, 32);
}
