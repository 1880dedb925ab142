using System.Runtime.InteropServices;
using System.Text;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Castore.Stores.Local;

/// <summary>Roots kept outside the store (the build result cache), read afresh each time they are asked for.</summary>
public interface IExternalRoots
{
    /// <summary>The digests (directories or blobs) to keep with their closures.</summary>
    IEnumerable<B3Digest> Read();

    /// <summary>After a collection: removes the entries that name an object <paramref name="isPresent"/> denies; returns how many.</summary>
    int RemoveStale(Func<B3Digest, bool> isPresent, bool dryRun);
}

public sealed record GcOptions
{
    public static readonly TimeSpan DefaultOlderThan = TimeSpan.FromHours(1);

    /// <summary>Objects written (or written again) more recently than this are live, with their closures.</summary>
    public TimeSpan OlderThan { get; init; } = DefaultOlderThan;

    /// <summary>Stop removing once the objects take at most this many bytes; null: remove everything unreachable.</summary>
    public long? MaxSize { get; init; }

    /// <summary>Decide and report, remove nothing.</summary>
    public bool DryRun { get; init; }

    public IExternalRoots? ExternalRoots { get; init; }

    public IProgress<GcProgress>? Progress { get; init; }

    /// <summary>Called once if another collection holds the store's gc.lock and this one waits for it.</summary>
    public Action? Waiting { get; init; }
}

/// <summary>Where a collection is: listing, marking or removing, with counts when they are known.</summary>
public readonly record struct GcProgress(string Phase, long Done, long Total);

/// <summary>What a collection removed (or, dry, would remove) and kept. Sizes are the objects' file sizes.</summary>
public sealed record GcReport
{
    public bool DryRun { get; init; }

    public int BlobsRemoved { get; init; }

    public int DirectoriesRemoved { get; init; }

    public long BytesRemoved { get; init; }

    public int ObjectsKept { get; init; }

    public long BytesKept { get; init; }

    /// <summary>Kept objects reachable from a root (explicit, result cache, temp root).</summary>
    public int KeptReachable { get; init; }

    /// <summary>Kept objects younger than the grace period (or in the closure of one), and not otherwise reachable.</summary>
    public int KeptYoung { get; init; }

    /// <summary>Unreachable objects kept because the store was already within <see cref="GcOptions.MaxSize"/>.</summary>
    public int KeptUnderMaxSize { get; init; }

    public int StaleResultsRemoved { get; init; }

    /// <summary>Temp-roots files of running processes that were honoured.</summary>
    public int LiveTempRootFiles { get; init; }

    /// <summary>Temp-roots files of processes that are gone (removed, unless dry).</summary>
    public int DeadTempRootFiles { get; init; }
}

/// <summary>
/// Garbage collection of a local store: removes every object that is not reachable from a root, young, or in use.
/// </summary>
/// <remarks>
/// Live, with their whole closures: explicit roots (<see cref="StoreRoots"/>); external roots (the build result
/// cache); every digest in a running process's temp-roots file (<see cref="TempRoots"/>: builds, mounts, imports,
/// serve's builds and what it told clients about); and every object younger than <see cref="GcOptions.OlderThan"/>,
/// which covers what the temp roots do not name, such as directories uploaded to serve and not yet referred to.
/// <para>The collection runs in two phases. The first lists the objects and marks what the roots and young objects
/// reach, taking no lock. The second holds <c>gc.lock</c> exclusively, so no process can register a temp root
/// meanwhile: it reads the temp roots and the roots again, marks what they add, treats a directory that appeared since
/// the listing as a root and re-checks each candidate's age, then removes the rest. Anything a process registered
/// before the lock was taken is therefore kept, and anything it registers after waits until the sweep is over (and is
/// written again if it was swept).</para>
/// <para>Removal order keeps every remaining directory whole: a directory goes before anything it refers to (an
/// unreachable object's referrers are unreachable too), so a reader never finds a directory whose children are
/// gone. With <see cref="GcOptions.MaxSize"/>, the oldest go first, an object counting as young as its youngest
/// unreachable referrer, and removal stops once the objects take at most that many bytes; reachable and young
/// objects are never removed, even when the store stays over the size.</para>
/// </remarks>
public static class GarbageCollector
{
    private readonly record struct Entry(long Size, long ModifiedTicks);

