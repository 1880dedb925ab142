using TvixFuseBuild.Castore.Hashing;

namespace TvixFuseBuild.Castore.Tests;

/// <summary>Multi-threaded hashing splits on subtree boundaries: it must agree with one thread on every size.</summary>
public sealed class Blake3ParallelTests
{
    private const int Chunk = 1024;

    private static readonly byte[] Data = RandomBytes((9 * 1024 * 1024) + 12345);

    private static byte[] RandomBytes(int length)
    {
        var data = new byte[length];
        new Random(2024).NextBytes(data);
        return data;
    }

    /// <summary>Sizes around powers of two chunk counts (where the tree's shape changes), and some in between.</summary>
    public static TheoryData<int> Sizes()
    {
        var sizes = new TheoryData<int>();
        foreach (int chunks in new[] { 512, 1024, 2048, 4096, 8192 })
        {
            foreach (int delta in new[] { -Chunk - 1, -Chunk, -1, 0, 1, Chunk - 1, Chunk, Chunk + 1 })
            {
                sizes.Add((chunks * Chunk) + delta);
            }
        }

        sizes.Add((3 * 1024 * 1024) + 777);
        sizes.Add((5 * 1024 * 1024) + 64);
        sizes.Add((7 * 1024 * 1024) - 3);
        sizes.Add(Data.Length);
        return sizes;
    }

    [Theory]
    [MemberData(nameof(Sizes))]
    public void ParallelEqualsSerial(int size)
    {
        var input = Data.AsSpan(0, size);
        var serial = Blake3.Hash(input);
        Assert.Equal(serial, Blake3.HashParallel(input));
        foreach (int threads in new[] { 1, 2, 3, 4, 8 })
        {
            Assert.True(serial == Blake3.HashParallel(input, threads), $"{threads} threads");
        }
    }

    [Theory]
    [InlineData("Scalar")]
    [InlineData("Vector128")]
    [InlineData("Vector256")]
    [InlineData("Vector512")]
    public void ParallelEqualsSerialAtEveryLevel(string levelName)
    {
        if (!Blake3LevelTests.Runs(levelName, out var level))
        {
            return;
        }

        foreach (int size in new[] { (2 * 1024 * 1024) + 1, (4 * 1024 * 1024) - Chunk, (6 * 1024 * 1024) + 5 })
        {
            var serial = new byte[64];
            var parallel = new byte[64];
            Blake3.Hash(Data.AsSpan(0, size), serial, Blake3Level.Scalar);
            Blake3.Hash(Data.AsSpan(0, size), parallel, level, parallelism: 3);
            Assert.True(serial.AsSpan().SequenceEqual(parallel), $"size {size}");
        }
    }

    [Fact]
    public void IncrementalAfterAnUnalignedStartMatches()
    {
        // A first small update misaligns every later subtree, which the wide path must shrink to fit.
        var hasher = new Blake3Hasher();
        hasher.Update(Data.AsSpan(0, 3 * Chunk));
        hasher.Update(Data.AsSpan(3 * Chunk, (4 * 1024 * 1024) + 1));
        Assert.Equal(Blake3.Hash(Data.AsSpan(0, (3 * Chunk) + (4 * 1024 * 1024) + 1)), hasher.Finalize());
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-2)]
    public void NonsenseParallelismIsRejected(int threads)
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => Blake3.HashParallel(Data.AsSpan(0, 10), threads));
        Assert.Equal("maxDegreeOfParallelism", error.ParamName);
    }
}
