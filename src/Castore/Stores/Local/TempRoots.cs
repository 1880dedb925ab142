using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Castore.Stores.Local;

/// <summary>
/// Objects this process relies on right now (a build's inputs and outputs, a mount's tree, an import in progress), so
/// that a garbage collection running at the same time keeps them and their closures. Register a digest BEFORE relying
/// on the object (before checking that it exists, before writing a directory that refers to it); it stays registered
/// until this set is disposed. Thread-safe. Stores without garbage collection (memory, gRPC) hand out
/// <see cref="None"/>, which registers nothing.
/// </summary>
/// <remarks>
/// The lock protocol, like Nix's temp roots:
/// <code>
/// ROOT/gc.lock                 gc holds it exclusively while it decides and deletes; registering holds it shared
///                              for the moment of the write, so gc sees every registration made before it decided
/// ROOT/temproots/PID-RANDOM    one file per process: the digests it relies on, one lowercase hex digest a line;
///                              the process holds an exclusive flock on it while it lives, so gc tells a dead
///                              owner's file (it can lock it) and removes it; it is removed when its last set is disposed
/// </code>
/// Registration never waits for anything but a running collection's sweep, and a collection never waits for more
/// than the moment of one registration: neither can block the other for long.
/// </remarks>
public sealed class TempRoots : IDisposable
{
    private readonly TempRootsFile? _file;
    private readonly HashSet<B3Digest> _digests = [];
    private readonly Lock _lock = new();
    private bool _disposed;

    internal TempRoots(TempRootsFile? file) => _file = file;

    /// <summary>A set that registers nothing, for stores without garbage collection.</summary>
    public static TempRoots None { get; } = new(null);

    /// <summary>Registers <paramref name="digest"/> (a blob or a directory and its closure). Waits while a collection is sweeping.</summary>
    public ValueTask AddAsync(B3Digest digest, CancellationToken cancellationToken = default) => AddAsync([digest], cancellationToken);

    /// <summary>Registers what <paramref name="nodes"/> name: directories (with their closures) and files' blobs.</summary>
    public ValueTask AddAsync(IEnumerable<Node> nodes, CancellationToken cancellationToken = default) =>
        AddAsync(
            nodes.SelectMany(n => n switch
            {
                DirectoryNode d => [d.Digest],
                FileNode f => [f.Digest],
                _ => Array.Empty<B3Digest>(),
            }),
            cancellationToken);

    public async ValueTask AddAsync(IEnumerable<B3Digest> digests, CancellationToken cancellationToken = default)
    {
        if (_file is null)
        {
            return;
        }

        List<B3Digest> fresh;
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            fresh = [.. digests.Where(d => !_digests.Contains(d)).Distinct()];
        }

        if (fresh.Count == 0)
        {
            return;
        }

        await _file.AddAsync(fresh, cancellationToken).ConfigureAwait(false);
        List<B3Digest> giveBack;
        lock (_lock)
        {
            giveBack = _disposed ? fresh : [.. fresh.Where(d => !_digests.Add(d))];
        }

        // Registered twice by racing callers, or after Dispose: give back what this call took.
        if (giveBack.Count > 0)
        {
            _file.Release(giveBack);
        }
    }

    /// <summary>Releases every digest this set registered.</summary>
    public void Dispose()
    {
        if (_file is null)
        {
            return;
        }

        B3Digest[] digests;
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            digests = [.. _digests];
            _digests.Clear();
        }

        _file.Release(digests);
    }
}

/// <summary>This process's temp-roots file in one store: reference counts over every <see cref="TempRoots"/> set.</summary>
internal sealed class TempRootsFile
{
    private static readonly ConcurrentDictionary<string, TempRootsFile> Files = new(StringComparer.Ordinal);
    private static readonly TimeSpan PollInterval = TimeSpan.FromMilliseconds(10);

    private readonly string _directory;
    private readonly string _gcLockPath;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly Dictionary<B3Digest, int> _counts = [];
    private SafeFileHandle? _gcLock;
    private SafeFileHandle? _handle;
    private string? _path;
    private long _length;

