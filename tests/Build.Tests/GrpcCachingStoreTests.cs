using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Grpc;
using TvixFuseBuild.Castore.Hashing;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Stores.Local;
using TvixFuseBuild.Castore.Stores.Memory;

namespace TvixFuseBuild.Build.Tests.Grpc;

/// <summary>
/// <c>--store grpc+…</c>: a remote store (our server over a counting store) behind a local cache. Counts on the
/// serving side show what crossed the wire.
/// </summary>
public sealed class GrpcCachingStoreTests : IAsyncLifetime
{
    private const int ChunkSize = 64 << 10;
    private readonly GrpcTempDirectory _temp = new();
    private readonly CountingBlobService _blobs = new(new MemoryBlobService());
    private readonly CountingDirectoryService _directories = new(new MemoryDirectoryService());
    private GrpcCastoreTestServer _server = null!;

    private string CacheRoot => _temp.File("cache");

    public async Task InitializeAsync() =>
        _server = await GrpcCastoreTestServer.StartAsync(unixSocket: true, blobs: _blobs, directories: _directories, chunkSize: ChunkSize);

    public async Task DisposeAsync()
    {
        await _server.DisposeAsync();
        _temp.Dispose();
    }

    private CastoreStore OpenStore() => CastoreStore.Open(_server.StoreAddress($"?cache={CacheRoot}"));

    [Fact]
    public async Task WholeBlobIsFetchedOnceThenReadLocally()
    {
        byte[] data = GrpcCastoreRoundTripTests.RandomBytes(10_000, seed: 3);
        var digest = await PutOnServerAsync(data);

        await using (var store = OpenStore())
        {
            using var reader = await store.Blobs.OpenReadAsync(digest);
            Assert.NotNull(reader);
            Assert.Equal(data, await GrpcInteropClientTests.ReadAllAsync(reader));
            Assert.NotNull(reader.BackingFile); // served from the local store's file
        }

        Assert.Equal(1, _blobs.OpensOf(digest));
        int before = _blobs.Total;
        await using (var store = OpenStore())
        {
            using var reader = await store.Blobs.OpenReadAsync(digest);
            Assert.Equal(data, await GrpcInteropClientTests.ReadAllAsync(reader!));
        }

        Assert.Equal(before, _blobs.Total);
        Assert.Null(await OpenStore().Blobs.OpenReadAsync(Blake3.Hash("absent"u8)));
    }

    [Fact]
    public async Task ChunkedBlobFetchesOnlyTheChunksReadThenIsAssembled()
    {
        byte[] data = GrpcCastoreRoundTripTests.RandomBytes((5 * ChunkSize) + 123, seed: 4);
        var digest = await PutOnServerAsync(data);
        var chunks = Enumerable.Range(0, 6)
            .Select(i => Blake3.Hash(data.AsSpan(i * ChunkSize, Math.Min(ChunkSize, data.Length - (i * ChunkSize)))))
            .ToArray();
        var local = LocalStore.Open(CacheRoot);

        await using (var store = OpenStore())
        {
            using var reader = await store.Blobs.OpenReadAsync(digest);
            Assert.NotNull(reader);
            Assert.Equal(data.LongLength, reader.Length);

            // A read inside chunk 2 fetches chunk 2 only.
            var buffer = new byte[1000];
            Assert.Equal(1000, await reader.ReadAtAsync((2 * ChunkSize) + 10, buffer));
            Assert.Equal(data.AsSpan((2 * ChunkSize) + 10, 1000).ToArray(), buffer);
            Assert.Equal([0, 0, 1, 0, 0, 0], chunks.Select(_blobs.OpensOf));
            Assert.True(await local.Blobs.HasAsync(chunks[2]));
            Assert.False(await local.Blobs.HasAsync(digest));

            // Reading it all fetches each other chunk once (chunk 2 is local now).
            Assert.Equal(data, await GrpcInteropClientTests.ReadAllAsync(reader, step: 4096));
            Assert.All(chunks, c => Assert.Equal(1, _blobs.OpensOf(c)));
        }

        // Disposing waited for the assembly: the whole blob is local, and reading it again costs no remote call.
        Assert.True(await local.Blobs.HasAsync(digest));
        int before = _blobs.Total;
        await using (var store = OpenStore())
        {
            using var reader = await store.Blobs.OpenReadAsync(digest);
            Assert.NotNull(reader!.BackingFile);
            Assert.Equal(data, await GrpcInteropClientTests.ReadAllAsync(reader));
        }

        Assert.Equal(before, _blobs.Total);
    }

