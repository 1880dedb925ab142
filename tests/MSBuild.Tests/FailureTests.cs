using TvixFuseBuild.MSBuild.Tests.Support;

namespace TvixFuseBuild.MSBuild.Tests;

[Collection(DotnetBuildCollection.Name)]
public sealed class FailureTests(PackedFeed feed)
{
    [Fact]
    public void FailuresAreMSBuildErrorsWithTheirCodeStatusAndLastLogLines()
    {
        // ErrorAndContinue: every call runs and logs its error; the step of the targets fails the build last.
        var project = feed.CreateProject(
            "Failures",
            $"""
              <ItemGroup>
                <TvixBuildStep Include="failing" Command="sh" Arguments="-c;echo first-log-line%3B echo second-log-line &gt;&amp;2%3B exit 3" />
                <TvixBuildInput Include="{feed.Toolchain}" Step="failing" Name="toolchain" />
                <_Tools Include="{feed.Toolchain}" Name="toolchain" />
              </ItemGroup>
              <Target Name="FailingCalls" BeforeTargets="_TvixBuildPrepareSteps">
                <TvixBuild ContinueOnError="ErrorAndContinue" Name="slow" Command="sh" Arguments="-c;sleep 60" Inputs="@(_Tools)"
                           OutputDirectory="$(IntermediateOutputPath)slow" Timeout="1000" />
                <TvixBuild ContinueOnError="ErrorAndContinue" Name="lazy" Command="sh" Arguments="-c;echo did-nothing" Inputs="@(_Tools)"
                           OutputDirectory="$(IntermediateOutputPath)lazy" />
                <TvixBuild ContinueOnError="ErrorAndContinue" Name="missing" Command="sh" Inputs="$(MSBuildProjectDirectory)/no-such-input"
                           OutputDirectory="$(IntermediateOutputPath)missing" />
                <TvixBuild ContinueOnError="ErrorAndContinue" Name="badenv" Command="sh" Environment="NOEQUALS"
                           OutputDirectory="$(IntermediateOutputPath)badenv" />
                <TvixBuild ContinueOnError="ErrorAndContinue" Name="badlimit" Command="sh" MaxMemory="lots"
                           OutputDirectory="$(IntermediateOutputPath)badlimit" />
                <TvixBuild ContinueOnError="ErrorAndContinue" Name="badbuilder" Command="sh" Builder="ftp://example.org/"
                           OutputDirectory="$(IntermediateOutputPath)badbuilder" />
                <TvixBuild ContinueOnError="ErrorAndContinue" Name="nobuilder" Command="sh" Inputs="@(_Tools)"
                           Builder="unix:$(MSBuildProjectDirectory)/no-such-socket" OutputDirectory="$(IntermediateOutputPath)nobuilder" />
                <TvixBuild ContinueOnError="ErrorAndContinue" Name="nostore" Command="sh" Inputs="@(_Tools)"
                           Store="grpc+unix://$(MSBuildProjectDirectory)/no-store-socket" OutputDirectory="$(IntermediateOutputPath)nostore" />
              </Target>
            """,
            ("Program.cs", "System.Console.WriteLine(1);"));

        var build = project.Build();
        Assert.NotEqual(0, build.ExitCode);
        string output = build.Output;

        string failing = ErrorLine(output, "TVB0003");
        Assert.Contains("failing: the command exited with status 3", failing, StringComparison.Ordinal);

        // A step's error is at its item, a direct call's at its task element: both in the project, never in the package.
        string csproj = project.PathOf("Failures.csproj");
        Assert.Contains($"{csproj}({Place(csproj, "Include=\"failing\"")}): error TVB0003:", failing, StringComparison.Ordinal);
        Assert.Contains($"{csproj}({Place(csproj, "Name=\"slow\"")}): error TVB0004:", ErrorLine(output, "TVB0004"), StringComparison.Ordinal);
        Assert.Contains("the last 2 lines of its log", failing, StringComparison.Ordinal);
        Assert.Contains("first-log-line", output, StringComparison.Ordinal);
        Assert.Contains("second-log-line", output, StringComparison.Ordinal);

        Assert.Contains("slow: the command timed out", ErrorLine(output, "TVB0004"), StringComparison.Ordinal);
        Assert.Contains("did not produce the output", ErrorLine(output, "TVB0005"), StringComparison.Ordinal);
        Assert.Contains("no-such-input does not exist", ErrorLine(output, "TVB0002"), StringComparison.Ordinal);
        Assert.Contains("'NOEQUALS' is not KEY=VALUE", ErrorLine(output, "TVB0001", "NOEQUALS"), StringComparison.Ordinal);
        Assert.Contains("MaxMemory (TvixBuildMaxMemory): 'lots' is not a size", ErrorLine(output, "TVB0001", "lots"), StringComparison.Ordinal);

        Assert.Contains("is not a builder address", ErrorLine(output, "TVB0001", "ftp://example.org/"), StringComparison.Ordinal);
        Assert.Contains("no-such-socket", ErrorLine(output, "TVB0009"), StringComparison.Ordinal);

        // An unreachable remote store fails the step, as on the command line, rather than answering from the cache.
        Assert.Contains("cannot open the store grpc+unix://", ErrorLine(output, "TVB0007", "no-store-socket"), StringComparison.Ordinal);

        // A failed step records no result, so the next build runs it again.
        Assert.False(File.Exists(project.PathOf("obj/Debug/net10.0/tvix/failing.result")));
        Assert.Empty(feed.LeftoverBuildDirectories());
        Assert.Empty(feed.LeftoverMounts());
    }

    /// <summary>LINE,COLUMN of the element on the line holding <paramref name="marker"/>, as MSBuild prints a place.</summary>
    private static string Place(string file, string marker)
    {
        string[] lines = File.ReadAllLines(file);
        int index = Array.FindIndex(lines, l => l.Contains(marker, StringComparison.Ordinal));
        Assert.True(index >= 0, $"{marker} is not in {file}");
        return $"{index + 1},{lines[index].IndexOf('<', StringComparison.Ordinal) + 1}";
    }

    [Fact]
    public void TheLimitPropertiesReachTheStepsSandbox()
    {
        var project = feed.CreateProject(
            "Limits",
            $"""
              <PropertyGroup>
                <TvixBuildTmpSize>16M</TvixBuildTmpSize>
                <TvixBuildMaxProcesses>20</TvixBuildMaxProcesses>
              </PropertyGroup>
              <ItemGroup>
                <TvixBuildStep Include="tmpfull" Command="sh"
                               Arguments="-c;busybox grep processes /proc/self/limits%3B busybox dd if=/dev/zero of=/tmp/fill bs=1M count=64%3B exit 1" />
                <TvixBuildInput Include="{feed.Toolchain}" Step="tmpfull" Name="toolchain" />
              </ItemGroup>
            """,
            ("Program.cs", "System.Console.WriteLine(1);"));

        var build = project.Build();
        Assert.NotEqual(0, build.ExitCode);
        string error = ErrorLine(build.Output, "TVB0003");
        Assert.Contains("tmpfull: the command exited with status 1: /tmp reached its size limit of 16 MiB (TvixBuildTmpSize)", error, StringComparison.Ordinal);
        // 20, plus the sandbox's own few tasks (and, under a pids cgroup that enforces exactly 20, some room).
        var limit = System.Text.RegularExpressions.Regex.Match(build.Output, @"Max processes +([0-9]+) +([0-9]+) +processes");
        Assert.True(limit.Success, build.Output);
        Assert.InRange(int.Parse(limit.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture), 21, 60);
        Assert.Empty(feed.LeftoverBuildDirectories());
    }

    private static string ErrorLine(string output, string code, string about = "") =>
        output.Split('\n').FirstOrDefault(l => l.Contains($"error {code}:", StringComparison.Ordinal) && l.Contains(about, StringComparison.Ordinal))
        ?? throw new Xunit.Sdk.XunitException($"no error {code} ({about}) in the build's output:\n{output}");
}
