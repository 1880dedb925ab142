using TvixFuseBuild.Build.Pipeline;
using TvixFuseBuild.Sandbox;

namespace TvixFuseBuild.Build.Tests.Pipeline;

/// <summary>The words a failure uses for the limits a build reached, and its caution where a limit leaves no trace.</summary>
public sealed class LimitReportTests
{
    private static readonly SandboxLimits Limits = new() { MaxProcesses = 64, MaxMemory = 3L << 29, TmpSize = 16L << 20 };

    private static SandboxResult Result(SandboxLimit[] hit, SandboxLimit[] watched, string log = "") => new()
    {
        Outcome = SandboxOutcome.Exited,
        ExitCode = 1,
        LogTail = log,
        Limits = Limits,
        LimitsHit = hit,
        LimitsWatched = watched,
    };

    [Fact]
    public void EachLimitIsNamedWithItsValueAndSetting()
    {
        SandboxLimit[] all = [SandboxLimit.Processes, SandboxLimit.Memory, SandboxLimit.Tmp, SandboxLimit.DevShm];
        Assert.Equal("", LimitReport.For(Result([], all), LimitNames.CommandLine));
        Assert.Equal(
            ": it reached the process limit of 64 (--max-processes); it reached the memory limit of 1.5 GiB (--max-memory); " +
            "/tmp reached its size limit of 16 MiB (--tmp-size); /dev/shm reached its size limit of 16 MiB (--tmp-size)",
            LimitReport.For(Result(all, all), LimitNames.CommandLine));
        Assert.Equal(
            ": it reached the process limit of 64 (TvixBuildMaxProcesses)",
            LimitReport.For(Result([SandboxLimit.Processes], all), new LimitNames("TvixBuildMaxProcesses", "TvixBuildMaxMemory", "TvixBuildTmpSize")));
    }

    [Fact]
    public void WithoutAPidsCgroupAFailedForkInTheLogIsAPossibilityNotAFinding()
    {
        const string log = "sh: can't fork: Resource temporarily unavailable\n";
        Assert.Equal(
            ": its log shows 'Resource temporarily unavailable', which is what a fork gets at the process limit of 64 " +
            "(--max-processes); without a pids cgroup this host cannot tell whether that was the cause",
            LimitReport.For(Result([], [SandboxLimit.Tmp, SandboxLimit.DevShm], log), LimitNames.CommandLine));

        // With a pids cgroup watching, only a recorded refusal counts.
        Assert.Equal("", LimitReport.For(Result([], [SandboxLimit.Processes, SandboxLimit.Tmp], log), LimitNames.CommandLine));
    }

    [Theory]
    [InlineData("512", 512L)]
    [InlineData("64K", 64L << 10)]
    [InlineData("64M", 64L << 20)]
    [InlineData("64MiB", 64L << 20)]
    [InlineData("2g", 2L << 30)]
    [InlineData("1T", 1L << 40)]
    [InlineData(" 100 B ", 100L)]
    public void SizesTakeBinarySuffixes(string text, long bytes) => Assert.Equal(bytes, SandboxLimits.ParseSize(text, "x"));

    [Theory]
    [InlineData("")]
    [InlineData("M")]
    [InlineData("-1M")]
    [InlineData("1.5G")]
    [InlineData("12Q")]
    [InlineData("1iB")]
    [InlineData("99999999999T")]
    public void NonSizesAreRefused(string text) =>
        Assert.StartsWith($"x: '{text}' is not a size", Assert.Throws<FormatException>(() => SandboxLimits.ParseSize(text, "x")).Message);
}
