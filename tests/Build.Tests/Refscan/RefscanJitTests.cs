using System.Diagnostics;
using TvixFuseBuild.Build.Refscan;

namespace TvixFuseBuild.Build.Tests.Refscan;

/// <summary>
/// The reference scan without the JIT: the Build assembly is precompiled (ReadyToRun, x86-64-v4, see Build.csproj), so
/// a build's first output scan runs precompiled code. Each case runs Blake3JitProbe's refscan mode in a fresh child
/// process (the test host's own JIT must not count): it compiles needles, scans 1 MiB through the import's observer
/// (the build's path, in two pieces with a needle across their boundary) and as a file with ReferenceScanner.ScanPath
/// (the refscan command's path), and lists the methods the JIT compiled meanwhile.
/// </summary>
public sealed class RefscanJitTests
{
    private const string RefscanNamespace = "TvixFuseBuild.Build.Refscan.";

    [Theory]
    [InlineData(nameof(RefscanEngine.NixHash))]
    [InlineData(nameof(RefscanEngine.General))]
    public void FirstScanInAFreshProcessCompilesNothingOfTheRefscanCode(string engine)
    {
        var output = RunProbe(engine);
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
        string configuration = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name;
        string probe = Path.GetFullPath(Path.Combine(
            AppContext.BaseDirectory, "..", "..", "..", "..", "Blake3JitProbe", "bin", configuration, "net10.0", "TvixFuseBuild.Blake3JitProbe.dll"));
        Assert.True(File.Exists(probe), $"{probe} is missing (it is built with Build.Tests)");

        string directory = Directory.CreateTempSubdirectory("refscan-jit-").FullName;
        try
        {
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            psi.ArgumentList.Add(probe);
            psi.ArgumentList.Add("refscan");
            psi.ArgumentList.Add(directory);
            psi.ArgumentList.Add(engine);

            // Nothing inherited may change what the runtime does with the precompiled code.
            foreach (string name in psi.Environment.Keys.Where(k => k.StartsWith("DOTNET_", StringComparison.Ordinal) || k.StartsWith("COMPlus_", StringComparison.Ordinal)).ToList())
            {
                if (name != "DOTNET_ROOT")
                {
                    psi.Environment.Remove(name);
                }
            }

            if (environment.Length > 0)
            {
                string[] pair = environment.Split('=', 2);
                psi.Environment[pair[0]] = pair[1];
            }

            using var process = Process.Start(psi) ?? throw new InvalidOperationException("cannot start dotnet");
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(TimeSpan.FromMinutes(2)))
            {
                process.Kill(entireProcessTree: true);
                Assert.Fail("the refscan probe did not finish in 2 minutes");
            }

            Assert.True(process.ExitCode == 0, $"the refscan probe ({engine} {environment}) exited with {process.ExitCode}: {stdout.Result}{stderr.Result}");
            return [.. stdout.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries)];
        }
        finally
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
