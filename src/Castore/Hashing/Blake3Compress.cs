using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace TvixFuseBuild.Castore.Hashing;

/// <summary>The BLAKE3 compression function, portable scalar form: one block at a time.</summary>
internal static unsafe class Blake3Compress
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void G(ref uint a, ref uint b, ref uint c, ref uint d, uint x, uint y)
    {
        a = a + b + x;
        d = BitOperations.RotateRight(d ^ a, 16);
        c += d;
        b = BitOperations.RotateRight(b ^ c, 12);
        a = a + b + y;
        d = BitOperations.RotateRight(d ^ a, 8);
        c += d;
        b = BitOperations.RotateRight(b ^ c, 7);
    }

    public static void CompressInPlace(ref CvWords cv, byte* block, uint blockLength, ulong counter, uint flags)
    {
        Span<uint> state = stackalloc uint[16];
        Rounds(in cv, block, blockLength, counter, flags, state);
        for (int i = 0; i < 8; i++)
        {
            cv[i] = state[i] ^ state[i + 8];
        }
    }

    public static void CompressXof(ref readonly CvWords cv, byte* block, uint blockLength, ulong counter, uint flags, byte* output)
    {
        Span<uint> state = stackalloc uint[16];
        Rounds(in cv, block, blockLength, counter, flags, state);
        var bytes = new Span<byte>(output, Blake3.BlockLength);
        for (int i = 0; i < 8; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(bytes[(4 * i)..], state[i] ^ state[i + 8]);
            BinaryPrimitives.WriteUInt32LittleEndian(bytes[(32 + (4 * i))..], state[i + 8] ^ cv[i]);
        }
    }

    /// <summary>Runs the seven rounds; <paramref name="state"/> receives the 16 state words before the feed-forward.</summary>
    private static void Rounds(ref readonly CvWords cv, byte* block, uint blockLength, ulong counter, uint flags, Span<uint> state)
    {
        var words = new ReadOnlySpan<byte>(block, Blake3.BlockLength);
        uint m0 = BinaryPrimitives.ReadUInt32LittleEndian(words);
        uint m1 = BinaryPrimitives.ReadUInt32LittleEndian(words[4..]);
        uint m2 = BinaryPrimitives.ReadUInt32LittleEndian(words[8..]);
        uint m3 = BinaryPrimitives.ReadUInt32LittleEndian(words[12..]);
        uint m4 = BinaryPrimitives.ReadUInt32LittleEndian(words[16..]);
        uint m5 = BinaryPrimitives.ReadUInt32LittleEndian(words[20..]);
        uint m6 = BinaryPrimitives.ReadUInt32LittleEndian(words[24..]);
        uint m7 = BinaryPrimitives.ReadUInt32LittleEndian(words[28..]);
        uint m8 = BinaryPrimitives.ReadUInt32LittleEndian(words[32..]);
        uint m9 = BinaryPrimitives.ReadUInt32LittleEndian(words[36..]);
        uint m10 = BinaryPrimitives.ReadUInt32LittleEndian(words[40..]);
        uint m11 = BinaryPrimitives.ReadUInt32LittleEndian(words[44..]);
        uint m12 = BinaryPrimitives.ReadUInt32LittleEndian(words[48..]);
        uint m13 = BinaryPrimitives.ReadUInt32LittleEndian(words[52..]);
        uint m14 = BinaryPrimitives.ReadUInt32LittleEndian(words[56..]);
        uint m15 = BinaryPrimitives.ReadUInt32LittleEndian(words[60..]);

        uint s0 = cv[0], s1 = cv[1], s2 = cv[2], s3 = cv[3], s4 = cv[4], s5 = cv[5], s6 = cv[6], s7 = cv[7];
        uint s8 = Blake3.IV[0], s9 = Blake3.IV[1], s10 = Blake3.IV[2], s11 = Blake3.IV[3];
        uint s12 = (uint)counter, s13 = (uint)(counter >> 32), s14 = blockLength, s15 = flags;

        for (int round = 0; round < 7; round++)
        {
            G(ref s0, ref s4, ref s8, ref s12, m0, m1);
            G(ref s1, ref s5, ref s9, ref s13, m2, m3);
            G(ref s2, ref s6, ref s10, ref s14, m4, m5);
            G(ref s3, ref s7, ref s11, ref s15, m6, m7);
            G(ref s0, ref s5, ref s10, ref s15, m8, m9);
            G(ref s1, ref s6, ref s11, ref s12, m10, m11);
            G(ref s2, ref s7, ref s8, ref s13, m12, m13);
            G(ref s3, ref s4, ref s9, ref s14, m14, m15);

            // Message permutation [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8].
            uint t0 = m2, t1 = m6, t2 = m3, t3 = m10, t4 = m7, t5 = m0, t6 = m4, t7 = m13;
            uint t8 = m1, t9 = m11, t10 = m12, t11 = m5, t12 = m9, t13 = m14, t14 = m15, t15 = m8;
            m0 = t0; m1 = t1; m2 = t2; m3 = t3; m4 = t4; m5 = t5; m6 = t6; m7 = t7;
            m8 = t8; m9 = t9; m10 = t10; m11 = t11; m12 = t12; m13 = t13; m14 = t14; m15 = t15;
        }

        state[0] = s0; state[1] = s1; state[2] = s2; state[3] = s3;
        state[4] = s4; state[5] = s5; state[6] = s6; state[7] = s7;
        state[8] = s8; state[9] = s9; state[10] = s10; state[11] = s11;
        state[12] = s12; state[13] = s13; state[14] = s14; state[15] = s15;
    }
}
