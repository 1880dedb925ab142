using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace TvixFuseBuild.Castore.Hashing;

/// <summary>16 inputs at once with AVX-512F: lane i of every vector belongs to input i.</summary>
internal readonly unsafe struct Blake3Simd512 : IBlake3Lanes<Blake3Vec512>
{
    public static bool IsSupported => Avx512F.IsSupported;

    public static int Degree => 16;

    int IBlake3Lanes<Blake3Vec512>.Degree => Degree;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    Blake3Vec512 IBlake3Lanes<Blake3Vec512>.Splat(uint value) => new(Splat(value));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    Blake3Vec512 IBlake3Lanes<Blake3Vec512>.Xor(Blake3Vec512 a, Blake3Vec512 b) => new(Xor(a.V, b.V));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void IBlake3Lanes<Blake3Vec512>.G(ref Blake3Vec512 a, ref Blake3Vec512 b, ref Blake3Vec512 c, ref Blake3Vec512 d, Blake3Vec512 x, Blake3Vec512 y) =>
        G(ref a.V, ref b.V, ref c.V, ref d.V, x.V, y.V);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void IBlake3Lanes<Blake3Vec512>.Counters(ulong counter, bool increment, out Blake3Vec512 low, out Blake3Vec512 high)
    {
        Counters(counter, increment, out var l, out var h);
        low = new(l);
        high = new(h);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void IBlake3Lanes<Blake3Vec512>.LoadTransposed(byte* block, nuint* offsets, byte* prefetch, Blake3Vec512* message) =>
        LoadTransposed(block, offsets, prefetch, (Vector512<uint>*)message);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void IBlake3Lanes<Blake3Vec512>.StoreTransposed(Blake3Vec512* cv, byte* output) => StoreTransposed((Vector512<uint>*)cv, output);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<uint> Splat(uint value) => Vector512.Create(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<uint> Xor(Vector512<uint> a, Vector512<uint> b) => a ^ b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void G(ref Vector512<uint> a, ref Vector512<uint> b, ref Vector512<uint> c, ref Vector512<uint> d, Vector512<uint> x, Vector512<uint> y)
    {
        // The message word is added first: it is ready early, which takes an add off the critical path.
        a = a + x + b;
        d = Avx512F.RotateRight(d ^ a, 16);
        c += d;
        b = Avx512F.RotateRight(b ^ c, 12);
        a = a + y + b;
        d = Avx512F.RotateRight(d ^ a, 8);
        c += d;
        b = Avx512F.RotateRight(b ^ c, 7);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Counters(ulong counter, bool increment, out Vector512<uint> low, out Vector512<uint> high)
    {
        var low0 = Vector512.Create((uint)counter);
        low = increment ? low0 + Vector512<uint>.Indices : low0;

        // A lane whose low word wrapped around carries into the high word; the all-ones mask is -1.
        high = Vector512.Create((uint)(counter >> 32)) - Vector512.LessThan(low, low0);
    }

    /// <summary>
    /// A 16x16 transposition of 32-bit words in four rounds of two-input shuffles, each round interleaving twice as
    /// wide a unit (32-bit, 64-bit, then 128-bit lanes twice). Names say which inputs (a..p) a vector holds.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadTransposed(byte* block, nuint* offsets, byte* prefetch, Vector512<uint>* message)
    {
        var a = Avx512F.LoadVector512((uint*)(block + offsets[0]));
        var b = Avx512F.LoadVector512((uint*)(block + offsets[1]));
        var c = Avx512F.LoadVector512((uint*)(block + offsets[2]));
        var d = Avx512F.LoadVector512((uint*)(block + offsets[3]));
        var e = Avx512F.LoadVector512((uint*)(block + offsets[4]));
        var f = Avx512F.LoadVector512((uint*)(block + offsets[5]));
        var g = Avx512F.LoadVector512((uint*)(block + offsets[6]));
        var h = Avx512F.LoadVector512((uint*)(block + offsets[7]));
        var i = Avx512F.LoadVector512((uint*)(block + offsets[8]));
        var j = Avx512F.LoadVector512((uint*)(block + offsets[9]));
        var k = Avx512F.LoadVector512((uint*)(block + offsets[10]));
        var l = Avx512F.LoadVector512((uint*)(block + offsets[11]));
        var m = Avx512F.LoadVector512((uint*)(block + offsets[12]));
        var n = Avx512F.LoadVector512((uint*)(block + offsets[13]));
        var o = Avx512F.LoadVector512((uint*)(block + offsets[14]));
        var p = Avx512F.LoadVector512((uint*)(block + offsets[15]));
        for (nuint input = 0; input < 16; input++)
        {
            Sse.Prefetch0(prefetch + offsets[input]);
        }

        // In each 128-bit lane q: ab0 = a[4q], b[4q], a[4q+1], b[4q+1]; ab2 = the same for words 4q+2 and 4q+3.
        var ab0 = Avx512F.UnpackLow(a, b);
        var ab2 = Avx512F.UnpackHigh(a, b);
        var cd0 = Avx512F.UnpackLow(c, d);
        var cd2 = Avx512F.UnpackHigh(c, d);
        var ef0 = Avx512F.UnpackLow(e, f);
        var ef2 = Avx512F.UnpackHigh(e, f);
        var gh0 = Avx512F.UnpackLow(g, h);
        var gh2 = Avx512F.UnpackHigh(g, h);
        var ij0 = Avx512F.UnpackLow(i, j);
        var ij2 = Avx512F.UnpackHigh(i, j);
        var kl0 = Avx512F.UnpackLow(k, l);
        var kl2 = Avx512F.UnpackHigh(k, l);
        var mn0 = Avx512F.UnpackLow(m, n);
        var mn2 = Avx512F.UnpackHigh(m, n);
        var op0 = Avx512F.UnpackLow(o, p);
        var op2 = Avx512F.UnpackHigh(o, p);

        // abcdK holds, in 128-bit lane q, word 4q+K of inputs a, b, c, d.
        var abcd0 = UnpackLow64(ab0, cd0);
        var abcd1 = UnpackHigh64(ab0, cd0);
        var abcd2 = UnpackLow64(ab2, cd2);
        var abcd3 = UnpackHigh64(ab2, cd2);
        var efgh0 = UnpackLow64(ef0, gh0);
        var efgh1 = UnpackHigh64(ef0, gh0);
        var efgh2 = UnpackLow64(ef2, gh2);
        var efgh3 = UnpackHigh64(ef2, gh2);
        var ijkl0 = UnpackLow64(ij0, kl0);
        var ijkl1 = UnpackHigh64(ij0, kl0);
        var ijkl2 = UnpackLow64(ij2, kl2);
        var ijkl3 = UnpackHigh64(ij2, kl2);
        var mnop0 = UnpackLow64(mn0, op0);
        var mnop1 = UnpackHigh64(mn0, op0);
        var mnop2 = UnpackLow64(mn2, op2);
        var mnop3 = UnpackHigh64(mn2, op2);

        // Even 128-bit lanes (words K and 8+K) and odd ones (words 4+K and 12+K) of abcd and efgh side by side.
        var ah0 = EvenLanes(abcd0, efgh0);
        var ah1 = EvenLanes(abcd1, efgh1);
        var ah2 = EvenLanes(abcd2, efgh2);
        var ah3 = EvenLanes(abcd3, efgh3);
        var ah4 = OddLanes(abcd0, efgh0);
        var ah5 = OddLanes(abcd1, efgh1);
        var ah6 = OddLanes(abcd2, efgh2);
        var ah7 = OddLanes(abcd3, efgh3);
        var ip0 = EvenLanes(ijkl0, mnop0);
        var ip1 = EvenLanes(ijkl1, mnop1);
        var ip2 = EvenLanes(ijkl2, mnop2);
        var ip3 = EvenLanes(ijkl3, mnop3);
        var ip4 = OddLanes(ijkl0, mnop0);
        var ip5 = OddLanes(ijkl1, mnop1);
        var ip6 = OddLanes(ijkl2, mnop2);
        var ip7 = OddLanes(ijkl3, mnop3);

        message[0] = EvenLanes(ah0, ip0);
        message[1] = EvenLanes(ah1, ip1);
        message[2] = EvenLanes(ah2, ip2);
        message[3] = EvenLanes(ah3, ip3);
        message[4] = EvenLanes(ah4, ip4);
        message[5] = EvenLanes(ah5, ip5);
        message[6] = EvenLanes(ah6, ip6);
        message[7] = EvenLanes(ah7, ip7);
        message[8] = OddLanes(ah0, ip0);
        message[9] = OddLanes(ah1, ip1);
        message[10] = OddLanes(ah2, ip2);
        message[11] = OddLanes(ah3, ip3);
        message[12] = OddLanes(ah4, ip4);
        message[13] = OddLanes(ah5, ip5);
        message[14] = OddLanes(ah6, ip6);
        message[15] = OddLanes(ah7, ip7);
    }

    /// <summary>Eight state vectors to sixteen 32-byte chaining values: two interleave rounds as above, then each
    /// 128-bit half (words 0-3 and 4-7) of one input is paired with its other half by a two-input permute.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreTransposed(Vector512<uint>* cv, byte* output)
    {
        var ab0 = Avx512F.UnpackLow(cv[0], cv[1]);
        var ab2 = Avx512F.UnpackHigh(cv[0], cv[1]);
        var cd0 = Avx512F.UnpackLow(cv[2], cv[3]);
        var cd2 = Avx512F.UnpackHigh(cv[2], cv[3]);
        var ef0 = Avx512F.UnpackLow(cv[4], cv[5]);
        var ef2 = Avx512F.UnpackHigh(cv[4], cv[5]);
        var gh0 = Avx512F.UnpackLow(cv[6], cv[7]);
        var gh2 = Avx512F.UnpackHigh(cv[6], cv[7]);

        // In 128-bit lane q: words 0-3 (abcdK) and 4-7 (efghK) of input 4q+K.
        StorePair(UnpackLow64(ab0, cd0), UnpackLow64(ef0, gh0), output);
        StorePair(UnpackHigh64(ab0, cd0), UnpackHigh64(ef0, gh0), output + 32);
        StorePair(UnpackLow64(ab2, cd2), UnpackLow64(ef2, gh2), output + 64);
        StorePair(UnpackHigh64(ab2, cd2), UnpackHigh64(ef2, gh2), output + 96);
    }

    // Writes inputs K, 4+K, 8+K, 12+K (output points at input K).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StorePair(Vector512<uint> low, Vector512<uint> high, byte* output)
    {
        var first = Avx512F.PermuteVar8x64x2(low.AsUInt64(), Vector512.Create(0ul, 1, 8, 9, 2, 3, 10, 11), high.AsUInt64());
        var second = Avx512F.PermuteVar8x64x2(low.AsUInt64(), Vector512.Create(4ul, 5, 12, 13, 6, 7, 14, 15), high.AsUInt64());
        Avx.Store((ulong*)output, first.GetLower());
        Avx.Store((ulong*)(output + 128), first.GetUpper());
        Avx.Store((ulong*)(output + 256), second.GetLower());
        Avx.Store((ulong*)(output + 384), second.GetUpper());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<uint> UnpackLow64(Vector512<uint> a, Vector512<uint> b) =>
        Avx512F.UnpackLow(a.AsUInt64(), b.AsUInt64()).AsUInt32();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<uint> UnpackHigh64(Vector512<uint> a, Vector512<uint> b) =>
        Avx512F.UnpackHigh(a.AsUInt64(), b.AsUInt64()).AsUInt32();

    // 128-bit lanes 0 and 2 of a, then 0 and 2 of b.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<uint> EvenLanes(Vector512<uint> a, Vector512<uint> b) => Avx512F.Shuffle4x128(a, b, 0b10_00_10_00);

    // 128-bit lanes 1 and 3 of a, then 1 and 3 of b.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<uint> OddLanes(Vector512<uint> a, Vector512<uint> b) => Avx512F.Shuffle4x128(a, b, 0b11_01_11_01);
}

/// <summary>A <see cref="Vector512{T}"/> of words in a struct of ours, the vector type of
/// <see cref="Blake3Simd512"/>'s lanes (see <see cref="IBlake3Lanes{TVec}"/> for why).</summary>
internal struct Blake3Vec512(Vector512<uint> v)
{
    public Vector512<uint> V = v;
}
