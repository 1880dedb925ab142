using System.Diagnostics;

namespace TvixFuseBuild.Sandbox.Tests;

/// <summary>
/// A caller of the sandbox in its own process, for what a test cannot do to itself: be killed with SIGKILL mid-build,
/// or run as another (unprivileged) user. <c>driver INPUTS STORE BUILD SCRIPT</c> runs SCRIPT with busybox sh in the
/// usual layout, copies the output to stdout as it comes, and ends with a <c>RESULT: ...</c> line.
/// </summary>
internal static class Driver
{
    public static int Main(string[] args)
    {
        if (args.Length != 5 || args[0] != "driver")
        {
            Console.Error.WriteLine("usage: driver INPUTS STORE BUILD SCRIPT");
            return 2;
        }

        string inputs = args[1];
        var spec = new SandboxSpec
        {
            Command = [SandboxTree.Busybox, "sh", "-c", args[4]],
            WorkingDirectory = "/build",
            ScratchPaths = new Dictionary<string, string> { ["nix/store"] = args[2], ["build"] = args[3] },
            InputsHostDirectory = inputs,
            InputNames = Directory.EnumerateFileSystemEntries(inputs).Select(Path.GetFileName).ToList()!,
            ReadOnlyHostPaths = args[4].StartsWith("#ro ", StringComparison.Ordinal) ? [args[4].Split('\n')[0][4..]] : [],
            Timeout = TimeSpan.FromSeconds(120),
            Limits = Environment.GetEnvironmentVariable("TVIX_TEST_MAX_PROCESSES") is { } max
                ? new SandboxLimits { MaxProcesses = int.Parse(max, System.Globalization.CultureInfo.InvariantCulture) }
                : SandboxLimits.Default,
        };
        try
        {
            using var stdout = Console.OpenStandardOutput();
            var result = SandboxRunner.RunAsync(spec, async (chunk, ct) =>
            {
                await stdout.WriteAsync(chunk, ct);
                await stdout.FlushAsync(ct);
            }).GetAwaiter().GetResult();
            Console.WriteLine($"RESULT: {result}" + (result.LimitsHit.Count > 0 ? $" (limits hit: {string.Join(", ", result.LimitsHit)})" : ""));
            return 0;
        }
        catch (SandboxException e)
        {
            Console.WriteLine($"ERROR: {e.Message}");
            return 1;
        }
    }

    /// <summary>Starts the driver, optionally through a prefix such as setpriv.</summary>
    public static Process Start(SandboxTree tree, string script, params string[] prefix) => Start(tree, script, null, prefix);

    /// <summary>Starts the driver with a process limit for the build.</summary>
    public static Process Start(SandboxTree tree, string script, int? maxProcesses, params string[] prefix) =>
        Start(tree, script, maxProcesses, new Dictionary<string, string>(), prefix);

    /// <summary>Starts the driver with more environment variables (its environment is otherwise cleared).</summary>
    public static Process Start(SandboxTree tree, string script, IReadOnlyDictionary<string, string> environment) =>
        Start(tree, script, null, environment, []);

    private static Process Start(SandboxTree tree, string script, int? maxProcesses, IReadOnlyDictionary<string, string> environment, string[] prefix)
    {
        string dir = AppContext.BaseDirectory;
        string dll = Path.Combine(dir, "TvixFuseBuild.Sandbox.Tests.dll");
        string dotnet = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(typeof(object).Assembly.Location)!, "..", "..", "..", "dotnet"));
        var psi = new ProcessStartInfo(prefix.Length > 0 ? prefix[0] : dotnet)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var p in prefix.Skip(1).Concat(prefix.Length > 0 ? [dotnet] : []))
        {
            psi.ArgumentList.Add(p);
        }

        foreach (var a in new[] { "exec", "--runtimeconfig", Path.Combine(dir, "TvixFuseBuild.Sandbox.Tests.runtimeconfig.json"), dll, "driver", tree.Inputs, tree.Store, tree.Build, script })
        {
            psi.ArgumentList.Add(a);
        }

        psi.Environment.Clear();
        psi.Environment["PATH"] = "/usr/bin:/bin:/usr/sbin:/sbin";
        psi.Environment["HOME"] = tree.Root;
        psi.Environment["DOTNET_EnableDiagnostics"] = "0"; // no IPC socket left in /tmp when it is SIGKILLed
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        if (maxProcesses is { } max)
        {
            psi.Environment["TVIX_TEST_MAX_PROCESSES"] = max.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }

        foreach (var (name, value) in environment)
        {
            psi.Environment[name] = value;
        }

        return Process.Start(psi)!;
    }
}
