namespace TvixFuseBuild.Tool.Tests;

/// <summary>--max-processes, --max-memory and --tmp-size: parsed strictly, and a build that reaches one is told which.</summary>
public sealed class LimitOptionTests : IDisposable
{
    private readonly string _temp;
    private readonly Dictionary<string, string> _environment;
    private readonly string _tools;

    public LimitOptionTests()
    {
        _temp = Directory.CreateTempSubdirectory("tvix-fuse-build-limits-test-").FullName;
        File.SetUnixFileMode(_temp, (UnixFileMode)0x1ED);
        _environment = new Dictionary<string, string> { ["XDG_DATA_HOME"] = Path.Combine(_temp, "data") };
        _tools = Path.Combine(_temp, "tools");
        Directory.CreateDirectory(Path.Combine(_tools, "bin"));
        File.Copy("/bin/busybox", Path.Combine(_tools, "bin", "busybox"));
        foreach (string applet in new[] { "sh", "dd", "sleep", "chmod" })
        {
            File.CreateSymbolicLink(Path.Combine(_tools, "bin", applet), "busybox");
        }
    }

    public void Dispose() => Directory.Delete(_temp, recursive: true);

    private ToolProcess.Result Run(params string[] arguments) =>
        ToolProcess.Run(["run", "--quiet", "--input", _tools + "=tools", .. arguments], _environment, workingDirectory: _temp);

    [Theory]
    [InlineData("--max-processes", "0", "--max-processes: the process limit must be between 1 and 4194304, not 0")]
    [InlineData("--max-processes", "many", "many")]
    [InlineData("--max-memory", "12Q", "--max-memory: '12Q' is not a size (a number of bytes, or with a K, M, G or T suffix: 512M, 2G)")]
    [InlineData("--max-memory", "1M", "--max-memory: the memory limit must be at least 32 MiB, not 1 MiB")]
    [InlineData("--tmp-size", "-5M", "--tmp-size: '-5M' is not a size")]
    [InlineData("--tmp-size", "100", "--tmp-size: the size of /tmp and /dev/shm must be at least 1 MiB, not 100 bytes")]
    public void BadValuesAreUsageErrors(string option, string value, string message)
    {
        var result = Run(option, value, "--", "sh", "-c", "true");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains(message, result.Stderr);
        Assert.DoesNotContain("   at ", result.Stderr);
        Assert.False(Directory.Exists(Path.Combine(_temp, "result-out")));
    }

    [Fact]
    public void ServeRefusesABadLimitBeforeListening()
    {
        var result = ToolProcess.Run(["serve", "--listen", "127.0.0.1:0", "--tmp-size", "lots"], _environment);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--tmp-size: 'lots' is not a size", result.Stderr);
        Assert.DoesNotContain("listening on", result.Stdout);
    }

    [Fact]
    public void EachLimitReachedIsNamedWithItsValueAndOption()
    {
        var tmp = Run("--tmp-size", "16M", "--", "sh", "-c", "dd if=/dev/zero of=/tmp/fill bs=1M count=64; exit 1");
        Assert.Equal(1, tmp.ExitCode);
        Assert.Contains("build failed: the command exited with status 1: /tmp reached its size limit of 16 MiB (--tmp-size)\n", tmp.Stderr);
        Assert.Contains("  dd: error writing '/tmp/fill': No space left on device", tmp.Stderr);

        var processes = Run("--max-processes", "20", "--", "sh", "-c", "( while true; do sleep 30 & done ) 2>/dev/null; exit 3");
        Assert.Equal(1, processes.ExitCode);
        Assert.Contains("build failed: the command exited with status 3: it reached the process limit of 20 (--max-processes)\n", processes.Stderr);

        var memory = Run("--max-memory", "64M", "--tmp-size", "512M", "--", "sh", "-c", "exec dd if=/dev/zero of=/dev/shm/fill bs=1M count=256");
        Assert.Equal(1, memory.ExitCode);
        Assert.Contains("build failed: the command was killed by signal 9 (SIGKILL): it reached the memory limit of 64 MiB (--max-memory)\n", memory.Stderr);

        // Within the limits, the same commands succeed.
        var fine = Run("--max-processes", "20", "--max-memory", "64M", "--tmp-size", "16M", "--", "sh", "-c",
            "dd if=/dev/zero of=/tmp/fill bs=1M count=8 2>/dev/null && sleep 0 && echo ok > $out");
        Assert.True(fine.ExitCode == 0, fine.Stderr);
    }
}
