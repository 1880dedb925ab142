using System.Diagnostics;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Stores.Memory;
using TvixFuseBuild.Fuse.Tests.Support;
using static TvixFuseBuild.Fuse.Tests.Support.Fixtures;

namespace TvixFuseBuild.Fuse.Tests;

/// <summary>
/// Real mounts, our own requirements: laziness proved with counting stores, inodes freed when the kernel forgets,
/// interrupts, passthrough, and store failures that end in EIO (never wrong bytes, never a hang).
/// </summary>
public sealed class MountBehaviourTests
{
    [Fact]
    public async Task StatOfADeepFileFetchesOnlyTheDirectoriesOnItsPathAndNoBlob()
    {
        var stores = await (await new FixtureStores().DirectoryComplicated()).BlobB();
        var directories = new CountingDirectoryService(stores.Directories);
        var blobs = new CountingBlobService(stores.Blobs);
        await using var mount = await TestMount.StartAsync(stores.Nodes, blobs, directories);

        var st = Posix.Stat(Path.Combine(mount[DirectoryComplicatedName], "keep", ".keep"));
        Assert.True(st.IsFile);
        Assert.Equal([DirectoryComplicated.Digest, DirectoryWithKeep.Digest], directories.Fetched.ToArray());
        Assert.Empty(blobs.Opened);
        Assert.Empty(blobs.Reads);

        // Looking again fetches nothing more: the kernel caches entries and attributes.
        Posix.Stat(Path.Combine(mount[DirectoryComplicatedName], "keep", ".keep"));
        Assert.Equal(2, directories.Fetched.Count);
    }

    [Fact]
    public async Task AOneByteReadOfALargeBlobReadsOneSmallRange()
    {
        var stores = new FixtureStores();
        var big = new byte[16 << 20];
        new Random(7).NextBytes(big);
        var digest = await stores.PutBlobAsync(big);
        stores.Nodes.Add(new FileNode("big", digest, (ulong)big.Length, false));
        var blobs = new CountingBlobService(stores.Blobs);
        await using var mount = await TestMount.StartAsync(stores.Nodes, blobs, stores.Directories);

        using (var file = File.OpenHandle(mount["big"]))
        {
            var one = new byte[1];
            Assert.Equal(1, RandomAccess.Read(file, one, 5 << 20));
            Assert.Equal(big[5 << 20], one[0]);
        }

        var read = Assert.Single(blobs.Reads);
        Assert.InRange(read.Offset, (5 << 20) - (1 << 20), 5 << 20);
        Assert.InRange(read.Length, 1, 1 << 20);
        Assert.Single(blobs.Opened);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task ABlobIsOpenedAtTheFirstReadWithZeroMessageOpenAndAtOpenWithout(bool zeroMessageOpen)
    {
        var stores = await (await new FixtureStores().BlobA()).BlobB();
        var blobs = new CountingBlobService(stores.Blobs);
        await using var mount = await TestMount.StartAsync(stores.Nodes, blobs, stores.Directories, new CastoreMountOptions { ZeroMessageOpen = zeroMessageOpen });

        using (var file = File.OpenHandle(mount[BlobAName]))
        {
            Assert.Equal(zeroMessageOpen ? 0 : 1, blobs.Opened.Count);
            var buffer = new byte[BlobA.Length];
            Assert.Equal(BlobA.Length, RandomAccess.Read(file, buffer, 0));
            Assert.Equal(BlobA, buffer);
            Assert.Single(blobs.Opened);
        }

        // Without zero-message open RELEASE (which the kernel sends after close returns) closes the blob; with it the
        // blob stays open for the inode.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (!zeroMessageOpen && blobs.OpenReaders > 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10);
        }

        Assert.Equal(zeroMessageOpen ? 1 : 0, blobs.OpenReaders);
        Assert.Equal(BlobB, await File.ReadAllBytesAsync(mount[BlobBName]));
        Assert.Empty(mount.LogLines);
    }

