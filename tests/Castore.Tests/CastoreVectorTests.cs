using System.Text;
using System.Text.Json;
using Google.Protobuf;
using TvixFuseBuild.Castore.Hashing;
using TvixV1 = Tvix.Castore.V1;

namespace TvixFuseBuild.Castore.Tests;

public sealed class CastoreVectorTests
{
    private static readonly JsonElement Root = Vectors.Load("castore.json");

    public static TheoryData<string> BlobNames() => Names(Root.GetProperty("blobs"));

    public static TheoryData<string, string> DirectoryCases()
    {
        var data = new TheoryData<string, string>();
        foreach (var form in Root.GetProperty("directories").EnumerateObject())
        {
            foreach (var directory in form.Value.EnumerateObject())
            {
                data.Add(form.Name, directory.Name);
            }
        }

        return data;
    }

    public static TheoryData<string> ValidationCases() =>
        new(Root.GetProperty("directory_validation").EnumerateArray().Select(c => c.GetProperty("case").GetString()!));

    private static TheoryData<string> Names(JsonElement obj) => new(obj.EnumerateObject().Select(p => p.Name));

    [Theory]
    [MemberData(nameof(BlobNames))]
    public void BlobDigests(string name)
    {
        var blob = Root.GetProperty("blobs").GetProperty(name);
        byte[] contents = blob.TryGetProperty("contents_hex", out var hex)
            ? Convert.FromHexString(hex.GetString()!)
            : GenerateBlobB(blob);

        var digest = Blake3.Hash(contents);
        Assert.Equal(blob.GetProperty("digest_hex").GetString(), digest.ToHex());
        Assert.Equal(blob.GetProperty("digest_string").GetString(), digest.ToString());
        Assert.Equal(digest, B3Digest.Parse(blob.GetProperty("digest_string").GetString()!));
    }

    private static byte[] GenerateBlobB(JsonElement blob)
    {
        Assert.Equal("bytes 0x00..0xFE (255 bytes) repeated 4096 times", blob.GetProperty("generator").GetString());
        var bytes = new byte[255 * 4096];
        for (int i = 0; i < bytes.Length; i++)
        {
            bytes[i] = (byte)(i % 255);
        }

        Assert.Equal(blob.GetProperty("size").GetInt32(), bytes.Length);
        return bytes;
    }

    [Theory]
    [MemberData(nameof(DirectoryCases))]
    public void DirectoryEncodingDigestAndSize(string form, string name)
    {
        var fixture = Root.GetProperty("directories").GetProperty(form).GetProperty(name);
        var directory = BuildDirectory(fixture);

        Assert.Equal(fixture.GetProperty("encoding_hex").GetString(), Convert.ToHexStringLower(directory.Encoding));
        Assert.Equal(fixture.GetProperty("digest_hex").GetString(), directory.Digest.ToHex());
        Assert.Equal(fixture.GetProperty("digest_string").GetString(), directory.Digest.ToString());

        ulong expectedSize = fixture.GetProperty("size").GetUInt64();
        Assert.Equal(expectedSize, form == "wire" ? directory.Size : directory.SpecSize);
        Assert.True(directory.IsAcceptableSize(expectedSize));

        // Decoding the canonical bytes gives back an equal directory, and protobuf agrees on the bytes.
        var decoded = CastoreDirectory.Decode(directory.Encoding);
        Assert.Equal(directory, decoded);
        Assert.Equal(directory.Encoding.ToArray(), directory.ToTvixProto().ToByteArray());
    }

    [Fact]
    public void EmptyDirectoryHasTheEmptyBlobDigest()
    {
        Assert.Equal(B3Digest.Empty, CastoreDirectory.Empty.Digest);
        Assert.Equal(0, CastoreDirectory.Empty.Encoding.Length);
    }

    [Fact]
    public void NamesValid()
    {
        foreach (var name in Root.GetProperty("names").GetProperty("valid").EnumerateArray())
        {
            byte[] bytes = Encoding.UTF8.GetBytes(name.GetString()!);
            Assert.Null(PathComponent.Validate(bytes));
            Assert.True(PathComponent.TryCreate(bytes, out var component, out _));
            Assert.True(component.Span.SequenceEqual(bytes));
        }
    }

    [Fact]
    public void NamesInvalid()
    {
        var cases = Root.GetProperty("names").GetProperty("invalid").EnumerateArray().ToList();
        Assert.NotEmpty(cases);
        foreach (var c in cases)
        {
            byte[] bytes = c.TryGetProperty("name_hex", out var hex)
                ? Convert.FromHexString(hex.GetString()!)
                : Encoding.UTF8.GetBytes(c.GetProperty("name").GetString()!);
            string reason = c.GetProperty("reason").GetString()!;
            Assert.False(PathComponent.TryCreate(bytes, out _, out var error), reason);
            Assert.StartsWith("invalid name", error);
            Assert.Throws<InvalidNameException>(() => PathComponent.Create(bytes));
        }
    }

