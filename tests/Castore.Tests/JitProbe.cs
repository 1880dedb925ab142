using System.Diagnostics;
using Xunit;

namespace TvixFuseBuild.Castore.Tests;

/// <summary>
/// Runs tests/Blake3JitProbe in a fresh child process (the test host's own JIT must not count) and returns its lines;
/// shared with Build.Tests. The probe is built with the test project (a project reference without the assembly).
/// </summary>
internal static class JitProbe
{
    public static List<string> Run(IReadOnlyList<string> arguments, string environment = "")
    {
        string configuration = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name;
        string probe = Path.GetFullPath(Path.Combine(
            AppContext.BaseDirectory, "..", "..", "..", "..", "Blake3JitProbe", "bin", configuration, "net10.0", "TvixFuseBuild.Blake3JitProbe.dll"));
        Assert.True(File.Exists(probe), $"{probe} is missing (it is built with the test project)");

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
            Assert.Fail($"the JIT probe ({string.Join(' ', arguments)}) did not finish in 2 minutes");
        }

        Assert.True(process.ExitCode == 0,
            $"the JIT probe ({string.Join(' ', arguments)} {environment}) exited with {process.ExitCode}: {stdout.Result}{stderr.Result}");
        return [.. stdout.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries)];
    }
}
