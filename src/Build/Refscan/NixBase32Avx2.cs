using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace TvixFuseBuild.Build.Refscan;

/// <summary>
/// The reference scanner's AVX2 classifier (NixHashSearcher's), on its own so that src/Kernels compiles the same code
/// into the NativeAOT tool's x86-64-v3 kernels library. The tables are NixBase32Avx512's.
/// </summary>
internal static unsafe class NixBase32Avx2
{
    /// <summary>As <see cref="NixBase32Avx512.Classify"/>, 32 bytes at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Classify(byte* p, int blocks, ulong* masks)
    {
        for (int k = 0; k < blocks; k++)
        {
            masks[k] = Classify32(Avx.LoadVector256(p + (64 * k))) | ((ulong)Classify32(Avx.LoadVector256(p + (64 * k) + 32)) << 32);
        }
    }

    // The tables from constants: crossgen2 precompiles nothing that passes or holds a struct with CoreLib vector fields,
    // and the constant tables are loaded once per loop anyway.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint Classify32(Vector256<byte> v)
    {
        var nibble = Vector256.Create((byte)0x0f);
        var low = Vector256.Create(
            NixBase32Avx512.LowNibbleClasses0, NixBase32Avx512.LowNibbleClasses1, NixBase32Avx512.LowNibbleClasses0, NixBase32Avx512.LowNibbleClasses1).AsByte();
        var high = Vector256.Create(
            NixBase32Avx512.HighNibbleClasses0, NixBase32Avx512.HighNibbleClasses1, NixBase32Avx512.HighNibbleClasses0, NixBase32Avx512.HighNibbleClasses1).AsByte();
        var lo = Avx2.Shuffle(low, v & nibble);
        var hi = Avx2.Shuffle(high, Avx2.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & nibble);
        return ~Vector256.Equals(lo & hi, Vector256<byte>.Zero).ExtractMostSignificantBits();
    }
}
