namespace TvixFuseBuild.Native.Tests;

/// <summary>errno from real failing calls: the numbers are the running kernel's, and the one wording of them.</summary>
public sealed unsafe class ErrnoTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("native-tests-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void FailingCallsSetTheErrnoTheConstantsName()
    {
        string file = Path.Combine(_dir, "file");
        File.WriteAllText(file, "x");
        File.CreateSymbolicLink(Path.Combine(_dir, "link"), file);

        Assert.True(Libc.open(Path.Combine(_dir, "missing"), Libc.O_RDONLY | Libc.O_CLOEXEC, 0) < 0);
        Assert.Equal(Errno.ENOENT, Errno.Last);

        Assert.True(Libc.mkdir(file, 0x1C0) < 0);
        Assert.Equal(Errno.EEXIST, Errno.Last);

        // O_DIRECTORY and O_NOFOLLOW differ between x86 and arm64: these fail as they should only with the right ones.
        Assert.True(Libc.open(file, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_CLOEXEC, 0) < 0);
        Assert.Equal(Errno.ENOTDIR, Errno.Last);
        Assert.True(Libc.open(Path.Combine(_dir, "link"), Libc.O_RDONLY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0) < 0);
        Assert.Equal(Errno.ELOOP, Errno.Last);

        Assert.True(Libc.unlinkat(Libc.AT_FDCWD, _dir, 0) < 0);
        Assert.Equal(Errno.EISDIR, Errno.Last);
        Assert.True(Libc.unlinkat(Libc.AT_FDCWD, _dir, Libc.AT_REMOVEDIR) < 0);
        Assert.Equal(Errno.ENOTEMPTY, Errno.Last);
        Assert.True(Libc.close(-1) < 0);
        Assert.Equal(Errno.EBADF, Errno.Last);
    }

    [Fact]
    public void AFailedCallBecomesAnIOExceptionNamingOperationPathAndReason()
    {
        string missing = Path.Combine(_dir, "missing");
        Assert.True(Libc.open(missing, Libc.O_RDONLY | Libc.O_CLOEXEC, 0) < 0);
        IOException e = PosixException.FromLastError("cannot open", missing);

        var posix = Assert.IsType<PosixException>(e);
        Assert.Equal($"cannot open {missing}: No such file or directory", e.Message);
        Assert.Equal(Errno.ENOENT, posix.Errno);
        Assert.Equal(Errno.ENOENT, e.HResult);
        Assert.Equal("cannot open", posix.Operation);
        Assert.Equal(missing, posix.PathName);

        Assert.Equal("flock: Resource temporarily unavailable", new PosixException("flock", null, Errno.EAGAIN).Message);
        Assert.Equal("stat /x: Permission denied", Errno.Describe("stat", "/x", Errno.EACCES));
    }
}
