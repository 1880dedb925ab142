using System.Diagnostics;
using System.Runtime.InteropServices;

namespace TvixFuseBuild.Tool.Tests;

/// <summary>Runs the real tvix-fuse-build (the apphost built next to the tests) as a separate process.</summary>
internal static partial class ToolProcess
{
    /// <summary>Sends <paramref name="signal"/> (15 SIGTERM, 9 SIGKILL, 2 SIGINT) to one process; 0 on success.</summary>
    [LibraryImport("libc", EntryPoint = "kill")]
    public static partial int Signal(int pid, int signal);

    /// <summary>Kills whatever of <paramref name="processes"/> still runs (with its children) and disposes them all.</summary>
    public static void StopAll(IEnumerable<Process> processes)
    {
        foreach (var process in processes)
        {
            try
            {
                if (!process.HasExited)
                {
                    process.Kill(entireProcessTree: true);
                    process.WaitForExit(10_000);
                }
            }
            catch (InvalidOperationException)
            {
            }

            process.Dispose();
        }
    }

    /// <summary>
    /// The framework-dependent tool built next to the tests; with <c>TVIX_FUSE_BUILD_TESTS_NATIVE=1</c> the NativeAOT one
    /// named by <see cref="NativeTool.Variable"/> instead, so that every test of this assembly can run against it.
    /// </summary>
    public static string Executable
    {
        get
        {
            if (Environment.GetEnvironmentVariable("TVIX_FUSE_BUILD_TESTS_NATIVE") == "1")
            {
                string native = Environment.GetEnvironmentVariable(NativeTool.Variable) ?? "";
                Assert.True(File.Exists(native), $"TVIX_FUSE_BUILD_TESTS_NATIVE=1 but {NativeTool.Variable} names no file: '{native}'");
                return native;
            }

            return FrameworkDependentExecutable;
        }
    }

    /// <summary>The framework-dependent tool built next to the tests, whatever <c>TVIX_FUSE_BUILD_TESTS_NATIVE</c> says.</summary>
    public static string FrameworkDependentExecutable
    {
        get
        {
            string path = Path.Combine(AppContext.BaseDirectory, "TvixFuseBuild.Tool");
            Assert.True(File.Exists(path), $"the tool was not built next to the tests: {path}");
            return path;
        }
    }

    public sealed record Result(int ExitCode, string Stdout, string Stderr);

    /// <summary>Starts the tool; the caller owns the process (and must kill it).</summary>
    public static Process Start(
        IEnumerable<string> arguments, IDictionary<string, string>? environment = null, bool redirectStdin = false, string? workingDirectory = null,
        string? executable = null)
    {
        var psi = new ProcessStartInfo(executable ?? Executable)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = redirectStdin,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        foreach (var a in arguments)
        {
            psi.ArgumentList.Add(a);
        }

        // Never a progress bar or a terminal-dependent output in tests.
        psi.Environment["CI"] = "true";
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            psi.Environment[key] = value;
        }

        return Process.Start(psi) ?? throw new InvalidOperationException("cannot start the tool");
    }

    /// <summary>
    /// Runs the tool with a terminal for its stdin, stdout and stderr (script(1) gives it one); returns what the
    /// terminal showed (both streams, with LF line ends) as <see cref="Result.Stdout"/>.
    /// </summary>
    public static Result RunInTerminal(IEnumerable<string> arguments, IDictionary<string, string>? environment = null)
    {
        string command = string.Join(' ', new[] { Executable }.Concat(arguments).Select(a => "'" + a.Replace("'", "'\\''", StringComparison.Ordinal) + "'"));
        var psi = new ProcessStartInfo("script", ["-qec", command, "/dev/null"])
        {
            RedirectStandardOutput = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        psi.Environment.Remove("CI");
        psi.Environment["TERM"] = "xterm";
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            psi.Environment[key] = value;
        }

        using var process = Process.Start(psi) ?? throw new InvalidOperationException("cannot start script");
        process.StandardInput.Close();
        string output = process.StandardOutput.ReadToEnd();
        Assert.True(process.WaitForExit(TimeSpan.FromMinutes(5)), $"tvix-fuse-build {string.Join(' ', arguments)} did not finish in time");
        return new Result(process.ExitCode, output.Replace("\r\n", "\n", StringComparison.Ordinal), "");
    }

    public static Result Run(
        IEnumerable<string> arguments, IDictionary<string, string>? environment = null, string? stdin = null, TimeSpan? timeout = null,
        string? workingDirectory = null, string? executable = null)
    {
        using var process = Start(arguments, environment, redirectStdin: stdin is not null, workingDirectory, executable);
        if (stdin is not null)
        {
            process.StandardInput.Write(stdin);
            process.StandardInput.Close();
        }

        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout ?? TimeSpan.FromMinutes(5)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"tvix-fuse-build {string.Join(' ', arguments)} did not finish in time");
        }

        process.WaitForExit();
        return new Result(process.ExitCode, stdout.Result, stderr.Result);
    }
}
