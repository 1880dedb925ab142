using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace TvixFuseBuild.Castore.Hashing;

/// <summary>8 inputs at once with AVX2: lane i of every vector belongs to input i.</summary>
internal readonly unsafe struct Blake3Simd256 : IBlake3Lanes<Blake3Vec256>
{
    public static bool IsSupported => Avx2.IsSupported;

    public static int Degree => 8;

    int IBlake3Lanes<Blake3Vec256>.Degree => Degree;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    Blake3Vec256 IBlake3Lanes<Blake3Vec256>.Splat(uint value) => new(Splat(value));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    Blake3Vec256 IBlake3Lanes<Blake3Vec256>.Xor(Blake3Vec256 a, Blake3Vec256 b) => new(Xor(a.V, b.V));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void IBlake3Lanes<Blake3Vec256>.G(ref Blake3Vec256 a, ref Blake3Vec256 b, ref Blake3Vec256 c, ref Blake3Vec256 d, Blake3Vec256 x, Blake3Vec256 y) =>
        G(ref a.V, ref b.V, ref c.V, ref d.V, x.V, y.V);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void IBlake3Lanes<Blake3Vec256>.Counters(ulong counter, bool increment, out Blake3Vec256 low, out Blake3Vec256 high)
    {
        Counters(counter, increment, out var l, out var h);
        low = new(l);
        high = new(h);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void IBlake3Lanes<Blake3Vec256>.LoadTransposed(byte* block, nuint* offsets, byte* prefetch, Blake3Vec256* message) =>
        LoadTransposed(block, offsets, prefetch, (Vector256<uint>*)message);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void IBlake3Lanes<Blake3Vec256>.StoreTransposed(Blake3Vec256* cv, byte* output) => StoreTransposed((Vector256<uint>*)cv, output);

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
                Avx.LoadVector256((uint*)(words + offsets[0])),
                Avx.LoadVector256((uint*)(words + offsets[1])),
                Avx.LoadVector256((uint*)(words + offsets[2])),
                Avx.LoadVector256((uint*)(words + offsets[3])),
                Avx.LoadVector256((uint*)(words + offsets[4])),
                Avx.LoadVector256((uint*)(words + offsets[5])),
                Avx.LoadVector256((uint*)(words + offsets[6])),
                Avx.LoadVector256((uint*)(words + offsets[7])),
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

        Avx.Store((uint*)(output + 0), Avx2.Permute2x128(abcd0, efgh0, 0x20));
        Avx.Store((uint*)(output + 1), Avx2.Permute2x128(abcd1, efgh1, 0x20));
        Avx.Store((uint*)(output + 2), Avx2.Permute2x128(abcd2, efgh2, 0x20));
        Avx.Store((uint*)(output + 3), Avx2.Permute2x128(abcd3, efgh3, 0x20));
        Avx.Store((uint*)(output + 4), Avx2.Permute2x128(abcd0, efgh0, 0x31));
        Avx.Store((uint*)(output + 5), Avx2.Permute2x128(abcd1, efgh1, 0x31));
        Avx.Store((uint*)(output + 6), Avx2.Permute2x128(abcd2, efgh2, 0x31));
        Avx.Store((uint*)(output + 7), Avx2.Permute2x128(abcd3, efgh3, 0x31));
    }
}

/// <summary>A <see cref="Vector256{T}"/> of words in a struct of ours, the vector type of
/// <see cref="Blake3Simd256"/>'s lanes (see <see cref="IBlake3Lanes{TVec}"/> for why).</summary>
internal struct Blake3Vec256(Vector256<uint> v)
{
    public Vector256<uint> V = v;
}
