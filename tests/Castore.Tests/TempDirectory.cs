namespace TvixFuseBuild.Castore.Tests;

/// <summary>A directory under /tmp removed (read-only parts and non-UTF-8 names included) when the test ends.</summary>
internal sealed class TempDirectory : IDisposable
{
    public TempDirectory(string prefix = "tvix-fuse-test-") => Path = Directory.CreateTempSubdirectory(prefix).FullName;

    public string Path { get; }

    public string Combine(params string[] parts) => System.IO.Path.Combine([Path, .. parts]);

    public void Dispose()
    {
        if (!Directory.Exists(Path))
        {
            return;
        }

        // .NET cannot name files whose names are not UTF-8; chmod and rm can.
        ProcessRunner.Run("chmod", "-R", "u+rwX", Path);
        var (code, _, stderr) = ProcessRunner.Run("rm", "-rf", "--one-file-system", Path);
        Assert.True(code == 0 && !Directory.Exists(Path), $"cannot remove {Path}: {stderr}");
    }
}
