using System.Runtime.InteropServices;

namespace TvixFuseBuild.Native.Tests;

/// <summary>The structs against the kernel's layouts (sizes from the uapi headers), and then against the kernel itself.</summary>
public sealed unsafe class StructLayoutTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("native-tests-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void SizesMatchTheKernelHeaders()
    {
        Assert.Equal(256, sizeof(Libc.Statx));
        Assert.Equal(120, sizeof(Libc.StatFs));
        Assert.Equal(24, sizeof(Libc.OpenHow));
        Assert.Equal(32, sizeof(Libc.MountAttr));
        Assert.Equal(16, sizeof(Libc.RLimit));
        Assert.Equal(16, sizeof(Libc.IoVec));
        Assert.Equal(56, sizeof(Libc.MsgHdr));
        Assert.Equal(16, sizeof(Libc.CMsgHdr));
        if (RuntimeInformation.ProcessArchitecture == Architecture.X64)
        {
            Assert.Equal(12, sizeof(Libc.EpollEvent));
            Assert.Equal(144, sizeof(FileStatus));
        }
    }

    [Fact]
    public void StatxFieldsAreWhereTheKernelPutsThem()
    {
        string file = Path.Combine(_dir, "file");
        File.WriteAllBytes(file, new byte[12345]);
        File.SetUnixFileMode(file, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead);

        Libc.Statx stat;
        Assert.Equal(0, Libc.statx(Libc.AT_FDCWD, file, Libc.AT_SYMLINK_NOFOLLOW, Libc.STATX_TYPE | Libc.STATX_MODE | Libc.STATX_UID | Libc.STATX_GID | Libc.STATX_INO | Libc.STATX_SIZE, &stat));
        Assert.Equal(12345ul, stat.Size);
        Assert.Equal(Libc.S_IFREG, stat.FileType);
        Assert.Equal(0x1A0u, stat.Mode & 0xFFFu);
        Assert.Equal(Libc.geteuid(), stat.Uid);
        Assert.Equal(Libc.getegid(), stat.Gid);

        if (RuntimeInformation.ProcessArchitecture == Architecture.X64)
        {
            fixed (byte* p = NativePath.FromString(file))
            {
                Assert.Equal(0, Libc.fstatat(Libc.AT_FDCWD, p, out FileStatus status, Libc.AT_SYMLINK_NOFOLLOW));
                Assert.Equal(stat.Inode, status.Inode);
                Assert.Equal(12345, status.Size);
                Assert.True(status.IsRegularFile);
                Assert.Equal(stat.Mode, status.Mode);
            }
        }

        Assert.Equal(stat.Inode, Libc.Inode(Libc.AT_FDCWD, file));
        Assert.True(Libc.StatPath(_dir, out uint owner, out uint mode));
        Assert.Equal(Libc.geteuid(), owner);
        Assert.Equal(Libc.S_IFDIR, mode & Libc.S_IFMT);
    }

    [Fact]
    public void StatfsSeesProc()
    {
        Libc.StatFs fs;
        Assert.Equal(0, Libc.statfs("/proc", &fs));
        Assert.Equal(0x9fa0, fs.Type); // PROC_SUPER_MAGIC

        int fd = Libc.open("/proc/self/status", Libc.O_RDONLY | Libc.O_CLOEXEC, 0);
        Assert.True(fd >= 0);
        try
        {
            Assert.Equal(0x9fa0, Libc.FsType(fd));
        }
        finally
        {
            Libc.close(fd);
        }
    }

    [Fact]
    public void OpenHowReachesOpenat2()
    {
        string target = Path.Combine(_dir, "target");
        Directory.CreateDirectory(target);
        File.CreateSymbolicLink(Path.Combine(_dir, "link"), target);
        int dir = Libc.open(_dir, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0);
        Assert.True(dir >= 0);
        try
        {
            int fd = Libc.OpenAt2Path(dir, "target", Libc.RESOLVE_NO_SYMLINKS);
            Assert.True(fd >= 0, Errno.Text(Errno.Last));
            Libc.close(fd);

            // The resolve flags arrive only if the struct is laid out as the kernel reads it.
            Assert.True(Libc.OpenAt2Path(dir, "link", Libc.RESOLVE_NO_SYMLINKS) < 0);
            Assert.Equal(Errno.ELOOP, Errno.Last);
        }
        finally
        {
            Libc.close(dir);
        }
    }

    [Fact]
    public void StatxOffsetsAreTheHeaders()
    {
        Libc.Statx stat = default;
        byte* start = (byte*)&stat;
        Assert.Equal(20, (byte*)&stat.Uid - start);
        Assert.Equal(24, (byte*)&stat.Gid - start);
        Assert.Equal(28, (byte*)&stat.Mode - start);
        Assert.Equal(32, (byte*)&stat.Inode - start);
        Assert.Equal(40, (byte*)&stat.Size - start);
    }

    [Fact]
    public void StatfsTypeAndAvailableBlocksAreWhereTheHeadersPutThem()
    {
        Libc.StatFs fs = default;
        byte* start = (byte*)&fs;
        Assert.Equal(0, (byte*)&fs.Type - start);
        Assert.Equal(32, (byte*)&fs.BlocksAvailable - start);
    }
}
