using System.Buffers;
using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using System.Text;
using TvixFuseBuild.Build.Refscan.Native;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Build.Refscan;

// Host paths: a single file, a symlink, or a tree walked in parallel.
public sealed unsafe partial class ReferenceScanner
{
    private const int DirentBufferSize = 32 << 10;

    /// <summary>Files read rather than mapped go through a per-thread buffer of this size (it fits in L2).</summary>
    private const int ReadBufferSize = 1 << 20;

    [ThreadStatic]
    private static byte[]? t_readBuffer;

    private void ScanHostPath(string path, NeedleHits hits, CancellationToken cancellationToken)
    {
        byte[] name = FileDescriptor.NulTerminated(path);
        var stat = FileDescriptor.StatAt(null, name, path);
        switch (stat.FileType)
        {
            case Libc.S_IFLNK:
                Scan(FileDescriptor.ReadLinkAt(null, name, path), hits);
                return;
            case Libc.S_IFREG:
            {
                using var file = FileDescriptor.OpenAt(null, name, isDirectory: false, path);
                ulong size = file.Stat(path).Size;
                if (size <= (ulong)Options.ChunkSize || Options.MaxDegreeOfParallelism == 1)
                {
                    ScanFile(file, size, path, hits, cancellationToken);
                    return;
                }

                new TreeScan(this, hits, cancellationToken).Run(WorkItem.ForFile(file, size, path));
                return;
            }

            case Libc.S_IFDIR:
            {
                using var directory = FileDescriptor.OpenAt(null, name, isDirectory: true, path);
                new TreeScan(this, hits, cancellationToken).Run(WorkItem.ForDirectory(directory, path));
                return;
            }

            default:
                throw new IOException($"{path}: not a regular file, directory or symlink");
        }
    }

    /// <summary>Scans a whole open regular file of <paramref name="size"/> bytes, piece by piece.</summary>
    private void ScanFile(FileDescriptor file, ulong size, string displayPath, NeedleHits hits, CancellationToken cancellationToken)
    {
        MarkEmptyNeedles(hits);
        if (size == 0)
        {
            return;
        }

        for (ulong offset = 0; offset < size && !hits.AllFound; offset += (ulong)Options.ChunkSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            ScanPiece(file, size, offset, displayPath, hits);
        }
    }

    /// <summary>Scans the piece of <paramref name="file"/> at <paramref name="offset"/>, plus the overlap into the next piece.</summary>
    private void ScanPiece(FileDescriptor file, ulong size, ulong offset, string displayPath, NeedleHits hits)
    {
        ulong overlap = (ulong)Math.Max(0, Needles.MaxLength - 1);
        ulong length = Math.Min((ulong)Options.ChunkSize + overlap, size - offset);
        if (size < (ulong)Options.ReadBelow)
        {
            ReadAndScan(file, offset, length, displayPath, hits);
        }
        else
        {
            ScanMapped(file, offset, length, displayPath, hits);
        }
    }

    /// <summary>Maps <paramref name="length"/> bytes of <paramref name="file"/> at <paramref name="offset"/> and scans them.</summary>
    private void ScanMapped(FileDescriptor file, ulong offset, ulong length, string displayPath, NeedleHits hits)
    {
        bool added = false;
        try
        {
            file.DangerousAddRef(ref added);
            nint map = Libc.mmap(0, (nuint)length, Libc.PROT_READ, Libc.MAP_PRIVATE | Libc.MAP_POPULATE, file.Fd, (long)offset);
            if (map == Libc.MapFailed)
            {
                throw FileDescriptor.Error("cannot map", displayPath, Marshal.GetLastPInvokeError());
            }

            try
            {
                Needles.Searcher.Search(new ReadOnlySpan<byte>((void*)map, (int)length), hits);
            }
            finally
            {
                Libc.munmap(map, (nuint)length);
            }
        }
        finally
        {
            if (added)
            {
                file.DangerousRelease();
            }
        }
    }

