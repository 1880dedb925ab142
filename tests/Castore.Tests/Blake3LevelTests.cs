using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using System.Text;
using System.Text.Json;
using TvixFuseBuild.Castore.Hashing;

namespace TvixFuseBuild.Castore.Tests;

/// <summary>Every case of vectors/blake3.json through every implementation level (scalar, 128, 256, 512 bits).</summary>
public sealed class Blake3LevelTests
{
    private static readonly JsonElement Root = Vectors.Load("blake3.json");

    internal static readonly Blake3Level[] AllLevels = [Blake3Level.Scalar, Blake3Level.Vector128, Blake3Level.Vector256, Blake3Level.Vector512];

    // Levels are passed by name: the enum is internal, test methods are public.
    public static TheoryData<string, int> LevelsAndCases()
    {
        var data = new TheoryData<string, int>();
        foreach (var level in AllLevels)
        {
            foreach (var c in Root.GetProperty("cases").EnumerateArray())
            {
                data.Add(level.ToString(), c.GetProperty("input_len").GetInt32());
            }
        }

        return data;
    }

    public static TheoryData<string> Levels() => new(AllLevels.Select(l => l.ToString()));

    private static JsonElement Case(int inputLength) =>
        Root.GetProperty("cases").EnumerateArray().Single(c => c.GetProperty("input_len").GetInt32() == inputLength);

    /// <summary>
    /// A level the CPU lacks cannot be run: forcing it must fail clearly rather than crash. On this project's
    /// machines (AVX-512) every level runs.
    /// </summary>
    internal static bool Runs(string name, out Blake3Level level)
    {
        level = Enum.Parse<Blake3Level>(name);
        if (Blake3Backend.IsSupported(level))
        {
            return true;
        }

        var unsupported = level;
        Assert.Throws<PlatformNotSupportedException>(() => Blake3Hasher.Create(unsupported));
        return false;
    }

    [Fact]
    public void TheWidestLevelTheCpuRunsWellIsTheDefault()
    {
        var expected = Vector512.IsHardwareAccelerated && Avx512F.IsSupported ? Blake3Level.Vector512
            : Vector256.IsHardwareAccelerated && Avx2.IsSupported ? Blake3Level.Vector256
            : Ssse3.IsSupported ? Blake3Level.Vector128
            : Blake3Level.Scalar;
        Assert.Equal(expected, Blake3Backend.Best);
    }

    [Theory]
    [MemberData(nameof(LevelsAndCases))]
    public void Hash(string levelName, int inputLength)
    {
        if (!Runs(levelName, out var level))
        {
            return;
        }

        string expected = Case(inputLength).GetProperty("hash").GetString()!;
        var output = new byte[expected.Length / 2];
        Blake3.Hash(Blake3VectorTests.Input(inputLength), output, level);
        Assert.Equal(expected, Convert.ToHexStringLower(output));
    }

    [Theory]
    [MemberData(nameof(LevelsAndCases))]
    public void KeyedHash(string levelName, int inputLength)
    {
        if (!Runs(levelName, out var level))
        {
            return;
        }

        string expected = Case(inputLength).GetProperty("keyed_hash").GetString()!;
        byte[] key = Encoding.ASCII.GetBytes(Root.GetProperty("key").GetString()!);
        var output = new byte[expected.Length / 2];
        Blake3.KeyedHash(key, Blake3VectorTests.Input(inputLength), output, level);
        Assert.Equal(expected, Convert.ToHexStringLower(output));

        var hasher = Blake3Hasher.CreateKeyed(key, level);
        Feed(hasher, Blake3VectorTests.Input(inputLength), 1000);
        hasher.Finalize(output);
        Assert.Equal(expected, Convert.ToHexStringLower(output));
    }

    [Theory]
    [MemberData(nameof(LevelsAndCases))]
    public void DeriveKey(string levelName, int inputLength)
    {
        if (!Runs(levelName, out var level))
        {
            return;
        }

        string expected = Case(inputLength).GetProperty("derive_key").GetString()!;
        string context = Root.GetProperty("context_string").GetString()!;
        var output = new byte[expected.Length / 2];
        Blake3.DeriveKey(context, Blake3VectorTests.Input(inputLength), output, level);
        Assert.Equal(expected, Convert.ToHexStringLower(output));

        var hasher = Blake3Hasher.CreateDeriveKey(context, level);
        Feed(hasher, Blake3VectorTests.Input(inputLength), 3000);
        hasher.Finalize(output);
        Assert.Equal(expected, Convert.ToHexStringLower(output));
    }