    [Fact]
    public async Task DirectoriesAreFetchedPerLevelAndMissingSubtreesInOneCall()
    {
        var file = new FileNode(PathComponent.Create("f"), Blake3.Hash("x"u8), 1, false);
        var leaf = CastoreDirectory.FromNodes([file]);
        var middle = CastoreDirectory.FromNodes([new DirectoryNode(PathComponent.Create("leaf"), leaf.Digest, leaf.Size)]);
        var root = CastoreDirectory.FromNodes(
        [
            new DirectoryNode(PathComponent.Create("middle"), middle.Digest, middle.Size),
            new FileNode(PathComponent.Create("g"), Blake3.Hash("y"u8), 1, false),
        ]);
        await using (var putter = _server.Directories.CreatePutter())
        {
            await putter.PutAsync(leaf);
            await putter.PutAsync(middle);
            await putter.PutAsync(root);
            await putter.CloseAsync();
        }

        await using (var store = OpenStore())
        {
            Assert.Equal(root, await store.Directories.GetAsync(root.Digest));
            Assert.Equal(1, _directories.Total);
            Assert.Equal(middle, await store.Directories.GetAsync(middle.Digest));
            Assert.Equal(2, _directories.Total);
        }

        // root and middle are cached: a recursive get asks the remote once, for the missing subtree under middle.
        await using (var store = OpenStore())
        {
            var closure = new List<CastoreDirectory>();
            await foreach (var d in store.Directories.GetRecursiveAsync(root.Digest))
            {
                closure.Add(d);
            }

            Assert.Equal([root, middle, leaf], closure);
            Assert.Equal(3, _directories.Total);
            Assert.Equal(1, _directories.RecursiveGets.GetValueOrDefault(leaf.Digest));
        }

        // Everything is local now.
        await using (var store = OpenStore())
        {
            Assert.Equal(leaf, await store.Directories.GetAsync(leaf.Digest));
            await foreach (var _ in store.Directories.GetRecursiveAsync(root.Digest))
            {
            }

            Assert.Equal(3, _directories.Total);
            Assert.Null(await store.Directories.GetAsync(Blake3.Hash("absent"u8)));
        }
    }

    [Fact]
    public async Task ClosureFetchTakesTheWholeSubtreeInOneCall()
    {
        var leaf = CastoreDirectory.FromNodes([new FileNode(PathComponent.Create("f"), Blake3.Hash("x"u8), 1, false)]);
        var root = CastoreDirectory.FromNodes([new DirectoryNode(PathComponent.Create("leaf"), leaf.Digest, leaf.Size)]);
        await using (var putter = _server.Directories.CreatePutter())
        {
            await putter.PutAsync(leaf);
            await putter.PutAsync(root);
            await putter.CloseAsync();
        }

        await using (var store = CastoreStore.Open(_server.StoreAddress($"?cache={CacheRoot}&fetch=closure")))
        {
            Assert.Equal(root, await store.Directories.GetAsync(root.Digest));
            Assert.Equal(leaf, await store.Directories.GetAsync(leaf.Digest));
        }

        Assert.Equal(1, _directories.Total);
        Assert.Equal(1, _directories.RecursiveGets.GetValueOrDefault(root.Digest));
        Assert.Equal(leaf, await LocalStore.Open(CacheRoot).Directories.GetAsync(leaf.Digest));
    }

    [Fact]
    public async Task WritesGoToTheRemoteAndTheCache()
    {
        byte[] data = GrpcCastoreRoundTripTests.RandomBytes(70_000, seed: 5);
        var directory = CastoreDirectory.FromNodes([new FileNode(PathComponent.Create("data"), Blake3.Hash(data), (ulong)data.Length, true)]);
        await using (var store = OpenStore())
        {
            await using var writer = store.Blobs.OpenWrite();
            await writer.WriteAsync(data);
            Assert.Equal(Blake3.Hash(data), await writer.CompleteAsync());
            await using var putter = store.Directories.CreatePutter();
            await putter.PutAsync(directory);
            Assert.Equal(directory.Digest, await putter.CloseAsync());
        }

        var local = LocalStore.Open(CacheRoot);
        Assert.True(await _server.Blobs.HasAsync(Blake3.Hash(data)));
        Assert.True(await local.Blobs.HasAsync(Blake3.Hash(data)));
        Assert.Equal(directory, await _server.Directories.GetAsync(directory.Digest));
        Assert.Equal(directory, await local.Directories.GetAsync(directory.Digest));

        // A file the cache already has still goes to the remote.
        byte[] output = GrpcCastoreRoundTripTests.RandomBytes(5000, seed: 6);
        string path = _temp.File("output");
        await File.WriteAllBytesAsync(path, output);
        using (var handle = File.OpenHandle(path))
        {
            Assert.Equal(Blake3.Hash(output), await ((IBlobService)local.Blobs).PutFileAsync(handle, output.Length, null));
            Assert.False(await _server.Blobs.HasAsync(Blake3.Hash(output)));
            await using var store = OpenStore();
            Assert.Equal(Blake3.Hash(output), await store.Blobs.PutFileAsync(handle, output.Length, Blake3.Hash(output)));
        }

        Assert.True(await _server.Blobs.HasAsync(Blake3.Hash(output)));
    }

