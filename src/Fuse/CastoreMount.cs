using System.Diagnostics;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Fuse.CastoreFs;
using TvixFuseBuild.Native;
using TvixFuseBuild.Fuse.Mounting;
using TvixFuseBuild.Fuse.Session;

namespace TvixFuseBuild.Fuse;

/// <summary>
/// A read-only castore tree mounted with FUSE: the root holds a set of named nodes (a build's inputs) or the entries
/// of one Directory, and everything below is fetched from the store only when something looks at it. Dispose to
/// unmount. If the process dies without unmounting, a watchdog process detaches the mount
/// (<see cref="CastoreMountOptions.WatchdogCommand"/>); without one, readers get ENOTCONN and the next mount removes it.
/// </summary>
/// <example>
/// <code>
/// await using var mount = await CastoreMount.MountAsync(inputsDir, request.Inputs, blobs, directories);
/// // ... run the build over inputsDir ...
/// </code>
/// </example>
public sealed class CastoreMount : IAsyncDisposable
{
    private static readonly TimeSpan InitTimeout = TimeSpan.FromSeconds(30);

    private readonly KernelMount _kernelMount;
    private readonly FuseSession _session;
    private readonly CastoreFileSystem _fileSystem;
    private readonly Action<string> _log;
    private MountWatchdog? _watchdog;
    private int _disposed;

    private CastoreMount(KernelMount kernelMount, FuseSession session, CastoreFileSystem fileSystem, Action<string> log)
    {
        _kernelMount = kernelMount;
        _session = session;
        _fileSystem = fileSystem;
        _log = log;
    }

    /// <summary>The absolute path the tree is mounted at.</summary>
    public string Mountpoint => _kernelMount.Mountpoint;

    /// <summary>Completes when the filesystem stops being served: disposed, or unmounted by someone else.</summary>
    public Task Completion => _session.Completion;

    /// <summary>True when mounted through fusermount3 (not privileged) rather than mount(2).</summary>
    public bool MountedByFusermount => _kernelMount.ViaFusermount;

    /// <summary>True while reads of locally stored blobs go straight to their files in the kernel.</summary>
    public bool PassthroughActive => _fileSystem.PassthroughActive;

    /// <summary>Inodes the kernel currently holds (for tests and diagnostics).</summary>
    public int LiveInodes => _fileSystem.Inodes.Count;

    /// <summary>Workers that got a cloned /dev/fuse file of their own.</summary>
    internal int ClonedChannels => _session.ClonedChannels;

    /// <summary>Worker threads started so far: one at the mount, more while all are busy.</summary>
    internal int WorkerCount => _session.WorkerCount;

    /// <summary>Where <see cref="MountAsync"/>'s time went (for the bench).</summary>
    internal MountTimings Timings { get; private init; } = new(default, default, default);

    /// <summary>Mounts <paramref name="nodes"/> (each under its own name) from <paramref name="store"/> (which must outlive the mount).</summary>
    public static Task<CastoreMount> MountAsync(
        string mountpoint,
        IEnumerable<Node> nodes,
        CastoreStore store,
        CastoreMountOptions? options = null,
        CancellationToken cancellationToken = default) =>
        MountAsync(mountpoint, nodes, store.Blobs, store.Directories, options, cancellationToken);

    /// <summary>Mounts <paramref name="nodes"/> (each under its own name) at <paramref name="mountpoint"/>, an existing directory.</summary>
    public static Task<CastoreMount> MountAsync(
        string mountpoint,
        IEnumerable<Node> nodes,
        IBlobService blobs,
        IDirectoryService directories,
        CastoreMountOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        var list = nodes.ToList();
        if (list.FirstOrDefault(n => n.Name.IsEmpty) is not null)
        {
            throw new ArgumentException("every node mounted at the root needs a name", nameof(nodes));
        }

        var root = new DirectoryListing(CastoreDirectory.FromNodes(list), digest: null);
        return MountListingAsync(mountpoint, root, blobs, directories, options ?? new CastoreMountOptions(), cancellationToken);
    }

    /// <summary>Mounts the entries of the Directory <paramref name="directory"/>; fails at once if the store lacks it.</summary>
    public static async Task<CastoreMount> MountDirectoryAsync(
        string mountpoint,
        B3Digest directory,
        IBlobService blobs,
        IDirectoryService directories,
        CastoreMountOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        var root = await directories.GetAsync(directory, cancellationToken).ConfigureAwait(false) ??
            throw new ObjectNotFoundException($"directory {directory} is not in the store");
        return await MountListingAsync(
            mountpoint, new DirectoryListing(root, directory), blobs, directories, options ?? new CastoreMountOptions(), cancellationToken)
            .ConfigureAwait(false);
    }

    /// <summary>
    /// Detaches mounts of ours whose serving process died (they would answer ENOTCONN forever). Returns how many.
    /// <see cref="MountAsync"/> does this too.
    /// </summary>
    public static int RemoveStaleMounts(Action<string>? log = null) => StaleMounts.RemoveDead(log ?? (static _ => { }));

