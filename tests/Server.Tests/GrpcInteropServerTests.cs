using System.Text;
using System.Text.Json.Nodes;
using Google.Protobuf;
using Grpc.Core;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Hashing;

namespace TvixFuseBuild.Server.Tests;

/// <summary>An independent client (Python grpcio) calling our server: castore Put and Get, and every error status.</summary>
public sealed class GrpcInteropServerTests
{
    [Theory]
    [InlineData("tvix", false)]
    [InlineData("snix", false)]
    [InlineData("snix", true)]
    public async Task BlobPutStatReadAndChunks(string package, bool unixSocket)
    {
        await using var server = await GrpcCastoreTestServer.StartAsync(unixSocket, chunkSize: 64 << 10);
        byte[] hello = GrpcInteropFixtures.Blobs()["HELLOWORLD"];
        byte[] large = RandomBytes((200 << 10) + 7, seed: 2);
        var largeDigest = Blake3.Hash(large);
        var results = await GrpcPython.RunClientAsync(server.ListenAddress, package, new JsonArray
        {
            new JsonObject { ["op"] = "blob_put", ["chunks_hex"] = new JsonArray(Hex(hello[..5]), Hex(hello[5..])) },
            new JsonObject { ["op"] = "blob_stat", ["digest_hex"] = Blake3.Hash(hello).ToHex(), ["send_chunks"] = true },
            new JsonObject { ["op"] = "blob_read", ["digest_hex"] = Blake3.Hash(hello).ToHex() },
            new JsonObject { ["op"] = "blob_put", ["chunks_hex"] = new JsonArray(Hex(large[..100_000]), Hex(large[100_000..])) },
            new JsonObject { ["op"] = "blob_stat", ["digest_hex"] = largeDigest.ToHex(), ["send_chunks"] = true },
            new JsonObject { ["op"] = "blob_stat", ["digest_hex"] = Blake3.Hash("missing"u8).ToHex() },
            new JsonObject { ["op"] = "blob_read", ["digest_hex"] = Blake3.Hash("missing"u8).ToHex() },
            new JsonObject { ["op"] = "blob_stat", ["digest_hex"] = "0011" },
        });

        AssertOk(results[0]);
        Assert.Equal(Blake3.Hash(hello).ToHex(), (string?)results[0]!["digest_hex"]);
        AssertOk(results[1]);
        Assert.Empty(results[1]!["chunks"]!.AsArray());
        AssertOk(results[2]);
        Assert.Equal(Hex(hello), (string?)results[2]!["data_hex"]);
        AssertOk(results[3]);
        Assert.Equal(largeDigest.ToHex(), (string?)results[3]!["digest_hex"]);
        AssertOk(results[4]);
        var chunks = results[4]!["chunks"]!.AsArray();
        Assert.Equal([65536UL, 65536UL, 65536UL, 8199UL], chunks.Select(c => (ulong)c!["size"]!));
        AssertStatus(results[5], "NOT_FOUND", "not found");
        AssertStatus(results[6], "NOT_FOUND", "not found");
        AssertStatus(results[7], "INVALID_ARGUMENT", "invalid digest");

        // Each listed chunk is readable by its own digest, and they make up the blob.
        var reads = new JsonArray();
        foreach (var chunk in chunks)
        {
            reads.Add(new JsonObject { ["op"] = "blob_read", ["digest_hex"] = (string?)chunk!["digest_hex"] });
        }

        var readResults = await GrpcPython.RunClientAsync(server.ListenAddress, package, reads);
        var joined = new MemoryStream();
        foreach (var (result, chunk) in readResults.Zip(chunks))
        {
            AssertOk(result);
            byte[] bytes = Convert.FromHexString((string)result!["data_hex"]!);
            Assert.Equal((string?)chunk!["digest_hex"], Blake3.Hash(bytes).ToHex());
            joined.Write(bytes);
        }

        Assert.Equal(large, joined.ToArray());
    }

