using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace TvixFuseBuild.Castore.Hashing;

/// <summary>One-shot BLAKE3 entry points. See <see cref="Blake3Hasher"/> for incremental hashing.</summary>
public static class Blake3
{
    public const int OutLength = 32;
    public const int KeyLength = 32;
    internal const int BlockLength = 64;
    internal const int ChunkLength = 1024;

    internal const uint FlagChunkStart = 1 << 0;
    internal const uint FlagChunkEnd = 1 << 1;
    internal const uint FlagParent = 1 << 2;
    internal const uint FlagRoot = 1 << 3;
    internal const uint FlagKeyedHash = 1 << 4;
    internal const uint FlagDeriveKeyContext = 1 << 5;
    internal const uint FlagDeriveKeyMaterial = 1 << 6;

    internal static ReadOnlySpan<uint> IV =>
    [
        0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
    ];

    /// <summary>The BLAKE3-256 digest of <paramref name="data"/>.</summary>
    public static B3Digest Hash(ReadOnlySpan<byte> data)
    {
        var hasher = new Blake3Hasher();
        hasher.Update(data);
        return hasher.Finalize();
    }

    /// <summary>Extended output: fills <paramref name="output"/> with the BLAKE3 XOF stream of <paramref name="data"/>.</summary>
    public static void Hash(ReadOnlySpan<byte> data, Span<byte> output)
    {
        var hasher = new Blake3Hasher();
        hasher.Update(data);
        hasher.Finalize(output);
    }

    public static void KeyedHash(ReadOnlySpan<byte> key, ReadOnlySpan<byte> data, Span<byte> output)
    {
        var hasher = Blake3Hasher.CreateKeyed(key);
        hasher.Update(data);
        hasher.Finalize(output);
    }

    public static void DeriveKey(string context, ReadOnlySpan<byte> keyMaterial, Span<byte> output)
    {
        var hasher = Blake3Hasher.CreateDeriveKey(context);
        hasher.Update(keyMaterial);
        hasher.Finalize(output);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void LoadKeyWords(ReadOnlySpan<byte> key, Span<uint> words)
    {
        for (int i = 0; i < 8; i++)
        {
            words[i] = BinaryPrimitives.ReadUInt32LittleEndian(key[(4 * i)..]);
        }
    }
}
