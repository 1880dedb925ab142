using System.Diagnostics;
using Grpc.Core;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Grpc;
using TvixFuseBuild.Castore.Hashing;
using Tvix.Castore.V1;

namespace TvixFuseBuild.Build.Tests.Grpc;

/// <summary>Our castore clients against an independent server: Python grpcio serving the castore vectors.</summary>
public sealed class GrpcInteropClientTests
{
    [Theory]
    [InlineData("tvix", false)]
    [InlineData("snix", false)]
    [InlineData("tvix", true)]
    public async Task WholeBlobsAreReadAndVerified(string package, bool unixSocket)
    {
        using var temp = new GrpcTempDirectory();
        await using var server = await PythonCastoreServer.StartAsync(
            GrpcInteropFixtures.ServerFixture(), package, unixSocket ? "unix:" + temp.File("py.sock") : null, "--read-message-size", "1000");
        await using var client = await GrpcBlobService.OpenAsync(server.StoreAddress($"?protocol={package}&wait-connect=1"));
        foreach (var (name, data) in GrpcInteropFixtures.Blobs())
        {
            var digest = Blake3.Hash(data);
            Assert.True(await client.HasAsync(digest), name);
            var info = await client.StatAsync(digest, withChunks: true);
            Assert.NotNull(info);
            Assert.Empty(info.Chunks);

            using var reader = await client.OpenReadAsync(digest);
            Assert.NotNull(reader);
            Assert.Equal(data.LongLength, reader.Length);
            Assert.Equal(data, await ReadAllAsync(reader));
        }
    }

    [Fact]
    public async Task ChunkedBlobReadsOnlyTheChunksCoveringARange()
    {
        var vector = GrpcInteropFixtures.ChunkedBlob;
        byte[] blob = Convert.FromHexString(vector.GetProperty("blob_hex").GetString()!);
        var digest = B3Digest.ParseHex(vector.GetProperty("blob_digest_hex").GetString()!);
        var chunks = vector.GetProperty("chunks").EnumerateArray().ToArray();
        await using var server = await PythonCastoreServer.StartAsync(GrpcInteropFixtures.ServerFixture());
        await using var client = await GrpcBlobService.OpenAsync(server.StoreAddress());

        var info = await client.StatAsync(digest, withChunks: true);
        Assert.NotNull(info);
        Assert.Equal(blob.LongLength, info.Size);
        Assert.Equal(
            chunks.Select(c => (c.GetProperty("digest_hex").GetString(), c.GetProperty("size").GetUInt64())),
            info.Chunks.Select(c => ((string?)c.Digest.ToHex(), c.Size)));

        using var reader = await client.OpenReadAsync(digest);
        Assert.NotNull(reader);
        Assert.Equal(blob.LongLength, reader.Length);

        // Bytes 3..6 lie in chunk 1 (offset 2, 4 bytes) and chunk 2 (offset 6, 1 byte): only those two are fetched.
        var buffer = new byte[4];
        Assert.Equal(4, await reader.ReadAtAsync(3, buffer));
        Assert.Equal(blob[3..7], buffer);
        var reads = await server.CountsAsync("read");
        Assert.Equal(
            new[] { chunks[1].GetProperty("digest_hex").GetString()!, chunks[2].GetProperty("digest_hex").GetString()! }.Order(),
            reads.Keys.Order());
        Assert.All(reads.Values, count => Assert.Equal(1, count));

        // Every position maps to its chunk; past the end there is nothing.
        foreach (var pair in vector.GetProperty("position_to_chunk_index").EnumerateArray())
        {
            long position = pair[0].GetInt64();
            var one = new byte[1];
            int n = await reader.ReadAtAsync(position, one);
            if (pair[1].ValueKind == System.Text.Json.JsonValueKind.Null)
            {
                Assert.Equal(0, n);
            }
            else
            {
                Assert.Equal(1, n);
                Assert.Equal(blob[position], one[0]);
            }
        }

        Assert.Equal(blob, await ReadAllAsync(reader, step: 3));
        Assert.DoesNotContain(digest.ToHex(), (await server.CountsAsync("read")).Keys);
    }

    [Theory]
    [InlineData("tvix")]
    [InlineData("snix")]
    public async Task DirectoriesSingleAndRecursive(string package)
    {
        var directories = GrpcInteropFixtures.Directories();
        await using var server = await PythonCastoreServer.StartAsync(GrpcInteropFixtures.ServerFixture(), package);
        await using var client = await GrpcDirectoryService.OpenAsync(server.StoreAddress($"?protocol={package}"));

        foreach (var (name, directory) in directories)
        {
            Assert.Equal(directory, await client.GetAsync(directory.Digest));

            var closure = new List<CastoreDirectory>();
            await foreach (var d in client.GetRecursiveAsync(directory.Digest))
            {
                closure.Add(d);
            }

            Assert.Equal(directory, closure[0]);
            var expected = Closure(directory, directories.Values);
            Assert.True(expected.SetEquals(closure.Select(d => d.Digest)), name);
            Assert.Equal(expected.Count, closure.Count);
        }
    }

