using System.Buffers;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using TvixFuseBuild.Native;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Stores.Local;

namespace TvixFuseBuild.Castore.Transfer;

public sealed record ImportOptions
{
    /// <summary>How many files are hashed and stored at once. Default: one per core.</summary>
    public int MaxParallelism { get; init; } = Environment.ProcessorCount;

    /// <summary>
    /// Where each object is registered before the import relies on it (before checking that the store has it, before
    /// writing a directory that refers to it), so that a garbage collection running meanwhile keeps it. The caller
    /// disposes it once the imported node is rooted or no longer needed.
    /// </summary>
    public TempRoots? TempRoots { get; init; }

    /// <summary>Sees everything the import reads, as it reads it (e.g. to scan it for references in the same pass).</summary>
    public IImportObserver? Observer { get; init; }

    /// <summary>
    /// Where the digests of imported files are remembered, so that an unchanged file is not read again while its blob is
    /// still in the store (see <see cref="ImportCache"/>). Not used with an <see cref="Observer"/>, which must see the bytes.
    /// </summary>
    public ImportCache? Cache { get; init; }
}

/// <summary>
/// Sees what an import reads, once each: every entry name below the imported path (its own name is not part of its
/// contents), every symlink target, and every regular file's bytes. Names and targets come from one thread; files
/// are read in parallel.
/// </summary>
public interface IImportObserver
{
    void OnName(ReadOnlySpan<byte> name);

    void OnSymlinkTarget(ReadOnlySpan<byte> target);

    /// <summary>
    /// A file of <paramref name="length"/> bytes is about to be read: the observer of its bytes, which may get pieces
    /// from several threads at once and in any order, each byte once, and then <see cref="IFileObserver.Complete"/>.
    /// </summary>
    IFileObserver OnFile(long length);
}

/// <summary>Sees one file's bytes. <see cref="OnRead"/> is thread-safe; <see cref="Complete"/> comes after every read.</summary>
public interface IFileObserver
{
    void OnRead(long offset, ReadOnlySpan<byte> data);

    void Complete();
}

/// <summary>Where an import is. Totals are known once the tree has been scanned (<see cref="Scanning"/> false).</summary>
public readonly record struct ImportProgress(long FilesDone, long FilesTotal, long BytesDone, long BytesTotal, bool Scanning);

/// <summary>
/// Turns a host path (file, directory tree or symlink) into a castore node: files hashed and stored in parallel
/// (executable = the owner's execute bit), symlinks stored verbatim and never followed, directories stored leaves to
/// root. Blobs the store already has are not written again. Sockets, fifos and devices are refused, naming the path.
/// A file whose size says nothing about its contents (size 0, or on procfs, sysfs and the like) is read to its end
/// once and stored as read: what <c>cat</c> shows, never an empty file.
/// </summary>
public static class HostImporter
{
    // Files up to this size are read once into memory; larger ones are hashed first, then copied only when absent.
    private const int SmallFileLimit = 256 * 1024;

    // Up to this many files, those the import cache knows are checked one after another before the parallel part.
    private const int InlineCacheCheckLimit = 256;

    // A pseudo-file is read into memory whole; one that gives more than this is refused (/proc/kcore would never end).
    private const int PseudoFileLimit = 16 << 20;

    // statfs f_type of the kernel filesystems whose files are generated when read: st_size is 0 or a page, not the length.
    private static readonly Dictionary<long, string> PseudoFileSystems = new()
    {
        [0x9fa0] = "procfs",
        [0x62656572] = "sysfs",
        [0x64626720] = "debugfs",
        [0x74726163] = "tracefs",
        [0x73636673] = "securityfs",
        [0x62656570] = "configfs",
        [0x27e0eb] = "cgroupfs",
        [0x63677270] = "cgroup2fs",
        [0xcafe4a11] = "bpffs",
        [0xde5e81e4] = "efivarfs",
        [0x6165676c] = "pstorefs",
    };

