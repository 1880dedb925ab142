using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores.Memory;

namespace TvixFuseBuild.Fuse.Tests.Support;

/// <summary>
/// tvix's FUSE test fixtures, built from vectors/castore.json (and checked against its digests): BLOB_A (2 bytes),
/// BLOB_B (~1 MB), HELLOWORLD, the empty blob, DIRECTORY_WITH_KEEP and DIRECTORY_COMPLICATED, plus tvix's root names.
/// </summary>
internal static class Fixtures
{
    public const string BlobAName = "00000000000000000000000000000000-test";
    public const string BlobBName = "55555555555555555555555555555555-test";
    public const string HelloWorldName = "66666666666666666666666666666666-test";
    public const string SymlinkName = "11111111111111111111111111111111-test";
    public const string SymlinkName2 = "44444444444444444444444444444444-test";
    public const string DirectoryWithKeepName = "22222222222222222222222222222222-test";
    public const string DirectoryComplicatedName = "33333333333333333333333333333333-test";

    static Fixtures()
    {
        var vectors = Vectors.Load("castore.json");
        var blobs = vectors.GetProperty("blobs");
        BlobA = Convert.FromHexString(blobs.GetProperty("BLOB_A").GetProperty("contents_hex").GetString()!);
        HelloWorld = Convert.FromHexString(blobs.GetProperty("HELLOWORLD").GetProperty("contents_hex").GetString()!);
        BlobB = new byte[blobs.GetProperty("BLOB_B").GetProperty("size").GetInt32()];
        for (int i = 0; i < BlobB.Length; i++)
        {
            BlobB[i] = (byte)(i % 255);
        }

        BlobADigest = Digest(blobs, "BLOB_A");
        BlobBDigest = Digest(blobs, "BLOB_B");
        HelloWorldDigest = Digest(blobs, "HELLOWORLD");
        EmptyDigest = Digest(blobs, "EMPTY");
        Assert.Equal(BlobADigest, Castore.Hashing.Blake3.Hash(BlobA));
        Assert.Equal(BlobBDigest, Castore.Hashing.Blake3.Hash(BlobB));
        Assert.Equal(HelloWorldDigest, Castore.Hashing.Blake3.Hash(HelloWorld));

        DirectoryWithKeep = new CastoreDirectory([], [new FileNode(".keep", EmptyDigest, 0, false)], []);
        DirectoryComplicated = new CastoreDirectory(
            [new DirectoryNode("keep", DirectoryWithKeep.Digest, DirectoryWithKeep.Size)],
            [new FileNode(".keep", EmptyDigest, 0, false)],
            [new SymlinkNode("aa", SymlinkTarget.Create("/nix/store/somewhereelse"))]);
        var directories = vectors.GetProperty("directories").GetProperty("wire");
        Assert.Equal(Digest(directories, "DIRECTORY_WITH_KEEP"), DirectoryWithKeep.Digest);
        Assert.Equal(Digest(directories, "DIRECTORY_COMPLICATED"), DirectoryComplicated.Digest);
    }

    public static byte[] BlobA { get; }

    public static byte[] BlobB { get; }

    public static byte[] HelloWorld { get; }

    public static B3Digest BlobADigest { get; }

    public static B3Digest BlobBDigest { get; }

    public static B3Digest HelloWorldDigest { get; }

    public static B3Digest EmptyDigest { get; }

    public static CastoreDirectory DirectoryWithKeep { get; }

    public static CastoreDirectory DirectoryComplicated { get; }

    private static B3Digest Digest(System.Text.Json.JsonElement set, string name) =>
        B3Digest.ParseHex(set.GetProperty(name).GetProperty("digest_hex").GetString()!);
}

/// <summary>Memory stores with tvix's populate_* helpers: each puts what a root node needs and returns the node.</summary>
internal sealed class FixtureStores
{
    public MemoryBlobService Blobs { get; } = new();

    public MemoryDirectoryService Directories { get; } = new();

    public List<Node> Nodes { get; } = [];

    public async Task<B3Digest> PutBlobAsync(byte[] bytes)
    {
        await using var writer = Blobs.OpenWrite();
        await writer.WriteAsync(bytes);
        return await writer.CompleteAsync();
    }

    public async Task<FixtureStores> BlobA()
    {
        await PutBlobAsync(Fixtures.BlobA);
        return FileNodeWithoutBlob(Fixtures.BlobAName, Fixtures.BlobA, Fixtures.BlobADigest);
    }

    public async Task<FixtureStores> BlobB()
    {
        await PutBlobAsync(Fixtures.BlobB);
        Nodes.Add(new FileNode(Fixtures.BlobBName, Fixtures.BlobBDigest, (ulong)Fixtures.BlobB.Length, false));
        return this;
    }

    public async Task<FixtureStores> HelloWorld()
    {
        await PutBlobAsync(Fixtures.HelloWorld);
        Nodes.Add(new FileNode(Fixtures.HelloWorldName, Fixtures.HelloWorldDigest, (ulong)Fixtures.HelloWorld.Length, true));
        return this;
    }

    public FixtureStores Symlink()
    {
        Nodes.Add(new SymlinkNode(Fixtures.SymlinkName, SymlinkTarget.Create(Fixtures.BlobAName)));
        return this;
    }

    public FixtureStores Symlink2()
    {
        Nodes.Add(new SymlinkNode(Fixtures.SymlinkName2, SymlinkTarget.Create("/nix/store/somewhereelse")));
        return this;
    }

    public async Task<FixtureStores> DirectoryWithKeep()
    {
        await PutBlobAsync([]);
        await Directories.PutAsync(Fixtures.DirectoryWithKeep);
        return DirectoryNodeWithoutDirectory();
    }

    /// <summary>The root node of DIRECTORY_WITH_KEEP without the Directory in the store.</summary>
    public FixtureStores DirectoryNodeWithoutDirectory()
    {
        Nodes.Add(new DirectoryNode(Fixtures.DirectoryWithKeepName, Fixtures.DirectoryWithKeep.Digest, Fixtures.DirectoryWithKeep.Size));
        return this;
    }

    /// <summary>A file node for BLOB_A without the blob in the store.</summary>
    public FixtureStores FileNodeWithoutBlob() => FileNodeWithoutBlob(Fixtures.BlobAName, Fixtures.BlobA, Fixtures.BlobADigest);

    private FixtureStores FileNodeWithoutBlob(string name, byte[] bytes, B3Digest digest)
    {
        Nodes.Add(new FileNode(name, digest, (ulong)bytes.Length, false));
        return this;
    }

    public async Task<FixtureStores> DirectoryComplicated()
    {
        await PutBlobAsync([]);
        await Directories.PutAsync(Fixtures.DirectoryWithKeep);
        await Directories.PutAsync(Fixtures.DirectoryComplicated);
        Nodes.Add(new DirectoryNode(Fixtures.DirectoryComplicatedName, Fixtures.DirectoryComplicated.Digest, Fixtures.DirectoryComplicated.Size));
        return this;
    }
}
