using TvixFuseBuild.Fuse.Tests.Support;
using static TvixFuseBuild.Fuse.Tests.Support.Fixtures;

namespace TvixFuseBuild.Fuse.Tests;

/// <summary>
/// Everything tvix's own FUSE tests (castore/src/fs/fuse/tests.rs) check, on real mounts with the same fixtures.
/// Where we differ on purpose it says so: modes and sizes follow the Nix store convention (symlinks 0777, mtime 1,
/// the caller's uid/gid, a directory's size is its entry count), and a directory is fetched when it is looked up,
/// so a missing Directory fails already at stat.
/// </summary>
public sealed class TvixParityTests
{
    [Fact]
    public async Task MountAndUnmountWithNoNodes()
    {
        var stores = new FixtureStores();
        string path;
        await using (var mount = await TestMount.StartAsync(stores))
        {
            path = mount.Path;
            Assert.True(TestMount.IsMounted(path));
            Assert.True(Posix.Stat(path).IsDirectory);
        }

        Assert.False(TestMount.IsMounted(path));
    }

    [Fact]
    public async Task RootListingOffRefusesReaddirWithEperm()
    {
        var stores = await new FixtureStores().BlobA();
        await using var mount = await TestMount.StartAsync(stores, new CastoreMountOptions { ListRoot = false });

        var e = Assert.Throws<UnauthorizedAccessException>(() => Directory.GetFileSystemEntries(mount.Path));
        Assert.Contains("denied", e.Message, StringComparison.OrdinalIgnoreCase);

        // Names can still be looked up.
        Assert.Equal(BlobA, await File.ReadAllBytesAsync(mount[BlobAName]));
    }

    [Fact]
    public async Task RootListingOnListsTheNodes()
    {
        var stores = await new FixtureStores().BlobA();
        await using var mount = await TestMount.StartAsync(stores);

        var entries = new DirectoryInfo(mount.Path).GetFileSystemInfos();
        var file = Assert.Single(entries);
        Assert.Equal(BlobAName, file.Name);
        var info = Assert.IsType<FileInfo>(file);
        Assert.True(info.IsReadOnly);
        Assert.Equal(BlobA.Length, info.Length);
    }

    [Fact]
    public async Task StatFileAtRoot()
    {
        var stores = await new FixtureStores().BlobA();
        await using var mount = await TestMount.StartAsync(stores, new CastoreMountOptions { ListRoot = false });

        var st = Posix.Stat(mount[BlobAName]);
        Assert.True(st.IsFile);
        Assert.Equal(0x124u, st.Permissions);
        Assert.Equal(BlobA.Length, st.Size);
    }

    [Fact]
    public async Task ReadFileAtRoot()
    {
        var stores = await new FixtureStores().BlobA();
        await using var mount = await TestMount.StartAsync(stores);

        Assert.Equal(BlobA, await File.ReadAllBytesAsync(mount[BlobAName]));
    }

    [Fact]
    public async Task ReadLargeFileAtRoot()
    {
        var stores = await new FixtureStores().BlobB();
        await using var mount = await TestMount.StartAsync(stores);

        var st = Posix.Stat(mount[BlobBName]);
        Assert.True(st.IsFile);
        Assert.Equal(BlobB.Length, st.Size);
        Assert.Equal(BlobB, await File.ReadAllBytesAsync(mount[BlobBName]));
    }

    [Fact]
    public async Task ReadEmptyFile()
    {
        var stores = await new FixtureStores().DirectoryWithKeep();
        await using var mount = await TestMount.StartAsync(stores);

        Assert.Empty(await File.ReadAllBytesAsync(Path.Combine(mount[DirectoryWithKeepName], ".keep")));
    }

    [Fact]
    public async Task SymlinkReadlink()
    {
        var stores = new FixtureStores().Symlink();
        await using var mount = await TestMount.StartAsync(stores);
        string link = mount[SymlinkName];

        Assert.Equal(BlobAName, new FileInfo(link).LinkTarget);

        // Following the link fails: its target was not populated.
        Assert.Equal(Posix.ENOENT, Posix.TryStat(link, out _));
        Assert.True(Posix.LStat(link).IsSymlink);
        Assert.Throws<FileNotFoundException>(() => File.ReadAllBytes(link));
    }

