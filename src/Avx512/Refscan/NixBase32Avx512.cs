using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace TvixFuseBuild.Build.Refscan;

/// <summary>
/// The reference scanner's AVX-512BW classifier (Build's NixHashSearcher), in this assembly so that it is precompiled
/// for AVX-512 while Build is precompiled for AVX2. Call only where Avx512Cpu.Present holds: on a machine without
/// AVX-512 the runtime JIT-compiles everything in this assembly.
/// </summary>
public static unsafe class NixBase32Avx512
{
    // A byte is in the nixbase32 alphabet when the classes of its low nibble and of its high nibble share a bit (one
    // pshufb lookup each): bit 1 = '0'..'9' (high nibble 3), bit 2 = 'a'..'n' except 'e' (high nibble 6), bit 4 =
    // 'p'..'z' except 't' and 'u' (high nibble 7). The 16-entry tables as two little-endian words, low nibble:
    // 5 7 7 7 3 1 7 7 7 7 6 2 2 2 2 0, high nibble: 0 0 0 1 0 0 2 4 0 0 0 0 0 0 0 0. Built from scalars, not with
    // Vector512.Create(Vector128): crossgen2 precompiles no method calling a CoreLib helper with a vector argument.
    public const ulong LowNibbleClasses0 = 0x0707010307070705;
    public const ulong LowNibbleClasses1 = 0x0002020202060707;
    public const ulong HighNibbleClasses0 = 0x0402000001000000;
    public const ulong HighNibbleClasses1 = 0;

    /// <summary>Whether the runtime runs AVX-512BW here (a constant in the precompiled code).</summary>
    public static bool IsSupported => Avx512BW.IsSupported;

    /// <summary>
    /// Classifies <paramref name="blocks"/> 64-byte blocks at <paramref name="p"/>: bit j of
    /// <paramref name="masks"/>[k] is set when byte 64k + j is in the alphabet.
    /// </summary>
    public static void Classify(byte* p, int blocks, ulong* masks)
    {
        var nibble = Vector512.Create((byte)0x0f);
        var low = Vector512.Create(
            LowNibbleClasses0, LowNibbleClasses1, LowNibbleClasses0, LowNibbleClasses1, LowNibbleClasses0, LowNibbleClasses1, LowNibbleClasses0, LowNibbleClasses1).AsByte();
        var high = Vector512.Create(
            HighNibbleClasses0, HighNibbleClasses1, HighNibbleClasses0, HighNibbleClasses1, HighNibbleClasses0, HighNibbleClasses1, HighNibbleClasses0, HighNibbleClasses1).AsByte();
        for (int k = 0; k < blocks; k++)
        {
            var v = Avx512BW.LoadVector512(p + (64 * k));
            var lo = Avx512BW.Shuffle(low, v & nibble);
            var hi = Avx512BW.Shuffle(high, Avx512BW.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & nibble);
            masks[k] = ~Vector512.Equals(lo & hi, Vector512<byte>.Zero).ExtractMostSignificantBits();
        }
    }
}