    /// <summary>
    /// Detaches every mount at or below <paramref name="directory"/>, a directory whose owner is gone (a dead build's).
    /// Returns false when one stays. As root any mount; otherwise the caller's FUSE mounts.
    /// </summary>
    public static bool DetachMountsUnder(string directory, Action<string>? log = null) =>
        StaleMounts.DetachUnder(Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory)), log ?? (static _ => { }));

    /// <summary>
    /// The watchdog's side of <see cref="CastoreMountOptions.WatchdogCommand"/>: the process that command starts calls
    /// this with the arguments the mount appended, and exits with what it returns. It waits until the mounting
    /// process unmounts or dies; if it died, it detaches the mount, provided the mount at the mountpoint is still the
    /// same one (its mount id and device), and writes a line to <paramref name="log"/>.
    /// </summary>
    public static int RunWatchdog(IReadOnlyList<string> arguments, Action<string> log)
    {
        ArgumentNullException.ThrowIfNull(arguments);
        ArgumentNullException.ThrowIfNull(log);
        return MountWatchdog.Run(arguments, log);
    }

    private static async Task<CastoreMount> MountListingAsync(
        string mountpoint,
        DirectoryListing root,
        IBlobService blobs,
        IDirectoryService directories,
        CastoreMountOptions options,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(blobs);
        ArgumentNullException.ThrowIfNull(directories);
        if (options.WatchdogCommand is { } command && (command.Count == 0 || !Path.IsPathRooted(command[0])))
        {
            throw new ArgumentException("the watchdog command must start with an absolute path", nameof(options));
        }

        cancellationToken.ThrowIfCancellationRequested();
        var log = options.Log ?? (static _ => { });
        string path = Path.GetFullPath(mountpoint);

        // First: a dead mount of ours on the mountpoint would make it look missing (ENOTCONN).
        StaleMounts.RemoveDead(log);
        if (!Directory.Exists(path))
        {
            throw new FuseException($"cannot mount at {path}: no such directory");
        }
        var fileSystem = new CastoreFileSystem(root, blobs, directories, new CastoreFsOptions
        {
            ListRoot = options.ListRoot,
            Uid = options.Uid ?? Libc.geteuid(),
            Gid = options.Gid ?? Libc.getegid(),
            CacheTimeout = options.CacheTimeout,
            BlockSize = options.BlockSize,
            Passthrough = options.Passthrough,
            MaxLazyReaders = Math.Max(1, options.MaxLazyReaders),
            Log = log,
        });

        var settings = new MountSettings(StaleMounts.FsName, StaleMounts.Subtype, options.AllowOther, Libc.geteuid(), Libc.getegid());
        long started = Stopwatch.GetTimestamp();
        var kernelMount = KernelMount.Mount(path, settings, log);
        var mounted = Stopwatch.GetElapsedTime(started);
        FuseSession? session = null;
        try
        {
            session = new FuseSession(kernelMount.Channel, fileSystem, new FuseSessionOptions
            {
                Threads = options.Threads,
                EagerWorkers = options.EagerWorkers,
                CloneDevice = options.CloneDevice,
                MaxBackground = options.MaxBackground,
                ReaddirPlus = options.ReaddirPlus,
                Passthrough = options.Passthrough,
                NoOpen = options.ZeroMessageOpen && !options.Passthrough,
                Log = log,
            });
            session.Start();
            var workersStarted = Stopwatch.GetElapsedTime(started);
            await session.Ready.WaitAsync(InitTimeout, cancellationToken).ConfigureAwait(false);
            var mount = new CastoreMount(kernelMount, session, fileSystem, log)
            {
                Timings = new MountTimings(mounted, workersStarted - mounted, Stopwatch.GetElapsedTime(started) - workersStarted),
            };
            if (options.WatchdogCommand is { } watchdog)
            {
                mount._watchdog = MountWatchdog.Start(watchdog, path, kernelMount.ViaFusermount, log);
            }

            AppDomain.CurrentDomain.ProcessExit += mount.OnProcessExit;
            return mount;
        }
        catch (Exception e)
        {
            kernelMount.Unmount();
            session?.Dispose();
            kernelMount.Channel.Dispose();
            if (e is TimeoutException)
            {
                throw new FuseException($"the kernel did not start the FUSE session at {path} within {InitTimeout.TotalSeconds:0} s", 0, e);
            }

            throw;
        }
    }

    private void OnProcessExit(object? sender, EventArgs e)
    {
        Unmount();
        _watchdog?.Release();
    }

    /// <summary>Unmounts (lazily: files still open keep working until closed) and stops serving.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        AppDomain.CurrentDomain.ProcessExit -= OnProcessExit;
        _kernelMount.Unmount();
        _watchdog?.Dispose();

        // An idle mount is gone at once and the kernel ends the session; give it a moment before cutting it off.
        await Task.WhenAny(_session.Completion, Task.Delay(TimeSpan.FromSeconds(2))).ConfigureAwait(false);
        await Task.Run(_session.Dispose).ConfigureAwait(false);
        _kernelMount.Channel.Dispose();
        _kernelMount.Dispose();
    }

    private void Unmount()
    {
        try
        {
            _kernelMount.Unmount();
        }
        catch (Exception e)
        {
            _log($"unmounting {Mountpoint} failed: {e.Message}");
        }
    }
}

/// <summary>MountAsync's parts: the mount syscall (or fusermount3), starting the workers, the INIT handshake.</summary>
internal readonly record struct MountTimings(TimeSpan Mount, TimeSpan StartWorkers, TimeSpan Init);