    [Fact]
    public async Task NotFound()
    {
        await using var server = await PythonCastoreServer.StartAsync(GrpcInteropFixtures.ServerFixture());
        await using var blobs = await GrpcBlobService.OpenAsync(server.StoreAddress());
        await using var directories = await GrpcDirectoryService.OpenAsync(server.StoreAddress());
        var missing = Blake3.Hash("not there"u8);

        Assert.False(await blobs.HasAsync(missing));
        Assert.Null(await blobs.StatAsync(missing, withChunks: true));
        Assert.Null(await blobs.OpenReadAsync(missing));
        Assert.Null(await directories.GetAsync(missing));
        var e = await Assert.ThrowsAsync<ObjectNotFoundException>(async () =>
        {
            await foreach (var _ in directories.GetRecursiveAsync(missing))
            {
            }
        });
        Assert.Contains(missing.ToString(), e.Message);
    }

    [Fact]
    public async Task CorruptDataIsAnErrorNeverData()
    {
        var blobs = GrpcInteropFixtures.Blobs();
        var vector = GrpcInteropFixtures.ChunkedBlob;
        var chunkedDigest = B3Digest.ParseHex(vector.GetProperty("blob_digest_hex").GetString()!);
        var directory = GrpcInteropFixtures.Directories()["DIRECTORY_COMPLICATED"];
        await using var server = await PythonCastoreServer.StartAsync(GrpcInteropFixtures.ServerFixture(), "tvix", null, "--corrupt");
        await using var blobClient = await GrpcBlobService.OpenAsync(server.StoreAddress());
        await using var directoryClient = await GrpcDirectoryService.OpenAsync(server.StoreAddress());

        // A whole blob: nothing is handed out, not even a reader.
        var e = await Assert.ThrowsAsync<CorruptObjectException>(async () => await blobClient.OpenReadAsync(Blake3.Hash(blobs["HELLOWORLD"])));
        Assert.Contains(server.StoreAddress(), e.Message);

        // A chunked blob: the reader opens (the chunk list is fine) but no read returns bytes.
        using (var reader = await blobClient.OpenReadAsync(chunkedDigest))
        {
            Assert.NotNull(reader);
            var buffer = new byte[16];
            await Assert.ThrowsAsync<CorruptObjectException>(async () => await reader.ReadAtAsync(0, buffer));
            await Assert.ThrowsAsync<CorruptObjectException>(async () => await reader.ReadAtAsync(9, buffer));
            Assert.All(buffer, b => Assert.Equal(0, b));
        }

        // Directories: the wrong one for the digest asked is corrupt, single or recursive.
        await Assert.ThrowsAsync<CorruptObjectException>(async () => await directoryClient.GetAsync(directory.Digest));
        var received = new List<CastoreDirectory>();
        await Assert.ThrowsAsync<CorruptObjectException>(async () =>
        {
            await foreach (var d in directoryClient.GetRecursiveAsync(directory.Digest))
            {
                received.Add(d);
            }
        });
        Assert.Empty(received);
    }

    [Fact]
    public async Task ErrorAfterMessagesIsReportedFromTheTrailers()
    {
        byte[] data = GrpcInteropFixtures.Blobs()["BLOB_B"];
        await using var server = await PythonCastoreServer.StartAsync(
            GrpcInteropFixtures.ServerFixture(), "tvix", null, "--read-message-size", "1000", "--abort-read-after", "2");

        using var channel = GrpcChannels.Create(server.Endpoint);
        using var call = new Tvix.Castore.V1.BlobService.BlobServiceClient(channel).Read(
            new ReadBlobRequest { Digest = Blake3.Hash(data).ToByteString() });
        Assert.True(await call.ResponseStream.MoveNext(default));
        Assert.True(await call.ResponseStream.MoveNext(default));
        var e = await Assert.ThrowsAsync<RpcException>(async () => await call.ResponseStream.MoveNext(default));
        Assert.Equal(StatusCode.DataLoss, e.StatusCode);
        Assert.Equal("disk on fire: 100% gone", e.Status.Detail);

        await using var client = await GrpcBlobService.OpenAsync(server.StoreAddress());
        await Assert.ThrowsAsync<CorruptObjectException>(async () => await client.OpenReadAsync(Blake3.Hash(data)));
    }

