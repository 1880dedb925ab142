using System.Text;
using TvixFuseBuild.Castore.Hashing;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Stores.Local;

namespace TvixFuseBuild.Castore.Tests;

public sealed class LocalStoreTests : IDisposable
{
    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    private LocalStore NewStore() => LocalStore.Open(_temp.Combine("store"));

    private static async Task<B3Digest> PutAsync(IBlobService blobs, byte[] bytes)
    {
        await using var writer = blobs.OpenWrite();
        await writer.WriteAsync(bytes);
        return await writer.CompleteAsync();
    }

    private static async Task<byte[]> ReadAllAsync(IBlobService blobs, B3Digest digest)
    {
        using var reader = await blobs.OpenReadAsync(digest);
        Assert.NotNull(reader);
        var bytes = new byte[reader.Length];
        int n = await reader.ReadAtAsync(0, bytes);
        Assert.Equal(bytes.Length, n);
        return bytes;
    }

    [Fact]
    public async Task BlobRoundTripAndRandomAccess()
    {
        var store = NewStore();
        var bytes = new byte[3 * 1024 * 1024 + 17];
        Random.Shared.NextBytes(bytes);

        var digest = await PutAsync(store.Blobs, bytes);

        Assert.Equal(Blake3.Hash(bytes), digest);
        Assert.True(await store.Blobs.HasAsync(digest));
        Assert.Equal(bytes.Length, (await store.Blobs.StatAsync(digest, withChunks: true))!.Size);
        Assert.Equal(bytes, await ReadAllAsync(store.Blobs, digest));

        using var reader = await store.Blobs.OpenReadAsync(digest);
        var middle = new byte[100];
        Assert.Equal(100, await reader!.ReadAtAsync(1_000_000, middle));
        Assert.Equal(bytes.AsSpan(1_000_000, 100).ToArray(), middle);
        Assert.Equal(0, await reader.ReadAtAsync(bytes.Length, middle));
        Assert.NotNull(reader.BackingFile);

        string path = store.BlobPath(digest);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.GroupRead | UnixFileMode.OtherRead, File.GetUnixFileMode(path));
    }

    [Fact]
    public async Task MissingObjectsAreNull()
    {
        var store = NewStore();
        var absent = Blake3.Hash("absent"u8);
        Assert.False(await store.Blobs.HasAsync(absent));
        Assert.Null(await store.Blobs.StatAsync(absent, false));
        Assert.Null(await store.Blobs.OpenReadAsync(absent));
        Assert.Null(await store.Directories.GetAsync(absent));
    }

    [Fact]
    public async Task AbandonedWriteLeavesNothing()
    {
        var store = NewStore();
        await using (var writer = store.Blobs.OpenWrite())
        {
            await writer.WriteAsync(new byte[1000]);
        }

        Assert.Empty(Directory.EnumerateFiles(store.TempDirectory));
        Assert.False(await store.Blobs.HasAsync(Blake3.Hash(new byte[1000])));
    }

    [Fact]
    public async Task CorruptBlobIsDetectedQuarantinedAndNeverServed()
    {
        var store = NewStore();
        var bytes = Encoding.UTF8.GetBytes("the original contents of this blob");
        var digest = await PutAsync(store.Blobs, bytes);
        Assert.Equal(bytes, await ReadAllAsync(store.Blobs, digest)); // verified once in this process

        string path = store.BlobPath(digest);
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.Write))
        {
            stream.Position = 4;
            stream.WriteByte((byte)'X');
        }

        var error = await Assert.ThrowsAsync<CorruptObjectException>(async () => await store.Blobs.OpenReadAsync(digest));
        Assert.Contains(digest.ToString(), error.Message);
        Assert.Contains("corrupt", error.Message);
        Assert.False(File.Exists(path));
        Assert.Single(Directory.EnumerateFiles(store.QuarantineDirectory));

        // Writing it again repairs the store.
        Assert.Equal(digest, await PutAsync(store.Blobs, bytes));
        Assert.Equal(bytes, await ReadAllAsync(store.Blobs, digest));
    }

    [Fact]
    public async Task CorruptBlobIsDetectedByAFreshProcessView()
    {
        var store = NewStore();
        var digest = await PutAsync(store.Blobs, new byte[70_000]);
        string path = store.BlobPath(digest);
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        File.WriteAllBytes(path, new byte[70_000 - 1]);

        var reopened = LocalStore.Open(store.Root);
        await Assert.ThrowsAsync<CorruptObjectException>(async () => await reopened.Blobs.OpenReadAsync(digest));
    }

    [Fact]
    public async Task CorruptDirectoryIsDetected()
    {
        var store = NewStore();
        var directory = CastoreDirectory.FromNodes([new FileNode("a", B3Digest.Empty, 0, false)]);
        await store.Directories.PutAsync(directory);
        Assert.Equal(directory, await store.Directories.GetAsync(directory.Digest));

        string path = store.DirectoryPath(directory.Digest);
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        File.WriteAllBytes(path, CastoreDirectory.FromNodes([new FileNode("b", B3Digest.Empty, 0, false)]).Encoding.ToArray());

        var error = await Assert.ThrowsAsync<CorruptObjectException>(async () => await store.Directories.GetAsync(directory.Digest));
        Assert.Contains(directory.Digest.ToString(), error.Message);
        Assert.False(File.Exists(path));
    }

    [Fact]
    public async Task GarbageDirectoryBytesAreCorruptNotACrash()
    {
        var store = NewStore();
        var digest = Blake3.Hash("whatever"u8);
        string path = store.DirectoryPath(digest);
        File.WriteAllBytes(path, [0xff, 0xff, 0xff]);
        await Assert.ThrowsAsync<CorruptObjectException>(async () => await store.Directories.GetAsync(digest));
    }

    [Fact]
    public async Task ClosurePutValidatesAndStoresLeavesToRoot()
    {
        var store = NewStore();
        var leaf = CastoreDirectory.FromNodes([new FileNode("f", B3Digest.Empty, 0, false)]);
        var root = CastoreDirectory.FromNodes([new DirectoryNode("sub", leaf.Digest, leaf.Size)]);

        await using (var putter = store.Directories.CreatePutter())
        {
            await putter.PutAsync(leaf);
            await putter.PutAsync(root);
            Assert.Equal(root.Digest, await putter.CloseAsync());
        }

        var closure = new List<CastoreDirectory>();
        await foreach (var d in store.Directories.GetRecursiveAsync(root.Digest))
        {
            closure.Add(d);
        }

        Assert.Equal([root, leaf], closure);
    }

    [Fact]
    public async Task ClosurePutRejectsDanglingReferencesBeforeWritingAnything()
    {
        var store = NewStore();
        var leaf = CastoreDirectory.FromNodes([new FileNode("f", B3Digest.Empty, 0, false)]);
        var root = CastoreDirectory.FromNodes([new DirectoryNode("sub", leaf.Digest, leaf.Size)]);

        await using var putter = store.Directories.CreatePutter();
        var error = await Assert.ThrowsAsync<InvalidClosureException>(async () => await putter.PutAsync(root));
        Assert.Contains("was not sent before it", error.Message);
        Assert.Null(await store.Directories.GetAsync(root.Digest));
    }

    [Fact]
    public async Task ClosurePutRejectsSeveralRoots()
    {
        var store = NewStore();
        var a = CastoreDirectory.FromNodes([new FileNode("a", B3Digest.Empty, 0, false)]);
        var b = CastoreDirectory.FromNodes([new FileNode("b", B3Digest.Empty, 0, false)]);
        await using var putter = store.Directories.CreatePutter();
        await putter.PutAsync(a);
        await putter.PutAsync(b);
        var error = await Assert.ThrowsAsync<InvalidClosureException>(async () => await putter.CloseAsync());
        Assert.Contains("not reachable from the root", error.Message);
        Assert.Null(await store.Directories.GetAsync(a.Digest));
        Assert.Null(await store.Directories.GetAsync(b.Digest));
    }

    [Fact]
    public async Task ClosurePutRejectsWrongEdgeSizesButAcceptsBothForms()
    {
        var store = NewStore();
        var leaf = CastoreDirectory.FromNodes([new FileNode("f", B3Digest.Empty, 0, false), new FileNode("g", B3Digest.Empty, 0, false)]);
        Assert.Equal(4UL, leaf.Size);
        Assert.Equal(2UL, leaf.SpecSize);

        foreach (ulong size in new[] { leaf.Size, leaf.SpecSize })
        {
            await using var ok = store.Directories.CreatePutter();
            await ok.PutAsync(leaf);
            await ok.PutAsync(CastoreDirectory.FromNodes([new DirectoryNode("sub", leaf.Digest, size)]));
            await ok.CloseAsync();
        }

        await using var bad = store.Directories.CreatePutter();
        await bad.PutAsync(leaf);
        var error = await Assert.ThrowsAsync<InvalidClosureException>(
            async () => await bad.PutAsync(CastoreDirectory.FromNodes([new DirectoryNode("sub", leaf.Digest, 3)])));
        Assert.Contains("records size 3", error.Message);
    }

    [Fact]
    public async Task EmptyClosureIsRejected()
    {
        await using var putter = NewStore().Directories.CreatePutter();
        var error = await Assert.ThrowsAsync<InvalidClosureException>(async () => await putter.CloseAsync());
        Assert.Equal("no directories were sent", error.Message);
    }

    [Fact]
    public async Task RecursiveGetOfAnIncompleteClosureNamesTheMissingDirectory()
    {
        var store = NewStore();
        var missing = Blake3.Hash("missing"u8);
        var root = CastoreDirectory.FromNodes([new DirectoryNode("sub", missing, 0)]);
        await store.Directories.PutAsync(root);
        var error = await Assert.ThrowsAsync<ObjectNotFoundException>(async () =>
        {
            await foreach (var _ in store.Directories.GetRecursiveAsync(root.Digest))
            {
            }
        });
        Assert.Contains(missing.ToString(), error.Message);
    }

    [Fact]
    public void ANonEmptyDirectoryThatIsNotAStoreIsRefused()
    {
        string dir = _temp.Combine("not-a-store");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "precious"), "data");
        var error = Assert.Throws<StoreAddressException>(() => LocalStore.Open(dir));
        Assert.Contains("is not a tvix-fuse-build store", error.Message);
        Assert.True(File.Exists(Path.Combine(dir, "precious")));
    }

    [Fact]
    public void AStoreOfAnotherFormatIsRefused()
    {
        var store = NewStore();
        File.WriteAllText(Path.Combine(store.Root, LocalStore.MarkerFileName), "99\n");
        var error = Assert.Throws<StoreAddressException>(() => LocalStore.Open(store.Root));
        Assert.Contains("format 99", error.Message);
    }

    [Fact]
    public void StaleTemporaryFilesOfDeadWritersAreRemovedAtOpen()
    {
        var store = NewStore();
        string stale = Path.Combine(store.TempDirectory, "999999999-deadbeef");
        string mine = Path.Combine(store.TempDirectory, $"{Environment.ProcessId}-cafe");
        File.WriteAllText(stale, "partial");
        File.WriteAllText(mine, "in progress");

        LocalStore.Open(store.Root);

        Assert.False(File.Exists(stale));
        Assert.True(File.Exists(mine));
    }

    [Fact]
    public async Task ConcurrentWritersOfTheSameBlobAgree()
    {
        var store = NewStore();
        var bytes = new byte[2 * 1024 * 1024];
        Random.Shared.NextBytes(bytes);
        var digests = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Task.Run(() => PutAsync(store.Blobs, bytes))));
        Assert.All(digests, d => Assert.Equal(Blake3.Hash(bytes), d));
        Assert.Equal(bytes, await ReadAllAsync(store.Blobs, digests[0]));
        Assert.Empty(Directory.EnumerateFiles(store.TempDirectory));
    }
}
