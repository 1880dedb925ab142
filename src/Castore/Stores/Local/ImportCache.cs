using System.Runtime.InteropServices;
using System.Text;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Castore.Stores.Local;

/// <summary>
/// What earlier imports found each host file to hash to, so that an unchanged file is not read and hashed again:
/// <c>ROOT/imports/HEX</c>, one table per imported path (HEX: the BLAKE3 of the path), written whole and renamed into
/// place, so concurrent imports each leave a complete table. A file is taken as unchanged only when its device, inode,
/// size and modification and change times (in nanoseconds) are all the recorded ones; and a file is only recorded when
/// both times are older than the import's start by more than any filesystem's timestamp granularity (git's "racy"
/// rule): a change made while or after it was read gets a later time, and so never looks unchanged. The table is a
/// hint: a damaged or missing one, or a digest whose blob is no longer in the store, means the file is read again.
/// </summary>
public sealed class ImportCache
{
    /// <summary>How much older than the import's start a file's times must be for it to be recorded (FAT's 2 s granularity).</summary>
    internal static readonly long RacyMarginNs = 2_000_000_000;

    private static readonly byte[] Magic = "tvix-fuse-build import cache 1\n"u8.ToArray();
    private const int RecordLength = (5 * sizeof(long)) + B3Digest.Length;

    // A table of more entries than this is not written (an import of millions of files), nor read.
    private const int MaxEntries = 1 << 20;

    private readonly LocalStore _store;

    internal ImportCache(LocalStore store)
    {
        _store = store;
        Directory = Path.Combine(store.Root, "imports");
    }

    /// <summary><c>ROOT/imports</c>.</summary>
    public string Directory { get; }

    /// <summary>The current time in nanoseconds since the epoch, as file times count: taken when an import starts.</summary>
    internal static long NowNs() => (DateTime.UtcNow - DateTime.UnixEpoch).Ticks * 100;

    /// <summary>The entries recorded for <paramref name="path"/>, by device and inode; empty when there is no usable table.</summary>
    internal Dictionary<(ulong Device, ulong Inode), ImportCacheEntry> Load(string path)
    {
        var entries = new Dictionary<(ulong, ulong), ImportCacheEntry>();
        int fd = LocalStore.OpenFile(TablePath(path), Libc.O_RDONLY | Libc.O_NOFOLLOW | Libc.O_NONBLOCK | Libc.O_CLOEXEC, 0);
        if (fd < 0)
        {
            return entries;
        }

        using var handle = new Microsoft.Win32.SafeHandles.SafeFileHandle(fd, ownsHandle: true);
        if (Libc.fstat(fd, out var status) != 0 || !status.IsRegularFile || status.Size < Magic.Length + B3Digest.Length ||
            status.Size > Magic.Length + ((long)MaxEntries * RecordLength) + B3Digest.Length)
        {
            return entries;
        }

        byte[] bytes = new byte[status.Size];
        int done = 0;
        try
        {
            while (done < bytes.Length)
            {
                int n = RandomAccess.Read(handle, bytes.AsSpan(done), done);
                if (n == 0)
                {
                    return entries;
                }

                done += n;
            }
        }
        catch (IOException)
        {
            return entries;
        }

        var body = bytes.AsSpan(0, bytes.Length - B3Digest.Length);
        if (!body.StartsWith(Magic) || (body.Length - Magic.Length) % RecordLength != 0 ||
            Hashing.Blake3.Hash(body) != new B3Digest(bytes.AsSpan(body.Length)))
        {
            return entries;
        }

        for (var records = body[Magic.Length..]; !records.IsEmpty; records = records[RecordLength..])
        {
            var longs = MemoryMarshal.Cast<byte, long>(records[..(5 * sizeof(long))]);
            var entry = new ImportCacheEntry(
                (ulong)longs[0], (ulong)longs[1], longs[2], longs[3], longs[4], new B3Digest(records.Slice(5 * sizeof(long), B3Digest.Length)));
            entries[(entry.Device, entry.Inode)] = entry;
        }

        return entries;
    }