    [Theory]
    [InlineData("tvix")]
    [InlineData("snix")]
    public async Task DirectoryPutGetAndInvalidClosures(string package)
    {
        await using var server = await GrpcCastoreTestServer.StartAsync();
        var directories = GrpcInteropFixtures.Directories();
        var complicated = directories["DIRECTORY_COMPLICATED"];
        var keep = directories["DIRECTORY_WITH_KEEP"];
        Assert.Equal(keep.Digest, complicated.Directories.Single().Digest);

        var unsorted = new Tvix.Castore.V1.Directory();
        unsorted.Files.Add(new Tvix.Castore.V1.FileNode { Name = ByteString.CopyFromUtf8("b"), Digest = B3Digest.Empty.ToByteString() });
        unsorted.Files.Add(new Tvix.Castore.V1.FileNode { Name = ByteString.CopyFromUtf8("a"), Digest = B3Digest.Empty.ToByteString() });

        var results = await GrpcPython.RunClientAsync(server.ListenAddress, package, new JsonArray
        {
            new JsonObject { ["op"] = "dir_put", ["encodings_hex"] = new JsonArray(Hex(keep.Encoding), Hex(complicated.Encoding)) },
            new JsonObject { ["op"] = "dir_get", ["digest_hex"] = complicated.Digest.ToHex(), ["recursive"] = true },
            new JsonObject { ["op"] = "dir_get", ["digest_hex"] = complicated.Digest.ToHex() },
            new JsonObject { ["op"] = "dir_get", ["digest_hex"] = Blake3.Hash("missing"u8).ToHex(), ["recursive"] = true },
            new JsonObject { ["op"] = "dir_put", ["encodings_hex"] = new JsonArray(Hex(directories["DIRECTORY_D"].Encoding)) },
            new JsonObject { ["op"] = "dir_put", ["encodings_hex"] = new JsonArray(Hex(unsorted.ToByteArray())) },
            new JsonObject { ["op"] = "dir_put", ["encodings_hex"] = new JsonArray() },
            new JsonObject { ["op"] = "dir_put", ["encodings_hex"] = new JsonArray(Hex(keep.Encoding), Hex(directories["DIRECTORY_A"].Encoding)) },
        });

        AssertOk(results[0]);
        Assert.Equal(complicated.Digest.ToHex(), (string?)results[0]!["root_digest_hex"]);
        AssertOk(results[1]);
        Assert.Equal([Hex(complicated.Encoding), Hex(keep.Encoding)], results[1]!["encodings_hex"]!.AsArray().Select(e => (string)e!));
        AssertOk(results[2]);
        Assert.Equal([Hex(complicated.Encoding)], results[2]!["encodings_hex"]!.AsArray().Select(e => (string)e!));
        AssertStatus(results[3], "NOT_FOUND", "not found");
        AssertStatus(results[4], "INVALID_ARGUMENT", "which was not sent before it");
        AssertStatus(results[5], "INVALID_ARGUMENT", "\"a\" is not sorted");
        AssertStatus(results[6], "INVALID_ARGUMENT", "no directories were sent");
        AssertStatus(results[7], "INVALID_ARGUMENT", "not reachable from the root");
        Assert.Null(await server.Directories.GetAsync(directories["DIRECTORY_D"].Digest));
    }

    [Theory]
    [InlineData(StatusCode.InvalidArgument)]
    [InlineData(StatusCode.NotFound)]
    [InlineData(StatusCode.Internal)]
    [InlineData(StatusCode.Unavailable)]
    [InlineData(StatusCode.DeadlineExceeded)]
    [InlineData(StatusCode.Cancelled)]
    [InlineData(StatusCode.DataLoss)]
    public async Task StatusCodesAndPercentEncodedMessages(StatusCode code)
    {
        const string Message = "ünïcødé ✓ 100% done\nsecond line";
        var test = new GrpcTestService();
        await using var server = await GrpcCastoreTestServer.StartAsync(configure: s => s.AddService(test));
        var results = await GrpcPython.RunClientAsync(server.ListenAddress, "tvix", new JsonArray
        {
            new JsonObject { ["op"] = "unary", ["path"] = GrpcTestService.FailMethod.FullName, ["request_hex"] = Hex(Encoding.UTF8.GetBytes($"{(int)code}:{Message}")) },
            new JsonObject { ["op"] = "unary", ["path"] = GrpcTestService.EchoMethod.FullName, ["request_hex"] = Hex("hi"u8.ToArray()) },
        });
        AssertStatus(results[0], WireName(code), Message);
        Assert.Equal(Message, (string?)results[0]!["details"]);
        AssertOk(results[1]);
        Assert.Equal(Hex("hi"u8.ToArray()), (string?)results[1]!["response_hex"]);
    }