    /// <summary>
    /// Reads <paramref name="length"/> bytes of <paramref name="file"/> at <paramref name="offset"/> through a per-thread
    /// buffer of <see cref="ReadBufferSize"/> bytes, which stays in the cache between the copy and the scan; the last
    /// (longest needle - 1) bytes of each read are carried to the front of the next, so matches across reads are found.
    /// </summary>
    private void ReadAndScan(FileDescriptor file, ulong offset, ulong length, string displayPath, NeedleHits hits)
    {
        int overlap = Math.Max(0, Needles.MaxLength - 1);
        int capacity = Math.Max(ReadBufferSize, 2 * overlap);
        byte[] buffer = t_readBuffer is { } cached && cached.Length >= capacity
            ? cached
            : t_readBuffer = GC.AllocateUninitializedArray<byte>(capacity, pinned: true);

        int carry = 0;
        ulong end = offset + length;
        fixed (byte* p = buffer)
        {
            while (offset < end && !hits.AllFound)
            {
                int want = (int)Math.Min((ulong)(buffer.Length - carry), end - offset);
                int got = 0;
                while (got < want)
                {
                    nint n = Libc.pread(file.Fd, p + carry + got, (nuint)(want - got), (long)offset + got);
                    if (n < 0)
                    {
                        int errno = Marshal.GetLastPInvokeError();
                        if (errno == Errno.EINTR)
                        {
                            continue;
                        }

                        throw FileDescriptor.Error("cannot read", displayPath, errno);
                    }

                    if (n == 0)
                    {
                        break; // the file shrank: scan what is there
                    }

                    got += (int)n;
                }

                int filled = carry + got;
                Needles.Searcher.Search(new ReadOnlySpan<byte>(p, filled), hits);
                if (got < want)
                {
                    return;
                }

                offset += (ulong)got;
                carry = Math.Min(overlap, filled);
                Buffer.MemoryCopy(p + filled - carry, p, buffer.Length, carry);
            }
        }
    }

    private enum WorkKind
    {
        /// <summary>A directory: the open root (no name), or a child of the held directory.</summary>
        Directory,

        /// <summary>A file named relative to the held directory.</summary>
        File,

        /// <summary>The held open file, whole.</summary>
        OpenFile,

        /// <summary>A piece of the held open file.</summary>
        FilePiece,
    }

    /// <summary>
    /// A unit of work: a directory to list, a file to open, or a piece of an open file. It holds a reference on the
    /// descriptor it needs (the parent directory, or the file), released when the item is done. A class, not a
    /// struct: the framework's precompiled shared generic code then serves the work stack, and the tool starts faster.
    /// </summary>
    private sealed record WorkItem(WorkKind Kind, FileDescriptor Handle, byte[]? Name, string DisplayPath, ulong Size, ulong Offset)
    {
        public static WorkItem ForDirectory(FileDescriptor directory, string displayPath) => Take(new(WorkKind.Directory, directory, null, displayPath, 0, 0));

        public static WorkItem ForFile(FileDescriptor file, ulong size, string displayPath) => Take(new(WorkKind.OpenFile, file, null, displayPath, size, 0));

        public static WorkItem Child(WorkKind kind, FileDescriptor parent, byte[] name, string displayPath) => Take(new(kind, parent, name, displayPath, 0, 0));

        public static WorkItem Piece(FileDescriptor file, ulong size, ulong offset, string displayPath) => Take(new(WorkKind.FilePiece, file, null, displayPath, size, offset));

        private static WorkItem Take(WorkItem item)
        {
            bool added = false;
            item.Handle.DangerousAddRef(ref added);
            return item;
        }

        public void Release() => Handle.DangerousRelease();
    }

    /// <summary>
    /// A parallel walk: workers take items from a shared stack; listing a directory pushes its subdirectories and
    /// files; a file larger than a piece pushes its pieces. Last in, first out keeps the walk depth first, so few
    /// directory descriptors are open at once. The first error stops the walk and is rethrown.
    /// </summary>
    private sealed class TreeScan(ReferenceScanner scanner, NeedleHits hits, CancellationToken cancellationToken)
    {
        private readonly ConcurrentStack<WorkItem> _work = new();
        private readonly SemaphoreSlim _ready = new(0);
        private readonly int _workers = scanner.Options.MaxDegreeOfParallelism;
        private int _pending;
        private ExceptionDispatchInfo? _failure;
        private volatile bool _stop;

