using System.Runtime.Intrinsics.X86;

namespace TvixFuseBuild.Castore;

/// <summary>
/// Whether the CPU reports every AVX-512 subset of x86-64-v4, asked with CPUID rather than Avx512F.IsSupported: this
/// code is precompiled for x86-64-v3, where asking the runtime about AVX-512 keeps the method out of the ReadyToRun
/// image. Only then may TvixFuseBuild.Avx512 be called (it is precompiled for x86-64-v4, and the runtime JIT-compiles
/// all of it on a machine without); its own IsSupported then gives the runtime's answer (which may still be no:
/// DOTNET_EnableAVX512=0, an OS that does not save the AVX-512 registers).
/// </summary>
internal static class Avx512Cpu
{
    public static readonly bool Present = Detect();

    private static bool Detect()
    {
        if (!X86Base.IsSupported || X86Base.CpuId(0, 0).Eax < 7)
        {
            return false;
        }

        // Leaf 7, EBX: AVX512F (16), DQ (17), CD (28), BW (30), VL (31).
        const int Required = (1 << 16) | (1 << 17) | (1 << 28) | (1 << 30) | (1 << 31);
        return (X86Base.CpuId(7, 0).Ebx & Required) == Required;
    }
}