    private TempRootsFile(LocalStore store)
    {
        _directory = store.TempRootsDirectory;
        _gcLockPath = store.GcLockPath;
    }

    /// <summary>One per store per process: flock is per open file, and two of ours on one store would lock each other out.</summary>
    public static TempRootsFile For(LocalStore store) => Files.GetOrAdd(store.Root, _ => new TempRootsFile(store));

    public async ValueTask AddAsync(IReadOnlyCollection<B3Digest> digests, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var fresh = digests.Where(d => !_counts.ContainsKey(d)).ToList();
            if (fresh.Count > 0)
            {
                await LockSharedAsync(cancellationToken).ConfigureAwait(false);
                try
                {
                    EnsureFile();
                    var text = new StringBuilder(fresh.Count * 65);
                    foreach (var digest in fresh)
                    {
                        text.Append(digest.ToHex()).Append('\n');
                    }

                    byte[] bytes = Encoding.ASCII.GetBytes(text.ToString());
                    RandomAccess.Write(_handle!, bytes, _length);
                    _length += bytes.Length;
                }
                finally
                {
                    Unlock();
                }
            }

            foreach (var digest in digests)
            {
                _counts[digest] = _counts.GetValueOrDefault(digest) + 1;
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    public void Release(IReadOnlyCollection<B3Digest> digests)
    {
        if (digests.Count == 0)
        {
            return;
        }

        _gate.Wait();
        try
        {
            bool changed = false;
            foreach (var digest in digests)
            {
                if (_counts.TryGetValue(digest, out int count))
                {
                    if (count <= 1)
                    {
                        _counts.Remove(digest);
                        changed = true;
                    }
                    else
                    {
                        _counts[digest] = count - 1;
                    }
                }
            }

            if (!changed || _handle is null)
            {
                return;
            }

            LockSharedAsync(CancellationToken.None).AsTask().GetAwaiter().GetResult();
            bool empty = _counts.Count == 0;
            try
            {
                if (empty)
                {
                    // Nothing left to protect: the file goes, so that a finished process leaves nothing behind.
                    LocalStore.DeleteQuietly(_path!);
                    _handle.Dispose();
                    _handle = null;
                    _path = null;
                    _length = 0;
                    return;
                }

                var text = new StringBuilder(_counts.Count * 65);
                foreach (var digest in _counts.Keys)
                {
                    text.Append(digest.ToHex()).Append('\n');
                }

                byte[] bytes = Encoding.ASCII.GetBytes(text.ToString());
                if (Libc.ftruncate((int)_handle.DangerousGetHandle(), 0) != 0)
                {
                    throw PosixException.FromLastError("truncate", _path);
                }

                RandomAccess.Write(_handle, bytes, 0);
                _length = bytes.Length;
            }
            finally
            {
                Unlock();
                if (empty)
                {
                    // Opened again when needed: a store removed and created again at this path gets a new gc.lock.
                    _gcLock!.Dispose();
                    _gcLock = null;
                }
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    private void EnsureFile()
    {
        if (_handle is not null)
        {
            return;
        }

        Directory.CreateDirectory(_directory);
        for (int attempt = 0; ; attempt++)
        {
            string path = Path.Combine(_directory, $"{Environment.ProcessId}-{Random.Shared.Next():x8}");
            int fd = LocalStore.OpenFile(path, Libc.O_RDWR | Libc.O_CREAT | Libc.O_EXCL | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0x1a4);
            if (fd < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == Errno.EEXIST && attempt < 8)
                {
                    continue;
                }

                throw new PosixException("create", path, errno);
            }

            var handle = new SafeFileHandle(fd, ownsHandle: true);

            // A new file: at most 'store info' probing it holds a lock on it, for a moment.
            while (Libc.flock(fd, Libc.LOCK_EX) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno != Errno.EINTR)
                {
                    handle.Dispose();
                    throw new PosixException("lock", path, errno);
                }
            }

            _handle = handle;
            _path = path;
            _length = 0;
            return;
        }
    }

    private async ValueTask LockSharedAsync(CancellationToken cancellationToken)
    {
        if (_gcLock is null)
        {
            int fd = LocalStore.OpenFile(_gcLockPath, Libc.O_RDWR | Libc.O_CREAT | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0x1a4);
            if (fd < 0)
            {
                throw PosixException.FromLastError("open", _gcLockPath);
            }

            _gcLock = new SafeFileHandle(fd, ownsHandle: true);
        }

        while (!GcLock.TryLock(_gcLock, Libc.LOCK_SH, _gcLockPath))
        {
            await Task.Delay(PollInterval, cancellationToken).ConfigureAwait(false);
        }
    }

    private void Unlock() => Libc.flock((int)_gcLock!.DangerousGetHandle(), Libc.LOCK_UN);
}

/// <summary>The exclusive side of <c>ROOT/gc.lock</c>, held by a collection.</summary>
internal sealed class GcLock : IDisposable
{
    private readonly SafeFileHandle _handle;

    private GcLock(SafeFileHandle handle) => _handle = handle;

    public static async Task<GcLock> AcquireExclusiveAsync(LocalStore store, Action? waiting, CancellationToken cancellationToken)
    {
        int fd = LocalStore.OpenFile(store.GcLockPath, Libc.O_RDWR | Libc.O_CREAT | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0x1a4);
        if (fd < 0)
        {
            throw PosixException.FromLastError("open", store.GcLockPath);
        }

        var handle = new SafeFileHandle(fd, ownsHandle: true);
        try
        {
            bool told = false;
            while (!TryLock(handle, Libc.LOCK_EX, store.GcLockPath))
            {
                if (!told)
                {
                    told = true;
                    waiting?.Invoke();
                }

                await Task.Delay(TimeSpan.FromMilliseconds(5), cancellationToken).ConfigureAwait(false);
            }

            return new GcLock(handle);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Tries a non-blocking flock; false when someone else holds a conflicting lock.</summary>
    public static bool TryLock(SafeFileHandle handle, int operation, string path)
    {
        while (true)
        {
            if (Libc.flock((int)handle.DangerousGetHandle(), operation | Libc.LOCK_NB) == 0)
            {
                return true;
            }

            int errno = Marshal.GetLastPInvokeError();
            if (errno == Errno.EAGAIN)
            {
                return false;
            }

            if (errno != Errno.EINTR)
            {
                throw new PosixException("lock", path, errno);
            }
        }
    }

    public void Dispose() => _handle.Dispose();
}

/// <summary>
/// Temp roots that expire, for a long-running server: a digest stays registered for at least <c>keep</c> after it was
/// last added, and at most twice that. <c>serve</c> registers what it told a client exists or accepted from it, so a
/// client that skips uploading an object it was told is there can rely on it for that long.
/// </summary>
public sealed class ExpiringTempRoots : IDisposable
{
    private readonly Func<TempRoots> _create;
    private readonly Timer _timer;
    private readonly Lock _lock = new();
    private TempRoots _current;
    private TempRoots _previous = TempRoots.None;
    private bool _disposed;

    public ExpiringTempRoots(Func<TempRoots> create, TimeSpan keep)
    {
        _create = create;
        _current = create();
        _timer = new Timer(_ => Rotate(), null, keep, keep);
    }

    public async ValueTask AddAsync(B3Digest digest, CancellationToken cancellationToken = default)
    {
        TempRoots current;
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            current = _current;
        }

        try
        {
            await current.AddAsync(digest, cancellationToken).ConfigureAwait(false);
        }
        catch (ObjectDisposedException)
        {
            // Rotated out twice while this waited: register in the current set instead.
            await AddAsync(digest, cancellationToken).ConfigureAwait(false);
        }
    }

    private void Rotate()
    {
        TempRoots expired;
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            expired = _previous;
            _previous = _current;
            _current = _create();
        }

        expired.Dispose();
    }

    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
        }

        _timer.Dispose();
        _current.Dispose();
        _previous.Dispose();
    }
}
