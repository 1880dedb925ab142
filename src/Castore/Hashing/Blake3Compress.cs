using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace TvixFuseBuild.Castore.Hashing;

/// <summary>The BLAKE3 compression function, portable scalar form.</summary>
internal static class Blake3Compress
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

    /// <summary>
    /// Compresses one 64-byte block. Writes all 16 output words to <paramref name="output"/>;
    /// the first 8 are the new chaining value.
    /// </summary>
    public static void Compress(
        ReadOnlySpan<uint> cv, ReadOnlySpan<byte> block, ulong counter, uint blockLength, uint flags, Span<uint> output)
    {
        uint m0 = BinaryPrimitives.ReadUInt32LittleEndian(block);
        uint m1 = BinaryPrimitives.ReadUInt32LittleEndian(block[4..]);
        uint m2 = BinaryPrimitives.ReadUInt32LittleEndian(block[8..]);
        uint m3 = BinaryPrimitives.ReadUInt32LittleEndian(block[12..]);
        uint m4 = BinaryPrimitives.ReadUInt32LittleEndian(block[16..]);
        uint m5 = BinaryPrimitives.ReadUInt32LittleEndian(block[20..]);
        uint m6 = BinaryPrimitives.ReadUInt32LittleEndian(block[24..]);
        uint m7 = BinaryPrimitives.ReadUInt32LittleEndian(block[28..]);
        uint m8 = BinaryPrimitives.ReadUInt32LittleEndian(block[32..]);
        uint m9 = BinaryPrimitives.ReadUInt32LittleEndian(block[36..]);
        uint m10 = BinaryPrimitives.ReadUInt32LittleEndian(block[40..]);
        uint m11 = BinaryPrimitives.ReadUInt32LittleEndian(block[44..]);
        uint m12 = BinaryPrimitives.ReadUInt32LittleEndian(block[48..]);
        uint m13 = BinaryPrimitives.ReadUInt32LittleEndian(block[52..]);
        uint m14 = BinaryPrimitives.ReadUInt32LittleEndian(block[56..]);
        uint m15 = BinaryPrimitives.ReadUInt32LittleEndian(block[60..]);

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

        output[0] = s0 ^ s8;
        output[1] = s1 ^ s9;
        output[2] = s2 ^ s10;
        output[3] = s3 ^ s11;
        output[4] = s4 ^ s12;
        output[5] = s5 ^ s13;
        output[6] = s6 ^ s14;
        output[7] = s7 ^ s15;
        if (output.Length >= 16)
        {
            output[8] = s8 ^ cv[0];
            output[9] = s9 ^ cv[1];
            output[10] = s10 ^ cv[2];
            output[11] = s11 ^ cv[3];
            output[12] = s12 ^ cv[4];
            output[13] = s13 ^ cv[5];
            output[14] = s14 ^ cv[6];
            output[15] = s15 ^ cv[7];
        }
    }
}
