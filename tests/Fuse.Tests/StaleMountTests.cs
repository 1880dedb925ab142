using TvixFuseBuild.Fuse.Mounting;

namespace TvixFuseBuild.Fuse.Tests;

/// <summary>How our mounts are recognized in /proc/self/mountinfo (the end-to-end cleanup is in the tool's tests).</summary>
public sealed class StaleMountTests
{
    [Fact]
    public void TheFsNameNamesThisProcess()
    {
        Assert.True(StaleMounts.TryParseFsName(StaleMounts.FsName, out int pid, out ulong start));
        Assert.Equal(Environment.ProcessId, pid);
        Assert.True(StaleMounts.IsAlive(pid, start));
        Assert.False(StaleMounts.IsAlive(pid, start + 1));
    }

    [Theory]
    [InlineData("tvix-fuse-build@12.34", true)]
    [InlineData("tvix-fuse-build@12", false)]
    [InlineData("tvix-fuse-build@x.34", false)]
    [InlineData("squashfuse", false)]
    [InlineData("tvix-fuse-build@-1.2", false)]
    public void OnlyOurFsNamesParse(string fsName, bool ours) =>
        Assert.Equal(ours, StaleMounts.TryParseFsName(fsName, out _, out _));

    [Fact]
    public void ADeadProcessIsNotAlive()
    {
        using var process = System.Diagnostics.Process.Start("true")!;
        process.WaitForExit();
        Assert.False(StaleMounts.IsAlive(process.Id, 0));
        Assert.Null(StaleMounts.StartTime(process.Id));
    }
}
