using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Grpc;
using TvixFuseBuild.Castore.Hashing;

namespace TvixFuseBuild.Build.Tests.Grpc;

/// <summary>Our castore clients against our castore services, over real TCP and unix sockets, for both packages.</summary>
public sealed class GrpcCastoreRoundTripTests
{
    public static TheoryData<bool, string> Transports() => new()
    {
        { false, "tvix" },
        { false, "snix" },
        { true, "tvix" },
        { true, "snix" },
    };

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task BlobPutStatRead(bool unixSocket, string protocol)
    {
        await using var server = await GrpcCastoreTestServer.StartAsync(unixSocket);
        await using var client = await GrpcBlobService.OpenAsync(server.StoreAddress($"?protocol={protocol}"));

        byte[] data = RandomBytes((3 << 16) - 10, seed: 1);
        await using (var writer = client.OpenWrite())
        {
            await writer.WriteAsync(data.AsMemory(0, 1000));
            await writer.WriteAsync(data.AsMemory(1000));
            Assert.Equal(Blake3.Hash(data), await writer.CompleteAsync());
        }

        var digest = Blake3.Hash(data);
        Assert.True(await server.Blobs.HasAsync(digest));
        Assert.True(await client.HasAsync(digest));

        var info = await client.StatAsync(digest, withChunks: true);
        Assert.NotNull(info);
        Assert.Equal(3, info.Chunks.Count);
        Assert.Equal(data.LongLength, info.Size);

        using var reader = await client.OpenReadAsync(digest);
        Assert.NotNull(reader);
        Assert.Equal(data.LongLength, reader.Length);
        var buffer = new byte[5000];
        int n = await reader.ReadAtAsync((1 << 16) - 2000, buffer);
        Assert.Equal(buffer.Length, n);
        Assert.Equal(data.AsSpan((1 << 16) - 2000, 5000).ToArray(), buffer);
    }

    [Theory]
    [MemberData(nameof(Transports))]
    public async Task DirectoryPutGet(bool unixSocket, string protocol)
    {
        await using var server = await GrpcCastoreTestServer.StartAsync(unixSocket);
        await using var client = await GrpcDirectoryService.OpenAsync(server.StoreAddress($"?protocol={protocol}"));

        var leaf = CastoreDirectory.FromNodes([new FileNode(PathComponent.Create("a"), Blake3.Hash("x"u8), 1, false)]);
        var root = CastoreDirectory.FromNodes([new DirectoryNode(PathComponent.Create("sub"), leaf.Digest, leaf.Size)]);
        await using (var putter = client.CreatePutter())
        {
            await putter.PutAsync(leaf);
            await putter.PutAsync(root);
            Assert.Equal(root.Digest, await putter.CloseAsync());
        }

        Assert.Equal(root, await client.GetAsync(root.Digest));
        var closure = new List<CastoreDirectory>();
        await foreach (var d in client.GetRecursiveAsync(root.Digest))
        {
            closure.Add(d);
        }

        Assert.Equal([root, leaf], closure);
        Assert.Null(await client.GetAsync(Blake3.Hash("nope"u8)));
    }

    internal static byte[] RandomBytes(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }
}
