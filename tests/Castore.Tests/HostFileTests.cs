using System.Net.Sockets;
using System.Text;
using TvixFuseBuild.Castore.Hashing;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Stores.Local;
using TvixFuseBuild.Castore.Transfer;

namespace TvixFuseBuild.Castore.Tests;

/// <summary>
/// Never replace what is not ours (issue 12): every way the tool writes a host path, pointed at real device nodes,
/// FIFOs, sockets, symlinks and directories made for the test. Runs as root and fails (never skips) otherwise.
/// </summary>
public sealed class HostFileTests : IDisposable
{
    private readonly TempDirectory _temp = new("tvix-fuse-hostfile-");

    public HostFileTests() => SpecialFiles.RequireRoot();

    public void Dispose() => _temp.Dispose();

    private string[] Entries() => [.. Directory.EnumerateFileSystemEntries(_temp.Path).Select(p => Path.GetFileName(p)).Order()];

    private static long Inode(string path)
    {
        var (code, stdout, stderr) = ProcessRunner.Run("stat", "-c", "%i", path);
        Assert.True(code == 0, stderr);
        return long.Parse(stdout.Trim());
    }

    [Fact]
    public void NothingThereGetsANewFileAndNoTemporaryIsLeft()
    {
        string path = _temp.Combine("reply.json");
        HostFile.WriteAllBytes(path, "new"u8);
        Assert.Equal("new", File.ReadAllText(path));
        Assert.Equal(["reply.json"], Entries());
    }

    [Fact]
    public void ARegularFileIsReplacedByRenameNeverWrittenInPlace()
    {
        string path = _temp.Combine("reply.json");
        string otherLink = _temp.Combine("hard-link-elsewhere");
        File.WriteAllText(path, "old");
        Assert.Equal(0, ProcessRunner.Run("ln", path, otherLink).ExitCode);
        long before = Inode(path);

        HostFile.WriteAllBytes(path, "new"u8);

        Assert.Equal("new", File.ReadAllText(path));
        Assert.NotEqual(before, Inode(path));
        // Truncating in place would have changed every name of the old file; a rename leaves the others as they were.
        Assert.Equal("old", File.ReadAllText(otherLink));
        Assert.Equal(["hard-link-elsewhere", "reply.json"], Entries());
    }

    [Fact]
    public void ACharacterDeviceIsWrittenThroughAndStaysADevice()
    {
        string device = _temp.Combine("null");
        SpecialFiles.MakeNullDevice(device);

        HostFile.WriteAllBytes(device, "into the null device"u8);
        using (var stream = HostFile.CreateStream(device))
        {
            stream.Write("a log line\n"u8);
        }

        Assert.Equal(SpecialFiles.NullDevice, SpecialFiles.Describe(device));
        Assert.Equal(["null"], Entries());
    }

    [Fact]
    public void OnlyARegularFileIsReadAtOnceAndAFifoWithoutAWriterDoesNotHoldItUp()
    {
        string file = _temp.Combine("request.json");
        File.WriteAllText(file, "{}");
        string link = _temp.Combine("link");
        File.CreateSymbolicLink(link, file);
        string fifo = _temp.Combine("pipe");
        SpecialFiles.MakeFifo(fifo);

        Assert.Equal("{}"u8.ToArray(), HostFile.TryReadRegularFile(file));
        Assert.Equal("{}"u8.ToArray(), HostFile.TryReadRegularFile(link));
        File.WriteAllBytes(_temp.Combine("empty"), []);
        Assert.Empty(HostFile.TryReadRegularFile(_temp.Combine("empty"))!);
        Assert.Null(HostFile.TryReadRegularFile(fifo)); // no writer: a blocking open would wait forever
        Assert.Null(HostFile.TryReadRegularFile(_temp.Path));
        Assert.Null(HostFile.TryReadRegularFile(_temp.Combine("missing")));
        Assert.Null(HostFile.TryReadRegularFile("/dev/null"));
    }