        public void Run(WorkItem root)
        {
            Enqueue(root);
            var helpers = new Task[_workers - 1];
            for (int i = 0; i < helpers.Length; i++)
            {
                helpers[i] = Task.Factory.StartNew(Work, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
            }

            Work();
            Task.WaitAll(helpers);
            _ready.Dispose();
            _failure?.Throw();
            cancellationToken.ThrowIfCancellationRequested();
        }

        private void Enqueue(WorkItem item)
        {
            Interlocked.Increment(ref _pending);
            _work.Push(item);
            _ready.Release();
        }

        private void Work()
        {
            while (true)
            {
                _ready.Wait();
                if (!_work.TryPop(out var item))
                {
                    return; // woken to finish
                }

                try
                {
                    if (!_stop)
                    {
                        if (cancellationToken.IsCancellationRequested || hits.AllFound)
                        {
                            _stop = true;
                        }
                        else
                        {
                            Process(item);
                        }
                    }
                }
                catch (Exception e)
                {
                    Interlocked.CompareExchange(ref _failure, ExceptionDispatchInfo.Capture(e), null);
                    _stop = true;
                }
                finally
                {
                    item.Release();
                }

                if (Interlocked.Decrement(ref _pending) == 0)
                {
                    _ready.Release(_workers);
                }
            }
        }

        private void Process(WorkItem item)
        {
            switch (item.Kind)
            {
                case WorkKind.Directory:
                    if (item.Name is null)
                    {
                        List(item.Handle, item.DisplayPath);
                    }
                    else
                    {
                        using var directory = FileDescriptor.OpenAt(item.Handle, item.Name, isDirectory: true, item.DisplayPath);
                        List(directory, item.DisplayPath);
                    }

                    break;

                case WorkKind.File:
                {
                    using var file = FileDescriptor.OpenAt(item.Handle, item.Name, isDirectory: false, item.DisplayPath);
                    var stat = file.Stat(item.DisplayPath);
                    if (stat.FileType == Libc.S_IFREG)
                    {
                        ScanOpenFile(file, stat.Size, item.DisplayPath);
                    }

                    break;
                }

                case WorkKind.OpenFile:
                    ScanOpenFile(item.Handle, item.Size, item.DisplayPath);
                    break;

                case WorkKind.FilePiece:
                    scanner.ScanPiece(item.Handle, item.Size, item.Offset, item.DisplayPath, hits);
                    break;
            }
        }

        private void ScanOpenFile(FileDescriptor file, ulong size, string displayPath)
        {
            if (size <= (ulong)scanner.Options.ChunkSize)
            {
                scanner.ScanFile(file, size, displayPath, hits, cancellationToken);
                return;
            }

            // Big files are split so that all workers can share them.
            scanner.MarkEmptyNeedles(hits);
            for (ulong offset = 0; offset < size; offset += (ulong)scanner.Options.ChunkSize)
            {
                Enqueue(WorkItem.Piece(file, size, offset, displayPath));
            }
        }

        private void List(FileDescriptor directory, string displayPath)
        {
            byte[] buffer = ArrayPool<byte>.Shared.Rent(DirentBufferSize);
            try
            {
                fixed (byte* b = buffer)
                {
                    while (true)
                    {
                        nint read = Libc.getdents64(directory.Fd, b, (nuint)buffer.Length);
                        if (read < 0)
                        {
                            int errno = Marshal.GetLastPInvokeError();
                            if (errno == Errno.EINTR)
                            {
                                continue;
                            }

                            throw FileDescriptor.Error("cannot list", displayPath, errno);
                        }

                        if (read == 0)
                        {
                            return;
                        }

                        for (int at = 0; at < read;)
                        {
                            // struct linux_dirent64 { u64 d_ino; s64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
                            int recordLength = *(ushort*)(b + at + 16);
                            byte type = b[at + 18];
                            var name = MemoryMarshal.CreateReadOnlySpanFromNullTerminated(b + at + 19);
                            at += recordLength;
                            if (name.SequenceEqual("."u8) || name.SequenceEqual(".."u8))
                            {
                                continue;
                            }

                            Entry(directory, displayPath, name, type);
                        }
                    }
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }

        private void Entry(FileDescriptor directory, string directoryPath, ReadOnlySpan<byte> name, byte type)
        {
            if (scanner.Options.IncludeNames)
            {
                scanner.Scan(name, hits);
            }

            byte[] nameZ = new byte[name.Length + 1];
            name.CopyTo(nameZ);
            string displayPath = $"{directoryPath}/{Encoding.UTF8.GetString(name)}";
            if (type == Libc.DT_UNKNOWN)
            {
                type = FileDescriptor.StatAt(directory, nameZ, displayPath).FileType switch
                {
                    Libc.S_IFDIR => Libc.DT_DIR,
                    Libc.S_IFREG => Libc.DT_REG,
                    Libc.S_IFLNK => Libc.DT_LNK,
                    _ => Libc.DT_UNKNOWN,
                };
            }

            switch (type)
            {
                case Libc.DT_DIR:
                    Enqueue(WorkItem.Child(WorkKind.Directory, directory, nameZ, displayPath));
                    break;
                case Libc.DT_REG:
                    Enqueue(WorkItem.Child(WorkKind.File, directory, nameZ, displayPath));
                    break;
                case Libc.DT_LNK:
                    scanner.Scan(FileDescriptor.ReadLinkAt(directory, nameZ, displayPath), hits);
                    break;
            }
        }
    }
}