    [Fact]
    public void SymlinkTargetsValid()
    {
        foreach (var target in Root.GetProperty("symlink_targets").GetProperty("valid_hex").EnumerateArray())
        {
            byte[] bytes = Convert.FromHexString(target.GetString()!);
            Assert.True(SymlinkTarget.TryCreate(bytes, out var result, out var error), error);
            Assert.True(result.Span.SequenceEqual(bytes));
        }
    }

    [Fact]
    public void SymlinkTargetsInvalid()
    {
        var invalid = Root.GetProperty("symlink_targets").GetProperty("invalid");
        Assert.NotEqual(0, invalid.GetArrayLength());
        foreach (var c in invalid.EnumerateArray())
        {
            byte[] bytes = Convert.FromHexString(c.GetProperty("target_hex").GetString()!);
            Assert.False(SymlinkTarget.TryCreate(bytes, out _, out var error));
            Assert.StartsWith("invalid symlink target", error);
        }
    }

    [Theory]
    [MemberData(nameof(ValidationCases))]
    public void DirectoryValidation(string caseName)
    {
        var c = Root.GetProperty("directory_validation").EnumerateArray()
            .Single(x => x.GetProperty("case").GetString() == caseName);
        var proto = BuildProto(c.GetProperty("directory"));

        if (c.GetProperty("valid").GetBoolean())
        {
            var model = proto.ToModel();
            Assert.Equal(proto.ToByteArray(), model.Encoding.ToArray());
            return;
        }

        string expected = c.GetProperty("error").GetString()!;
        var error = Assert.Throws<DirectoryValidationException>(() => proto.ToModel());
        Assert.Equal(expected, KindName(error.Kind));
        Assert.False(string.IsNullOrWhiteSpace(error.Message));
    }

    private static string KindName(DirectoryErrorKind kind) => kind switch
    {
        DirectoryErrorKind.InvalidDigestLength => "InvalidNode/InvalidDigestLen",
        DirectoryErrorKind.InvalidSymlinkTarget => "InvalidNode/InvalidSymlinkTarget",
        _ => kind.ToString(),
    };

    [Fact]
    public void ChunkedBlobChunksHashToTheirDigestsAndConcatenateToTheBlob()
    {
        var chunked = Root.GetProperty("chunked_blob");
        byte[] blob = Convert.FromHexString(chunked.GetProperty("blob_hex").GetString()!);
        Assert.Equal(chunked.GetProperty("blob_digest_hex").GetString(), Blake3.Hash(blob).ToHex());

        var chunks = chunked.GetProperty("chunks").EnumerateArray().ToList();
        var joined = new List<byte>();
        foreach (var chunk in chunks)
        {
            byte[] data = Convert.FromHexString(chunk.GetProperty("data_hex").GetString()!);
            Assert.Equal(chunk.GetProperty("offset").GetInt32(), joined.Count);
            Assert.Equal(chunk.GetProperty("size").GetInt32(), data.Length);
            Assert.Equal(chunk.GetProperty("digest_hex").GetString(), Blake3.Hash(data).ToHex());
            joined.AddRange(data);
        }

        Assert.Equal(blob, joined.ToArray());
    }

    internal static CastoreDirectory BuildDirectory(JsonElement fixture) => BuildProto(fixture).ToModel();

    internal static TvixV1.Directory BuildProto(JsonElement fixture)
    {
        var proto = new TvixV1.Directory();
        if (fixture.TryGetProperty("directories", out var directories))
        {
            foreach (var d in directories.EnumerateArray())
            {
                proto.Directories.Add(new TvixV1.DirectoryNode
                {
                    Name = NameBytes(d),
                    Digest = ByteString.CopyFrom(Convert.FromHexString(d.GetProperty("digest_hex").GetString()!)),
                    Size = d.TryGetProperty("size", out var size) ? size.GetUInt64() : 0,
                });
            }
        }

        if (fixture.TryGetProperty("files", out var files))
        {
            foreach (var f in files.EnumerateArray())
            {
                proto.Files.Add(new TvixV1.FileNode
                {
                    Name = NameBytes(f),
                    Digest = ByteString.CopyFrom(Convert.FromHexString(f.GetProperty("digest_hex").GetString()!)),
                    Size = f.TryGetProperty("size", out var size) ? size.GetUInt64() : 0,
                    Executable = f.TryGetProperty("executable", out var x) && x.GetBoolean(),
                });
            }
        }

        if (fixture.TryGetProperty("symlinks", out var symlinks))
        {
            foreach (var s in symlinks.EnumerateArray())
            {
                byte[] target = s.TryGetProperty("target_hex", out var th)
                    ? Convert.FromHexString(th.GetString()!)
                    : Encoding.UTF8.GetBytes(s.GetProperty("target").GetString()!);
                proto.Symlinks.Add(new TvixV1.SymlinkNode { Name = NameBytes(s), Target = ByteString.CopyFrom(target) });
            }
        }

        return proto;
    }

    private static ByteString NameBytes(JsonElement node) =>
        node.TryGetProperty("name_hex", out var hex)
            ? ByteString.CopyFrom(Convert.FromHexString(hex.GetString()!))
            : ByteString.CopyFromUtf8(node.GetProperty("name").GetString()!);
}
