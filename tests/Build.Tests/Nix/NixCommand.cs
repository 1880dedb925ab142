using System.Diagnostics;

namespace TvixFuseBuild.Build.Tests.Nix;

/// <summary>Runs a Nix program (nix-store, nix-instantiate, nix-build, nix-hash) for the tests that compare with real Nix.</summary>
internal static class NixCommand
{
    /// <summary>The program's exit code and output; a program that is missing or runs over 5 minutes fails the test.</summary>
    public static (int ExitCode, string Stdout, string Stderr) Run(
        string program, IEnumerable<string> arguments, IDictionary<string, string>? environment = null, string? workingDirectory = null)
    {
        var start = new ProcessStartInfo(program)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[key] = value;
        }

        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new InvalidOperationException($"cannot run {program} (scripts/setup installs Nix): {e.Message}");
        }

        using (process)
        {
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(TimeSpan.FromMinutes(5)))
            {
                process.Kill(entireProcessTree: true);
                Assert.Fail($"{program} {string.Join(' ', arguments)} did not finish in time");
            }

            process.WaitForExit();
            return (process.ExitCode, stdout.Result, stderr.Result);
        }
    }

    /// <summary>The program's standard output; a non-zero exit fails the test with its standard error.</summary>
    public static string Output(string program, IEnumerable<string> arguments)
    {
        var (exitCode, stdout, stderr) = Run(program, arguments);
        Assert.True(exitCode == 0, $"{program} {string.Join(' ', arguments)} failed ({exitCode}): {stderr}");
        return stdout;
    }
}