    [Fact]
    public async Task ReadAndStatThroughSymlink()
    {
        var stores = (await new FixtureStores().BlobA()).Symlink();
        await using var mount = await TestMount.StartAsync(stores);
        string link = mount[SymlinkName], blob = mount[BlobAName];

        var throughLink = Posix.Stat(link);
        var direct = Posix.Stat(blob);
        Assert.True(throughLink.IsFile);
        Assert.Equal(direct.Ino, throughLink.Ino);
        Assert.Equal(direct.Size, throughLink.Size);
        Assert.Equal(await File.ReadAllBytesAsync(blob), await File.ReadAllBytesAsync(link));
    }

    [Fact]
    public async Task StatDirectory()
    {
        var stores = await new FixtureStores().DirectoryWithKeep();
        await using var mount = await TestMount.StartAsync(stores);

        var st = Posix.Stat(mount[DirectoryWithKeepName]);
        Assert.True(st.IsDirectory);
        Assert.Equal(0x16Du, st.Permissions);
    }

    [Fact]
    public async Task XAttrsExposeDigests()
    {
        var stores = await (await new FixtureStores().DirectoryWithKeep()).BlobA();
        await using var mount = await TestMount.StartAsync(stores);

        string directory = mount[DirectoryWithKeepName];
        var (names, errno) = Posix.ListXAttr(directory);
        Assert.Equal(0, errno);
        Assert.Equal(["user.tvix.castore.directory.digest"], names);
        var (value, _, _) = Posix.GetXAttr(directory, "user.tvix.castore.directory.digest");
        Assert.Equal(DirectoryWithKeep.Digest.ToString(), System.Text.Encoding.ASCII.GetString(value!));
        Assert.Equal(Posix.ENODATA, Posix.GetXAttr(directory, "user.cheesecake").Errno);
        Assert.Equal(Posix.ENODATA, Posix.GetXAttr(directory, "user.tvix.castore.blob.digest").Errno);

        string file = mount[BlobAName];
        (names, errno) = Posix.ListXAttr(file);
        Assert.Equal(0, errno);
        Assert.Equal(["user.tvix.castore.blob.digest"], names);
        (value, _, _) = Posix.GetXAttr(file, "user.tvix.castore.blob.digest");
        Assert.Equal(BlobADigest.ToString(), System.Text.Encoding.ASCII.GetString(value!));
        Assert.Equal(Posix.ENODATA, Posix.GetXAttr(file, "user.cheesecake").Errno);

        // The xattr size protocol: 0 asks for the length, too small is ERANGE.
        var (_, sizeErrno, length) = Posix.GetXAttr(file, "user.tvix.castore.blob.digest", size: 0);
        Assert.Equal(0, sizeErrno);
        Assert.Equal(BlobADigest.ToString().Length, length);
        Assert.Equal(Posix.ERANGE, Posix.GetXAttr(file, "user.tvix.castore.blob.digest", size: 10).Errno);
    }

    [Fact]
    public async Task ReadBlobInsideDirectory()
    {
        var stores = await new FixtureStores().DirectoryWithKeep();
        await using var mount = await TestMount.StartAsync(stores);
        string keep = Path.Combine(mount[DirectoryWithKeepName], ".keep");

        var st = Posix.Stat(keep);
        Assert.True(st.IsFile);
        Assert.Equal(0x124u, st.Permissions);
        Assert.Empty(await File.ReadAllBytesAsync(keep));
    }

    [Fact]
    public async Task ReadBlobDeepInsideDirectory()
    {
        var stores = await new FixtureStores().DirectoryComplicated();
        await using var mount = await TestMount.StartAsync(stores);
        string keep = Path.Combine(mount[DirectoryComplicatedName], "keep", ".keep");

        var st = Posix.Stat(keep);
        Assert.True(st.IsFile);
        Assert.Equal(0x124u, st.Permissions);
        Assert.Empty(await File.ReadAllBytesAsync(keep));
    }