    [Fact]
    public void OnlyNothingOrARegularFileIsWrittenWithoutMaybeWaitingForAReader()
    {
        string file = _temp.Combine("reply.json");
        File.WriteAllText(file, "old");
        string fifo = _temp.Combine("pipe");
        SpecialFiles.MakeFifo(fifo);
        string link = _temp.Combine("link");
        File.CreateSymbolicLink(link, file);

        Assert.False(HostFile.MayWaitForReader(_temp.Combine("missing")));
        Assert.False(HostFile.MayWaitForReader(file));
        Assert.True(HostFile.MayWaitForReader(fifo));
        Assert.True(HostFile.MayWaitForReader("/dev/null"));
        Assert.True(HostFile.MayWaitForReader(link)); // refused by the write, never followed
        Assert.True(HostFile.MayWaitForReader(_temp.Path));
        Assert.Equal(["link", "pipe", "reply.json"], Entries());
    }

    [Fact]
    public void AFifoIsWrittenThroughToItsReader()
    {
        string fifo = _temp.Combine("pipe");
        SpecialFiles.MakeFifo(fifo);

        var reader = new SpecialFiles.FifoReader(fifo);
        HostFile.WriteAllBytes(fifo, "through the fifo"u8);
        Assert.Equal("through the fifo", Encoding.UTF8.GetString(reader.Finish()));

        var logReader = new SpecialFiles.FifoReader(fifo);
        using (var log = HostFile.CreateStream(fifo))
        {
            log.Write("line 1\n"u8);
            log.Write("line 2\n"u8);
        }

        Assert.Equal("line 1\nline 2\n", Encoding.UTF8.GetString(logReader.Finish()));
        Assert.StartsWith("fifo", SpecialFiles.Describe(fifo));
        Assert.Equal(["pipe"], Entries());
    }

    [Fact]
    public void ASymlinkIsRefusedAndWhatItPointsToIsUntouched()
    {
        string outside = _temp.Combine("outside");
        Directory.CreateDirectory(outside);
        string precious = Path.Combine(outside, "precious");
        File.WriteAllText(precious, "keep me");
        string link = _temp.Combine("out");
        File.CreateSymbolicLink(link, precious);
        string dangling = _temp.Combine("dangling");
        File.CreateSymbolicLink(dangling, Path.Combine(outside, "would-be-created"));

        foreach (string path in new[] { link, dangling })
        {
            var write = Assert.Throws<UnsafeDestinationException>(() => HostFile.WriteAllBytes(path, "x"u8));
            Assert.StartsWith($"refusing to replace {path}: it is a symbolic link", write.Message);
            var stream = Assert.Throws<UnsafeDestinationException>(() => HostFile.CreateStream(path));
            Assert.StartsWith($"refusing to replace {path}: it is a symbolic link", stream.Message);
        }

        Assert.Equal("keep me", File.ReadAllText(precious));
        Assert.Equal(["precious"], Directory.EnumerateFileSystemEntries(outside).Select(p => Path.GetFileName(p)));
        Assert.Equal(precious, new FileInfo(link).LinkTarget);
        Assert.Equal(["dangling", "out", "outside"], Entries());
    }

    [Fact]
    public void ADirectorySocketAndBlockDeviceAreRefusedAndLeftAsTheyAre()
    {
        string directory = _temp.Combine("dir");
        Directory.CreateDirectory(directory);
        File.WriteAllText(Path.Combine(directory, "inside"), "inside");
        string socketPath = _temp.Combine("sock");
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Bind(new UnixDomainSocketEndPoint(socketPath));
        string block = _temp.Combine("block");
        SpecialFiles.MakeBlockDevice(block);

        foreach (var (path, kind) in new[] { (directory, "a directory"), (socketPath, "a socket"), (block, "a block device") })
        {
            var error = Assert.Throws<UnsafeDestinationException>(() => HostFile.WriteAllBytes(path, "x"u8));
            Assert.StartsWith($"refusing to replace {path}: it is {kind}", error.Message);
            Assert.Throws<UnsafeDestinationException>(() => HostFile.CreateStream(path));
        }

        Assert.Equal("inside", File.ReadAllText(Path.Combine(directory, "inside")));
        Assert.StartsWith("socket", SpecialFiles.Describe(socketPath));
        Assert.Equal("block special file 7:0", SpecialFiles.Describe(block));
        Assert.Equal(["block", "dir", "sock"], Entries());
    }