    public static async Task<GcReport> CollectAsync(LocalStore store, GcOptions options, CancellationToken cancellationToken = default)
    {
        var progress = options.Progress;
        long cutoff = DateTime.UtcNow.Ticks - Math.Max(0, options.OlderThan.Ticks);

        progress?.Report(new GcProgress("listing objects", 0, 0));
        var blobs = List(store.BlobsDirectory, cancellationToken);
        var directories = List(store.DirectoriesDirectory, cancellationToken);

        var marker = new Marker(store, progress, blobs.Count + directories.Count);
        MarkRoots(store, options, marker, cancellationToken);
        var young = new Marker(store, null, 0);
        foreach (var (digest, entry) in directories)
        {
            if (entry.ModifiedTicks > cutoff)
            {
                young.MarkDirectory(digest, cancellationToken);
            }
        }

        foreach (var (digest, entry) in blobs)
        {
            if (entry.ModifiedTicks > cutoff)
            {
                young.MarkBlob(digest);
            }
        }

        progress?.Report(new GcProgress("waiting for the store's gc.lock", 0, 0));
        using var gcLock = await GcLock.AcquireExclusiveAsync(store, options.Waiting, cancellationToken).ConfigureAwait(false);

        var (tempRoots, live, dead) = ReadTempRoots(store, options.DryRun);
        foreach (var digest in tempRoots)
        {
            marker.MarkAny(digest, cancellationToken);
        }

        MarkRoots(store, options, marker, cancellationToken);

        // Directories written since the listing are new, so young: they and what they refer to stay.
        foreach (var digest in ListNames(store.DirectoriesDirectory))
        {
            if (!directories.ContainsKey(digest))
            {
                young.MarkDirectory(digest, cancellationToken);
            }
        }

        // Each candidate's age again: writing an object that exists refreshes it.
        var candidateDirectories = Candidates(directories, marker.Directories, young.Directories, d => store.DirectoryPath(d), cutoff, young, isDirectory: true, cancellationToken);
        var candidateBlobs = Candidates(blobs, marker.Blobs, young.Blobs, b => store.BlobPath(b), cutoff, young, isDirectory: false, cancellationToken);
        candidateDirectories.RemoveWhere(young.Directories.Contains);
        candidateBlobs.RemoveWhere(young.Blobs.Contains);

        var order = RemovalOrder(store, directories, blobs, candidateDirectories, candidateBlobs);
        long storeSize = blobs.Values.Sum(e => e.Size) + directories.Values.Sum(e => e.Size);
        long size = storeSize;
        int blobsRemoved = 0, directoriesRemoved = 0;
        long bytesRemoved = 0;
        var removed = new HashSet<(B3Digest, bool)>();
        int done = 0;
        foreach (var (digest, isDirectory) in order)
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (options.MaxSize is { } max && size <= max)
            {
                break;
            }

            var entry = isDirectory ? directories[digest] : blobs[digest];
            string path = isDirectory ? store.DirectoryPath(digest) : store.BlobPath(digest);
            if (options.DryRun || Unlink(path))
            {
                removed.Add((digest, isDirectory));
                size -= entry.Size;
                bytesRemoved += entry.Size;
                if (isDirectory)
                {
                    directoriesRemoved++;
                }
                else
                {
                    blobsRemoved++;
                }
            }

            progress?.Report(new GcProgress("removing unreachable objects", ++done, order.Count));
        }

