using System.Diagnostics;

namespace TvixFuseBuild.Tool.Tests;

/// <summary>Runs the built tool as a real process (<c>dotnet TvixFuseBuild.Tool.dll ...</c>) and captures what it prints.</summary>
internal static class ToolProcess
{
    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    public static Result Run(IEnumerable<string> args, string? stdin = null, string? workingDirectory = null, IReadOnlyDictionary<string, string>? environment = null)
    {
        string tool = Path.Combine(AppContext.BaseDirectory, "TvixFuseBuild.Tool.dll");
        Assert.True(File.Exists(tool), $"the built tool is missing at {tool}");
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            psi.Environment[name] = value;
        }

        psi.ArgumentList.Add(tool);
        foreach (string a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (stdin is not null)
        {
            process.StandardInput.Write(stdin);
        }

        process.StandardInput.Close();
        if (!process.WaitForExit(TimeSpan.FromMinutes(2)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"tvix-fuse-build {string.Join(' ', args)} did not finish in 2 minutes");
        }

        return new Result(process.ExitCode, stdout.Result, stderr.Result);
    }
}
