using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace TvixFuseBuild.Castore.Hashing;

/// <summary>
/// How wide the compression runs: how many chunks (or parent nodes) <see cref="Blake3Backend.HashMany"/> compresses
/// at once. Every level computes the same function; tests force each one to check them all against the vectors.
/// </summary>
internal enum Blake3Level
{
    /// <summary>One block at a time in general-purpose registers.</summary>
    Scalar = 0,

    /// <summary>4 inputs at once in Vector128 (SSSE3); single blocks as Vector128 rows.</summary>
    Vector128 = 1,

    /// <summary>8 inputs at once in Vector256 (AVX2), then as <see cref="Vector128"/>.</summary>
    Vector256 = 2,

    /// <summary>16 inputs at once in Vector512 (AVX-512F), then as <see cref="Vector256"/>.</summary>
    Vector512 = 3,
}

/// <summary>Picks the implementation for a level and runs the many-inputs and single-block compressions.</summary>
internal static unsafe class Blake3Backend
{
    /// <summary>The widest level this process's own code runs well (the runtime decides whether 512-bit vectors are worth it).</summary>
    public static readonly Blake3Level Own = Detect();

    /// <summary>
    /// The widest level this process runs: <see cref="Own"/>, or, where its own code has no 256-bit vectors (the
    /// NativeAOT tool), the level of the SIMD kernels library for this CPU (<see cref="SimdKernelLibrary"/>; until it is
    /// loaded the wider levels run as <see cref="Own"/>).
    /// </summary>
    public static readonly Blake3Level Best = Own >= Blake3Level.Vector256 ? Own : SimdKernelLibrary.Level switch
    {
        >= 4 => Blake3Level.Vector512,
        3 => Blake3Level.Vector256,
        _ => Own,
    };

    /// <summary>The most inputs any level compresses at once.</summary>
    public const int MaxDegree = 16;

    public static bool IsSupported(Blake3Level level) => level <= Best || OwnSupports(level);

    private static bool OwnSupports(Blake3Level level) => level switch
    {
        Blake3Level.Scalar => true,
        Blake3Level.Vector128 => Blake3Simd128.IsSupported,
        Blake3Level.Vector256 => Blake3Simd256.IsSupported && Blake3Simd128.IsSupported,
        // TvixFuseBuild.Avx512 is only touched where the CPU has AVX-512 (see Avx512Cpu).
        Blake3Level.Vector512 => Avx512Cpu.Present && Blake3Avx512.IsSupported && Blake3Simd256.IsSupported && Blake3Simd128.IsSupported,
        _ => false,
    };

    /// <summary>Throws when <paramref name="level"/> cannot run on this machine (a test forcing it would crash otherwise).</summary>
    public static Blake3Level Validate(Blake3Level level)
    {
        if (!IsSupported(level))
        {
            throw new PlatformNotSupportedException($"BLAKE3 level {level} is not supported on this machine");
        }

        return level;
    }

    public static int Degree(Blake3Level level) => level switch
    {
        Blake3Level.Vector512 => 16,
        Blake3Level.Vector256 => 8,
        Blake3Level.Vector128 => 4,
        _ => 1,
    };

    private static Blake3Level Detect()
    {
        if (OwnSupports(Blake3Level.Vector512))
        {
            return Blake3Level.Vector512;
        }

        if (Vector256.IsHardwareAccelerated && OwnSupports(Blake3Level.Vector256))
        {
            return Blake3Level.Vector256;
        }

        return OwnSupports(Blake3Level.Vector128) ? Blake3Level.Vector128 : Blake3Level.Scalar;
    }

