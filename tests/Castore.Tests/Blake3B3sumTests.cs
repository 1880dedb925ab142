using System.Text;
using TvixFuseBuild.Castore.Hashing;

namespace TvixFuseBuild.Castore.Tests;

/// <summary>Our BLAKE3, every way we offer it, against the real b3sum on random inputs of awkward lengths.</summary>
public sealed class Blake3B3sumTests
{
    public static TheoryData<int> Lengths() =>
    [
        0, 1, 63, 64, 65, 1023, 1024, 1025, 2048, 16 * 1024, (16 * 1024) + 1,
        (64 * 1024) - 1, 64 * 1024, (64 * 1024) + 1, (1024 * 1024) + 1, (3 * 1024 * 1024) + 517, 8 * 1024 * 1024,
    ];

    [Theory]
    [MemberData(nameof(Lengths))]
    public void EveryEntryPointMatchesB3sum(int length)
    {
        var input = new byte[length];
        new Random(length).NextBytes(input);
        using var dir = new TempDirectory("tvix-fuse-blake3-");
        string path = dir.WriteFile("input", input);
        string expected = B3sum.Run(path);

        Assert.Equal(expected, Blake3.Hash(input).ToHex());
        Assert.Equal(expected, Blake3.HashParallel(input).ToHex());
        Assert.Equal(expected, Blake3.HashParallel(input, 3).ToHex());
        Assert.Equal(expected, Blake3.HashFile(path).ToHex());
        using (var file = File.OpenHandle(path))
        {
            Assert.Equal(expected, Blake3.HashFile(file, length, parallel: false).ToHex());
        }

        var hasher = new Blake3Hasher();
        Blake3LevelTests.Feed(hasher, input, 4093);
        Assert.Equal(expected, hasher.Finalize().ToHex());

        foreach (var level in Blake3LevelTests.AllLevels.Where(Blake3Backend.IsSupported))
        {
            var output = new byte[Blake3.OutLength];
            Blake3.Hash(input, output, level);
            Assert.True(expected == Convert.ToHexStringLower(output), $"level {level}");
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1025)]
    [InlineData((64 * 1024) + 1)]
    [InlineData((2 * 1024 * 1024) + 3)]
    public void KeyedDerivedAndExtendedOutputMatchB3sum(int length)
    {
        var input = new byte[length];
        new Random(length + 1).NextBytes(input);
        var key = new byte[Blake3.KeyLength];
        new Random(99).NextBytes(key);
        using var dir = new TempDirectory("tvix-fuse-blake3-");
        string path = dir.WriteFile("input", input);

        var output = new byte[200];
        Blake3.Hash(input, output);
        Assert.Equal(B3sum.Run(path, ["--length", "200"]), Convert.ToHexStringLower(output));

        output = new byte[Blake3.OutLength];
        Blake3.KeyedHash(key, input, output);
        Assert.Equal(B3sum.Run(path, ["--keyed"], key), Convert.ToHexStringLower(output));

        const string context = "TvixFuseBuild 2025-01-01 test context: ünïcödé";
        Blake3.DeriveKey(context, input, output);
        Assert.Equal(B3sum.Run(path, ["--derive-key", context]), Convert.ToHexStringLower(output));
        Assert.True(Encoding.UTF8.GetByteCount(context) > context.Length);
    }
}