    [Fact]
    public void AMissingDirectoryOrATrailingSlashIsAClearError()
    {
        var missing = Assert.Throws<IOException>(() => HostFile.WriteAllBytes(_temp.Combine("no", "reply.json"), "x"u8));
        Assert.Equal($"cannot write {_temp.Combine("no", "reply.json")}: the directory {_temp.Combine("no")} does not exist", missing.Message);
        var slash = Assert.Throws<UnsafeDestinationException>(() => HostFile.WriteAllBytes(_temp.Path + "/", "x"u8));
        Assert.Contains("it names a directory", slash.Message);
        Assert.Empty(Entries());
    }

    [Fact]
    public void ADeviceAppearingInPlaceOfARegularFileWhileWritingIsNotReplaced()
    {
        string path = _temp.Combine("out");
        File.WriteAllText(path, "old");
        using (var pending = PendingHostFile.Open(path, writeThroughOnly: false))
        {
            pending.Stream.Write("new"u8);

            // Between the look and the rename, someone swaps the regular file for a device.
            File.Delete(path);
            SpecialFiles.MakeNullDevice(path);

            Assert.Throws<DestinationChangedException>(() => pending.Commit(sync: true));
        }

        Assert.Equal(SpecialFiles.NullDevice, SpecialFiles.Describe(path));
        Assert.Equal(["out"], Entries()); // and the new file is gone

        // From the top, the device is seen as such and written through.
        HostFile.WriteAllBytes(path, "new"u8);
        Assert.Equal(SpecialFiles.NullDevice, SpecialFiles.Describe(path));
    }

    [Fact]
    public void ADeviceAppearingWhereNothingWasWhileWritingIsNotReplaced()
    {
        string path = _temp.Combine("out");
        using (var pending = PendingHostFile.Open(path, writeThroughOnly: false))
        {
            pending.Stream.Write("new"u8);
            SpecialFiles.MakeNullDevice(path);
            Assert.Throws<DestinationChangedException>(() => pending.Commit(sync: true));
        }

        Assert.Equal(SpecialFiles.NullDevice, SpecialFiles.Describe(path));
        Assert.Equal(["out"], Entries());
    }

    [Fact]
    public void ADirectoryAppearingInPlaceOfARegularFileIsSwappedBack()
    {
        string path = _temp.Combine("out");
        File.WriteAllText(path, "old");
        using (var pending = PendingHostFile.Open(path, writeThroughOnly: false))
        {
            pending.Stream.Write("new"u8);
            File.Delete(path);
            Directory.CreateDirectory(path);
            File.WriteAllText(Path.Combine(path, "kept"), "kept");
            Assert.Throws<DestinationChangedException>(() => pending.Commit(sync: true));
        }

        Assert.Equal("kept", File.ReadAllText(Path.Combine(path, "kept")));
        Assert.Equal(["out"], Entries());
    }

    // --- export ---

    private async Task<(CastoreStore Store, FileNode File, DirectoryNode Tree)> StoreWithContentAsync()
    {
        var store = CastoreStore.Open("local://" + _temp.Combine("store"));
        string tree = _temp.Combine("tree");
        Directory.CreateDirectory(tree);
        File.WriteAllText(Path.Combine(tree, "a"), "file a\n");
        var treeNode = (DirectoryNode)await HostImporter.ImportAsync(tree, store);
        var fileNode = (FileNode)await HostImporter.ImportAsync(Path.Combine(tree, "a"), store);
        Directory.Delete(tree, recursive: true);
        return (store, fileNode, treeNode);
    }

    [Fact]
    public async Task ExportWritesAFileThroughADeviceOrFifoAndRefusesATree()
    {
        var (store, file, tree) = await StoreWithContentAsync();
        await using var _ = store;
        string device = _temp.Combine("null");
        SpecialFiles.MakeNullDevice(device);
        string fifo = _temp.Combine("pipe");
        SpecialFiles.MakeFifo(fifo);

        foreach (bool replace in new[] { false, true })
        {
            var options = new ExportOptions { ReplaceExisting = replace };
            await HostExporter.ExportAsync(file, store, device, options);
            var reader = new SpecialFiles.FifoReader(fifo);
            await HostExporter.ExportAsync(file, store, fifo, options);
            Assert.Equal("file a\n", Encoding.UTF8.GetString(reader.Finish()));

            var error = await Assert.ThrowsAsync<UnsafeDestinationException>(() => HostExporter.ExportAsync(tree, store, device, options));
            Assert.Equal(
                $"refusing to export a directory to {device}: it is a character device, which only a file's bytes can be written to", error.Message);
        }

        Assert.Equal(SpecialFiles.NullDevice, SpecialFiles.Describe(device));
        Assert.Equal("fifo 0:0", SpecialFiles.Describe(fifo));
        Assert.Equal(["null", "pipe", "store"], Entries());
    }

