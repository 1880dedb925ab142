using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using TvixFuseBuild.Castore.Interop;

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
/// </code>
/// Every object is written to tmp/ and renamed into place, so a crash never leaves a partial object under a digest's
/// name, and several processes can use one store at once (the same object written twice is the same bytes). Writing
/// an object that is already there refreshes its modification time: garbage collection keeps young objects.
/// </summary>
public sealed class LocalStore
{
    public const string MarkerFileName = "tvix-fuse-build-store";
    private const string FormatVersion = "1";
    private static readonly HashSet<string> StoreEntries = ["blobs", "directories", "tmp", "quarantine", "roots", "temproots", "gc.lock"];

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
    }

    public string Root { get; }

    public LocalBlobService Blobs { get; }

    public LocalDirectoryService Directories { get; }

    /// <summary>The explicit garbage-collection roots.</summary>
    public StoreRoots Roots { get; }

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
        store.RemoveStaleTemporaryFiles();
        return store;
    }

    private static void Create(string root, string marker)
    {
        Directory.CreateDirectory(root);
        foreach (string kind in new[] { "blobs", "directories" })
        {
            for (int i = 0; i < 256; i++)
            {
                Directory.CreateDirectory(Path.Combine(root, kind, i.ToString("x2")));
            }
        }

        Directory.CreateDirectory(Path.Combine(root, "tmp"));
        Directory.CreateDirectory(Path.Combine(root, "quarantine"));

        // The marker goes last and atomically: a half-created store has no marker and is created again.
        string temp = Path.Combine(root, "tmp", $"{Environment.ProcessId}-marker");
        File.WriteAllText(temp, FormatVersion + "\n");
        File.Move(temp, marker, overwrite: true);
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
            catch (PosixException e) when (e.Errno == Libc.EEXIST && attempt < 8)
            {
            }
            catch (PosixException e) when (e.Errno == Libc.ENOENT && attempt == 0)
            {
                // Someone removed tmp/ (e.g. cleaning the store by hand): recreate it once.
                Directory.CreateDirectory(TempDirectory);
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
    /// Moves a complete temporary object into place, read-only. When the object already exists the existing copy is
    /// kept (it has the same bytes) and the temporary file is removed.
    /// </summary>
    internal void Commit(string temporaryPath, string finalPath)
    {
        File.SetUnixFileMode(temporaryPath, UnixFileMode.UserRead | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        if (File.Exists(finalPath))
        {
            Touch(finalPath);

            // Still there after the touch: a collection keeps it now. Gone: a collection took it; put ours in its place.
            if (File.Exists(finalPath))
            {
                File.Delete(temporaryPath);
                return;
            }
        }

        try
        {
            File.Move(temporaryPath, finalPath, overwrite: true);
        }
        catch (DirectoryNotFoundException)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(finalPath)!);
            File.Move(temporaryPath, finalPath, overwrite: true);
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

    /// <summary>Moves a corrupt object out of the way so that it is never served and can be written again; returns where it went.</summary>
    internal string Quarantine(string path)
    {
        Directory.CreateDirectory(QuarantineDirectory);
        string destination = Path.Combine(QuarantineDirectory, $"{Path.GetFileName(path)}.{DateTime.UtcNow:yyyyMMddTHHmmssfff}");
        try
        {
            File.Move(path, destination, overwrite: true);
            return destination;
        }
        catch (FileNotFoundException)
        {
            // Another process quarantined it first.
            return QuarantineDirectory;
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
            Directory.CreateDirectory(TempDirectory);
            return;
        }

        foreach (string entry in entries)
        {
            string name = Path.GetFileName(entry);
            int dash = name.IndexOf('-');
            if (dash > 0 && int.TryParse(name.AsSpan(0, dash), out int pid) && pid != Environment.ProcessId && !IsAlive(pid))
            {
                DeleteQuietly(entry);
            }
        }
    }

    private static bool IsAlive(int pid) => Libc.kill(pid, 0) == 0 || Marshal.GetLastPInvokeError() != Libc.ESRCH;
}
