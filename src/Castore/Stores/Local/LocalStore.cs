using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using TvixFuseBuild.Native;
using TvixFuseBuild.Castore.Transfer;

namespace TvixFuseBuild.Castore.Stores.Local;

/// <summary>
/// The embedded default store: a directory on the local disk.
/// <code>
/// ROOT/tvix-fuse-build-store      marker (format version)
/// ROOT/blobs/ab/abcd…(64 hex)     blob bytes, mode 0444
/// ROOT/directories/ab/abcd…       canonical Directory encodings, mode 0444
/// ROOT/tmp/PID-RANDOM             objects being written; renamed into place when complete
/// ROOT/quarantine/                objects found corrupt, moved aside
/// ROOT/roots/NAME                 explicit garbage-collection roots: a digest each (see <see cref="StoreRoots"/>)
/// ROOT/temproots/PID-RANDOM       what running processes rely on, and ROOT/gc.lock (see <see cref="TempRoots"/>)
/// ROOT/imports/HEX                 what imported host files hashed to, by path (see <see cref="Local.ImportCache"/>)
/// </code>
/// Every object is written to tmp/ and renamed into place, so a crash never leaves a partial object under a digest's
/// name, and several processes can use one store at once (the same object written twice is the same bytes).
/// Nothing in the store is followed or replaced when it is not what the store puts there: a symlink, device or other
/// non-directory in place of one of its directories makes opening it an error, and a rename never replaces anything
/// (an object already present stays; anything else under an object's name is an error).
/// Writing an object that is already there refreshes its modification time: garbage collection keeps young objects.
/// </summary>
public sealed class LocalStore
{
    public const string MarkerFileName = "tvix-fuse-build-store";
    private const string FormatVersion = "1";
    private static readonly HashSet<string> StoreEntries = ["blobs", "directories", "tmp", "quarantine", "roots", "temproots", "gc.lock", "imports"];

    private LocalStore(string root)
    {
        Root = root;
        BlobsDirectory = Path.Combine(root, "blobs");
        DirectoriesDirectory = Path.Combine(root, "directories");
        TempDirectory = Path.Combine(root, "tmp");
        QuarantineDirectory = Path.Combine(root, "quarantine");
        TempRootsDirectory = Path.Combine(root, "temproots");
        GcLockPath = Path.Combine(root, "gc.lock");
        Blobs = new LocalBlobService(this);
        Directories = new LocalDirectoryService(this);
        Roots = new StoreRoots(this);
        ImportCache = new ImportCache(this);
    }

    public string Root { get; }

    public LocalBlobService Blobs { get; }

    public LocalDirectoryService Directories { get; }

    /// <summary>The explicit garbage-collection roots.</summary>
    public StoreRoots Roots { get; }

    /// <summary>What earlier imports found host files to hash to (for <see cref="Transfer.ImportOptions.Cache"/>).</summary>
    public ImportCache ImportCache { get; }

    /// <summary>A new set of temp roots: what this process relies on until the set is disposed.</summary>
    public TempRoots CreateTempRoots() => new(TempRootsFile.For(this));

    internal string BlobsDirectory { get; }

    internal string DirectoriesDirectory { get; }

    internal string TempDirectory { get; }

    internal string QuarantineDirectory { get; }

    internal string TempRootsDirectory { get; }

    internal string GcLockPath { get; }

    /// <summary><c>$XDG_DATA_HOME/tvix-fuse-build/store</c>, or <c>~/.local/share/tvix-fuse-build/store</c>.</summary>
    public static string DefaultRoot
    {
        get
        {
            string? dataHome = Environment.GetEnvironmentVariable("XDG_DATA_HOME");
            if (string.IsNullOrEmpty(dataHome) || !Path.IsPathRooted(dataHome))
            {
                string home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
                if (string.IsNullOrEmpty(home))
                {
                    throw new StoreAddressException("cannot find the default store: neither XDG_DATA_HOME nor HOME is set");
                }

                dataHome = Path.Combine(home, ".local", "share");
            }

            return Path.Combine(dataHome, "tvix-fuse-build", "store");
        }
    }

