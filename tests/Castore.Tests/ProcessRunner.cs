using System.Diagnostics;

namespace TvixFuseBuild.Castore.Tests;

internal static class ProcessRunner
{
    /// <summary>Runs a program to completion; returns exit code, stdout and stderr. A missing program fails the test.</summary>
    public static (int ExitCode, string Stdout, string Stderr) Run(string fileName, params string[] arguments)
    {
        var psi = new ProcessStartInfo(fileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in arguments)
        {
            psi.ArgumentList.Add(a);
        }

        using var process = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {fileName}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{fileName} did not finish in 5 minutes");
        }

        return (process.ExitCode, stdout.Result, stderr.Result);
    }

    public static string RequireTool(string name)
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':'))
        {
            string candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        Assert.Fail($"{name} is not installed; run scripts/setup (tests need it and must not skip)");
        return name;
    }
}
