using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace TvixFuseBuild.Castore.Hashing;

/// <summary>
/// Vector128 (SSSE3) forms: 4 inputs at once for <see cref="Blake3SimdKernel"/>, and the single-block compression
/// with the 4x4 state held as four row vectors.
/// </summary>
internal readonly unsafe struct Blake3Simd128 : IBlake3Lanes<Blake3Vec128>
{
    public static bool IsSupported => Ssse3.IsSupported;

    public static int Degree => 4;

    int IBlake3Lanes<Blake3Vec128>.Degree => Degree;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    Blake3Vec128 IBlake3Lanes<Blake3Vec128>.Splat(uint value) => new(Splat(value));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    Blake3Vec128 IBlake3Lanes<Blake3Vec128>.Xor(Blake3Vec128 a, Blake3Vec128 b) => new(Xor(a.V, b.V));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void IBlake3Lanes<Blake3Vec128>.G(ref Blake3Vec128 a, ref Blake3Vec128 b, ref Blake3Vec128 c, ref Blake3Vec128 d, Blake3Vec128 x, Blake3Vec128 y) =>
        G(ref a.V, ref b.V, ref c.V, ref d.V, x.V, y.V);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void IBlake3Lanes<Blake3Vec128>.Counters(ulong counter, bool increment, out Blake3Vec128 low, out Blake3Vec128 high)
    {
        Counters(counter, increment, out var l, out var h);
        low = new(l);
        high = new(h);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void IBlake3Lanes<Blake3Vec128>.LoadTransposed(byte* block, nuint* offsets, byte* prefetch, Blake3Vec128* message) =>
        LoadTransposed(block, offsets, prefetch, (Vector128<uint>*)message);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    void IBlake3Lanes<Blake3Vec128>.StoreTransposed(Blake3Vec128* cv, byte* output) => StoreTransposed((Vector128<uint>*)cv, output);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<uint> Splat(uint value) => Vector128.Create(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector128<uint> Xor(Vector128<uint> a, Vector128<uint> b) => a ^ b;

    /// <summary>SSSE3 has no rotate: by 16 and 8 it is a byte shuffle, by 12 and 7 two shifts. The
    /// shuffle masks are written inline: through a helper they would exceed the kernel's inlining budget.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void G(ref Vector128<uint> a, ref Vector128<uint> b, ref Vector128<uint> c, ref Vector128<uint> d, Vector128<uint> x, Vector128<uint> y)
    {
        a = a + x + b;
        d = Ssse3.Shuffle((d ^ a).AsByte(), Vector128.Create((byte)2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13)).AsUInt32();
        c += d;
        b ^= c;
        b = Sse2.ShiftRightLogical(b, 12) | Sse2.ShiftLeftLogical(b, 20);
        a = a + y + b;
        d = Ssse3.Shuffle((d ^ a).AsByte(), Vector128.Create((byte)1, 2, 3, 0, 5, 6, 7, 4, 9, 10, 11, 8, 13, 14, 15, 12)).AsUInt32();
        c += d;
        b ^= c;
        b = Sse2.ShiftRightLogical(b, 7) | Sse2.ShiftLeftLogical(b, 25);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Counters(ulong counter, bool increment, out Vector128<uint> low, out Vector128<uint> high)
    {
        var low0 = Vector128.Create((uint)counter);
        low = increment ? low0 + Vector128<uint>.Indices : low0;
        high = Vector128.Create((uint)(counter >> 32)) - Vector128.LessThan(low, low0);
    }

    /// <summary>Each 16-byte quarter of the four blocks is one 4x4 transposition.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadTransposed(byte* block, nuint* offsets, byte* prefetch, Vector128<uint>* message)
    {
        for (nuint input = 0; input < 4; input++)
        {
            Sse.Prefetch0(prefetch + offsets[input]);
        }

        for (int quarter = 0; quarter < 4; quarter++)
        {
            byte* q = block + (16 * quarter);
            Transpose(
                Sse2.LoadVector128((uint*)(q + offsets[0])),
                Sse2.LoadVector128((uint*)(q + offsets[1])),
                Sse2.LoadVector128((uint*)(q + offsets[2])),
                Sse2.LoadVector128((uint*)(q + offsets[3])),
                message + (4 * quarter),
                1);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreTransposed(Vector128<uint>* cv, byte* output)
    {
        // Input i's words 0-3 go to output + 32i, words 4-7 right after: a stride of two vectors.
        Transpose(cv[0], cv[1], cv[2], cv[3], (Vector128<uint>*)output, 2);
        Transpose(cv[4], cv[5], cv[6], cv[7], (Vector128<uint>*)(output + 16), 2);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Transpose(Vector128<uint> a, Vector128<uint> b, Vector128<uint> c, Vector128<uint> d, Vector128<uint>* output, int stride)
    {
        var ab0 = Sse2.UnpackLow(a, b);
        var ab2 = Sse2.UnpackHigh(a, b);
        var cd0 = Sse2.UnpackLow(c, d);
        var cd2 = Sse2.UnpackHigh(c, d);
        Sse2.Store((uint*)output, Sse2.UnpackLow(ab0.AsUInt64(), cd0.AsUInt64()).AsUInt32());
        Sse2.Store((uint*)(output + stride), Sse2.UnpackHigh(ab0.AsUInt64(), cd0.AsUInt64()).AsUInt32());
        Sse2.Store((uint*)(output + (2 * stride)), Sse2.UnpackLow(ab2.AsUInt64(), cd2.AsUInt64()).AsUInt32());
        Sse2.Store((uint*)(output + (3 * stride)), Sse2.UnpackHigh(ab2.AsUInt64(), cd2.AsUInt64()).AsUInt32());
    }

    // ---- Single block: the state as rows (v0-3, v4-7, v8-11, v12-15), so a G step works on four columns at once. ----

    public static void CompressInPlace(ref CvWords cv, byte* block, uint blockLength, ulong counter, uint flags)
    {
        var cv0 = Vector128.LoadUnsafe(ref cv[0]);
        var cv1 = Vector128.LoadUnsafe(ref cv[4]);
        Rounds(cv0, cv1, block, blockLength, counter, flags, out var row0, out var row1, out var row2, out var row3);
        (row0 ^ row2).StoreUnsafe(ref cv[0]);
        (row1 ^ row3).StoreUnsafe(ref cv[4]);
    }

    public static void CompressXof(ref readonly CvWords cv, byte* block, uint blockLength, ulong counter, uint flags, byte* output)
    {
        var cv0 = Vector128.LoadUnsafe(in cv[0]);
        var cv1 = Vector128.LoadUnsafe(in cv[4]);
        Rounds(cv0, cv1, block, blockLength, counter, flags, out var row0, out var row1, out var row2, out var row3);
        Sse2.Store((uint*)output, row0 ^ row2);
        Sse2.Store((uint*)(output + 16), row1 ^ row3);
        Sse2.Store((uint*)(output + 32), row2 ^ cv0);
        Sse2.Store((uint*)(output + 48), row3 ^ cv1);
    }

    /// <summary>
    /// Per round, the message words for the column step (x then y) and the diagonal step (x then y), in lane order.
    /// The diagonal step keeps row 1 in place and rotates rows 0, 2, 3 instead (row 1 is the last one computed, so
    /// not shuffling it shortens the dependency chain); lane j then holds diagonal j - 1, hence the rotated words.
    /// </summary>
    private static ReadOnlySpan<byte> RowSchedule =>
    [
        0, 2, 4, 6, 1, 3, 5, 7, 14, 8, 10, 12, 15, 9, 11, 13,
        2, 3, 7, 4, 6, 10, 0, 13, 15, 1, 12, 9, 8, 11, 5, 14,
        3, 10, 13, 7, 4, 12, 2, 14, 8, 6, 9, 11, 1, 5, 0, 15,
        10, 12, 14, 13, 7, 9, 3, 15, 1, 4, 11, 5, 6, 0, 2, 8,
        12, 9, 15, 14, 13, 11, 10, 8, 6, 7, 5, 0, 4, 2, 3, 1,
        9, 11, 8, 15, 14, 5, 12, 1, 4, 13, 0, 2, 7, 3, 10, 6,
        11, 5, 1, 8, 15, 0, 9, 6, 7, 14, 2, 3, 13, 10, 12, 4,
    ];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Rounds(
        Vector128<uint> cv0, Vector128<uint> cv1, byte* block, uint blockLength, ulong counter, uint flags,
        out Vector128<uint> row0, out Vector128<uint> row1, out Vector128<uint> row2, out Vector128<uint> row3)
    {
        uint* w = (uint*)block;
        ref byte schedule = ref Unsafe.AsRef(in RowSchedule[0]);
        row0 = cv0;
        row1 = cv1;
        row2 = Vector128.Create(0x6A09E667u, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A);
        row3 = Vector128.Create((uint)counter, (uint)(counter >> 32), blockLength, flags);
        for (int round = 0; round < 7; round++)
        {
            ref byte s = ref Unsafe.Add(ref schedule, 16 * round);
            G(ref row0, ref row1, ref row2, ref row3, Gather(w, ref s), Gather(w, ref Unsafe.Add(ref s, 4)));
            row0 = Vector128.Shuffle(row0, Vector128.Create(3u, 0, 1, 2));
            row3 = Vector128.Shuffle(row3, Vector128.Create(2u, 3, 0, 1));
            row2 = Vector128.Shuffle(row2, Vector128.Create(1u, 2, 3, 0));
            G(ref row0, ref row1, ref row2, ref row3, Gather(w, ref Unsafe.Add(ref s, 8)), Gather(w, ref Unsafe.Add(ref s, 12)));
            row0 = Vector128.Shuffle(row0, Vector128.Create(1u, 2, 3, 0));
            row3 = Vector128.Shuffle(row3, Vector128.Create(2u, 3, 0, 1));
            row2 = Vector128.Shuffle(row2, Vector128.Create(3u, 0, 1, 2));
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<uint> Gather(uint* words, ref byte index) => Vector128.Create(
        words[index], words[Unsafe.Add(ref index, 1)], words[Unsafe.Add(ref index, 2)], words[Unsafe.Add(ref index, 3)]);
}

/// <summary>A <see cref="Vector128{T}"/> of words in a struct of ours, the vector type of
/// <see cref="Blake3Simd128"/>'s lanes (see <see cref="IBlake3Lanes{TVec}"/> for why).</summary>
internal struct Blake3Vec128(Vector128<uint> v)
{
    public Vector128<uint> V = v;
}
