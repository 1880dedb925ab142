using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Castore;

/// <summary>
/// The SIMD kernels as a NativeAOT shared library (src/Kernels), for a process whose own code runs them narrower than
/// the CPU could: the NativeAOT tool, which ILC compiles for the x86-64 baseline (no 256- or 512-bit vectors; ILC
/// makes no run-time check for AVX2 or AVX-512). The library for the widest level the CPU and the kernel support lies
/// next to the executable (tvix-kernels-x86-64-v4.so, -v3.so) and is loaded at the first kernel call once the process
/// has pushed <see cref="LoadAfterBytes"/> through its own narrow kernels: loading it and starting its runtime cost
/// about 0.7 ms of CPU, what the 128-bit kernels take for ~1.3 MB, so a process that hashes and scans little never
/// pays it and one that does more wins it back within a few MiB (docs/benchmarks.md, "BLAKE3 in the NativeAOT tool").
/// A framework-dependent process (the JIT or ReadyToRun code already runs at the CPU's width) never looks for it.
/// <para>
/// A library is loaded only where this machine runs all of its level's instructions, the kernel's saved register
/// state included: the runtime inside it would stop the whole process at its first call otherwise.
/// <c>TVIX_FUSE_BUILD_SIMD_KERNELS=off</c> never loads one (for comparisons); <c>=required</c> loads it at the first
/// kernel call whatever the size, and makes a missing or unloadable library an error instead of the narrow kernels.
/// </para>
/// </summary>
internal static unsafe class SimdKernelLibrary
{
    public const string Variable = "TVIX_FUSE_BUILD_SIMD_KERNELS";

    /// <summary>The ABI of the library's entry points this code calls (src/Kernels/KernelExports.cs).</summary>
    public const int AbiVersion = 1;

    /// <summary>How many bytes the process hashes or scans with its own kernels before it loads the library.</summary>
    public const long LoadAfterBytes = 2 << 20;

    private static readonly Choice s_choice = Choose();
    private static long s_narrowBytes;
    private static Loaded? s_loaded;
    private static int s_state; // 0: not tried, 1: loaded, 2: failed or not wanted

    /// <summary>The x86-64 level of the library this process would load (3 or 4), or 0 for none.</summary>
    public static int Level => s_choice.Level;

    /// <summary>
    /// BLAKE3's hash_many of the library, once the process has done enough narrow work to load it (counting
    /// <paramref name="bytes"/>, this call's input), else null.
    /// </summary>
    public static delegate* unmanaged<byte*, nuint, int, uint*, ulong, int, uint, uint, uint, byte*, void> Blake3HashMany(nuint bytes) =>
        Ready(bytes) is { } loaded ? loaded.HashMany : null;

    /// <summary>The library's nixbase32 classifier, on the same terms as <see cref="Blake3HashMany"/>.</summary>
    public static delegate* unmanaged<byte*, int, ulong*, void> NixBase32Classify(nuint bytes) =>
        Ready(bytes) is { } loaded ? loaded.Classify : null;