    [Fact]
    public async Task ReaddirListsEntriesInNameOrder()
    {
        var stores = await new FixtureStores().DirectoryComplicated();
        await using var mount = await TestMount.StartAsync(stores);
        string directory = mount[DirectoryComplicatedName];

        // Directory.GetFileSystemEntries keeps readdir's order and skips "." and "..".
        string[] names = Directory.GetFileSystemEntries(directory).Select(p => Path.GetFileName(p)).ToArray();
        Assert.Equal([".keep", "aa", "keep"], names);
        var keepFile = Posix.LStat(Path.Combine(directory, ".keep"));
        Assert.True(keepFile.IsFile);
        Assert.Equal(0, keepFile.Size);
        Assert.True(Posix.LStat(Path.Combine(directory, "aa")).IsSymlink);
        Assert.True(Posix.LStat(Path.Combine(directory, "keep")).IsDirectory);
    }

    [Fact]
    public async Task ReaddirDeepWithoutLookingAtTheParentFirst()
    {
        var stores = await new FixtureStores().DirectoryComplicated();
        await using var mount = await TestMount.StartAsync(stores);

        var entries = Directory.GetFileSystemEntries(Path.Combine(mount[DirectoryComplicatedName], "keep"));
        string keep = Assert.Single(entries);
        Assert.Equal(".keep", Path.GetFileName(keep));
        Assert.True(Posix.LStat(keep).IsFile);
        Assert.Equal(0, Posix.LStat(keep).Size);
    }

    [Fact]
    public async Task AttributesFollowTheNixStoreConvention()
    {
        var stores = (await (await (await new FixtureStores().BlobA()).DirectoryWithKeep()).HelloWorld()).Symlink();
        await using var mount = await TestMount.StartAsync(stores);

        var file = Posix.LStat(mount[BlobAName]);
        var executable = Posix.LStat(mount[HelloWorldName]);
        var directory = Posix.LStat(mount[DirectoryWithKeepName]);
        var symlink = Posix.LStat(mount[SymlinkName]);

        Assert.Equal(0x124u, file.Permissions); // 0444
        Assert.Equal(0x16Du, executable.Permissions); // 0555
        Assert.Equal(0x16Du, directory.Permissions); // 0555
        Assert.Equal(0x1FFu, symlink.Permissions); // 0777, as symlinks always are on Linux

        Assert.Equal(BlobA.Length, file.Size);
        Assert.Equal(HelloWorld.Length, executable.Size);
        Assert.Equal(DirectoryWithKeep.Count, directory.Size); // its number of entries
        Assert.Equal(BlobAName.Length, symlink.Size); // its target's length

        Assert.Equal(1ul, file.NLink);
        Assert.Equal(2ul, directory.NLink);
        Assert.Equal(8, file.Blocks); // one 4 KiB block
        foreach (var st in new[] { file, executable, directory, symlink })
        {
            Assert.Equal(Posix.GetEuid(), st.Uid);
            Assert.Equal(Posix.GetEgid(), st.Gid);
            Assert.Equal(1, st.MTime);
            Assert.Equal(1, st.ATime);
            Assert.Equal(1, st.CTime);
        }
    }

    [Fact]
    public async Task EqualDirectoriesShareAnInode()
    {
        var stores = await (await new FixtureStores().DirectoryWithKeep()).DirectoryComplicated();
        await using var mount = await TestMount.StartAsync(stores);

        Assert.Equal(
            Posix.Stat(mount[DirectoryWithKeepName]).Ino,
            Posix.Stat(Path.Combine(mount[DirectoryComplicatedName], "keep")).Ino);
    }

    [Fact]
    public async Task EqualFilesShareAnInode()
    {
        var stores = await new FixtureStores().DirectoryComplicated();
        await using var mount = await TestMount.StartAsync(stores);

        Assert.Equal(
            Posix.Stat(Path.Combine(mount[DirectoryComplicatedName], ".keep")).Ino,
            Posix.Stat(Path.Combine(mount[DirectoryComplicatedName], "keep", ".keep")).Ino);
    }

