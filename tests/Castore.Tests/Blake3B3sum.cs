using System.Diagnostics;

namespace TvixFuseBuild.Castore.Tests;

/// <summary>The real <c>b3sum</c>, to check our BLAKE3 against.</summary>
internal static class B3sum
{
    /// <summary>b3sum's hex output for <paramref name="path"/>; the extra arguments select a mode or length,
    /// <paramref name="stdin"/> is the key for <c>--keyed</c>.</summary>
    public static string Run(string path, IEnumerable<string>? arguments = null, byte[]? stdin = null)
    {
        var psi = new ProcessStartInfo(ProcessRunner.RequireTool("b3sum"))
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add("--no-names");
        foreach (var a in arguments ?? [])
        {
            psi.ArgumentList.Add(a);
        }

        psi.ArgumentList.Add(path);
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        process.StandardInput.BaseStream.Write(stdin ?? []);
        process.StandardInput.Close();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"b3sum {string.Join(' ', psi.ArgumentList)} exited {process.ExitCode}: {stderr.Result}");
        return stdout.Result.Trim();
    }

    /// <summary>Writes a file in <paramref name="dir"/> and returns its path.</summary>
    public static string WriteFile(this TempDirectory dir, string name, ReadOnlySpan<byte> contents)
    {
        string path = dir.Combine(name);
        File.WriteAllBytes(path, contents);
        return path;
    }
}