    [Fact]
    public async Task PercentEncodedNonAsciiStatusMessage()
    {
        const string Message = "ünïcødé ✓ 100% \"quoted\"\nnext line";
        await using var server = await PythonCastoreServer.StartAsync(
            GrpcInteropFixtures.ServerFixture(), "tvix", null, "--fail-stat", "PERMISSION_DENIED:" + Message);
        using var channel = GrpcChannels.Create(server.Endpoint);
        var e = await Assert.ThrowsAsync<RpcException>(async () => await new Tvix.Castore.V1.BlobService.BlobServiceClient(channel).StatAsync(
            new StatBlobRequest { Digest = B3Digest.Empty.ToByteString() }));
        Assert.Equal(StatusCode.PermissionDenied, e.StatusCode);
        Assert.Equal(Message, e.Status.Detail);
    }

    [Fact]
    public async Task SlowServerMeetsTheDeadline()
    {
        await using var server = await PythonCastoreServer.StartAsync(GrpcInteropFixtures.ServerFixture(), "tvix", null, "--slow", "30");
        var helloWorld = Blake3.Hash(GrpcInteropFixtures.Blobs()["HELLOWORLD"]);

        using var channel = GrpcChannels.Create(server.Endpoint);
        var stopwatch = Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<RpcException>(async () => await new Tvix.Castore.V1.BlobService.BlobServiceClient(channel).StatAsync(
            new StatBlobRequest { Digest = helloWorld.ToByteString() }, deadline: DateTime.UtcNow.AddMilliseconds(300)));
        Assert.Equal(StatusCode.DeadlineExceeded, e.StatusCode);
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(25), $"the deadline was not enforced: {stopwatch.Elapsed}");

        await using var client = await GrpcBlobService.OpenAsync(server.StoreAddress("?timeout=0.3"));
        var unavailable = await Assert.ThrowsAsync<StoreUnavailableException>(async () => await client.HasAsync(helloWorld));
        Assert.Contains("did not answer in time", unavailable.Message);
        Assert.Equal(StatusCode.DeadlineExceeded, Assert.IsType<RpcException>(unavailable.InnerException).StatusCode);

        // The caller's own cancellation is a cancellation, not a status.
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await client.HasAsync(helloWorld, cts.Token));
    }

    [Fact]
    public async Task RetriesWhileTheServerStartsThenFailsClearlyWhenUnreachable()
    {
        using var temp = new GrpcTempDirectory();
        string socket = temp.File("late.sock");
        var helloWorld = Blake3.Hash(GrpcInteropFixtures.Blobs()["HELLOWORLD"]);

        // Nobody listens yet: the first attempts are refused, a retry finds the server.
        await using var client = await GrpcBlobService.OpenAsync("grpc+unix://" + socket);
        var has = client.HasAsync(helloWorld).AsTask();
        await Task.Delay(300);
        await using (var server = await PythonCastoreServer.StartAsync(GrpcInteropFixtures.ServerFixture(), "tvix", "unix:" + socket))
        {
            Assert.True(await has);
        }

        // Gone for good: a clear error naming the store, after a bounded number of retries.
        var stopwatch = Stopwatch.StartNew();
        var e = await Assert.ThrowsAsync<StoreUnavailableException>(async () => await client.HasAsync(helloWorld));
        Assert.Contains("grpc+unix://" + socket, e.Message);
        Assert.True(stopwatch.Elapsed < TimeSpan.FromSeconds(20), $"retries took {stopwatch.Elapsed}");

        // wait-connect=1 fails at open.
        var open = await Assert.ThrowsAsync<StoreUnavailableException>(() => GrpcDirectoryService.OpenAsync(
            "grpc+unix://" + socket + "?wait-connect=1", new GrpcStoreOptions { Retry = GrpcRetryPolicy.None }));
        Assert.Contains("cannot reach the store grpc+unix://" + socket, open.Message);
    }

    private static HashSet<B3Digest> Closure(CastoreDirectory root, IEnumerable<CastoreDirectory> all)
    {
        var byDigest = all.ToDictionary(d => d.Digest);
        var seen = new HashSet<B3Digest> { root.Digest };
        var queue = new Queue<CastoreDirectory>([root]);
        while (queue.TryDequeue(out var d))
        {
            foreach (var child in d.Directories)
            {
                if (seen.Add(child.Digest))
                {
                    queue.Enqueue(byDigest[child.Digest]);
                }
            }
        }

        return seen;
    }

    internal static async Task<byte[]> ReadAllAsync(TvixFuseBuild.Castore.Stores.IBlobReader reader, int step = 64 << 10)
    {
        var result = new MemoryStream();
        var buffer = new byte[step];
        long offset = 0;
        while (true)
        {
            int n = await reader.ReadAtAsync(offset, buffer);
            if (n == 0)
            {
                break;
            }

            result.Write(buffer, 0, n);
            offset += n;
        }

        return result.ToArray();
    }
}
