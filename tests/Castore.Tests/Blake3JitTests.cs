using System.Diagnostics;
using TvixFuseBuild.Castore.Hashing;

namespace TvixFuseBuild.Castore.Tests;

/// <summary>
/// BLAKE3 without the JIT: the kernels are precompiled (ReadyToRun, x86-64-v4, see Castore.csproj), so the first hash
/// in a process runs at full speed, and the precompiled image still hashes correctly where the runtime may not use
/// AVX-512 or AVX2. Each case runs Blake3JitProbe in a fresh child process: the test host's own JIT must not count.
/// </summary>
public sealed class Blake3JitTests
{
    private const string HashingNamespace = "TvixFuseBuild.Castore.Hashing.";

    [Fact]
    public void FirstHashInAFreshProcessCompilesNothingOfTheHashingCode()
    {
        var output = RunProbe([]);
        var jitted = output.Where(l => l.StartsWith("jit ", StringComparison.Ordinal)).Select(l => l[4..]).ToList();
        // "done" comes after the JIT event of the probe's closing marker method arrived: the listener saw the JIT.
        Assert.Contains("done", output);
        Assert.Contains($"digest {Blake3.Hash(OneMiB()).ToHex()}", output);

        var hashing = jitted.Where(m => m.StartsWith(HashingNamespace, StringComparison.Ordinal)).ToList();
#if DEBUG
        // Debug builds are not precompiled: the same count shows the JIT at work, so the probe is known to see it.
        Assert.NotEmpty(hashing);
#else
        Assert.True(
            hashing.Count == 0,
            $"the JIT compiled {hashing.Count} BLAKE3 methods during the first hash (is the ReadyToRun step of Castore missing?): " +
            string.Join(", ", hashing));
#endif
    }

    [Theory]
    [InlineData("", "Vector512")]
    [InlineData("DOTNET_EnableAVX512=0", "Vector256")]
    [InlineData("DOTNET_EnableAVX2=0", "Vector128")]
    public void VectorsMatchWhateverTheRuntimeMayUse(string environment, string level)
    {
        if (level == "Vector512" && !System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated)
        {
            level = System.Runtime.Intrinsics.X86.Avx2.IsSupported ? "Vector256" : "Vector128";
        }

        string vectors = Path.Combine(AppContext.BaseDirectory, "vectors", "blake3.json");
        var output = RunProbe(["vectors", vectors], environment);
        Assert.Contains($"level {level}", output);
        Assert.Contains(output, l => l.StartsWith("checked ", StringComparison.Ordinal) && int.Parse(l[8..]) >= 105);
    }

    private static byte[] OneMiB()
    {
        var data = new byte[1 << 20];
        for (int i = 0; i < data.Length; i++)
        {
            data[i] = (byte)(i % 251);
        }

        return data;
    }

    private static List<string> RunProbe(string[] arguments, string environment = "")
    {
        string configuration = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name;
        string probe = Path.GetFullPath(Path.Combine(
            AppContext.BaseDirectory, "..", "..", "..", "..", "Blake3JitProbe", "bin", configuration, "net10.0", "TvixFuseBuild.Blake3JitProbe.dll"));
        Assert.True(File.Exists(probe), $"{probe} is missing (it is built with Castore.Tests)");

        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(probe);
        foreach (string a in arguments)
        {
            psi.ArgumentList.Add(a);
        }

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
            Assert.Fail("the BLAKE3 probe did not finish in 2 minutes");
        }

        Assert.True(process.ExitCode == 0, $"the BLAKE3 probe ({environment}) exited with {process.ExitCode}: {stdout.Result}{stderr.Result}");
        return [.. stdout.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries)];
    }
}