    [Theory]
    [MemberData(nameof(LevelsAndCases))]
    public void IncrementalInOddPieces(string levelName, int inputLength)
    {
        if (!Runs(levelName, out var level))
        {
            return;
        }

        string expected = Case(inputLength).GetProperty("hash").GetString()!;
        var input = Blake3VectorTests.Input(inputLength);
        var output = new byte[expected.Length / 2];
        foreach (int piece in new[] { 1, 13, 63, 64, 65, 1023, 1024, 1025, 2049, 5000, 16 * 1024, (17 * 1024) + 1 })
        {
            var hasher = Blake3Hasher.Create(level);
            Feed(hasher, input, piece);
            hasher.Finalize(output);
            Assert.True(expected == Convert.ToHexStringLower(output), $"pieces of {piece} bytes");
        }
    }

    [Theory]
    [MemberData(nameof(Levels))]
    public void LevelsAgreeOnLargeInputsInIrregularPieces(string levelName)
    {
        if (!Runs(levelName, out var level))
        {
            return;
        }

        // Pieces of growing, irregular sizes reach the wide path at many chunk counts and alignments.
        var input = new byte[(3 * 1024 * 1024) + 4321];
        new Random(7).NextBytes(input);
        var expected = new byte[100];
        Blake3.Hash(input, expected, Blake3Level.Scalar);

        var actual = new byte[100];
        Blake3.Hash(input, actual, level);
        Assert.Equal(Convert.ToHexStringLower(expected), Convert.ToHexStringLower(actual));

        var hasher = Blake3Hasher.Create(level);
        int offset = 0;
        for (int piece = 1; offset < input.Length; piece = (piece * 3) + 511)
        {
            int n = Math.Min(piece, input.Length - offset);
            hasher.Update(input.AsSpan(offset, n));
            offset += n;
        }

        hasher.Finalize(actual);
        Assert.Equal(Convert.ToHexStringLower(expected), Convert.ToHexStringLower(actual));
    }

    [Theory]
    [MemberData(nameof(Levels))]
    public unsafe void HashManyAgreesWithOneAtATimeForEveryCount(string levelName)
    {
        if (!Runs(levelName, out var level))
        {
            return;
        }

        var input = new byte[40 * Blake3.ChunkLength];
        new Random(5).NextBytes(input);
        var key = Blake3.IVWords;
        var expected = new byte[40 * Blake3.OutLength];
        var actual = new byte[40 * Blake3.OutLength];

        // The counters start just below 2^32, so the lanes' low words wrap and must carry into the high words.
        foreach (ulong counter in new[] { 0ul, uint.MaxValue - 5ul, (7ul << 32) + 3 })
        {
            for (int count = 1; count <= 40; count++)
            {
                foreach (var (blocks, increment, flags, start, end) in new[]
                {
                    (16, true, Blake3.FlagKeyedHash, Blake3.FlagChunkStart, Blake3.FlagChunkEnd),
                    (1, false, Blake3.FlagParent, 0u, 0u),
                })
                {
                    fixed (byte* bytes = input)
                    fixed (byte* e = expected)
                    fixed (byte* a = actual)
                    {
                        Blake3Backend.HashMany(bytes, (nuint)count, blocks, in key, counter, increment, flags, start, end, e, Blake3Level.Scalar);
                        Blake3Backend.HashMany(bytes, (nuint)count, blocks, in key, counter, increment, flags, start, end, a, level);
                    }

                    Assert.True(
                        expected.AsSpan(0, count * Blake3.OutLength).SequenceEqual(actual.AsSpan(0, count * Blake3.OutLength)),
                        $"{count} inputs of {blocks} blocks from counter {counter}");
                }
            }
        }
    }

    internal static void Feed(Blake3Hasher hasher, byte[] input, int piece)
    {
        for (int offset = 0; offset < input.Length; offset += piece)
        {
            hasher.Update(input.AsSpan(offset, Math.Min(piece, input.Length - offset)));
        }
    }
}
