using System.Collections.Concurrent;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Fuse.Tests.Support;
using static TvixFuseBuild.Fuse.Tests.Support.Fixtures;

namespace TvixFuseBuild.Fuse.Tests;

/// <summary>A mount starts one worker and reads nothing from the store until the build looks up an input.</summary>
public sealed class LazyMountTests
{
    [Fact]
    public async Task WorkersGrowWhenAllAreBlockedInTheStore()
    {
        const int Concurrent = 4;
        var stores = await new FixtureStores().BlobA();
        var directories = new CountingDirectoryService(stores.Directories);
        var nodes = new List<Node>();
        for (int i = 0; i < Concurrent; i++)
        {
            var directory = CastoreDirectory.FromNodes([new FileNode($"f{i}", BlobADigest, (ulong)BlobA.Length, false)]);
            await stores.Directories.PutAsync(directory);
            nodes.Add(new DirectoryNode($"d{i}", directory.Digest, directory.Size));
        }

        await using var mount = await TestMount.StartAsync(nodes, stores.Blobs, directories, new CastoreMountOptions { Threads = Concurrent });
        Assert.Equal(1, mount.Mount.WorkerCount);

        // Each lookup blocks its worker in the store until all of them are inside it at once: only served when the
        // session started a worker for each (with one worker the barrier times out and the lookups fail with EIO).
        directories.Barrier = new Barrier(Concurrent);
        var stats = Enumerable.Range(0, Concurrent)
            .Select(i => Task.Factory.StartNew(() => Posix.TryStat(mount[$"d{i}/f{i}"], out _), TaskCreationOptions.LongRunning))
            .ToArray();
        int[] results = await Task.WhenAll(stats);

        Assert.All(results, errno => Assert.Equal(0, errno));
        Assert.DoesNotContain(mount.LogLines, line => line.Contains("barrier"));
        Assert.Equal(Concurrent, mount.Mount.WorkerCount);
        Assert.Equal(Concurrent - 1, mount.Mount.ClonedChannels);
    }

    [Fact]
    public async Task AnUnreadInputsDirectoryIsNeverFetched()
    {
        var stores = await new FixtureStores().BlobA();
        var read = CastoreDirectory.FromNodes([new FileNode("inside", BlobADigest, (ulong)BlobA.Length, false)]);
        var unread = CastoreDirectory.FromNodes([new FileNode("elsewhere", BlobADigest, (ulong)BlobA.Length, false)]);
        await stores.Directories.PutAsync(read);
        await stores.Directories.PutAsync(unread);
        var directories = new CountingDirectoryService(stores.Directories);
        Node[] nodes =
        [
            .. stores.Nodes,
            new DirectoryNode("read", read.Digest, read.Size),
            new DirectoryNode("unread", unread.Digest, unread.Size),
        ];

        await using (var mount = await TestMount.StartAsync(nodes, stores.Blobs, directories))
        {
            Assert.Empty(directories.Requested);

            // Listing the root needs only the names and digests given to the mount. (Looking up an input itself reads
            // its directory, as tvix does: a missing one is EIO there, not further down.)
            Assert.Equal([BlobAName, "read", "unread"], Directory.GetFileSystemEntries(mount.Path).Select(Path.GetFileName).Order());
            Assert.Empty(directories.Requested);

            Assert.Equal(BlobA, await File.ReadAllBytesAsync(mount["read/inside"]));
        }

        Assert.Equal([read.Digest], directories.Requested.Distinct());
    }

    private sealed class CountingDirectoryService(IDirectoryService inner) : IDirectoryService
    {
        public ConcurrentQueue<B3Digest> Requested { get; } = new();

        public Barrier? Barrier { get; set; }

        public ValueTask<CastoreDirectory?> GetAsync(B3Digest digest, CancellationToken cancellationToken = default)
        {
            Requested.Enqueue(digest);

            // Blocks the calling thread, as a synchronous disk read does.
            if (Barrier is { } barrier && !barrier.SignalAndWait(TimeSpan.FromSeconds(20), cancellationToken))
            {
                throw new StoreUnavailableException("barrier: the other lookups never arrived");
            }

            return inner.GetAsync(digest, cancellationToken);
        }

        public IAsyncEnumerable<CastoreDirectory> GetRecursiveAsync(B3Digest root, CancellationToken cancellationToken = default) =>
            inner.GetRecursiveAsync(root, cancellationToken);

        public ValueTask<B3Digest> PutAsync(CastoreDirectory directory, CancellationToken cancellationToken = default) =>
            inner.PutAsync(directory, cancellationToken);

        public IDirectoryPutter CreatePutter() => inner.CreatePutter();

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