    /// <summary>Opens the store at <paramref name="root"/>, creating it when it does not exist yet.</summary>
    public static LocalStore Open(string root)
    {
        if (!Path.IsPathRooted(root))
        {
            throw new StoreAddressException($"a local store needs an absolute path, got '{root}'");
        }

        root = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root));
        string marker = Path.Combine(root, MarkerFileName);
        try
        {
            if (!File.Exists(marker))
            {
                // Entries of a store being created (maybe by another process right now) are fine; anything else is not ours.
                if (Directory.Exists(root) && Directory.EnumerateFileSystemEntries(root).Any(e => !StoreEntries.Contains(Path.GetFileName(e))))
                {
                    throw new StoreAddressException($"{root} is not empty and is not a tvix-fuse-build store (no {MarkerFileName} file)");
                }

                Create(root, marker);
            }
            else
            {
                string version = File.ReadAllText(marker).Trim();
                if (version != FormatVersion)
                {
                    throw new StoreAddressException($"{root} is a tvix-fuse-build store of format {version}; this version reads format {FormatVersion}");
                }
            }
        }
        catch (UnauthorizedAccessException e)
        {
            throw new StoreAddressException($"cannot open the store at {root}: {e.Message}");
        }

        var store = new LocalStore(root);
        foreach (string entry in StoreEntries.Where(e => e != "gc.lock"))
        {
            // gc.lock is a file. Only looked at: a missing tmp/ or quarantine/ is made when needed, as before (the store may be read-only).
            EnsureDirectory(root, Path.Combine(root, entry), create: false);
        }

        store.RemoveStaleTemporaryFiles();
        return store;
    }

    private static unsafe void Create(string root, string marker)
    {
        Directory.CreateDirectory(root);
        foreach (string kind in new[] { "blobs", "directories" })
        {
            // The parent first: it is checked to be a directory before anything is made below it.
            EnsureDirectory(root, Path.Combine(root, kind));
            for (int i = 0; i < 256; i++)
            {
                EnsureDirectory(root, Path.Combine(root, kind, i.ToString("x2")));
            }
        }

        EnsureDirectory(root, Path.Combine(root, "tmp"));
        EnsureDirectory(root, Path.Combine(root, "quarantine"));

        // The marker goes last and atomically: a half-created store has no marker and is created again. A marker
        // another process put there first is as good as this one.
        string temp = Path.Combine(root, "tmp", $"{Environment.ProcessId}-marker-{Random.Shared.Next():x8}");
        File.WriteAllText(temp, FormatVersion + "\n");
        byte[] from = NativePath.FromString(temp), to = NativePath.FromString(marker);
        fixed (byte* f = from)
        fixed (byte* t = to)
        {
            int rc = Libc.renameat2(Libc.AT_FDCWD, f, Libc.AT_FDCWD, t, Libc.RENAME_NOREPLACE);
            int errno = rc == 0 ? 0 : Marshal.GetLastPInvokeError();
            if (rc != 0)
            {
                DeleteQuietly(temp);
                if (errno != Errno.EEXIST)
                {
                    throw new PosixException("create", marker, errno);
                }
            }
        }
    }

    /// <summary>
    /// Makes the store directory <paramref name="path"/>, or checks that what is there is a directory and not a symlink
    /// to one: the store never creates or writes anything through a link it did not make.
    /// </summary>
    internal static unsafe void EnsureDirectory(string root, string path, bool create = true)
    {
        byte[] native = NativePath.FromString(path);
        fixed (byte* p = native)
        {
            if (create)
            {
                if (Libc.mkdirat(Libc.AT_FDCWD, p, 0x1FF) == 0)
                {
                    return;
                }

                int errno = Marshal.GetLastPInvokeError();
                if (errno != Errno.EEXIST)
                {
                    throw new PosixException("create the directory", path, errno);
                }
            }

            if (Libc.fstatat(Libc.AT_FDCWD, p, out var status, Libc.AT_SYMLINK_NOFOLLOW) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (!create && errno == Errno.ENOENT)
                {
                    return;
                }

                throw new PosixException("stat", path, errno);
            }

            if (!status.IsDirectory)
            {
                throw new StoreAddressException($"refusing to use the store at {root}: {path} is {HostFile.Describe(status)}, not a directory");
            }
        }
    }

    internal string BlobPath(in B3Digest digest) => ObjectPath(BlobsDirectory, digest);

    internal string DirectoryPath(in B3Digest digest) => ObjectPath(DirectoriesDirectory, digest);

    private static string ObjectPath(string directory, in B3Digest digest)
    {
        string hex = digest.ToHex();
        return $"{directory}/{hex.AsSpan(0, 2)}/{hex}";
    }

    /// <summary>Creates a new temporary file, named after this process so that a crashed writer's leftovers can be found.</summary>
    internal (SafeFileHandle Handle, string Path) CreateTemporaryFile()
    {
        for (int attempt = 0; ; attempt++)
        {
            string path = Path.Combine(TempDirectory, $"{Environment.ProcessId}-{Random.Shared.NextInt64():x16}");
            try
            {
                return (CreateExclusive(path), path);
            }
            catch (PosixException e) when (e.Errno == Errno.EEXIST && attempt < 8)
            {
            }
            catch (PosixException e) when (e.Errno == Errno.ENOENT && attempt == 0)
            {
                // Someone removed tmp/ (e.g. cleaning the store by hand): recreate it once.
                EnsureDirectory(Root, TempDirectory);
            }
        }
    }

    private static SafeFileHandle CreateExclusive(string path)
    {
        int fd = OpenFile(path, Libc.O_RDWR | Libc.O_CREAT | Libc.O_EXCL | Libc.O_CLOEXEC, 0x180);
        if (fd < 0)
        {
            throw PosixException.FromLastError("create", path);
        }

        return new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>openat(2) on an absolute path; -1 with errno set on failure.</summary>
    internal static unsafe int OpenFile(string path, int flags, uint mode)
    {
        byte[] native = NativePath.FromString(path);
        fixed (byte* p = native)
        {
            return Libc.openat(Libc.AT_FDCWD, p, flags, mode);
        }
    }

    /// <summary>
    /// Marks an object that was written again as young, so that a collection running now keeps it (an upload of an
    /// object the store already had relies on it from now on, like a new one).
    /// </summary>
    internal static void Touch(string path)
    {
        try
        {
            File.SetLastWriteTimeUtc(path, DateTime.UtcNow);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Gone (a collection took it: the caller writes it again) or not ours to touch.
        }
    }

    /// <summary>
    /// Moves a complete temporary object into place, read-only, never replacing anything. When the object already exists
    /// the existing copy is kept (it has the same bytes) and the temporary file is removed; something other than a
    /// regular file under the object's name is an error, and stays as it is.
    /// </summary>
    internal unsafe void Commit(string temporaryPath, string finalPath)
    {
        File.SetUnixFileMode(temporaryPath, UnixFileMode.UserRead | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        byte[] from = NativePath.FromString(temporaryPath), to = NativePath.FromString(finalPath);
        fixed (byte* f = from)
        fixed (byte* t = to)
        {
            for (int attempt = 0; ; attempt++)
            {
                if (Libc.renameat2(Libc.AT_FDCWD, f, Libc.AT_FDCWD, t, Libc.RENAME_NOREPLACE) == 0)
                {
                    return;
                }

                int errno = Marshal.GetLastPInvokeError();
                if (errno == Errno.ENOENT && attempt == 0)
                {
                    // Someone removed the fan-out directory (e.g. cleaning the store by hand): recreate it once.
                    EnsureDirectory(Root, Path.GetDirectoryName(finalPath)!);
                    continue;
                }

                if (errno == Errno.EINVAL && Libc.fstatat(Libc.AT_FDCWD, t, out _, Libc.AT_SYMLINK_NOFOLLOW) != 0)
                {
                    // A filesystem without RENAME_NOREPLACE, and nothing there: a plain rename, after one more look.
                    if (Libc.renameat(Libc.AT_FDCWD, f, Libc.AT_FDCWD, t) == 0)
                    {
                        return;
                    }

                    errno = Marshal.GetLastPInvokeError();
                }
                else if (errno is Errno.EEXIST or Errno.EINVAL)
                {
                    if (Libc.fstatat(Libc.AT_FDCWD, t, out var existing, Libc.AT_SYMLINK_NOFOLLOW) == 0 && !existing.IsRegularFile)
                    {
                        DeleteQuietly(temporaryPath);
                        throw new UnsafeDestinationException(
                            $"refusing to replace {finalPath} in the store {Root}: it is {HostFile.Describe(existing)}, not a stored object");
                    }

                    // Refreshed, a collection keeps the copy that is there; gone meanwhile (a collection took it), ours
                    // goes in its place.
                    Touch(finalPath);
                    if (Libc.fstatat(Libc.AT_FDCWD, t, out _, Libc.AT_SYMLINK_NOFOLLOW) != 0 && attempt < 3)
                    {
                        continue;
                    }

                    DeleteQuietly(temporaryPath);
                    return;
                }

                DeleteQuietly(temporaryPath);
                throw new PosixException("rename", finalPath, errno);
            }
        }
    }

    internal static void DeleteQuietly(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    /// <summary>
    /// Opens a stored object for reading, or returns null when there is none. Never through a symlink and never
    /// waiting on a FIFO: anything but a regular file under an object's name is moved to quarantine/ (the node itself,
    /// unopened) and reported as corrupt.
    /// </summary>
    internal unsafe SafeFileHandle? OpenObject(string path, string what)
    {
        byte[] native = NativePath.FromString(path);
        fixed (byte* p = native)
        {
            if (Libc.fstatat(Libc.AT_FDCWD, p, out var seen, Libc.AT_SYMLINK_NOFOLLOW) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                return errno is Errno.ENOENT or Errno.ENOTDIR ? null : throw new PosixException("stat", path, errno);
            }

            if (!seen.IsRegularFile)
            {
                throw NotAnObject(path, what, seen);
            }

            int fd = Libc.openat(Libc.AT_FDCWD, p, Libc.O_RDONLY | Libc.O_NOFOLLOW | Libc.O_NONBLOCK | Libc.O_NOCTTY | Libc.O_CLOEXEC, 0);
            if (fd < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                return errno is Errno.ENOENT or Errno.ENOTDIR ? null : throw new PosixException("open", path, errno);
            }

            var handle = new SafeFileHandle(fd, ownsHandle: true);
            if (Libc.fstat(fd, out var opened) != 0 || !opened.IsRegularFile)
            {
                // Replaced between the look and the open.
                handle.Dispose();
                throw NotAnObject(path, what, opened);
            }

            return handle;
        }
    }

    private CorruptObjectException NotAnObject(string path, string what, in FileStatus status)
    {
        string kind = HostFile.Describe(status);
        string movedTo = Quarantine(path);
        return new CorruptObjectException($"{what} in the local store {Root} is corrupt: {path} is {kind}, not a stored object; moved aside to {movedTo}");
    }

    /// <summary>Moves a corrupt object out of the way so that it is never served and can be written again; returns where it went.</summary>
    internal unsafe string Quarantine(string path)
    {
        EnsureDirectory(Root, QuarantineDirectory);
        string destination = Path.Combine(QuarantineDirectory, $"{Path.GetFileName(path)}.{DateTime.UtcNow:yyyyMMddTHHmmssfff}.{Random.Shared.Next():x8}");
        byte[] from = NativePath.FromString(path), to = NativePath.FromString(destination);
        fixed (byte* f = from)
        fixed (byte* t = to)
        {
            // Whatever it is (a file, a FIFO, a device node, a symlink), the entry itself moves; nothing is opened or removed.
            if (Libc.renameat2(Libc.AT_FDCWD, f, Libc.AT_FDCWD, t, Libc.RENAME_NOREPLACE) == 0)
            {
                return destination;
            }

            int errno = Marshal.GetLastPInvokeError();
            return errno == Errno.ENOENT
                ? QuarantineDirectory // Another process quarantined it first.
                : throw new PosixException("move aside", path, errno);
        }
    }

    private void RemoveStaleTemporaryFiles()
    {
        IEnumerable<string> entries;
        try
        {
            entries = Directory.EnumerateFiles(TempDirectory).ToList();
        }
        catch (DirectoryNotFoundException)
        {
            EnsureDirectory(Root, TempDirectory);
            return;
        }

        foreach (string entry in entries)
        {
            string name = Path.GetFileName(entry);
            int dash = name.IndexOf('-');
            if (dash > 0 && int.TryParse(name.AsSpan(0, dash), out int pid) && pid != Environment.ProcessId && !IsAlive(pid) &&
                HostFile.Inspect(entry) is { IsRegularFile: true })
            {
                DeleteQuietly(entry);
            }
        }
    }

    private static bool IsAlive(int pid) => Libc.kill(pid, 0) == 0 || Marshal.GetLastPInvokeError() != Errno.ESRCH;
}