    [Fact]
    public async Task DeadlineCancellationAndUnexpectedErrors()
    {
        var test = new GrpcTestService();
        await using var server = await GrpcCastoreTestServer.StartAsync(configure: s => s.AddService(test));
        var results = await GrpcPython.RunClientAsync(server.ListenAddress, "tvix", new JsonArray
        {
            new JsonObject { ["op"] = "unary", ["path"] = GrpcTestService.ThrowMethod.FullName },
            new JsonObject { ["op"] = "unary", ["path"] = "/interop.Test/NoSuchMethod" },
            new JsonObject { ["op"] = "unary", ["path"] = GrpcTestService.SlowMethod.FullName, ["timeout"] = 1.5 },
            new JsonObject { ["op"] = "unary", ["path"] = GrpcTestService.SlowMethod.FullName, ["cancel_after"] = 1.5 },
        });
        AssertStatus(results[0], "INTERNAL", "boom");
        AssertStatus(results[1], "UNIMPLEMENTED", "unimplemented");
        AssertStatus(results[2], "DEADLINE_EXCEEDED", "");
        AssertStatus(results[3], "CANCELLED", "");

        // Both slow calls ended on the server too. (Which of the client's reset and our own grpc-timeout timer comes
        // first is a race here; GrpcServerProtocolTests checks the server's deadline with a client that does not enforce it.)
        for (int i = 0; i < 2; i++)
        {
            await test.SlowCallsEnded.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        }
    }

    [Fact]
    public async Task MessagesOverTheLimitAreResourceExhausted()
    {
        await using var server = await GrpcCastoreTestServer.StartAsync(options: new GrpcServerOptions { MaxReceiveMessageSize = 1024 });
        var results = await GrpcPython.RunClientAsync(server.ListenAddress, "tvix", new JsonArray
        {
            new JsonObject { ["op"] = "blob_put", ["chunks_hex"] = new JsonArray(Hex(new byte[1000])) },
            new JsonObject { ["op"] = "blob_put", ["chunks_hex"] = new JsonArray(Hex(new byte[4096])) },
        });
        AssertOk(results[0]);
        AssertStatus(results[1], "RESOURCE_EXHAUSTED", "exceeds the maximum");
        Assert.False(await server.Blobs.HasAsync(Blake3.Hash(new byte[4096])));
    }

    /// <summary>grpcio's name of a status code: INVALID_ARGUMENT for InvalidArgument.</summary>
    private static string WireName(StatusCode code) =>
        string.Concat(code.ToString().Select((c, i) => i > 0 && char.IsUpper(c) ? "_" + c : char.ToUpperInvariant(c).ToString()));

    internal static byte[] RandomBytes(int length, int seed)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    internal static string Hex(ReadOnlySpan<byte> bytes) => Convert.ToHexStringLower(bytes);

    private static void AssertOk(JsonNode? result) =>
        Assert.True((string?)result!["code"] == "OK", $"expected OK, got {result.ToJsonString()}");

    private static void AssertStatus(JsonNode? result, string code, string detailPart)
    {
        Assert.True((string?)result!["code"] == code, $"expected {code}, got {result.ToJsonString()}");
        Assert.Contains(detailPart, (string?)result["details"] ?? string.Empty);
    }
}
