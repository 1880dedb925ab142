using System.Diagnostics;

namespace TvixFuseBuild.Castore.Tests;

/// <summary>Temporary files for the BLAKE3 tests, and the real <c>b3sum</c> to check against.</summary>
internal sealed class Blake3TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("tvix-fuse-blake3-").FullName;

    public string Write(string name, ReadOnlySpan<byte> contents)
    {
        string path = System.IO.Path.Combine(Path, name);
        using var stream = File.Create(path);
        stream.Write(contents);
        return path;
    }

    public void Dispose() => Directory.Delete(Path, recursive: true);
}

internal static class B3sum
{
    /// <summary>b3sum's hex output for <paramref name="path"/>; the extra arguments select a mode or length.</summary>
    public static string Run(string path, IEnumerable<string>? arguments = null, byte[]? stdin = null)
    {
        var psi = new ProcessStartInfo(Find())
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
        if (stdin is not null)
        {
            process.StandardInput.BaseStream.Write(stdin);
        }

        process.StandardInput.Close();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"b3sum {string.Join(' ', psi.ArgumentList)} exited {process.ExitCode}: {stderr.Result}");
        return stdout.Result.Trim();
    }

    private static string Find()
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, "b3sum");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        Assert.Fail("b3sum is not installed, so BLAKE3 cannot be cross-checked; scripts/setup installs it (Debian package b3sum)");
        return null;
    }
}
