using TvixFuseBuild.Build.Refscan;
using TvixFuseBuild.Castore.Tests;

namespace TvixFuseBuild.Build.Tests.Refscan;

/// <summary>
/// The reference scan without the JIT: the Build assembly is precompiled (ReadyToRun, x86-64-v3, see Build.csproj; the
/// AVX-512 classifier in TvixFuseBuild.Avx512 for x86-64-v4), so a build's first output scan runs precompiled code. Each case runs Blake3JitProbe's refscan mode in a fresh child
/// process (the test host's own JIT must not count): it compiles needles, scans 1 MiB through the import's observer
/// (the build's path, in two pieces with a needle across their boundary) and as a file with ReferenceScanner.ScanPath
/// (the refscan command's path), and lists the methods the JIT compiled meanwhile.
/// </summary>
public sealed class RefscanJitTests
{
    private const string RefscanNamespace = "TvixFuseBuild.Build.Refscan.";

    // DOTNET_EnableAVX512=0 stands for a machine without AVX-512 (see Castore.Tests' Blake3JitTests): only
    // TvixFuseBuild.Avx512's IsSupported, asked because the CPU still reports AVX-512, may be JIT-compiled then.
    [Theory]
    [InlineData(nameof(RefscanEngine.NixHash), "")]
    [InlineData(nameof(RefscanEngine.General), "")]
    [InlineData(nameof(RefscanEngine.NixHash), "DOTNET_EnableAVX512=0")]
    public void FirstScanInAFreshProcessCompilesNothingOfTheRefscanCode(string engine, string environment)
    {
        var output = RunProbe(engine, environment);
        // "done" comes after the JIT event of the probe's closing marker method arrived: the listener saw the JIT.
        Assert.Contains("done", output);
        Assert.Contains($"engine {engine}", output);
        Assert.Contains("import 0,2,4", output);
        Assert.Contains("path 0,2,4", output);

        var refscan = output.Where(l => l.StartsWith("jit " + RefscanNamespace, StringComparison.Ordinal)).Select(l => l[4..]).ToList();
#if DEBUG
        // Debug builds are not precompiled: the same count shows the JIT at work, so the probe is known to see it.
        Assert.NotEmpty(refscan);
#else
        if (environment.Length > 0)
        {
            refscan.RemoveAll(m => m.StartsWith(RefscanNamespace + "NixBase32Avx512.get_IsSupported ", StringComparison.Ordinal));
        }

        Assert.True(
            refscan.Count == 0,
            $"the JIT compiled {refscan.Count} refscan methods during the first scan (is the ReadyToRun step of Build missing?): " +
            string.Join(", ", refscan));
#endif
    }

    [Theory]
    [InlineData(nameof(RefscanEngine.NixHash), "DOTNET_EnableAVX512=0")]
    [InlineData(nameof(RefscanEngine.NixHash), "DOTNET_EnableAVX2=0")]
    public void ResultsAreTheSameWhateverTheRuntimeMayUse(string engine, string environment)
    {
        var output = RunProbe(engine, environment);
        Assert.Contains("done", output);
        Assert.Contains("import 0,2,4", output);
        Assert.Contains("path 0,2,4", output);
    }

    private static List<string> RunProbe(string engine, string environment = "")
    {
        string directory = Directory.CreateTempSubdirectory("refscan-jit-").FullName;
        try
        {
            return JitProbe.Run(["refscan", directory, engine], environment);
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