    /// <summary>
    /// Replaces the table of <paramref name="path"/> with <paramref name="entries"/>, leaving out every file whose times
    /// are not older than <paramref name="startedNs"/> by <see cref="RacyMarginNs"/>. Best effort: a table that cannot be
    /// written is not an error (the next import hashes the files again).
    /// </summary>
    internal unsafe void Save(string path, IEnumerable<ImportCacheEntry> entries, long startedNs)
    {
        long limit = startedNs - RacyMarginNs;
        var kept = entries.Where(e => e.ModifyTimeNs < limit && e.ChangeTimeNs < limit).Take(MaxEntries + 1).ToList();
        if (kept.Count > MaxEntries)
        {
            return;
        }

        byte[] bytes = new byte[Magic.Length + (kept.Count * RecordLength) + B3Digest.Length];
        Magic.CopyTo(bytes, 0);
        int offset = Magic.Length;
        foreach (var entry in kept)
        {
            var longs = MemoryMarshal.Cast<byte, long>(bytes.AsSpan(offset, 5 * sizeof(long)));
            longs[0] = (long)entry.Device;
            longs[1] = (long)entry.Inode;
            longs[2] = entry.Size;
            longs[3] = entry.ModifyTimeNs;
            longs[4] = entry.ChangeTimeNs;
            entry.Digest.CopyTo(bytes.AsSpan(offset + (5 * sizeof(long)), B3Digest.Length));
            offset += RecordLength;
        }

        Hashing.Blake3.Hash(bytes.AsSpan(0, offset), bytes.AsSpan(offset));
        string? temporary = null;
        try
        {
            // Made or checked as the store's own directories are: never a symlink to somewhere else.
            LocalStore.EnsureDirectory(_store.Root, Directory);
            (var handle, temporary) = _store.CreateTemporaryFile();
            using (handle)
            {
                RandomAccess.Write(handle, bytes, 0);
            }

            byte[] from = NativePath.FromString(temporary), to = NativePath.FromString(TablePath(path));
            fixed (byte* f = from)
            fixed (byte* t = to)
            {
                // Replaces the earlier table (ours: nothing else is put in imports/); a directory there stays, and this table is dropped.
                if (Libc.renameat(Libc.AT_FDCWD, f, Libc.AT_FDCWD, t) == 0)
                {
                    temporary = null;
                }
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or CastoreException)
        {
        }
        finally
        {
            if (temporary is not null)
            {
                LocalStore.DeleteQuietly(temporary);
            }
        }
    }

    private string TablePath(string path) => Path.Combine(Directory, Hashing.Blake3.Hash(Encoding.UTF8.GetBytes(Path.GetFullPath(path))).ToHex());
}

/// <summary>A host file as an import saw it, and the digest of its bytes.</summary>
internal sealed record ImportCacheEntry(ulong Device, ulong Inode, long Size, long ModifyTimeNs, long ChangeTimeNs, B3Digest Digest)
{
    public static ImportCacheEntry Of(in FileStatus status, B3Digest digest) => new(
        status.Device,
        status.Inode,
        status.Size,
        (status.ModifyTimeSeconds * 1_000_000_000) + status.ModifyTimeNanoseconds,
        (status.ChangeTimeSeconds * 1_000_000_000) + status.ChangeTimeNanoseconds,
        digest);

    /// <summary>The file at <paramref name="path"/> as it is now (not following a symlink), with <paramref name="digest"/>.</summary>
    public static unsafe ImportCacheEntry Of(string path, B3Digest digest)
    {
        byte[] native = NativePath.FromString(path);
        fixed (byte* p = native)
        {
            return Libc.fstatat(Libc.AT_FDCWD, p, out var status, Libc.AT_SYMLINK_NOFOLLOW) == 0
                ? Of(status, digest)
                : throw PosixException.FromLastError("stat", path);
        }
    }
}