    [Fact]
    public async Task CorruptRemoteDataIsNeverCached()
    {
        var blobs = GrpcInteropFixtures.Blobs();
        var chunked = B3Digest.ParseHex(GrpcInteropFixtures.ChunkedBlob.GetProperty("blob_digest_hex").GetString()!);
        var directory = GrpcInteropFixtures.Directories()["DIRECTORY_COMPLICATED"];
        await using var python = await PythonCastoreServer.StartAsync(GrpcInteropFixtures.ServerFixture(), "tvix", null, "--corrupt");
        await using (var store = CastoreStore.Open(python.StoreAddress($"?cache={CacheRoot}")))
        {
            await Assert.ThrowsAsync<CorruptObjectException>(async () => await store.Blobs.OpenReadAsync(Blake3.Hash(blobs["BLOB_B"])));
            using var reader = await store.Blobs.OpenReadAsync(chunked);
            await Assert.ThrowsAsync<CorruptObjectException>(async () => await reader!.ReadAtAsync(0, new byte[16]));
            await Assert.ThrowsAsync<CorruptObjectException>(async () => await store.Directories.GetAsync(directory.Digest));
        }

        var local = LocalStore.Open(CacheRoot);
        Assert.False(await local.Blobs.HasAsync(Blake3.Hash(blobs["BLOB_B"])));
        foreach (var chunk in GrpcInteropFixtures.ChunkedBlob.GetProperty("chunks").EnumerateArray())
        {
            Assert.False(await local.Blobs.HasAsync(B3Digest.ParseHex(chunk.GetProperty("digest_hex").GetString()!)));
        }

        Assert.Null(await local.Directories.GetAsync(directory.Digest));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(CacheRoot, "tmp")));
    }

    [Fact]
    public async Task StoreAddressesOpenThroughCastoreStore()
    {
        byte[] data = "separate addresses"u8.ToArray();
        var digest = await PutOnServerAsync(data);
        await using (var store = CastoreStore.Open(new StoreOptions(
            BlobServiceAddress: _server.StoreAddress("?cache=none"), DirectoryServiceAddress: "memory://")))
        {
            Assert.IsType<GrpcBlobService>(store.Blobs);
            Assert.IsType<MemoryDirectoryService>(store.Directories);
            using var reader = await store.Blobs.OpenReadAsync(digest);
            Assert.Equal(data, await GrpcInteropClientTests.ReadAllAsync(reader!));
        }

        var e = Assert.Throws<StoreAddressException>(() => CastoreStore.Open(_server.StoreAddress("?cache=relative/path")));
        Assert.Contains("cache must be none or an absolute path", e.Message);
        var unreachable = Assert.Throws<StoreUnavailableException>(() => CastoreStore.Open($"grpc+unix://{_temp.File("nobody.sock")}?wait-connect=1"));
        Assert.Contains("nobody.sock", unreachable.Message);

        // Asked to connect at open (as the tool does), an unreachable store fails there, unless the address says offline=1.
        var options = new StoreOptions($"grpc+unix://{_temp.File("nobody.sock")}") { ConnectAtOpen = true };
        Assert.Throws<StoreUnavailableException>(() => CastoreStore.Open(options));
        await using (CastoreStore.Open(options with { Store = options.Store + "?offline=1" }))
        {
        }
    }

    private async Task<B3Digest> PutOnServerAsync(byte[] data)
    {
        await using var writer = _server.Blobs.OpenWrite();
        await writer.WriteAsync(data);
        return await writer.CompleteAsync();
    }
}