    [Fact]
    public async Task WithZeroMessageOpenAtMostTheLimitOfIdleBlobsStayOpen()
    {
        var stores = new FixtureStores();
        var contents = new List<byte[]>();
        for (int i = 0; i < 12; i++)
        {
            byte[] data = new byte[1000 + i];
            new Random(i).NextBytes(data);
            contents.Add(data);
            stores.Nodes.Add(new FileNode($"file{i:D2}", await stores.PutBlobAsync(data), (ulong)data.Length, false));
        }

        var blobs = new CountingBlobService(stores.Blobs);
        await using var mount = await TestMount.StartAsync(stores.Nodes, blobs, stores.Directories, new CastoreMountOptions { ZeroMessageOpen = true, MaxLazyReaders = 3 });

        for (int round = 0; round < 2; round++)
        {
            for (int i = 0; i < contents.Count; i++)
            {
                Assert.Equal(contents[i], await File.ReadAllBytesAsync(mount[$"file{i:D2}"]));
                Assert.InRange(blobs.OpenReaders, 1, 3);
            }

            // Dropping the page cache makes the next round READ again, through blobs closed and opened anew.
            await File.WriteAllTextAsync("/proc/sys/vm/drop_caches", "1");
        }

        Assert.True(blobs.Opened.Count > contents.Count, $"{blobs.Opened.Count} opens");
        Assert.Empty(mount.LogLines);
    }

    [Fact]
    public async Task InodesAreFreedWhenTheKernelForgetsThem()
    {
        var stores = await (await (await new FixtureStores().DirectoryComplicated()).BlobA()).HelloWorld();
        await using var mount = await TestMount.StartAsync(stores);

        foreach (string path in Directory.EnumerateFileSystemEntries(mount.Path, "*", SearchOption.AllDirectories))
        {
            Posix.LStat(path);
        }

        await File.ReadAllBytesAsync(mount[BlobAName]);
        Assert.True(mount.Mount.LiveInodes > 5, $"{mount.Mount.LiveInodes} live inodes after the walk");

        // Dropping the kernel's dentry and inode caches makes it FORGET everything but the root.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (mount.Mount.LiveInodes > 1 && DateTime.UtcNow < deadline)
        {
            await File.WriteAllTextAsync("/proc/sys/vm/drop_caches", "2");
            await Task.Delay(100);
        }

        Assert.Equal(1, mount.Mount.LiveInodes);

        // And everything is found again afterwards.
        Assert.Equal(BlobA, await File.ReadAllBytesAsync(mount[BlobAName]));
        Assert.True(Posix.Stat(Path.Combine(mount[DirectoryComplicatedName], "keep", ".keep")).IsFile);
    }

    [Fact]
    public async Task ASignalledReaderIsReleasedWhileTheStoreHangs()
    {
        var stores = await new FixtureStores().DirectoryComplicated();
        var directories = new CountingDirectoryService(stores.Directories)
        {
            Gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously),
        };
        await using var mount = await TestMount.StartAsync(stores.Nodes, stores.Blobs, directories);