    /// <summary>Imports <paramref name="path"/>; without <see cref="ImportOptions.TempRoots"/>, the objects are the store's temp roots until the import ends.</summary>
    public static async Task<Node> ImportAsync(
        string path, CastoreStore store, ImportOptions? options = null, IProgress<ImportProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        options ??= new ImportOptions();
        if (options.TempRoots is not null)
        {
            return await ImportAsync(path, DefaultName(path), store.Blobs, store.Directories, options, progress, cancellationToken).ConfigureAwait(false);
        }

        using var tempRoots = store.CreateTempRoots();
        return await ImportAsync(
            path, DefaultName(path), store.Blobs, store.Directories, options with { TempRoots = tempRoots }, progress, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Imports <paramref name="path"/> as a node called <paramref name="name"/>.</summary>
    public static async Task<Node> ImportAsync(
        string path, PathComponent name, IBlobService blobs, IDirectoryService directories, ImportOptions? options = null,
        IProgress<ImportProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        options ??= new ImportOptions();
        var state = new ImportState(blobs, options.TempRoots ?? TempRoots.None, progress, options.Observer);
        var cache = options.Observer is null ? options.Cache : null;
        long started = ImportCache.NowNs();
        var root = Scan(path, name, state, cancellationToken);
        state.ScanDone();
        state.Cached = cache?.Load(path);

        // A few files the import cache knows are settled here, without a hop to the thread pool (a cache hit's import
        // of a toolchain); the rest are read and hashed in parallel.
        var files = state.Files;
        bool checkedCache = state.Cached is not null && files.Count <= InlineCacheCheckLimit;
        if (checkedCache)
        {
            files = new List<ScannedFile>(files.Count);
            foreach (var file in state.Files)
            {
                if (!await TryStoreFromCacheAsync(file, state, cancellationToken).ConfigureAwait(false))
                {
                    files.Add(file);
                }
            }
        }

        if (files.Count > 0)
        {
            await Parallel.ForEachAsync(
                files,
                new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, options.MaxParallelism), CancellationToken = cancellationToken },
                async (file, ct) => await StoreFileAsync(file, state, !checkedCache, ct).ConfigureAwait(false)).ConfigureAwait(false);
        }

        state.Report(force: true);
        if (cache is not null && (state.Files.Any(f => f.Identity is not null && !f.FromCache) || state.Cached!.Count > state.Files.Count))
        {
            cache!.Save(path, state.Files.Where(f => f.Identity is not null).Select(f => f.Identity! with { Digest = f.Digest }), started);
        }

        if (root is not ScannedDirectory rootDirectory)
        {
            return root.ToNode();
        }

        await using var putter = directories.CreatePutter();
        var node = await PutDirectoryAsync(rootDirectory, putter, state.TempRoots, cancellationToken).ConfigureAwait(false);
        await putter.CloseAsync(cancellationToken).ConfigureAwait(false);
        return node;
    }

    /// <summary>The last component of <paramref name="path"/>, as a node name.</summary>
    public static PathComponent DefaultName(string path)
    {
        string trimmed = Path.TrimEndingDirectorySeparator(path);
        string name = Path.GetFileName(trimmed);
        if (name is "" or "." or "..")
        {
            throw new ImportException($"cannot import {path}: it has no name to give the node (import a path that ends in a name)");
        }

        return PathComponent.Create(name);
    }

    private abstract class ScannedEntry(PathComponent name)
    {
        public PathComponent Name { get; } = name;

        public abstract Node ToNode();
    }

    private sealed class ScannedFile(PathComponent name, byte[] nativePath, string displayPath, long size, bool executable)
        : ScannedEntry(name)
    {
        /// <summary>The file as the scan saw it (the digest not yet known), for the import cache.</summary>
        public ImportCacheEntry? Identity { get; set; }

        /// <summary>Its digest came from the import cache: it was not read.</summary>
        public bool FromCache { get; set; }

        public byte[] NativePath { get; } = nativePath;

        public string DisplayPath { get; } = displayPath;

        /// <summary>st_size at the scan; for a pseudo-file, the number of bytes read once it is stored.</summary>
        public long Size { get; set; } = size;

        public bool Executable { get; } = executable;

        public B3Digest Digest { get; set; }

        public override Node ToNode() => new FileNode(Name, Digest, (ulong)Size, Executable);
    }