    [Fact]
    public async Task EqualSymlinksShareAnInode()
    {
        var stores = (await new FixtureStores().DirectoryComplicated()).Symlink2();
        await using var mount = await TestMount.StartAsync(stores);

        Assert.Equal(
            Posix.LStat(Path.Combine(mount[DirectoryComplicatedName], "aa")).Ino,
            Posix.LStat(mount[SymlinkName2]).Ino);
    }

    [Fact]
    public async Task NearMissNamesDoNotExist()
    {
        var stores = await new FixtureStores().BlobA();
        await using var mount = await TestMount.StartAsync(stores);

        Assert.Equal(Posix.ENOENT, Posix.TryStat(mount["00000000000000000000000000000000-tes"], out _));
        Assert.Equal(Posix.ENOENT, Posix.TryStat(mount["0000000000000000000000000000000-test"], out _));
        Assert.Equal(0, Posix.TryStat(mount[BlobAName], out _));

        // Still absent after the right name was looked up (the negative entry stays right).
        Assert.Equal(Posix.ENOENT, Posix.TryStat(mount["00000000000000000000000000000000-tes"], out _));
    }

    [Fact]
    public async Task WritesAreRefusedWithErofs()
    {
        var stores = await new FixtureStores().BlobA();
        await using var mount = await TestMount.StartAsync(stores);

        const int O_WRONLY = 1, O_RDWR = 2, O_CREAT = 0x40, O_TRUNC = 0x200;
        Assert.Equal(Posix.EROFS, Posix.TryOpen(mount["new-file"], O_WRONLY | O_CREAT));
        Assert.Equal(Posix.EROFS, Posix.TryOpen(mount[BlobAName], O_RDWR));
        Assert.Equal(Posix.EROFS, Posix.TryOpen(mount[BlobAName], O_WRONLY | O_TRUNC));
        var e = Assert.Throws<IOException>(() => Directory.CreateDirectory(mount["new-dir"]));
        Assert.Contains("Read-only", e.Message);
        Assert.Throws<IOException>(() => File.Delete(mount[BlobAName]));
        Assert.Equal(BlobA, await File.ReadAllBytesAsync(mount[BlobAName]));
    }

    [Fact]
    public async Task MissingDirectoryIsEio()
    {
        var stores = new FixtureStores().DirectoryNodeWithoutDirectory();
        await using var mount = await TestMount.StartAsync(stores);
        string directory = mount[DirectoryWithKeepName];

        // tvix lets stat succeed and fails the listing; we fetch at lookup (for the entry count), so stat fails.
        Assert.Equal(Posix.EIO, Posix.TryStat(directory, out _));
        Assert.ThrowsAny<IOException>(() => Directory.GetFileSystemEntries(directory));
        Assert.Equal(Posix.EIO, Posix.TryStat(Path.Combine(directory, ".keep"), out _));
        Assert.Contains(mount.LogLines, line => line.Contains(DirectoryWithKeep.Digest.ToString()) && line.Contains("not in the store"));

        // The rest of the mount is unaffected.
        Assert.Equal([DirectoryWithKeepName], Directory.GetFileSystemEntries(mount.Path).Select(p => Path.GetFileName(p)).ToArray());
    }

    [Fact]
    public async Task MissingBlobIsEioOnRead()
    {
        var stores = new FixtureStores().FileNodeWithoutBlob();
        await using var mount = await TestMount.StartAsync(stores);
        string file = mount[BlobAName];

        // stat needs no blob; reading does.
        Assert.Equal(BlobA.Length, Posix.Stat(file).Size);
        var e = Assert.ThrowsAny<IOException>(() => File.ReadAllBytes(file));
        Assert.Contains("Input/output error", e.Message);
        Assert.Contains(mount.LogLines, line => line.Contains(BlobADigest.ToString()) && line.Contains("not in the store"));
    }
}
