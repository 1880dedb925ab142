using System.Text;

namespace TvixFuseBuild.Sandbox.Tests;

/// <summary>
/// A throwaway host tree for one sandbox run: an inputs directory holding a copy of the static busybox (the
/// in-sandbox toolbox, called by its sandbox path) and scratch directories. Reachable by the root-mode build user.
/// </summary>
internal sealed class SandboxTree : IDisposable
{
    public const string BusyboxInput = "0000000000000000000000000000000b-busybox";

    /// <summary>The sandbox path of busybox.</summary>
    public const string Busybox = "/nix/store/" + BusyboxInput + "/bin/busybox";

    public SandboxTree(int extraInputs = 0)
    {
        if (!File.Exists(SandboxSpec.BusyboxShell))
        {
            throw new InvalidOperationException($"{SandboxSpec.BusyboxShell} is missing: run scripts/setup (busybox-static)");
        }

        Root = Directory.CreateTempSubdirectory("tvix-sandbox-test-").FullName;
        File.SetUnixFileMode(Root, (UnixFileMode)0x1ED); // 0755: the root-mode build user must reach it
        Inputs = Path.Combine(Root, "inputs");
        Directory.CreateDirectory(Path.Combine(Inputs, BusyboxInput, "bin"));
        File.Copy(SandboxSpec.BusyboxShell, Path.Combine(Inputs, BusyboxInput, "bin", "busybox"));
        var names = new List<string> { BusyboxInput };
        Directory.CreateDirectory(Path.Combine(Inputs, "1111111111111111111111111111111d-data"));
        File.WriteAllText(Path.Combine(Inputs, "1111111111111111111111111111111d-data", "file"), "input contents\n");
        names.Add("1111111111111111111111111111111d-data");
        File.WriteAllText(Path.Combine(Inputs, "2222222222222222222222222222222f-file"), "a file input\n");
        names.Add("2222222222222222222222222222222f-file");
        File.CreateSymbolicLink(Path.Combine(Inputs, "3333333333333333333333333333333l-link"), "1111111111111111111111111111111d-data/file");
        names.Add("3333333333333333333333333333333l-link");
        for (int i = 0; i < extraInputs; i++)
        {
            string name = $"{i:D32}-extra";
            Directory.CreateDirectory(Path.Combine(Inputs, name));
            names.Add(name);
        }

        InputNames = names;
        Store = Scratch("store");
        Build = Scratch("build");
    }

    public string Root { get; }

    public string Inputs { get; }

    public IReadOnlyList<string> InputNames { get; }

    /// <summary>Host directory backing the writable nix/store.</summary>
    public string Store { get; }

    /// <summary>Host directory backing /build.</summary>
    public string Build { get; }

    public string Scratch(string name)
    {
        string path = Path.Combine(Root, "scratch-" + name);
        Directory.CreateDirectory(path);
        return path;
    }

    /// <summary>The Nix layout: nix/store writable with the inputs bound read-only in it, /build the working directory.</summary>
    public SandboxSpec Spec(params string[] command) => new()
    {
        Command = command,
        Environment = new Dictionary<string, string> { ["PATH"] = "/path-not-set", ["HOME"] = "/homeless-shelter", ["NIX_BUILD_TOP"] = "/build" },
        WorkingDirectory = "/build",
        ScratchPaths = new Dictionary<string, string> { ["nix/store"] = Store, ["build"] = Build },
        InputsHostDirectory = Inputs,
        InputsDir = "nix/store",
        InputNames = InputNames,
        Timeout = TimeSpan.FromSeconds(60),
    };

    /// <summary>A shell command run by busybox sh.</summary>
    public SandboxSpec Sh(string script) => Spec(Busybox, "sh", "-c", script);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>Runs a spec and collects the output.</summary>
internal static class Run
{
    public static async Task<(SandboxResult Result, string Output)> Async(SandboxSpec spec, CancellationToken cancellationToken = default)
    {
        var output = new StringBuilder();
        var result = await SandboxRunner.RunAsync(spec, (chunk, _) =>
        {
            lock (output)
            {
                output.Append(Encoding.UTF8.GetString(chunk.Span));
            }

            return ValueTask.CompletedTask;
        }, cancellationToken);
        return (result, output.ToString());
    }

    /// <summary>Runs and expects exit code 0; returns the output.</summary>
    public static async Task<string> Ok(SandboxSpec spec)
    {
        var (result, output) = await Async(spec);
        Assert.True(result.Succeeded, $"{result}; output:\n{output}");
        return output;
    }
}
