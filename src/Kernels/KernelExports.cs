using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TvixFuseBuild.Build.Refscan;
using TvixFuseBuild.Castore.Hashing;

namespace TvixFuseBuild.Kernels;

/// <summary>
/// The library's C entry points (SimdKernelLibrary in Castore is the caller). Plain C types only: byte counts and
/// flags as integers, no bool, no managed object, nothing that allocates; the kernels are the same sources as the
/// managed ones, compiled here for this library's x86-64 level.
/// </summary>
internal static unsafe class KernelExports
{
    /// <summary>The ABI version of these entry points; the caller refuses a library with another.</summary>
    private const int AbiVersion = 1;

    /// <summary>
    /// The widest BLAKE3 kernel compiled in (8 or 16 inputs at once), or 0 when this library's level is not what its
    /// name says (ILC treated the vectors as software): the caller then leaves the library alone.
    /// </summary>
    [UnmanagedCallersOnly(EntryPoint = "tvix_kernels_blake3_degree")]
    private static int Blake3Degree() =>
        Blake3Avx512.IsSupported && Blake3Simd256.IsSupported ? 16 : Blake3Simd256.IsSupported && System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated ? 8 : 0;

    [UnmanagedCallersOnly(EntryPoint = "tvix_kernels_abi_version")]
    private static int Version() => AbiVersion;

    /// <summary>
    /// BLAKE3's hash_many: <paramref name="count"/> (at least 2) inputs of <paramref name="blocks"/> whole blocks each,
    /// back to back at <paramref name="input"/>, one 32-byte chaining value each to <paramref name="output"/>; input i
    /// gets counter + i when <paramref name="incrementCounter"/> is non-zero. As Castore's Blake3Backend.HashMany.
    /// </summary>
    [UnmanagedCallersOnly(EntryPoint = "tvix_kernels_blake3_hash_many")]
    private static void HashMany(
        byte* input, nuint count, int blocks, uint* key, ulong counter, int incrementCounter, uint flags, uint flagsStart, uint flagsEnd, byte* output)
    {
        bool increment = incrementCounter != 0;
        nuint stride = (nuint)blocks * Blake3.BlockLength;
        ref readonly CvWords keyWords = ref *(CvWords*)key;
        while (count > 0)
        {
            // Full passes of the widest kernel; a remainder goes through the narrowest kernel that holds it, with spare lanes.
            int n = (int)Math.Min(count, Blake3Avx512.IsSupported ? 16u : 8u);
            if (n > 8)
            {
                Blake3SimdKernel.Hash<Blake3Simd512, Blake3Vec512>(input, n, blocks, in keyWords, counter, increment, flags, flagsStart, flagsEnd, output);
            }
            else if (n > 4)
            {
                Blake3SimdKernel.Hash<Blake3Simd256, Blake3Vec256>(input, n, blocks, in keyWords, counter, increment, flags, flagsStart, flagsEnd, output);
            }
            else
            {
                Blake3SimdKernel.Hash<Blake3Simd128, Blake3Vec128>(input, n, blocks, in keyWords, counter, increment, flags, flagsStart, flagsEnd, output);
            }

            input += (nuint)n * stride;
            output += n * Blake3.OutLength;
            counter += increment ? (ulong)n : 0;
            count -= (nuint)n;
        }
    }

    /// <summary>The nixbase32 classifier: bit j of <paramref name="masks"/>[k] is set when byte 64k + j is in the alphabet.</summary>
    [UnmanagedCallersOnly(EntryPoint = "tvix_kernels_nixbase32_classify")]
    [SkipLocalsInit]
    private static void Classify(byte* p, int blocks, ulong* masks)
    {
        if (NixBase32Avx512.IsSupported)
        {
            NixBase32Avx512.Classify(p, blocks, masks);
        }
        else
        {
            NixBase32Avx2.Classify(p, blocks, masks);
        }
    }
}
