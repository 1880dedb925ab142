using System.Text.Json;
using System.Text.Json.Nodes;
using TvixFuseBuild.Castore;

namespace TvixFuseBuild.Build.Tests.Grpc;

/// <summary>The castore test vectors as data for the Python servers and clients.</summary>
internal static class GrpcInteropFixtures
{
    public static readonly JsonElement Castore = GrpcVectors.Load("castore.json");

    /// <summary>The vector blobs by name (BLOB_B generated as its vector describes).</summary>
    public static Dictionary<string, byte[]> Blobs()
    {
        var blobs = new Dictionary<string, byte[]>();
        foreach (var blob in Castore.GetProperty("blobs").EnumerateObject())
        {
            if (blob.Value.TryGetProperty("contents_hex", out var hex))
            {
                blobs[blob.Name] = Convert.FromHexString(hex.GetString()!);
                continue;
            }

            Assert.Equal("bytes 0x00..0xFE (255 bytes) repeated 4096 times", blob.Value.GetProperty("generator").GetString());
            var bytes = new byte[255 * 4096];
            for (int i = 0; i < bytes.Length; i++)
            {
                bytes[i] = (byte)(i % 255);
            }

            blobs[blob.Name] = bytes;
        }

        return blobs;
    }

    public static JsonElement ChunkedBlob => Castore.GetProperty("chunked_blob");

    /// <summary>The "wire" directories by name (the form tvix and snix write).</summary>
    public static Dictionary<string, CastoreDirectory> Directories() =>
        Castore.GetProperty("directories").GetProperty("wire").EnumerateObject().ToDictionary(
            p => p.Name,
            p => CastoreDirectory.Decode(Convert.FromHexString(p.Value.GetProperty("encoding_hex").GetString()!)));

    /// <summary>A fixture for castore_server.py: every vector blob, the chunked blob with its chunks, the wire directories.</summary>
    public static JsonObject ServerFixture()
    {
        var blobs = new JsonObject();
        foreach (var (_, data) in Blobs())
        {
            blobs[Hex(data)] = Convert.ToHexStringLower(data);
        }

        var chunked = ChunkedBlob;
        string blobDigest = chunked.GetProperty("blob_digest_hex").GetString()!;
        blobs[blobDigest] = chunked.GetProperty("blob_hex").GetString()!;
        var chunkList = new JsonArray();
        foreach (var chunk in chunked.GetProperty("chunks").EnumerateArray())
        {
            blobs[chunk.GetProperty("digest_hex").GetString()!] = chunk.GetProperty("data_hex").GetString()!;
            chunkList.Add(chunk.GetProperty("digest_hex").GetString()!);
        }

        var directories = new JsonArray();
        var digests = new JsonArray();
        foreach (var directory in Directories().Values)
        {
            directories.Add(Convert.ToHexStringLower(directory.Encoding));
            digests.Add(directory.Digest.ToHex());
        }

        return new JsonObject
        {
            ["blobs"] = blobs,
            ["chunks"] = new JsonObject { [blobDigest] = chunkList },
            ["directories"] = directories,
            ["directory_digests"] = digests,
        };
    }

    private static string Hex(byte[] data) => TvixFuseBuild.Castore.Hashing.Blake3.Hash(data).ToHex();
}
