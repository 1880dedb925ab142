using TvixFuseBuild.Castore.Hashing;

namespace TvixFuseBuild.Castore.Tests;

public sealed class Blake3FileTests
{
    [Fact]
    public void EmptyFileHasTheEmptyDigest()
    {
        using var dir = new TempDirectory("tvix-fuse-blake3-");
        string path = dir.WriteFile("empty", []);
        Assert.Equal(B3Digest.Empty, Blake3.HashFile(path));
        using var file = File.OpenHandle(path);
        Assert.Equal(B3Digest.Empty, Blake3.HashFile(file, 0));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(1000)]
    [InlineData((64 * 1024) - 1)]
    [InlineData((1024 * 1024) - 1)]
    [InlineData(1024 * 1024)]
    [InlineData((1024 * 1024) + 1)]
    [InlineData(2 * 1024 * 1024)]
    [InlineData((5 * 1024 * 1024) + 3)]
    [InlineData(16 * 1024 * 1024)]
    public void FileDigestIsTheDigestOfItsBytes(int length)
    {
        var contents = new byte[length];
        new Random(length).NextBytes(contents);
        using var dir = new TempDirectory("tvix-fuse-blake3-");
        string path = dir.WriteFile("file", contents);
        var expected = Blake3.Hash(contents);

        Assert.Equal(expected, Blake3.HashFile(path));
        using var file = File.OpenHandle(path);
        Assert.Equal(expected, Blake3.HashFile(file, length, parallel: true));
        Assert.Equal(expected, Blake3.HashFile(file, length, parallel: false));
    }

    [Theory]
    [InlineData(100, 50)]
    [InlineData(200_000, 100_000)]
    public void OnlyTheGivenLengthIsHashed(int fileLength, int length)
    {
        var contents = new byte[fileLength];
        new Random(3).NextBytes(contents);
        using var dir = new TempDirectory("tvix-fuse-blake3-");
        using var file = File.OpenHandle(dir.WriteFile("file", contents));
        Assert.Equal(Blake3.Hash(contents.AsSpan(0, length)), Blake3.HashFile(file, length));
    }

    [Theory]
    [InlineData(100, 101)]
    [InlineData(200_000, 200_001)]
    [InlineData(3 * 1024 * 1024, (3 * 1024 * 1024) + 1)] // the rest after the parallel pieces is missing
    [InlineData(2 * 1024 * 1024, 8 * 1024 * 1024)] // pieces hashed in parallel are missing
    public void AFileShorterThanTheLengthIsAnError(int fileLength, int length)
    {
        using var dir = new TempDirectory("tvix-fuse-blake3-");
        using var file = File.OpenHandle(dir.WriteFile("file", new byte[fileLength]));
        foreach (bool parallel in new[] { true, false })
        {
            var error = Assert.Throws<IOException>(() => Blake3.HashFile(file, length, parallel));
            Assert.Contains($"cannot hash {length} bytes of the file: it ends after", error.Message);
        }
    }

    [Fact]
    public void MissingFileIsAnError() =>
        Assert.Throws<FileNotFoundException>(() => Blake3.HashFile(Path.Combine(Path.GetTempPath(), $"tvix-fuse-blake3-missing-{Guid.NewGuid()}")));

    [Fact]
    public void FileOverTwoGigabytesMatchesB3sum()
    {
        // Sparse: costs no disk. Data at the start, across the 2 GiB mark and at the end catches offset truncation.
        const long length = (2L * 1024 * 1024 * 1024) + (5 * 1024) + 7;
        using var dir = new TempDirectory("tvix-fuse-blake3-");
        string path = dir.Combine("sparse");
        using (var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write))
        {
            stream.SetLength(length);
            var marker = new byte[4096];
            new Random(11).NextBytes(marker);
            foreach (long offset in new[] { 0L, (1L << 31) - 1000, length - marker.Length })
            {
                stream.Position = offset;
                stream.Write(marker);
            }
        }

        string expected = B3sum.Run(path);
        Assert.Equal(expected, Blake3.HashFile(path).ToHex());
        using var file = File.OpenHandle(path);
        Assert.Equal(expected, Blake3.HashFile(file, length, parallel: false).ToHex());
    }
}
