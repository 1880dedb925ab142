using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace TvixFuseBuild.Castore.Hashing;

/// <summary>
/// BLAKE3's 16-way compression for Castore's dispatch (Blake3Backend), in this assembly so that it is precompiled for
/// AVX-512 while Castore is precompiled for AVX2. Call only where Avx512Cpu.Present holds: on a machine without
/// AVX-512 the runtime JIT-compiles everything in this assembly.
/// </summary>
public static unsafe class Blake3Avx512
{
    /// <summary>Whether the runtime runs AVX-512 and 512-bit vectors well here (a constant in the precompiled code).</summary>
    public static bool IsSupported => Avx512F.IsSupported && Avx512BW.IsSupported && Vector512.IsHardwareAccelerated;

    /// <summary>
    /// Compresses <paramref name="count"/> (1 to 16) inputs of <paramref name="blocks"/> blocks each, lying back to back
    /// at <paramref name="input"/>, and writes their 32-byte chaining values to <paramref name="output"/>;
    /// <paramref name="key"/> points at eight words. As Castore's Blake3SimdKernel.Hash, which this instantiates.
    /// </summary>
    public static void HashMany(
        byte* input, int count, int blocks, uint* key, ulong counter, bool incrementCounter, uint flags, uint flagsStart, uint flagsEnd, byte* output) =>
        Blake3SimdKernel.Hash<Blake3Simd512, Blake3Vec512>(
            input, count, blocks, in *(CvWords*)key, counter, incrementCounter, flags, flagsStart, flagsEnd, output);
}

/// <summary>The constants the shared kernel source uses (Castore's public Blake3 class is not visible here).</summary>
internal static class Blake3
{
    internal const int BlockLength = 64;
    internal const int OutLength = 32;
}