    /// <summary>
    /// Where <see cref="Variable"/> is set: throws the error its value leads to now rather than at the first kernel
    /// call, and with <c>required</c> loads the library now. Nothing to do (and nothing looked at) where it is unset.
    /// </summary>
    public static void CheckSetting()
    {
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable(Variable)))
        {
            return;
        }

        if (s_choice.Error is { } error)
        {
            throw new SimdKernelLibraryException(error);
        }

        if (s_choice.Required)
        {
            Ready(0);
        }
    }

    private static Loaded? Ready(nuint bytes)
    {
        int state = Volatile.Read(ref s_state);
        if (state == 1)
        {
            return s_loaded;
        }

        if (state == 2 || s_choice.Level == 0)
        {
            return s_choice.Error is { } error ? throw new SimdKernelLibraryException(error) : null;
        }

        if (!s_choice.Required && Interlocked.Add(ref s_narrowBytes, (long)bytes) < LoadAfterBytes)
        {
            return null;
        }

        lock (s_choice)
        {
            if (s_state == 0)
            {
                try
                {
                    if (AddressSpaceShortfall() is { } shortfall)
                    {
                        throw new SimdKernelLibraryException(shortfall);
                    }

                    s_loaded = Load(s_choice.Path!, s_choice.Level);
                    Volatile.Write(ref s_state, 1);
                }
                catch (SimdKernelLibraryException) when (!s_choice.Required)
                {
                    Volatile.Write(ref s_state, 2);
                }
            }
        }

        return s_loaded;
    }

    /// <summary>
    /// Loads the library at <paramref name="path"/>, which must be compiled for <paramref name="level"/>, and binds its
    /// entry points; throws <see cref="SimdKernelLibraryException"/> when it cannot (the caller checked the CPU).
    /// </summary>
    public static Loaded Load(string path, int level)
    {
        if (!NativeLibrary.TryLoad(path, out nint handle))
        {
            throw new SimdKernelLibraryException($"cannot load the SIMD kernels library {path}");
        }

        var abi = (delegate* unmanaged<int>)Export(handle, path, "tvix_kernels_abi_version");
        var degree = (delegate* unmanaged<int>)Export(handle, path, "tvix_kernels_blake3_degree");
        if (abi() != AbiVersion)
        {
            throw new SimdKernelLibraryException($"the SIMD kernels library {path} has ABI version {abi()}, not {AbiVersion}");
        }

        int expected = level >= 4 ? 16 : 8;
        if (degree() != expected)
        {
            throw new SimdKernelLibraryException($"the SIMD kernels library {path} hashes {degree()} inputs at once, not {expected}: not compiled for x86-64-v{level}");
        }

        return new Loaded(
            (delegate* unmanaged<byte*, nuint, int, uint*, ulong, int, uint, uint, uint, byte*, void>)Export(handle, path, "tvix_kernels_blake3_hash_many"),
            (delegate* unmanaged<byte*, int, ulong*, void>)Export(handle, path, "tvix_kernels_nixbase32_classify"));
    }

    /// <summary>
    /// Why the library's runtime would not fit in what the address-space limit (<c>ulimit -v</c>) leaves, or null. Its
    /// heap and bookkeeping take ~90 MB of address space (measured); a runtime that cannot reserve them stops the whole
    /// process, so the library is not loaded without room to spare.
    /// </summary>
    private static string? AddressSpaceShortfall()
    {
        const ulong Needed = 256UL << 20;
        Libc.RLimit limit;
        if (Libc.getrlimit(Libc.RLIMIT_AS, &limit) != 0 || limit.Cur == ulong.MaxValue)
        {
            return null;
        }

        ulong used = 0;
        try
        {
            string statm = File.ReadAllText("/proc/self/statm");
            used = ulong.Parse(statm.AsSpan(0, statm.IndexOf(' ')), System.Globalization.CultureInfo.InvariantCulture) * (ulong)Environment.SystemPageSize;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            // Unknown use: only the limit itself can be compared.
        }

        return limit.Cur >= used && limit.Cur - used >= Needed ? null
            : $"the address-space limit (ulimit -v) leaves {(limit.Cur > used ? (limit.Cur - used) >> 20 : 0)} MiB; the SIMD kernels library needs {Needed >> 20} MiB";
    }

    private static nint Export(nint handle, string path, string name) =>
        NativeLibrary.TryGetExport(handle, name, out nint address)
            ? address
            : throw new SimdKernelLibraryException($"the SIMD kernels library {path} has no entry point {name}");

    /// <summary>The library's file name for an x86-64 level.</summary>
    public static string FileName(int level) => $"tvix-kernels-x86-64-v{level}.so";

    private static Choice Choose()
    {
        string? mode = Environment.GetEnvironmentVariable(Variable);
        if (mode == "off")
        {
            return new Choice(0, null, false, null);
        }

        bool required = mode == "required";
        if (!required && !string.IsNullOrEmpty(mode))
        {
            return new Choice(0, null, false, $"{Variable} is '{mode}'; it takes 'off' or 'required' (or is unset)");
        }

        // Only where this process's own kernels are narrower than the CPU's: the 256-bit ones cover AVX2 machines, and
        // the AVX-512 ones live in TvixFuseBuild.Avx512 (precompiled for it) in a framework-dependent process.
        int cpu = X86Level();
        bool ownWidth = cpu >= 4 ? Hashing.Blake3Avx512.IsSupported : Vector256.IsHardwareAccelerated && Avx2.IsSupported;
        if (cpu >= 3 && !ownWidth)
        {
            for (int level = cpu; level >= 3; level--)
            {
                string path = Path.Combine(AppContext.BaseDirectory, FileName(level));
                if (File.Exists(path))
                {
                    return new Choice(level, path, required, null);
                }
            }
        }

        string? error = !required ? null
            : cpu < 3 ? $"{Variable}=required, but this machine lacks the x86-64-v3 instructions (or their saved state) the SIMD kernels library needs"
            : ownWidth ? $"{Variable}=required, but this process runs its own kernels at the CPU's width and loads no library"
            : cpu == 3 ? $"{Variable}=required, but {FileName(3)} is not in {AppContext.BaseDirectory}"
            : $"{Variable}=required, but neither {FileName(cpu)} nor {FileName(3)} is in {AppContext.BaseDirectory}";
        return new Choice(0, null, false, error);
    }

    /// <summary>
    /// The x86-64 level (1 to 4) whose instructions this CPU has and whose registers the kernel saves for user space:
    /// CPUID for the instructions, the kernel's enabled XSAVE components for the registers (arch_prctl, or where that
    /// call is missing, the flags the kernel lists in /proc/cpuinfo, which it clears for state it does not save).
    /// </summary>
    public static int X86Level()
    {
        if (!X86Base.IsSupported || X86Base.CpuId(0, 0).Eax < 7)
        {
            return 1;
        }

        var leaf1 = X86Base.CpuId(1, 0);
        var leaf7 = X86Base.CpuId(7, 0);
        var extended = X86Base.CpuId(unchecked((int)0x80000001), 0);

        // Leaf 1 ECX: FMA 12, MOVBE 22, OSXSAVE 27, AVX 28, F16C 29. Leaf 7 EBX: BMI1 3, AVX2 5, BMI2 8.
        // 0x80000001 ECX: LZCNT 5.
        const int Leaf1 = (1 << 12) | (1 << 22) | (1 << 27) | (1 << 28) | (1 << 29);
        const int Leaf7 = (1 << 3) | (1 << 5) | (1 << 8);
        if ((leaf1.Ecx & Leaf1) != Leaf1 || (leaf7.Ebx & Leaf7) != Leaf7 || (extended.Ecx & (1 << 5)) == 0)
        {
            return 2;
        }

        // Leaf 7 EBX: AVX512F 16, DQ 17, CD 28, BW 30, VL 31.
        const int Avx512 = (1 << 16) | (1 << 17) | (1 << 28) | (1 << 30) | unchecked((int)(1u << 31));
        bool avx512 = (leaf7.Ebx & Avx512) == Avx512;

        if (Libc.GetXsaveUserFeatures(out ulong xsave) == 0)
        {
            // SSE 1, AVX 2; AVX-512: opmask 5, ZMM_Hi256 6, Hi16_ZMM 7.
            if ((xsave & 0x6) != 0x6)
            {
                return 2;
            }

            return avx512 && (xsave & 0xE0) == 0xE0 ? 4 : 3;
        }

        string flags = CpuInfoFlags();
        if (!HasFlags(flags, "avx2", "fma", "bmi1", "bmi2", "movbe", "abm", "f16c"))
        {
            return 2;
        }

        return avx512 && HasFlags(flags, "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl") ? 4 : 3;
    }

    /// <summary>The flags line of the first processor in /proc/cpuinfo, padded with spaces; empty when unreadable.</summary>
    private static string CpuInfoFlags()
    {
        try
        {
            using var reader = new StreamReader("/proc/cpuinfo");
            while (reader.ReadLine() is { } line && line.Length > 0)
            {
                if (line.StartsWith("flags", StringComparison.Ordinal) && line.IndexOf(':') is int colon and >= 0)
                {
                    return " " + line[(colon + 1)..].Trim() + " ";
                }
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        return string.Empty;
    }

    private static bool HasFlags(string flags, params ReadOnlySpan<string> names)
    {
        foreach (string name in names)
        {
            if (!flags.Contains($" {name} ", StringComparison.Ordinal))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>A loaded library's entry points.</summary>
    internal sealed class Loaded(
        delegate* unmanaged<byte*, nuint, int, uint*, ulong, int, uint, uint, uint, byte*, void> hashMany,
        delegate* unmanaged<byte*, int, ulong*, void> classify)
    {
        public readonly delegate* unmanaged<byte*, nuint, int, uint*, ulong, int, uint, uint, uint, byte*, void> HashMany = hashMany;

        public readonly delegate* unmanaged<byte*, int, ulong*, void> Classify = classify;
    }

    /// <summary>What the process will load, if anything; <paramref name="Error"/> is thrown at the first kernel call.</summary>
    private sealed record Choice(int Level, string? Path, bool Required, string? Error);
}

/// <summary>The SIMD kernels library cannot be used (missing, unloadable, or not what its name says).</summary>
internal sealed class SimdKernelLibraryException(string message) : CastoreException(message);