    /// <summary>
    /// Compresses <paramref name="count"/> inputs that lie back to back at <paramref name="input"/>, each
    /// <paramref name="blocks"/> full blocks long (whole chunks: 16 blocks; parent nodes: 1 block), and writes one
    /// 32-byte chaining value per input to <paramref name="output"/>. Input i gets counter + i when
    /// <paramref name="incrementCounter"/> (chunks), else counter (parents).
    /// </summary>
    public static void HashMany(
        byte* input, nuint count, int blocks, ref readonly CvWords key, ulong counter, bool incrementCounter,
        uint flags, uint flagsStart, uint flagsEnd, byte* output, Blake3Level level)
    {
        nuint stride = (nuint)blocks * Blake3.BlockLength;
        if (level > Own)
        {
            if (count > 1 && HashManyInLibrary(input, count, blocks, in key, counter, incrementCounter, flags, flagsStart, flagsEnd, output))
            {
                return;
            }

            level = Own;
        }

        int degree = Degree(level);
        while (count > 1 && level > Blake3Level.Scalar)
        {
            // Full passes of the widest kernel; a remainder of two or more goes through the narrowest kernel that
            // holds it all, with spare lanes.
            int lanes = count >= (nuint)degree ? degree : count <= 4 ? 4 : count <= 8 ? 8 : 16;
            int n = (int)Math.Min(count, (nuint)lanes);
            switch (lanes)
            {
                case 16:
                    // In TvixFuseBuild.Avx512, precompiled for AVX-512 (this assembly is precompiled for AVX2).
                    CvWords key16 = key;
                    Blake3Avx512.HashMany(input, n, blocks, (uint*)&key16, counter, incrementCounter, flags, flagsStart, flagsEnd, output);
                    break;
                case 8:
                    Blake3SimdKernel.Hash<Blake3Simd256, Blake3Vec256>(input, n, blocks, in key, counter, incrementCounter, flags, flagsStart, flagsEnd, output);
                    break;
                default:
                    Blake3SimdKernel.Hash<Blake3Simd128, Blake3Vec128>(input, n, blocks, in key, counter, incrementCounter, flags, flagsStart, flagsEnd, output);
                    break;
            }

            input += (nuint)n * stride;
            output += n * Blake3.OutLength;
            counter += incrementCounter ? (ulong)n : 0;
            count -= (nuint)n;
        }

        for (; count > 0; count--)
        {
            HashOne(input, blocks, in key, counter, flags, flagsStart, flagsEnd, output, level);
            input += stride;
            output += Blake3.OutLength;
            counter += incrementCounter ? 1ul : 0;
        }
    }

    // Apart, so that only this method holds the unmanaged call (which ReadyToRun may leave to the JIT); it runs only
    // in the NativeAOT tool.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static bool HashManyInLibrary(
        byte* input, nuint count, int blocks, ref readonly CvWords key, ulong counter, bool incrementCounter,
        uint flags, uint flagsStart, uint flagsEnd, byte* output)
    {
        var library = SimdKernelLibrary.Blake3HashMany(count * (nuint)blocks * Blake3.BlockLength);
        if (library == null)
        {
            return false;
        }

        CvWords words = key;
        library(input, count, blocks, (uint*)&words, counter, incrementCounter ? 1 : 0, flags, flagsStart, flagsEnd, output);
        return true;
    }

    private static void HashOne(
        byte* input, int blocks, ref readonly CvWords key, ulong counter, uint flags, uint flagsStart, uint flagsEnd, byte* output, Blake3Level level)
    {
        CvWords cv = key;
        uint blockFlags = flags | flagsStart;
        for (int b = 0; b < blocks; b++)
        {
            if (b + 1 == blocks)
            {
                blockFlags |= flagsEnd;
            }

            CompressInPlace(ref cv, input + (b * Blake3.BlockLength), Blake3.BlockLength, counter, blockFlags, level);
            blockFlags = flags;
        }

        StoreCv(in cv, output);
    }

    /// <summary>Compresses one block into <paramref name="cv"/> (the first half of the output).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void CompressInPlace(ref CvWords cv, byte* block, uint blockLength, ulong counter, uint flags, Blake3Level level)
    {
        if (level >= Blake3Level.Vector128)
        {
            Blake3Simd128.CompressInPlace(ref cv, block, blockLength, counter, flags);
        }
        else
        {
            Blake3Compress.CompressInPlace(ref cv, block, blockLength, counter, flags);
        }
    }

    /// <summary>Compresses one block and writes all 64 output bytes (extended output).</summary>
    public static void CompressXof(ref readonly CvWords cv, byte* block, uint blockLength, ulong counter, uint flags, byte* output, Blake3Level level)
    {
        if (level >= Blake3Level.Vector128)
        {
            Blake3Simd128.CompressXof(in cv, block, blockLength, counter, flags, output);
        }
        else
        {
            Blake3Compress.CompressXof(in cv, block, blockLength, counter, flags, output);
        }
    }

    /// <summary>Chaining values are stored as little-endian bytes, which on every platform .NET runs on is memory order.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void StoreCv(ref readonly CvWords cv, byte* output) =>
        Unsafe.CopyBlockUnaligned(ref *output, ref Unsafe.As<CvWords, byte>(ref Unsafe.AsRef(in cv)), Blake3.OutLength);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void LoadCv(byte* input, out CvWords cv)
    {
        Unsafe.SkipInit(out cv);
        Unsafe.CopyBlockUnaligned(ref Unsafe.As<CvWords, byte>(ref cv), ref *input, Blake3.OutLength);
    }
}