        using var stat = Process.Start(new ProcessStartInfo("stat", mount[DirectoryComplicatedName])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        })!;
        await directories.Entered.Task.WaitAsync(TimeSpan.FromSeconds(10));

        // SIGTERM: the kernel sends INTERRUPT for the waiting LOOKUP; without an EINTR reply stat would hang.
        Assert.Equal(0, Kill(stat.Id, 15));
        var exited = stat.WaitForExitAsync();
        Assert.Same(exited, await Task.WhenAny(exited, Task.Delay(TimeSpan.FromSeconds(5))));

        directories.Gate.SetResult();
        Assert.True(Posix.Stat(mount[DirectoryComplicatedName]).IsDirectory);
    }

    [Fact]
    public async Task PassthroughServesBlobsWithoutReadingThemHere()
    {
        string blobDirectory = Directory.CreateTempSubdirectory("tfb-fuse-blobs-").FullName;
        try
        {
            var blobs = new FileBlobService(blobDirectory);
            var content = new byte[3 << 20];
            new Random(3).NextBytes(content);
            var digest = await blobs.PutAsync(content);
            Node[] nodes = [new FileNode("file", digest, (ulong)content.Length, false), new FileNode("tool", digest, (ulong)content.Length, true)];

            await using (var mount = await TestMount.StartAsync(nodes, blobs, new MemoryDirectoryService(), new CastoreMountOptions { Passthrough = true }))
            {
                Assert.Equal(content, await File.ReadAllBytesAsync(mount["file"]));
                Assert.Equal(content, await File.ReadAllBytesAsync(mount["tool"]));
                Assert.True(mount.Mount.PassthroughActive, string.Join("\n", mount.LogLines));
                Assert.Empty(blobs.Reads);
            }

            await using (var mount = await TestMount.StartAsync(nodes, blobs, new MemoryDirectoryService(), new CastoreMountOptions { Passthrough = false }))
            {
                Assert.Equal(content, await File.ReadAllBytesAsync(mount["file"]));
                Assert.False(mount.Mount.PassthroughActive);
                Assert.NotEmpty(blobs.Reads);
            }
        }
        finally
        {
            Directory.Delete(blobDirectory, recursive: true);
        }
    }

    [Fact]
    public async Task CorruptBlobsAreEioNeverWrongBytes()
    {
        var stores = await new FixtureStores().BlobB();
        await using var mount = await TestMount.StartAsync(stores.Nodes, new CorruptBlobService(stores.Blobs), stores.Directories);

        var e = Assert.ThrowsAny<IOException>(() => File.ReadAllBytes(mount[BlobBName]));
        Assert.Contains("Input/output error", e.Message);
        Assert.Contains(mount.LogLines, line => line.Contains("does not match its digest"));
    }

    [Fact]
    public async Task AFailingDirectoryServiceIsEio()
    {
        var stores = await new FixtureStores().DirectoryComplicated();
        await using var mount = await TestMount.StartAsync(stores.Nodes, stores.Blobs, new FailingDirectoryService());

        Assert.Equal(Posix.EIO, Posix.TryStat(mount[DirectoryComplicatedName], out _));
        Assert.Contains(mount.LogLines, line => line.Contains("store unreachable"));
    }

    [Fact]
    public async Task MountingOnAMissingDirectoryFailsClearly()
    {
        var e = await Assert.ThrowsAsync<FuseException>(() => CastoreMount.MountAsync(
            "/nonexistent/tfb-mountpoint", [], new MemoryBlobService(), new MemoryDirectoryService()));
        Assert.Contains("no such directory", e.Message);
    }

    [Fact]
    public async Task ChildProcessesDoNotInheritTheFuseConnection()
    {
        var stores = await new FixtureStores().BlobA();
        await using var mount = await TestMount.StartAsync(stores);

        // Every /dev/fuse file is close-on-exec: a build started from this process cannot keep the mount alive.
        string fds = Run.Checked("sh", "-c", "ls -l /proc/$$/fd");
        Assert.DoesNotContain("/dev/fuse", fds);
        Assert.Contains("/dev/fuse", string.Join("\n", Directory.GetFiles("/proc/self/fd").Select(fd => new FileInfo(fd).LinkTarget)));
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "kill")]
    private static extern int Kill(int pid, int signal);

    private sealed class FailingDirectoryService : IDirectoryService
    {
        public ValueTask<CastoreDirectory?> GetAsync(B3Digest digest, CancellationToken cancellationToken = default) =>
            throw new StoreUnavailableException("store unreachable: connection refused");

        public IAsyncEnumerable<CastoreDirectory> GetRecursiveAsync(B3Digest root, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();

        public ValueTask<B3Digest> PutAsync(CastoreDirectory directory, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException();

        public IDirectoryPutter CreatePutter() => throw new NotSupportedException();

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