    [Fact]
    public async Task ExportNeverReplacesWithoutBeingAskedAndNeverFollowsALink()
    {
        var (store, file, tree) = await StoreWithContentAsync();
        await using var _ = store;
        string precious = _temp.Combine("precious");
        File.WriteAllText(precious, "keep me");
        string link = _temp.Combine("link");
        File.CreateSymbolicLink(link, precious);
        string regular = _temp.Combine("regular");
        File.WriteAllText(regular, "mine");

        foreach (string path in new[] { link, regular })
        {
            foreach (Node node in new Node[] { file, tree })
            {
                var error = await Assert.ThrowsAsync<ExportException>(() => HostExporter.ExportAsync(node, store, path));
                Assert.Equal($"cannot export to {path}: it already exists", error.Message);
            }
        }

        Assert.Equal("keep me", File.ReadAllText(precious));
        Assert.Equal(precious, new FileInfo(link).LinkTarget);
        Assert.Equal("mine", File.ReadAllText(regular));
    }

    [Fact]
    public async Task ExportReplacingAnEarlierResultReplacesTheLinkNotItsTargetAndNeverASocketOrBlockDevice()
    {
        var (store, file, tree) = await StoreWithContentAsync();
        await using var _ = store;
        var options = new ExportOptions { ReplaceExisting = true };

        string earlierTree = _temp.Combine("result-tree");
        Directory.CreateDirectory(Path.Combine(earlierTree, "sub"));
        File.WriteAllText(Path.Combine(earlierTree, "sub", "old"), "old");
        await HostExporter.ExportAsync(tree, store, earlierTree, options);
        Assert.Equal(["a"], Directory.EnumerateFileSystemEntries(earlierTree).Select(p => Path.GetFileName(p)));

        string precious = _temp.Combine("precious");
        File.WriteAllText(precious, "keep me");
        string link = _temp.Combine("result-link");
        File.CreateSymbolicLink(link, precious);
        await HostExporter.ExportAsync(file, store, link, options);
        Assert.Null(new FileInfo(link).LinkTarget);
        Assert.Equal("file a\n", File.ReadAllText(link));
        Assert.Equal("keep me", File.ReadAllText(precious));

        string block = _temp.Combine("block");
        SpecialFiles.MakeBlockDevice(block);
        string socketPath = _temp.Combine("sock");
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Bind(new UnixDomainSocketEndPoint(socketPath));
        foreach (var (path, kind) in new[] { (block, "a block device"), (socketPath, "a socket") })
        {
            var error = await Assert.ThrowsAsync<UnsafeDestinationException>(() => HostExporter.ExportAsync(file, store, path, options));
            Assert.StartsWith($"refusing to replace {path}: it is {kind}", error.Message);
        }

        Assert.Equal("block special file 7:0", SpecialFiles.Describe(block));
        Assert.StartsWith("socket", SpecialFiles.Describe(socketPath));
        Assert.Equal(["block", "precious", "result-link", "result-tree", "sock", "store"], Entries());
    }

    // --- the local store's own objects ---

    [Fact]
    public void AStoreWhoseBlobsDirectoryIsASymlinkIsRefusedAndNothingIsCreatedThroughIt()
    {
        string outside = _temp.Combine("outside");
        Directory.CreateDirectory(outside);
        string root = _temp.Combine("store");
        Directory.CreateDirectory(root);
        Directory.CreateSymbolicLink(Path.Combine(root, "blobs"), outside);

        var error = Assert.Throws<StoreAddressException>(() => LocalStore.Open(root));
        Assert.Equal($"refusing to use the store at {root}: {Path.Combine(root, "blobs")} is a symbolic link, not a directory", error.Message);
        Assert.Empty(Directory.EnumerateFileSystemEntries(outside));

        // The same in a store that exists already.
        string existing = _temp.Combine("existing");
        LocalStore.Open(existing);
        Directory.Delete(Path.Combine(existing, "tmp"));
        Directory.CreateSymbolicLink(Path.Combine(existing, "tmp"), outside);
        Assert.Throws<StoreAddressException>(() => LocalStore.Open(existing));
        Assert.Empty(Directory.EnumerateFileSystemEntries(outside));
    }

