using System.Text;
using System.Text.Json;
using TvixFuseBuild.Castore.Hashing;

namespace TvixFuseBuild.Castore.Tests;

public sealed class Blake3VectorTests
{
    private static readonly JsonElement Root = Vectors.Load("blake3.json");

    public static TheoryData<int> InputLengths()
    {
        var data = new TheoryData<int>();
        foreach (var c in Root.GetProperty("cases").EnumerateArray())
        {
            data.Add(c.GetProperty("input_len").GetInt32());
        }

        return data;
    }

    private static JsonElement Case(int inputLength) =>
        Root.GetProperty("cases").EnumerateArray().Single(c => c.GetProperty("input_len").GetInt32() == inputLength);

    internal static byte[] Input(int length)
    {
        var input = new byte[length];
        for (int i = 0; i < length; i++)
        {
            input[i] = (byte)(i % 251);
        }

        return input;
    }

    [Fact]
    public void VectorFileHasTheOfficialCases() => Assert.True(InputLengths().Count >= 35);

    [Theory]
    [MemberData(nameof(InputLengths))]
    public void Hash(int inputLength)
    {
        string expected = Case(inputLength).GetProperty("hash").GetString()!;
        var input = Input(inputLength);

        var extended = new byte[expected.Length / 2];
        Blake3.Hash(input, extended);
        Assert.Equal(expected, Convert.ToHexStringLower(extended));
        Assert.Equal(expected[..64], Blake3.Hash(input).ToHex());
    }

    [Theory]
    [MemberData(nameof(InputLengths))]
    public void KeyedHash(int inputLength)
    {
        string expected = Case(inputLength).GetProperty("keyed_hash").GetString()!;
        byte[] key = Encoding.ASCII.GetBytes(Root.GetProperty("key").GetString()!);

        var extended = new byte[expected.Length / 2];
        Blake3.KeyedHash(key, Input(inputLength), extended);
        Assert.Equal(expected, Convert.ToHexStringLower(extended));
    }

    [Theory]
    [MemberData(nameof(InputLengths))]
    public void DeriveKey(int inputLength)
    {
        string expected = Case(inputLength).GetProperty("derive_key").GetString()!;
        string context = Root.GetProperty("context_string").GetString()!;

        var extended = new byte[expected.Length / 2];
        Blake3.DeriveKey(context, Input(inputLength), extended);
        Assert.Equal(expected, Convert.ToHexStringLower(extended));
    }

    [Theory]
    [MemberData(nameof(InputLengths))]
    public void IncrementalUpdatesInOddPiecesMatchOneShot(int inputLength)
    {
        string expected = Case(inputLength).GetProperty("hash").GetString()![..64];
        var input = Input(inputLength);
        foreach (int piece in new[] { 1, 7, 63, 64, 65, 1023, 1024, 1025, 4096 })
        {
            var hasher = new Blake3Hasher();
            for (int offset = 0; offset < input.Length; offset += piece)
            {
                hasher.Update(input.AsSpan(offset, Math.Min(piece, input.Length - offset)));
            }

            Assert.Equal(expected, hasher.Finalize().ToHex());
        }
    }

    [Fact]
    public void FinalizeDoesNotConsumeTheState()
    {
        var input = Input(5000);
        var hasher = new Blake3Hasher();
        hasher.Update(input.AsSpan(0, 2000));
        _ = hasher.Finalize();
        hasher.Update(input.AsSpan(2000));
        Assert.Equal(Blake3.Hash(input), hasher.Finalize());
    }

    [Fact]
    public void ResetForgetsInput()
    {
        var hasher = new Blake3Hasher();
        hasher.Update(Input(3000));
        hasher.Reset();
        Assert.Equal(B3Digest.Empty, hasher.Finalize());
    }

    [Fact]
    public void KeyOfWrongLengthIsRejected()
    {
        var error = Assert.Throws<ArgumentException>(() => Blake3Hasher.CreateKeyed(new byte[31]));
        Assert.Contains("32 bytes", error.Message);
    }
}