    private sealed class ScannedSymlink(PathComponent name, SymlinkTarget target) : ScannedEntry(name)
    {
        public override Node ToNode() => new SymlinkNode(Name, target);
    }

    private sealed class ScannedDirectory(PathComponent name, string displayPath) : ScannedEntry(name)
    {
        public string DisplayPath { get; } = displayPath;

        public List<ScannedEntry> Children { get; } = [];

        public override Node ToNode() => throw new UnreachableException();
    }

    private sealed class ImportState(IBlobService blobs, TempRoots tempRoots, IProgress<ImportProgress>? progress, IImportObserver? observer)
    {
        public TempRoots TempRoots { get; } = tempRoots;

        public IImportObserver? Observer { get; } = observer;

        private readonly Stopwatch _sinceReport = Stopwatch.StartNew();
        private long _filesDone;
        private long _bytesDone;
        private long _bytesTotal;
        private bool _scanning = true;

        public IBlobService Blobs { get; } = blobs;

        public List<ScannedFile> Files { get; } = [];

        /// <summary>The import cache's entries for this path, when it is used.</summary>
        public Dictionary<(ulong Device, ulong Inode), ImportCacheEntry>? Cached { get; set; }

        public void AddFile(ScannedFile file)
        {
            Files.Add(file);
            _bytesTotal += file.Size;
            if ((Files.Count & 1023) == 0)
            {
                Report(force: false);
            }
        }

        public void ScanDone()
        {
            _scanning = false;
            Report(force: true);
        }

        public void FileDone(long bytes)
        {
            Interlocked.Increment(ref _filesDone);
            Interlocked.Add(ref _bytesDone, bytes);
            Report(force: false);
        }

        public void Report(bool force)
        {
            if (progress is null || (!force && _sinceReport.ElapsedMilliseconds < 50))
            {
                return;
            }

            _sinceReport.Restart();
            progress.Report(new ImportProgress(
                Interlocked.Read(ref _filesDone), Files.Count, Interlocked.Read(ref _bytesDone), _bytesTotal, _scanning));
        }
    }

    private static unsafe ScannedEntry Scan(string path, PathComponent name, ImportState state, CancellationToken cancellationToken)
    {
        byte[] native = NativePath.FromString(path);
        FileStatus status;
        fixed (byte* p = native)
        {
            if (Libc.fstatat(Libc.AT_FDCWD, p, out status, Libc.AT_SYMLINK_NOFOLLOW) != 0)
            {
                throw CannotImport(path, Marshal.GetLastPInvokeError());
            }
        }

        if (status.IsDirectory)
        {
            int fd;
            fixed (byte* p = native)
            {
                fd = Libc.openat(Libc.AT_FDCWD, p, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0);
            }

            if (fd < 0)
            {
                throw CannotImport(path, Marshal.GetLastPInvokeError());
            }

            var directory = new ScannedDirectory(name, path);
            ScanDirectory(fd, native.AsSpan(0, native.Length - 1).ToArray(), directory, state, cancellationToken);
            return directory;
        }

        return ScanLeaf(Libc.AT_FDCWD, native, path, name, status, state);
    }