        // Present after this collection: listed and not removed, or written since the listing.
        bool IsPresent(B3Digest digest) =>
            (directories.ContainsKey(digest) ? !removed.Contains((digest, true)) : File.Exists(store.DirectoryPath(digest))) ||
            (blobs.ContainsKey(digest) ? !removed.Contains((digest, false)) : File.Exists(store.BlobPath(digest)));
        int stale = options.ExternalRoots?.RemoveStale(IsPresent, options.DryRun) ?? 0;

        int total = blobs.Count + directories.Count;
        int reachable = directories.Keys.Count(marker.Directories.Contains) + blobs.Keys.Count(marker.Blobs.Contains);
        int youngKept = directories.Keys.Count(d => !marker.Directories.Contains(d) && young.Directories.Contains(d)) +
                        blobs.Keys.Count(b => !marker.Blobs.Contains(b) && young.Blobs.Contains(b));
        int kept = total - removed.Count;
        return new GcReport
        {
            DryRun = options.DryRun,
            BlobsRemoved = blobsRemoved,
            DirectoriesRemoved = directoriesRemoved,
            BytesRemoved = bytesRemoved,
            ObjectsKept = kept,
            BytesKept = storeSize - bytesRemoved,
            KeptReachable = reachable,
            KeptYoung = youngKept,
            KeptUnderMaxSize = kept - reachable - youngKept,
            StaleResultsRemoved = stale,
            LiveTempRootFiles = live,
            DeadTempRootFiles = dead,
        };
    }

    private static void MarkRoots(LocalStore store, GcOptions options, Marker marker, CancellationToken cancellationToken)
    {
        foreach (var root in store.Roots.List())
        {
            marker.MarkAny(root.Digest, cancellationToken);
        }

        foreach (var digest in options.ExternalRoots?.Read() ?? [])
        {
            marker.MarkAny(digest, cancellationToken);
        }
    }

    private static HashSet<B3Digest> Candidates(
        Dictionary<B3Digest, Entry> objects, HashSet<B3Digest> marked, HashSet<B3Digest> youngMarked, Func<B3Digest, string> pathOf,
        long cutoff, Marker young, bool isDirectory, CancellationToken cancellationToken)
    {
        var candidates = new HashSet<B3Digest>();
        foreach (var (digest, _) in objects)
        {
            if (marked.Contains(digest) || youngMarked.Contains(digest))
            {
                continue;
            }

            var info = new FileInfo(pathOf(digest));
            if (!info.Exists)
            {
                continue;
            }

            if (info.LastWriteTimeUtc.Ticks > cutoff)
            {
                if (isDirectory)
                {
                    young.MarkDirectory(digest, cancellationToken);
                }
                else
                {
                    young.MarkBlob(digest);
                }

                continue;
            }

            candidates.Add(digest);
        }

        return candidates;
    }

    /// <summary>
    /// Referrers before what they refer to; among those free to go, oldest first, where an object is as young as its
    /// youngest unreachable referrer. Every prefix of the order is therefore closed under "is referred to by".
    /// </summary>
    private static List<(B3Digest Digest, bool IsDirectory)> RemovalOrder(
        LocalStore store, Dictionary<B3Digest, Entry> directories, Dictionary<B3Digest, Entry> blobs,
        HashSet<B3Digest> candidateDirectories, HashSet<B3Digest> candidateBlobs)
    {
        var children = new Dictionary<(B3Digest, bool), List<(B3Digest, bool)>>();
        var parents = new Dictionary<(B3Digest, bool), int>();
        foreach (var digest in candidateDirectories)
        {
            parents.TryAdd((digest, true), 0);
        }

        foreach (var digest in candidateBlobs)
        {
            parents.TryAdd((digest, false), 0);
        }

        foreach (var digest in candidateDirectories)
        {
            var list = new List<(B3Digest, bool)>();
            if (ReadDirectory(store, digest) is { } directory)
            {
                foreach (var child in directory.Directories.Select(d => d.Digest).Distinct())
                {
                    if (candidateDirectories.Contains(child))
                    {
                        list.Add((child, true));
                    }
                }

                foreach (var child in directory.Files.Select(f => f.Digest).Distinct())
                {
                    if (candidateBlobs.Contains(child))
                    {
                        list.Add((child, false));
                    }
                }
            }

            foreach (var child in list)
            {
                parents[child]++;
            }

            children[(digest, true)] = list;
        }

        var effective = new Dictionary<(B3Digest, bool), long>();
        foreach (var key in parents.Keys)
        {
            effective[key] = key.Item2 ? directories[key.Item1].ModifiedTicks : blobs[key.Item1].ModifiedTicks;
        }

        // Kahn's order over the (acyclic) reference graph, pushing each referrer's age down to what it refers to.
        var ready = new Queue<(B3Digest, bool)>();
        var level = new Dictionary<(B3Digest, bool), int>();
        foreach (var (key, count) in parents)
        {
            if (count == 0)
            {
                level[key] = 0;
                ready.Enqueue(key);
            }
        }

        var remaining = new Dictionary<(B3Digest, bool), int>(parents);
        var all = new List<((B3Digest, bool) Key, long Effective, int Level)>();
        while (ready.TryDequeue(out var key))
        {
            all.Add((key, effective[key], level[key]));
            if (!children.TryGetValue(key, out var list))
            {
                continue;
            }

            foreach (var child in list)
            {
                effective[child] = Math.Max(effective[child], effective[key]);
                level[child] = Math.Max(level.GetValueOrDefault(child), level[key] + 1);
                if (--remaining[child] == 0)
                {
                    ready.Enqueue(child);
                }
            }
        }

        // (effective age, depth) is a total preorder in which every referrer comes first.
        all.Sort((a, b) => a.Effective != b.Effective ? a.Effective.CompareTo(b.Effective) : a.Level.CompareTo(b.Level));
        return [.. all.Select(a => a.Key)];
    }

    private static CastoreDirectory? ReadDirectory(LocalStore store, B3Digest digest)
    {
        try
        {
            var directory = CastoreDirectory.Decode(File.ReadAllBytes(store.DirectoryPath(digest)));
            return directory.Digest == digest ? directory : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or DirectoryValidationException)
        {
            return null;
        }
    }

    private static bool Unlink(string path)
    {
        try
        {
            var info = new FileInfo(path);
            if (!info.Exists || info.LinkTarget is not null)
            {
                return false;
            }

            File.Delete(path);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>Objects under blobs/ or directories/ named by a digest, with their size and age; anything else is not ours and ignored.</summary>
    private static Dictionary<B3Digest, Entry> List(string root, CancellationToken cancellationToken)
    {
        var result = new Dictionary<B3Digest, Entry>();
        foreach (var shard in Shards(root))
        {
            cancellationToken.ThrowIfCancellationRequested();
            foreach (var file in shard.EnumerateFiles())
            {
                try
                {
                    if (file.Name.Length == 64 && file.Name.StartsWith(shard.Name, StringComparison.Ordinal) &&
                        file.LinkTarget is null && B3Digest.TryParse(file.Name, out var digest) && digest.ToHex() == file.Name)
                    {
                        result[digest] = new Entry(file.Length, file.LastWriteTimeUtc.Ticks);
                    }
                }
                catch (IOException)
                {
                    // Removed while listed (by another collection): it is not there to keep or remove.
                }
            }
        }

        return result;
    }

    private static IEnumerable<B3Digest> ListNames(string root)
    {
        foreach (var shard in Shards(root))
        {
            foreach (string path in Directory.EnumerateFiles(shard.FullName))
            {
                string name = Path.GetFileName(path);
                if (name.Length == 64 && B3Digest.TryParse(name, out var digest) && digest.ToHex() == name)
                {
                    yield return digest;
                }
            }
        }
    }

    private static IEnumerable<DirectoryInfo> Shards(string root)
    {
        var directory = new DirectoryInfo(root);
        return directory.Exists
            ? directory.EnumerateDirectories().Where(d => d.Name.Length == 2 && d.LinkTarget is null).OrderBy(d => d.Name, StringComparer.Ordinal)
            : [];
    }

    /// <summary>
    /// Reads every temp-roots file under the gc lock. A file whose lock can be taken has no living owner: it is
    /// removed (unless dry) and ignored.
    /// </summary>
    internal static (List<B3Digest> Digests, int Live, int Dead) ReadTempRoots(LocalStore store, bool dryRun)
    {
        var digests = new List<B3Digest>();
        int live = 0, dead = 0;
        IEnumerable<string> files;
        try
        {
            files = Directory.EnumerateFiles(store.TempRootsDirectory).ToList();
        }
        catch (DirectoryNotFoundException)
        {
            return (digests, 0, 0);
        }

        foreach (string path in files)
        {
            int fd = LocalStore.OpenFile(path, Libc.O_RDONLY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC | Libc.O_NONBLOCK, 0);
            if (fd < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == Errno.ENOENT)
                {
                    continue;
                }

                throw new PosixException("open", path, errno);
            }

            using var handle = new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true);
            if (GcLock.TryLock(handle, Libc.LOCK_SH, path))
            {
                dead++;
                if (!dryRun)
                {
                    LocalStore.DeleteQuietly(path);
                }

                continue;
            }

            live++;
            long length = RandomAccess.GetLength(handle);
            byte[] bytes = new byte[length];
            int read = 0;
            while (read < length)
            {
                int n = RandomAccess.Read(handle, bytes.AsSpan(read), read);
                if (n == 0)
                {
                    break;
                }

                read += n;
            }

            foreach (string line in Encoding.ASCII.GetString(bytes, 0, read).Split('\n'))
            {
                if (line.Length == 64 && B3Digest.TryParse(line, out var digest))
                {
                    digests.Add(digest);
                }
            }
        }

        return (digests, live, dead);
    }

    /// <summary>Marks closures: directories read from the store (a missing or corrupt one ends its branch), blobs by digest.</summary>
    private sealed class Marker(LocalStore store, IProgress<GcProgress>? progress, long total)
    {
        public HashSet<B3Digest> Directories { get; } = [];

        public HashSet<B3Digest> Blobs { get; } = [];

        /// <summary>A digest of either kind: whichever the store has (both, in the unlikely case that it has both).</summary>
        public void MarkAny(B3Digest digest, CancellationToken cancellationToken)
        {
            MarkDirectory(digest, cancellationToken);
            MarkBlob(digest);
        }

        public void MarkBlob(B3Digest digest)
        {
            if (Blobs.Add(digest))
            {
                Report();
            }
        }

        public void MarkDirectory(B3Digest root, CancellationToken cancellationToken)
        {
            if (Directories.Contains(root))
            {
                return;
            }

            var stack = new Stack<B3Digest>();
            stack.Push(root);
            while (stack.TryPop(out var digest))
            {
                cancellationToken.ThrowIfCancellationRequested();
                if (Directories.Contains(digest) || ReadDirectory(store, digest) is not { } directory)
                {
                    continue;
                }

                Directories.Add(digest);
                Report();
                foreach (var file in directory.Files)
                {
                    MarkBlob(file.Digest);
                }

                foreach (var child in directory.Directories)
                {
                    if (!Directories.Contains(child.Digest))
                    {
                        stack.Push(child.Digest);
                    }
                }
            }
        }

        private void Report()
        {
            if (progress is not null && ((Directories.Count + Blobs.Count) & 255) == 0)
            {
                progress.Report(new GcProgress("marking live objects", Directories.Count + Blobs.Count, total));
            }
        }
    }
}
