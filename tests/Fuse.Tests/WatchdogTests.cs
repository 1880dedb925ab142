using TvixFuseBuild.Fuse.Mounting;
using TvixFuseBuild.Fuse.Tests.Support;

namespace TvixFuseBuild.Fuse.Tests;

/// <summary>
/// The mount's side of the unmount watchdog: how a mount is told from another at the same path, and a watchdog that
/// never gets ready failing the mount with nothing left. The watchdog at work (real kills) is in the tool's tests.
/// </summary>
public sealed class WatchdogTests
{
    [Fact]
    public async Task AMountIsIdentifiedByItsUniqueMountIdAndTheDeviceMountinfoShows()
    {
        await using var mount = await TestMount.StartAsync(new FixtureStores());
        var identity = MountIdentity.Of(mount.Path, out int errno);
        Assert.True(identity is not null, $"errno {errno}");
        Assert.True(identity.Value.Unique, "Linux 6.8+ reports STATX_MNT_ID_UNIQUE");

        string line = Assert.Single(File.ReadAllLines("/proc/self/mountinfo"), l => l.Split(' ')[4] == mount.Path);
        Assert.Equal($"{identity.Value.DevMajor}:{identity.Value.DevMinor}", line.Split(' ')[2]);
        Assert.Contains(" - fuse.tvix-fuse-build ", line);

        // The directory it covers, and the same text back.
        var parent = MountIdentity.Of(Path.GetDirectoryName(mount.Path)!, out _);
        Assert.NotNull(parent);
        Assert.NotEqual(identity, parent);
        Assert.True(MountIdentity.TryParse(identity.Value.Format(), out var parsed));
        Assert.Equal(identity, parsed);
    }

    [Theory]
    [InlineData("u12@0:40", true)]
    [InlineData("m7@259:3", true)]
    [InlineData("x12@0:40", false)]
    [InlineData("u12", false)]
    [InlineData("u@0:40", false)]
    [InlineData("u12@0", false)]
    [InlineData("u-1@0:40", false)]
    public void OnlyWellFormedIdentitiesParse(string text, bool valid) =>
        Assert.Equal(valid, MountIdentity.TryParse(text, out _));

    [Theory]
    [InlineData("/bin/false", "exited with 1 before it was ready")]
    [InlineData("/nonexistent/watchdog", "start the unmount watchdog /nonexistent/watchdog")]
    public async Task AWatchdogThatIsNeverReadyFailsTheMountAndLeavesNothingMounted(string program, string message)
    {
        string path = Directory.CreateTempSubdirectory("tfb-fuse-test-").FullName;
        try
        {
            var error = await Assert.ThrowsAsync<FuseException>(() => CastoreMount.MountAsync(
                path, [], new FixtureStores().Blobs, new FixtureStores().Directories, new CastoreMountOptions { WatchdogCommand = [program] }));
            Assert.Contains(message, error.Message);
            Assert.False(TestMount.IsMounted(path));
            Assert.DoesNotContain(ChildrenOfThisProcess(), comm => comm == "false");
        }
        finally
        {
            TestMount.Cleanup(path);
        }
    }

    [Fact]
    public async Task AWatchdogCommandWithoutAnAbsoluteProgramIsRefusedBeforeMounting()
    {
        string path = Directory.CreateTempSubdirectory("tfb-fuse-test-").FullName;
        try
        {
            var stores = new FixtureStores();
            foreach (string[] command in new[] { Array.Empty<string>(), ["false"] })
            {
                await Assert.ThrowsAsync<ArgumentException>(() => CastoreMount.MountAsync(
                    path, [], stores.Blobs, stores.Directories, new CastoreMountOptions { WatchdogCommand = command }));
                Assert.False(TestMount.IsMounted(path));
            }
        }
        finally
        {
            TestMount.Cleanup(path);
        }
    }

    /// <summary>The command names of this process's children (zombies included), from /proc.</summary>
    private static List<string> ChildrenOfThisProcess()
    {
        var names = new List<string>();
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            try
            {
                string stat = File.ReadAllText(Path.Combine(dir, "stat"));
                int close = stat.LastIndexOf(')');
                string[] fields = stat[(close + 2)..].Split(' ');
                if (int.TryParse(fields[1], out int ppid) && ppid == Environment.ProcessId)
                {
                    names.Add(stat[(stat.IndexOf('(') + 1)..close]);
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentOutOfRangeException)
            {
            }
        }

        return names;
    }
}
