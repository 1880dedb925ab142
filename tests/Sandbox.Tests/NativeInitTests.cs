using System.Text;

namespace TvixFuseBuild.Sandbox.Tests;

/// <summary>Every build starts the NativeAOT init (tvix-sandbox-init), not a .NET runtime; the managed one is the bench's.</summary>
[Collection("sandbox")]
public sealed class NativeInitTests
{
    private const string B = SandboxTree.Busybox;

    /// <summary>PID 1 of the build's namespace is the native executable: its name and its command line, read by the build.</summary>
    [Fact]
    public async Task BuildsRunUnderTheNativeInit()
    {
        using var tree = new SandboxTree();
        string output = await Run.Ok(tree.Sh($"{B} cat /proc/1/comm; {B} tr '\\0' ' ' < /proc/1/cmdline"));
        var lines = output.Split('\n');
        Assert.Equal("tvix-sandbox-in", lines[0]); // comm keeps 15 characters
        Assert.EndsWith("/" + InitLauncher.NativeInitName, lines[1].Trim());
        Assert.DoesNotContain("dotnet", output);
    }

    [Fact]
    public void TheLauncherExecsTheNativeInitShippedNextToTheSandboxAssembly()
    {
        var init = InitLauncher.Get().Init;
        Assert.Single(init);
        Assert.Equal(InitLauncher.NativeInitName, Path.GetFileName(init[0]));
        byte[] header = File.ReadAllBytes(init[0])[..4];
        Assert.Equal([0x7f, (byte)'E', (byte)'L', (byte)'F'], header);
        Assert.True(File.Exists(Path.Combine(Path.GetDirectoryName(typeof(InitLauncher).Assembly.Location)!, InitLauncher.NativeInitName)));
    }

    /// <summary>The managed init (the bench's comparison) still runs the same plan protocol.</summary>
    [Fact]
    public async Task TheManagedInitRunsTheSameProtocol()
    {
        using var tree = new SandboxTree();
        var output = new StringBuilder();
        var result = await SandboxRunner.RunAsync(tree.Sh($"{B} cat /proc/1/comm; echo $PWD"), InitLauncher.GetManaged(), (chunk, _) =>
        {
            lock (output)
            {
                output.Append(Encoding.UTF8.GetString(chunk.Span));
            }

            return ValueTask.CompletedTask;
        }, CancellationToken.None);
        Assert.True(result.Succeeded, $"{result}; output:\n{output}");
        Assert.StartsWith("dotnet\n", output.ToString());
    }

    /// <summary>With TVIX_SANDBOX_TRACE=1 the native init reports its steps on the build's output, as the managed one does.</summary>
    [Fact]
    public async Task TheNativeInitTraces()
    {
        using var tree = new SandboxTree();
        Environment.SetEnvironmentVariable("TVIX_SANDBOX_TRACE", "1");
        try
        {
            string output = await Run.Ok(tree.Sh("echo hi"));
            Assert.Contains("sandbox-init: main at ", output);
            Assert.Contains("sandbox-init: command started at ", output);
            Assert.DoesNotContain("assemblies loaded", output);
            Assert.Contains("hi\n", output); // "command started" may come after the command's own output
        }
        finally
        {
            Environment.SetEnvironmentVariable("TVIX_SANDBOX_TRACE", null);
        }
    }

    /// <summary>Started any other way than by the sandbox (with <c>enter</c>), the init does nothing and says why.</summary>
    [Fact]
    public void TheInitRunsOnlyThroughItsEntry()
    {
        var psi = new System.Diagnostics.ProcessStartInfo(InitLauncher.Get().Init[0])
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var init = System.Diagnostics.Process.Start(psi)!;
        init.StandardInput.Close();
        string status = init.StandardOutput.ReadToEnd();
        init.WaitForExit();
        Assert.Equal(1, init.ExitCode);
        Assert.Equal('E', status[0]);
        Assert.EndsWith("the sandbox init runs only as 'enter', started by tvix-fuse-build", status);
    }

    /// <summary>
    /// The init moves into the build's cgroups before it creates the namespaces, so the build's cgroup namespace is rooted
    /// at the build's own cgroups: every hierarchy shows "/" inside (before, the build's pids and memory cgroups showed
    /// as children of the caller's).
    /// </summary>
    [Fact]
    public async Task TheBuildsCgroupNamespaceIsRootedAtItsOwnCgroups()
    {
        using var tree = new SandboxTree();
        string output = await Run.Ok(tree.Sh($"{B} cat /proc/self/cgroup"));
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.NotEmpty(lines);
        Assert.All(lines, line => Assert.EndsWith(":/", line));
    }
}