    /// <summary>Reads the directory open at <paramref name="fd"/> (and closes it), recursing into subdirectories.</summary>
    private static unsafe void ScanDirectory(
        int fd, byte[] directoryPath, ScannedDirectory directory, ImportState state, CancellationToken cancellationToken)
    {
        nint dir = Libc.fdopendir(fd);
        if (dir == 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            Libc.close(fd);
            throw CannotImport(directory.DisplayPath, errno);
        }

        try
        {
            while (true)
            {
                cancellationToken.ThrowIfCancellationRequested();
                Marshal.SetLastPInvokeError(0);
                byte* entry = Libc.readdir(dir);
                if (entry == null)
                {
                    int errno = Marshal.GetLastPInvokeError();
                    if (errno != 0)
                    {
                        throw CannotImport(directory.DisplayPath, errno);
                    }

                    break;
                }

                // struct dirent64: d_ino(8) d_off(8) d_reclen(2) d_type(1) d_name[].
                byte* namePointer = entry + 19;
                var nameSpan = MemoryMarshal.CreateReadOnlySpanFromNullTerminated(namePointer);
                if (nameSpan.SequenceEqual("."u8) || nameSpan.SequenceEqual(".."u8))
                {
                    continue;
                }

                byte[] childNative = new byte[directoryPath.Length + 1 + nameSpan.Length + 1];
                directoryPath.CopyTo(childNative, 0);
                childNative[directoryPath.Length] = (byte)'/';
                nameSpan.CopyTo(childNative.AsSpan(directoryPath.Length + 1));
                string displayPath = NativePath.Join(directory.DisplayPath, nameSpan);

                if (!PathComponent.TryCreate(nameSpan, out var childName, out var nameError))
                {
                    throw new ImportException($"cannot import {displayPath}: {nameError}");
                }

                state.Observer?.OnName(nameSpan);

                FileStatus status;
                fixed (byte* n = childNative)
                {
                    if (Libc.fstatat(Libc.AT_FDCWD, n, out status, Libc.AT_SYMLINK_NOFOLLOW) != 0)
                    {
                        throw CannotImport(displayPath, Marshal.GetLastPInvokeError());
                    }
                }

                if (status.IsDirectory)
                {
                    int childFd;
                    fixed (byte* n = childNative)
                    {
                        childFd = Libc.openat(Libc.AT_FDCWD, n, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0);
                    }

                    if (childFd < 0)
                    {
                        throw CannotImport(displayPath, Marshal.GetLastPInvokeError());
                    }

                    var child = new ScannedDirectory(childName, displayPath);
                    ScanDirectory(childFd, childNative.AsSpan(0, childNative.Length - 1).ToArray(), child, state, cancellationToken);
                    directory.Children.Add(child);
                }
                else
                {
                    directory.Children.Add(ScanLeaf(Libc.AT_FDCWD, childNative, displayPath, childName, status, state));
                }
            }
        }
        finally
        {
            Libc.closedir(dir);
        }
    }

    private static unsafe ScannedEntry ScanLeaf(
        int dirfd, byte[] native, string displayPath, PathComponent name, in FileStatus status, ImportState state)
    {
        if (status.IsRegularFile)
        {
            // Size 0 says nothing about a pseudo-file's contents: never taken from the cache.
            var file = new ScannedFile(name, native, displayPath, status.Size, status.IsOwnerExecutable)
            {
                Identity = status.Size > 0 ? ImportCacheEntry.Of(status, default) : null,
            };
            state.AddFile(file);
            return file;
        }

        if (status.IsSymlink)
        {
            byte[] buffer = new byte[SymlinkTarget.MaxLength + 2];
            nint length;
            fixed (byte* p = native)
            fixed (byte* b = buffer)
            {
                length = Libc.readlinkat(dirfd, p, b, (nuint)buffer.Length);
            }

            if (length < 0)
            {
                throw CannotImport(displayPath, Marshal.GetLastPInvokeError());
            }

            if (!SymlinkTarget.TryCreate(buffer.AsSpan(0, (int)length), out var target, out var error))
            {
                throw new ImportException($"cannot import {displayPath}: {error}");
            }

            state.Observer?.OnSymlinkTarget(target.Span);
            return new ScannedSymlink(name, target);
        }

        throw new ImportException(
            $"cannot import {displayPath}: it is {status.TypeDescription}; only regular files, directories and symlinks can be imported");
    }

