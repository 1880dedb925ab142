using System.Text;

namespace TvixFuseBuild.Native.Tests;

/// <summary>Real children started the one way the sandbox init and the mount's watchdog start theirs.</summary>
public sealed unsafe class PosixSpawnTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("native-spawn-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Runs sh -c <paramref name="script"/> with its stdout and stderr on a pipe; returns the exit status and the output.</summary>
    private static (int Rc, string Step, int Status, string Output) Run(string script, string directory, IReadOnlyList<string> environment, bool stdinPipe = false)
    {
        int* fds = stackalloc int[2];
        int* input = stackalloc int[2];
        Assert.Equal(0, Libc.pipe2(fds, Libc.O_CLOEXEC));
        Assert.Equal(0, Libc.pipe2(input, Libc.O_CLOEXEC));
        int rc = PosixSpawn.Start("/bin/sh", ["sh", "-c", script], environment, directory, stdinPipe ? input[0] : -1, fds[1], fds[1], out int pid, out string step);
        Libc.close(fds[1]);
        Libc.close(input[0]);
        byte* text = stackalloc byte[5];
        "piped"u8.CopyTo(new Span<byte>(text, 5));
        Libc.write(input[1], text, 5);
        Libc.close(input[1]);

        var output = new List<byte>();
        byte* buffer = stackalloc byte[4096];
        nint n;
        while ((n = Libc.read(fds[0], buffer, 4096)) > 0)
        {
            output.AddRange(new ReadOnlySpan<byte>(buffer, (int)n).ToArray());
        }

        Libc.close(fds[0]);
        int status = 0;
        if (rc == 0)
        {
            Assert.Equal(pid, Libc.waitpid(pid, &status, 0));
        }

        return (rc, step, status, Encoding.UTF8.GetString(output.ToArray()));
    }

    [Fact]
    public void TheChildGetsItsDirectoryEnvironmentDescriptorsAndSession()
    {
        // Descriptors of this process that are not close-on-exec must not reach the child either.
        int leaked = Libc.open("/dev/null", Libc.O_RDONLY, 0);
        try
        {
            var (rc, _, status, output) = Run(
                "echo \"$GREETING\"; pwd; ls /proc/self/fd | sort -n | tr '\\n' ' '; echo; " +
                "[ \"$(cut -d' ' -f6 /proc/self/stat)\" = \"$$\" ] && echo own-session; cat; echo; echo err >&2",
                _dir, ["GREETING=hé", "PATH=/usr/bin:/bin"]);
            Assert.Equal(0, rc);
            Assert.Equal(0, status);
            string fd = "0 1 2 3 ";
            Assert.Equal($"hé\n{_dir}\n{fd}\nown-session\n\nerr\n", output);
        }
        finally
        {
            Libc.close(leaked);
        }
    }

    [Fact]
    public void StdinIsTheGivenDescriptorOrDevNull()
    {
        Assert.Equal("piped", Run("cat", "/", [], stdinPipe: true).Output);
        Assert.Equal(string.Empty, Run("cat", "/", []).Output);
    }

    [Fact]
    public void AMissingDirectoryIsTheSpawnsErrno()
    {
        var (rc, step, _, _) = Run("true", Path.Combine(_dir, "missing"), []);
        Assert.Equal(Errno.ENOENT, rc);
        Assert.Equal("spawn", step);
    }
}