    [Fact]
    public async Task ADeviceUnderAnObjectsNameIsNeitherWrittenThroughNorReplaced()
    {
        var store = LocalStore.Open(_temp.Combine("store"));
        byte[] bytes = "an object"u8.ToArray();
        string hex = Blake3.Hash(bytes).ToHex();
        string objectPath = _temp.Combine("store", "blobs", hex[..2], hex);
        SpecialFiles.MakeNullDevice(objectPath);

        await using (var writer = store.Blobs.OpenWrite())
        {
            await writer.WriteAsync(bytes);
            var error = await Assert.ThrowsAsync<UnsafeDestinationException>(() => writer.CompleteAsync().AsTask());
            Assert.Equal($"refusing to replace {objectPath} in the store {store.Root}: it is a character device, not a stored object", error.Message);
        }

        Assert.Equal(SpecialFiles.NullDevice, SpecialFiles.Describe(objectPath));
        Assert.Empty(Directory.EnumerateFileSystemEntries(_temp.Combine("store", "tmp")));
    }

    [Fact]
    public async Task AFifoOrSymlinkUnderAnObjectsNameIsMovedAsideNeverOpenedOrFollowed()
    {
        var store = LocalStore.Open(_temp.Combine("store"));
        byte[] bytes = "an object"u8.ToArray();
        var digest = Blake3.Hash(bytes);
        string hex = digest.ToHex();
        string blobPath = _temp.Combine("store", "blobs", hex[..2], hex);
        SpecialFiles.MakeFifo(blobPath);

        // Opening a FIFO for reading would wait for a writer forever.
        var error = await Assert.ThrowsAsync<CorruptObjectException>(() => store.Blobs.OpenReadAsync(digest).AsTask());
        Assert.Contains($"{blobPath} is a FIFO, not a stored object; moved aside to ", error.Message);
        string quarantined = Assert.Single(Directory.GetFileSystemEntries(_temp.Combine("store", "quarantine")));
        Assert.Equal("fifo 0:0", SpecialFiles.Describe(quarantined));

        // Written again, it is a stored object.
        await using (var writer = store.Blobs.OpenWrite())
        {
            await writer.WriteAsync(bytes);
            Assert.Equal(digest, await writer.CompleteAsync());
        }

        using (var reader = await store.Blobs.OpenReadAsync(digest))
        {
            Assert.Equal(bytes.Length, reader!.Length);
        }

        // A directory object that is a symlink to a file elsewhere: reported and moved aside, the file untouched.
        var directory = CastoreDirectory.FromNodes([new FileNode("f", digest, (ulong)bytes.Length, false)]);
        string directoryHex = directory.Digest.ToHex();
        string outside = _temp.Combine("outside");
        await File.WriteAllBytesAsync(outside, directory.Encoding.ToArray());
        string directoryPath = _temp.Combine("store", "directories", directoryHex[..2], directoryHex);
        File.CreateSymbolicLink(directoryPath, outside);
        var linked = await Assert.ThrowsAsync<CorruptObjectException>(() => store.Directories.GetAsync(directory.Digest).AsTask());
        Assert.Contains($"{directoryPath} is a symbolic link, not a stored object", linked.Message);
        Assert.Equal(directory.Encoding.ToArray(), await File.ReadAllBytesAsync(outside));
        Assert.False(Path.Exists(directoryPath));
    }

    [Fact]
    public void StaleTemporaryCleanupRemovesOnlyRegularFiles()
    {
        string root = _temp.Combine("store");
        LocalStore.Open(root);
        // Named like a dead writer's leftovers (pid 2^22 + 1 is above any pid_max), but not files the store wrote.
        string device = Path.Combine(root, "tmp", "4194305-device");
        SpecialFiles.MakeNullDevice(device);
        string leftover = Path.Combine(root, "tmp", "4194305-0123456789abcdef");
        File.WriteAllText(leftover, "partial");

        LocalStore.Open(root);

        Assert.False(File.Exists(leftover));
        Assert.Equal(SpecialFiles.NullDevice, SpecialFiles.Describe(device));
    }
}
