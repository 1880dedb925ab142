using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace TvixFuseBuild.Castore.Hashing;

/// <summary>8 inputs at once with AVX2: lane i of every vector belongs to input i.</summary>
internal readonly unsafe struct Blake3Simd256 : IBlake3Lanes<Vector256<uint>>
{
    public static bool IsSupported => Avx2.IsSupported;

    public static int Degree => 8;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> Splat(uint value) => Vector256.Create(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<uint> Xor(Vector256<uint> a, Vector256<uint> b) => a ^ b;

    /// <summary>AVX2 has no rotate: by 16 and 8 it is a byte shuffle, by 12 and 7 two shifts. The
    /// shuffle masks are written inline: through a helper they would exceed the kernel's inlining budget.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void G(ref Vector256<uint> a, ref Vector256<uint> b, ref Vector256<uint> c, ref Vector256<uint> d, Vector256<uint> x, Vector256<uint> y)
    {
        a = a + x + b;
        d = Avx2.Shuffle((d ^ a).AsByte(), Vector256.Create((byte)2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13)).AsUInt32();
        c += d;
        b ^= c;
        b = Avx2.ShiftRightLogical(b, 12) | Avx2.ShiftLeftLogical(b, 20);
        a = a + y + b;
        d = Avx2.Shuffle((d ^ a).AsByte(), Vector256.Create((byte)1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12, 1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12)).AsUInt32();
        c += d;
        b ^= c;
        b = Avx2.ShiftRightLogical(b, 7) | Avx2.ShiftLeftLogical(b, 25);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Counters(ulong counter, bool increment, out Vector256<uint> low, out Vector256<uint> high)
    {
        var low0 = Vector256.Create((uint)counter);
        low = increment ? low0 + Vector256<uint>.Indices : low0;
        high = Vector256.Create((uint)(counter >> 32)) - Vector256.LessThan(low, low0);
    }

    /// <summary>Words 0-7 and words 8-15 of the eight blocks are two 8x8 transpositions.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadTransposed(byte* block, nuint* offsets, byte* prefetch, Vector256<uint>* message)
    {
        for (nuint input = 0; input < 8; input++)
        {
            Sse.Prefetch0(prefetch + offsets[input]);
        }

        for (int half = 0; half < 2; half++)
        {
            byte* words = block + (32 * half);
            Transpose(
                Vector256.Load((uint*)(words + offsets[0])),
                Vector256.Load((uint*)(words + offsets[1])),
                Vector256.Load((uint*)(words + offsets[2])),
                Vector256.Load((uint*)(words + offsets[3])),
                Vector256.Load((uint*)(words + offsets[4])),
                Vector256.Load((uint*)(words + offsets[5])),
                Vector256.Load((uint*)(words + offsets[6])),
                Vector256.Load((uint*)(words + offsets[7])),
                message + (8 * half));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreTransposed(Vector256<uint>* cv, byte* output)
    {
        Transpose(cv[0], cv[1], cv[2], cv[3], cv[4], cv[5], cv[6], cv[7], (Vector256<uint>*)output);
    }

    /// <summary>8x8 transposition of 32-bit words: interleave 32-bit, then 64-bit units, then swap 128-bit halves.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose(
        Vector256<uint> a, Vector256<uint> b, Vector256<uint> c, Vector256<uint> d,
        Vector256<uint> e, Vector256<uint> f, Vector256<uint> g, Vector256<uint> h, Vector256<uint>* output)
    {
        var ab0 = Avx2.UnpackLow(a, b);
        var ab2 = Avx2.UnpackHigh(a, b);
        var cd0 = Avx2.UnpackLow(c, d);
        var cd2 = Avx2.UnpackHigh(c, d);
        var ef0 = Avx2.UnpackLow(e, f);
        var ef2 = Avx2.UnpackHigh(e, f);
        var gh0 = Avx2.UnpackLow(g, h);
        var gh2 = Avx2.UnpackHigh(g, h);

        // abcdK holds, in 128-bit half q, word 4q+K of a, b, c, d.
        var abcd0 = Avx2.UnpackLow(ab0.AsUInt64(), cd0.AsUInt64()).AsUInt32();
        var abcd1 = Avx2.UnpackHigh(ab0.AsUInt64(), cd0.AsUInt64()).AsUInt32();
        var abcd2 = Avx2.UnpackLow(ab2.AsUInt64(), cd2.AsUInt64()).AsUInt32();
        var abcd3 = Avx2.UnpackHigh(ab2.AsUInt64(), cd2.AsUInt64()).AsUInt32();
        var efgh0 = Avx2.UnpackLow(ef0.AsUInt64(), gh0.AsUInt64()).AsUInt32();
        var efgh1 = Avx2.UnpackHigh(ef0.AsUInt64(), gh0.AsUInt64()).AsUInt32();
        var efgh2 = Avx2.UnpackLow(ef2.AsUInt64(), gh2.AsUInt64()).AsUInt32();
        var efgh3 = Avx2.UnpackHigh(ef2.AsUInt64(), gh2.AsUInt64()).AsUInt32();

        Vector256.Store(Avx2.Permute2x128(abcd0, efgh0, 0x20), (uint*)(output + 0));
        Vector256.Store(Avx2.Permute2x128(abcd1, efgh1, 0x20), (uint*)(output + 1));
        Vector256.Store(Avx2.Permute2x128(abcd2, efgh2, 0x20), (uint*)(output + 2));
        Vector256.Store(Avx2.Permute2x128(abcd3, efgh3, 0x20), (uint*)(output + 3));
        Vector256.Store(Avx2.Permute2x128(abcd0, efgh0, 0x31), (uint*)(output + 4));
        Vector256.Store(Avx2.Permute2x128(abcd1, efgh1, 0x31), (uint*)(output + 5));
        Vector256.Store(Avx2.Permute2x128(abcd2, efgh2, 0x31), (uint*)(output + 6));
        Vector256.Store(Avx2.Permute2x128(abcd3, efgh3, 0x31), (uint*)(output + 7));
    }
}
