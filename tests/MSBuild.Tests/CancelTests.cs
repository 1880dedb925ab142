using System.Runtime.InteropServices;
using TvixFuseBuild.MSBuild.Tests.Support;

namespace TvixFuseBuild.MSBuild.Tests;

[Collection(DotnetBuildCollection.Name)]
public sealed partial class CancelTests(PackedFeed feed)
{
    private const int SIGINT = 2;
    private const int SIGTERM = 15;

    /// <summary>
    /// Ctrl-C (SIGINT to dotnet build: MSBuild cancels the task) and SIGTERM (the task holds the process until it has
    /// cleaned up) in the middle of a step: the build fails, and every process the build had started, the FUSE mount
    /// and the build directory are gone.
    /// </summary>
    [Theory]
    [InlineData(SIGINT)]
    [InlineData(SIGTERM)]
    public void CancelledBuildLeavesNoProcessMountOrTempDirectory(int signal)
    {
        var project = feed.CreateProject(
            $"Cancel{signal}",
            $"""
              <ItemGroup>
                <TvixBuildStep Include="sleepy" Command="sh" Arguments="-c;echo step-is-running%3B sleep 300" OutputImportance="high" />
                <TvixBuildInput Include="{feed.Toolchain}" Step="sleepy" Name="toolchain" />
              </ItemGroup>
            """,
            ("Program.cs", "System.Console.WriteLine(1);"));

        ProcessTree.Entry[] tree = [];
        System.Diagnostics.Process? build = null;
        int signalled = 0;
        var result = Dotnet.Run(
            project.Directory, feed.BuildEnvironment, project.BuildArguments(), TimeSpan.FromMinutes(3),
            onLine: line =>
            {
                if (line.Contains("step-is-running", StringComparison.Ordinal) && Interlocked.Exchange(ref signalled, 1) == 0)
                {
                    // The line comes before the shell starts sleep: wait until the tree holds the command's own process.
                    var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
                    while (!(tree = ProcessTree.Below(build!.Id)).Any(p => p.Command == "sleep") && DateTime.UtcNow < deadline)
                    {
                        Thread.Sleep(20);
                    }

                    Assert.Equal(0, Kill(build.Id, signal));
                }
            },
            started: p => build = p);

        Assert.True(signalled == 1, $"the step never started:\n{result}");
        Assert.True(result.ExitCode != 0, result.ToString());

        // The sandbox's own processes were in the tree: the check below is about them.
        Assert.Contains(tree, p => p.Command == "sleep");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        ProcessTree.Entry[] alive;
        while ((alive = [.. tree.Where(ProcessTree.IsAlive)]).Length > 0 && DateTime.UtcNow < deadline)
        {
            Thread.Sleep(100);
        }

        Assert.True(alive.Length == 0, $"processes left after the build ended: {string.Join(", ", alive.Select(p => $"{p.Pid} {p.Command}"))}\n{result}");
        Assert.Empty(feed.LeftoverMounts());
        Assert.Empty(feed.LeftoverBuildDirectories());
        if (signal == SIGTERM)
        {
            // The task exits the process with 143 once its steps are cleaned up. Their TVB0010 errors are logged first,
            // but MSBuild's logging service delivers them from its own thread and has no flush a task can call, so the
            // console does not always show them before the exit: the exit status is what is certain.
            Assert.True(result.ExitCode == 143, result.ToString());
        }
    }

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