    /// <summary>True when the import cache knows the file as it is now and the store still has its blob.</summary>
    private static async ValueTask<bool> TryStoreFromCacheAsync(ScannedFile file, ImportState state, CancellationToken cancellationToken)
    {
        if (file.Identity is { } seen && state.Cached?.GetValueOrDefault((seen.Device, seen.Inode)) is { } known &&
            known with { Digest = default } == seen)
        {
            // Registered before relying on the blob; a blob gone from the store since (collected) is read and stored again.
            await state.TempRoots.AddAsync(known.Digest, cancellationToken).ConfigureAwait(false);
            if (await state.Blobs.HasAsync(known.Digest, cancellationToken).ConfigureAwait(false))
            {
                file.Digest = known.Digest;
                file.FromCache = true;
                state.FileDone(file.Size);
                return true;
            }
        }

        return false;
    }

    private static async ValueTask StoreFileAsync(ScannedFile file, ImportState state, bool checkCache, CancellationToken cancellationToken)
    {
        if (checkCache && await TryStoreFromCacheAsync(file, state, cancellationToken).ConfigureAwait(false))
        {
            return;
        }

        using var handle = OpenFile(file);
        if (file.Size == 0 || PseudoFileSystem(handle, file) is not null)
        {
            // Its times say nothing about its contents either: never remembered.
            file.Identity = null;
            await StorePseudoFileAsync(handle, file, state, cancellationToken).ConfigureAwait(false);
            state.FileDone(file.Size);
            return;
        }

        var observer = state.Observer?.OnFile(file.Size);
        if (file.Size <= SmallFileLimit)
        {
            byte[] buffer = ArrayPool<byte>.Shared.Rent((int)Math.Max(file.Size, 1));
            try
            {
                int length = ReadFully(handle, buffer.AsSpan(0, (int)file.Size), file.DisplayPath);
                var contents = buffer.AsMemory(0, length);
                observer?.OnRead(0, contents.Span);
                file.Digest = await StoreBytesAsync(contents, state, cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
        else
        {
            var expected = Hashing.Blake3.HashFile(handle, file.Size, parallel: true, observer is null ? null : observer.OnRead);
            await state.TempRoots.AddAsync(expected, cancellationToken).ConfigureAwait(false);
            var stored = await state.Blobs.PutFileAsync(handle, file.Size, expected, cancellationToken).ConfigureAwait(false);
            if (stored != expected)
            {
                throw new ImportException($"cannot import {file.DisplayPath}: it changed while it was being imported; try again");
            }

            file.Digest = stored;
        }

        observer?.Complete();
        state.FileDone(file.Size);
    }

    /// <summary>Reads the file to its end (the bytes it gives now are its contents), stores them, and sets its size.</summary>
    private static async ValueTask StorePseudoFileAsync(SafeFileHandle handle, ScannedFile file, ImportState state, CancellationToken cancellationToken)
    {
        if (file.Size > PseudoFileLimit)
        {
            throw new ImportException(
                $"cannot import {file.DisplayPath}: it is a {PseudoFileSystem(handle, file)} file of {file.Size} bytes; " +
                $"files of such filesystems are read whole, at most {PseudoFileLimit >> 20} MiB");
        }

        using var contents = new MemoryStream();
        byte[] buffer = ArrayPool<byte>.Shared.Rent(64 * 1024);
        try
        {
            int n;
            while ((n = ReadOnce(handle, buffer, contents.Length, file.DisplayPath)) > 0)
            {
                contents.Write(buffer, 0, n);
                if (contents.Length > PseudoFileLimit)
                {
                    throw new ImportException(
                        $"cannot import {file.DisplayPath}: reading it gives more than {PseudoFileLimit >> 20} MiB; a file whose size " +
                        "does not say its length is read whole into memory, and this one does not end");
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }

        var bytes = contents.GetBuffer().AsMemory(0, (int)contents.Length);
        if (state.Observer?.OnFile(bytes.Length) is { } observer)
        {
            observer.OnRead(0, bytes.Span);
            observer.Complete();
        }

        file.Digest = await StoreBytesAsync(bytes, state, cancellationToken).ConfigureAwait(false);
        file.Size = bytes.Length;
    }

    /// <summary>Stores a blob read whole into memory (a temp root first, so a collection keeps it), unless the store has it.</summary>
    private static async ValueTask<B3Digest> StoreBytesAsync(ReadOnlyMemory<byte> contents, ImportState state, CancellationToken cancellationToken)
    {
        var digest = Hashing.Blake3.Hash(contents.Span);
        await state.TempRoots.AddAsync(digest, cancellationToken).ConfigureAwait(false);
        if (!await state.Blobs.HasAsync(digest, cancellationToken).ConfigureAwait(false))
        {
            await using var writer = state.Blobs.OpenWrite();
            await writer.WriteAsync(contents, cancellationToken).ConfigureAwait(false);
            await writer.CompleteAsync(cancellationToken).ConfigureAwait(false);
        }

        return digest;
    }

    private static int ReadOnce(SafeFileHandle handle, byte[] buffer, long offset, string displayPath)
    {
        try
        {
            return RandomAccess.Read(handle, buffer, offset);
        }
        catch (IOException e)
        {
            throw new ImportException($"cannot import {displayPath}: reading it failed: {(e.HResult is > 0 and < 4096 ? Errno.Text(e.HResult) : e.Message)}", e);
        }
    }

    /// <summary>The name of the pseudo-filesystem the open file is on, or null for one that stores files.</summary>
    private static unsafe string? PseudoFileSystem(SafeFileHandle handle, ScannedFile file)
    {
        Libc.StatFs fs;
        if (Libc.fstatfs((int)handle.DangerousGetHandle(), &fs) != 0)
        {
            throw CannotImport(file.DisplayPath, Marshal.GetLastPInvokeError());
        }

        return PseudoFileSystems.GetValueOrDefault(fs.Type);
    }

    private static unsafe SafeFileHandle OpenFile(ScannedFile file)
    {
        int fd;
        fixed (byte* p = file.NativePath)
        {
            // O_NONBLOCK: if the path was swapped for a fifo since the scan, don't hang on it.
            fd = Libc.openat(Libc.AT_FDCWD, p, Libc.O_RDONLY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC | Libc.O_NONBLOCK, 0);
        }

        if (fd < 0)
        {
            throw CannotImport(file.DisplayPath, Marshal.GetLastPInvokeError());
        }

        var handle = new SafeFileHandle(fd, ownsHandle: true);
        if (Libc.fstat(fd, out var status) != 0 || !status.IsRegularFile || status.Size != file.Size)
        {
            handle.Dispose();
            throw new ImportException($"cannot import {file.DisplayPath}: it changed while it was being imported; try again");
        }

        return handle;
    }

    private static int ReadFully(SafeFileHandle handle, Span<byte> buffer, string displayPath)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n = RandomAccess.Read(handle, buffer[total..], total);
            if (n == 0)
            {
                throw new ImportException($"cannot import {displayPath}: it changed while it was being imported; try again");
            }

            total += n;
        }

        return total;
    }

    private static async ValueTask<Node> PutDirectoryAsync(
        ScannedDirectory directory, IDirectoryPutter putter, TempRoots tempRoots, CancellationToken cancellationToken)
    {
        var nodes = new List<Node>(directory.Children.Count);
        foreach (var child in directory.Children)
        {
            nodes.Add(child is ScannedDirectory sub
                ? await PutDirectoryAsync(sub, putter, tempRoots, cancellationToken).ConfigureAwait(false)
                : child.ToNode());
        }

        var castoreDirectory = CastoreDirectory.FromNodes(nodes);
        await tempRoots.AddAsync(castoreDirectory.Digest, cancellationToken).ConfigureAwait(false);
        await putter.PutAsync(castoreDirectory, cancellationToken).ConfigureAwait(false);
        return new DirectoryNode(directory.Name, castoreDirectory.Digest, castoreDirectory.Size);
    }

    private static ImportException CannotImport(string path, int errno) => errno switch
    {
        Errno.ENOENT => new ImportException($"cannot import {path}: no such file or directory"),
        Errno.EACCES => new ImportException($"cannot import {path}: permission denied"),
        _ => new ImportException($"cannot import {path}: {Errno.Text(errno)}"),
    };
}
