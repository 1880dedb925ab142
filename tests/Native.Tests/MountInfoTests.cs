namespace TvixFuseBuild.Native.Tests;

/// <summary>The one mountinfo parser: proc(5)'s format, its escapes, and this host's real table.</summary>
public sealed class MountInfoTests
{
    [Fact]
    public void ALineWithOptionalFieldsParses()
    {
        var mount = MountInfo.ParseLine("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue");
        Assert.NotNull(mount);
        Assert.Equal("/mnt1", mount.Root);
        Assert.Equal("/mnt2", mount.MountPoint);
        Assert.Equal("rw,noatime", mount.Options);
        Assert.Equal("ext3", mount.FileSystemType);
        Assert.Equal("/dev/root", mount.Source);
        Assert.Equal("rw,errors=continue", mount.SuperOptions);
    }

    [Fact]
    public void EscapesInPathsAndSourceAreUndone()
    {
        var mount = MountInfo.ParseLine(@"40 1 0:50 / /tmp/a\040b\011c\134d rw - fuse.tvix-fuse-build tvix\040src rw");
        Assert.NotNull(mount);
        Assert.Equal("/tmp/a b\tc\\d", mount.MountPoint);
        Assert.Equal("tvix src", mount.Source);
        Assert.Equal("/tmp/répertoire", MountInfo.Unescape("/tmp/répertoire"));
        Assert.Equal("/tmp/a\n", MountInfo.Unescape(@"/tmp/a\012"));
        Assert.Equal(@"/tmp/\09x", MountInfo.Unescape(@"/tmp/\09x"));
    }

    [Theory]
    [InlineData("")]
    [InlineData("36 35 98:0 /mnt1 /mnt2 rw")]
    [InlineData("36 35 98:0 /mnt1 /mnt2 rw master:1 -")]
    [InlineData("36 35 98:0 / - ext3 /dev/root rw")]
    public void LinesThatAreNoMountAreSkipped(string line)
    {
        Assert.Null(MountInfo.ParseLine(line));
        Assert.Empty(MountInfo.Parse([line]));
    }

    [Fact]
    public void TheMissingSourceOfAShortLineIsEmpty()
    {
        var mount = MountInfo.ParseLine("30 22 0:26 / /sys/fs/cgroup rw - cgroup2");
        Assert.NotNull(mount);
        Assert.Equal("cgroup2", mount.FileSystemType);
        Assert.Equal("", mount.Source);
        Assert.Equal("", mount.SuperOptions);
    }

    [Fact]
    public void IsAtOrUnderComparesWholeComponents()
    {
        var mount = MountInfo.ParseLine("1 1 0:1 / /a/bc rw - tmpfs tmpfs rw")!;
        Assert.True(mount.IsAtOrUnder("/a"));
        Assert.True(mount.IsAtOrUnder("/a/bc"));
        Assert.True(mount.IsAtOrUnder("/"));
        Assert.False(mount.IsAtOrUnder("/a/b"));
    }

    [Fact]
    public void ThisHostsTableHasProc() =>
        Assert.Contains(MountInfo.ReadSelf(), m => m.MountPoint == "/proc" && m.FileSystemType == "proc");

    /// <summary>A real mount whose path needs escaping comes back as it was mounted (root: the test fails without it).</summary>
    [Fact]
    public void ARealMountWithASpaceIsFoundUnescaped()
    {
        Assert.True(Libc.geteuid() == 0, "this test mounts a tmpfs and needs root");
        string dir = Path.Combine(Directory.CreateTempSubdirectory("native-tests-").FullName, "with space\tand tab");
        Directory.CreateDirectory(dir);
        try
        {
            Assert.True(Libc.mount("native-test", dir, "tmpfs", Libc.MS_NOSUID | Libc.MS_NODEV, "size=64k") == 0, Errno.Text(Errno.Last));
            try
            {
                var mount = Assert.Single(MountInfo.ReadSelf(), m => m.MountPoint == dir);
                Assert.Equal("tmpfs", mount.FileSystemType);
                Assert.Equal("native-test", mount.Source);
                Assert.Contains("size=64k", mount.SuperOptions, StringComparison.Ordinal);
                Assert.Contains("nosuid", mount.Options.Split(','));
            }
            finally
            {
                Assert.Equal(0, Libc.umount2(dir, Libc.MNT_DETACH));
            }
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(dir)!, recursive: true);
        }
    }
}
