using TvixFuseBuild.Castore.Hashing;

namespace TvixFuseBuild.Castore.Tests;

/// <summary>
/// BLAKE3 without the JIT: the kernels are precompiled (ReadyToRun: Castore for x86-64-v3, the AVX-512 kernel in
/// TvixFuseBuild.Avx512 for x86-64-v4), so the first hash in a process runs at full speed with AVX-512 and with AVX2
/// only, and the precompiled images still hash correctly where the runtime may not use AVX-512 or AVX2. Each case runs Blake3JitProbe in a fresh child process: the test host's own JIT must not count.
/// </summary>
public sealed class Blake3JitTests
{
    private const string HashingNamespace = "TvixFuseBuild.Castore.Hashing.";

    // DOTNET_EnableAVX512=0 stands for a machine without AVX-512: the runtime then discards TvixFuseBuild.Avx512's
    // precompiled code (x86-64-v4) and keeps Castore's (x86-64-v3). Here the CPU still reports AVX-512, so the dispatch
    // asks TvixFuseBuild.Avx512 whether the runtime may use it, and that one property is JIT-compiled to say no; on a
    // real AVX2 machine the CPU says no first and the assembly is never touched.
    [Theory]
    [InlineData("", "Vector512")]
    [InlineData("DOTNET_EnableAVX512=0", "Vector256")]
    public void FirstHashInAFreshProcessCompilesNothingOfTheHashingCode(string environment, string level)
    {
        level = ExpectedLevel(level);
        var output = RunProbe([], environment);
        var jitted = output.Where(l => l.StartsWith("jit ", StringComparison.Ordinal)).Select(l => l[4..]).ToList();
        // "done" comes after the JIT event of the probe's closing marker method arrived: the listener saw the JIT.
        Assert.Contains("done", output);
        Assert.Contains($"level {level}", output);
        Assert.Contains($"digest {Blake3.Hash(OneMiB()).ToHex()}", output);

        var hashing = jitted.Where(m => m.StartsWith(HashingNamespace, StringComparison.Ordinal)).ToList();
#if DEBUG
        // Debug builds are not precompiled: the same count shows the JIT at work, so the probe is known to see it.
        Assert.NotEmpty(hashing);
#else
        if (environment.Length > 0)
        {
            hashing.RemoveAll(m => m.StartsWith(HashingNamespace + "Blake3Avx512.get_IsSupported ", StringComparison.Ordinal));
        }

        Assert.True(
            hashing.Count == 0,
            $"the JIT compiled {hashing.Count} BLAKE3 methods during the first hash (is the ReadyToRun step of Castore or Avx512 missing?): " +
            string.Join(", ", hashing));
#endif
    }

    [Theory]
    [InlineData("", "Vector512")]
    [InlineData("DOTNET_EnableAVX512=0", "Vector256")]
    [InlineData("DOTNET_EnableAVX2=0", "Vector128")]
    public void VectorsMatchWhateverTheRuntimeMayUse(string environment, string level)
    {
        level = ExpectedLevel(level);
        string vectors = Path.Combine(AppContext.BaseDirectory, "vectors", "blake3.json");
        var output = RunProbe(["vectors", vectors], environment);
        Assert.Contains($"level {level}", output);
        Assert.Contains(output, l => l.StartsWith("checked ", StringComparison.Ordinal) && int.Parse(l[8..]) >= 105);
    }

    private static string ExpectedLevel(string level) =>
        level == "Vector512" && !System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated
            ? System.Runtime.Intrinsics.X86.Avx2.IsSupported ? "Vector256" : "Vector128"
            : level;

    private static byte[] OneMiB()
    {
        var data = new byte[1 << 20];
        for (int i = 0; i < data.Length; i++)
        {
            data[i] = (byte)(i % 251);
        }

        return data;
    }

    private static List<string> RunProbe(string[] arguments, string environment = "") => JitProbe.Run(arguments, environment);
}
