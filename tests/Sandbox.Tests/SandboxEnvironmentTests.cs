using System.Text;

namespace TvixFuseBuild.Sandbox.Tests;

/// <summary>What the command sees: identity, environment, working directory, hostname, /dev, inputs, scratch, files.</summary>
[Collection("sandbox")]
public sealed class SandboxEnvironmentTests
{
    private const string B = SandboxTree.Busybox;

    [Fact]
    public async Task RunsAsUid1000Gid100WithoutCapabilities()
    {
        using var tree = new SandboxTree();
        string output = await Run.Ok(tree.Sh($"{B} id; {B} grep -E '^(Cap|NoNewPrivs)' /proc/self/status"));
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.StartsWith("uid=1000(nixbld) gid=100(nixbld)", lines[0]);
        foreach (var cap in new[] { "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb" })
        {
            Assert.Contains($"{cap}:\t0000000000000000", lines);
        }

        Assert.Contains("NoNewPrivs:\t1", lines);
    }

    [Fact]
    public async Task SeesExactlyTheRequestedEnvironment()
    {
        using var tree = new SandboxTree();
        var env = new Dictionary<string, string> { ["A"] = "1", ["WITH SPACE"] = "x y", ["EMPTY"] = "", ["PATH"] = "/nowhere" };
        string output = await Run.Ok(new SandboxSpec
        {
            Command = [B, "env"],
            Environment = env,
            WorkingDirectory = "/build",
            ScratchPaths = new Dictionary<string, string> { ["build"] = tree.Build },
            InputsHostDirectory = tree.Inputs,
            InputNames = tree.InputNames,
        });
        var expected = env.Select(kv => $"{kv.Key}={kv.Value}").Order(StringComparer.Ordinal);
        Assert.Equal(expected, output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task WorkingDirectoryHostnameAndStdin()
    {
        using var tree = new SandboxTree();
        string output = await Run.Ok(tree.Sh($"{B} pwd; {B} hostname; {B} cat; echo end-of-stdin; {B} readlink /proc/self/fd/0"));
        Assert.Equal("/build\nlocalhost\nend-of-stdin\n/dev/null\n", output);
    }

    [Fact]
    public async Task DevHasOnlyTheBasicNodes()
    {
        using var tree = new SandboxTree();
        string output = await Run.Ok(tree.Sh(
            $"{B} ls -A /dev | {B} tr '\\n' ' '; echo; echo x > /dev/null && echo null-ok; " +
            $"{B} head -c 4 /dev/zero | {B} wc -c; {B} head -c 4 /dev/urandom | {B} wc -c; " +
            $"{B} ls /dev/pts; echo x > /dev/shm/f && {B} cat /dev/shm/f; {B} readlink /dev/fd; {B} readlink /dev/stdout"));
        Assert.Equal(
            "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero \nnull-ok\n4\n4\nptmx\nx\n/proc/self/fd\n/proc/self/fd/1\n",
            output);
    }

    [Fact]
    public async Task FreshProcShowsOnlyTheSandbox()
    {
        using var tree = new SandboxTree();
        string output = await Run.Ok(tree.Sh($"{B} ps -o pid,user,args | {B} grep -v 'ps -o' | {B} wc -l; {B} cat /proc/self/stat | {B} cut -d' ' -f1"));
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(int.Parse(lines[0]) <= 4, output); // header, the init, the shell, grep/wc
        Assert.True(int.Parse(lines[1]) < 100, output);
    }

    [Fact]
    public async Task InputsAreReadableAndScratchPathsWritable()
    {
        using var tree = new SandboxTree();
        string output = await Run.Ok(tree.Sh(
            $"{B} cat /nix/store/1111111111111111111111111111111d-data/file /nix/store/2222222222222222222222222222222f-file " +
            "/nix/store/3333333333333333333333333333333l-link; " +
            $"echo out > /nix/store/4444444444444444444444444444444o-out && {B} mkdir /nix/store/5555555555555555555555555555555d-dir && " +
            $"echo built > /build/result && {B} mkdir -p /build/a/b && echo tmp > /tmp/t && {B} cat /tmp/t"));
        Assert.Equal("input contents\na file input\ninput contents\ntmp\n", output);
        Assert.Equal("out\n", File.ReadAllText(Path.Combine(tree.Store, "4444444444444444444444444444444o-out")));
        Assert.True(Directory.Exists(Path.Combine(tree.Store, "5555555555555555555555555555555d-dir")));
        Assert.Equal("built\n", File.ReadAllText(Path.Combine(tree.Build, "result")));
    }

    [Fact]
    public async Task InputsDirWithoutScratchIsOneReadOnlyMount()
    {
        using var tree = new SandboxTree();
        string output = await Run.Ok(new SandboxSpec
        {
            Command = ["/inputs/" + SandboxTree.BusyboxInput + "/bin/busybox", "sh", "-c", "cd /inputs && ls; echo x > /inputs/new 2>/dev/null || echo denied"],
            Environment = new Dictionary<string, string> { ["PATH"] = "/inputs/" + SandboxTree.BusyboxInput + "/bin" },
            InputsHostDirectory = tree.Inputs,
            InputsDir = "/inputs",
        });
        Assert.Contains("1111111111111111111111111111111d-data", output);
        Assert.EndsWith("denied\n", output);
    }

    [Fact]
    public async Task ScratchPathsInsideAReadOnlyInputsDir()
    {
        // The tvix layout: only the outputs are writable, inside the inputs directory.
        using var tree = new SandboxTree();
        string output = await Run.Ok(new SandboxSpec
        {
            Command = [B, "sh", "-c",
                "echo built > /nix/store/8888888888888888888888888888888o-out/result && " +
                $"{B} cat /nix/store/1111111111111111111111111111111d-data/file; " +
                $"{B} mkdir /nix/store/other 2>/dev/null || echo no-other-entries; " +
                $"{B} rm -rf /nix/store/1111111111111111111111111111111d-data 2>/dev/null || echo input-kept"],
            ScratchPaths = new Dictionary<string, string> { ["nix/store/8888888888888888888888888888888o-out"] = tree.Store },
            InputsHostDirectory = tree.Inputs,
            InputNames = tree.InputNames,
        });
        Assert.Equal("input contents\nno-other-entries\ninput-kept\n", output);
        Assert.Equal("built\n", File.ReadAllText(Path.Combine(tree.Store, "result")));
    }

    [Fact]
    public async Task AdditionalFilesAppearWithTheirContents()
    {
        using var tree = new SandboxTree();
        var spec = tree.Sh($"{B} cat /build/.attrs.json /etc/extra/conf; {B} ls -l /build/.attrs.json | {B} cut -c1-10");
        spec = With(spec, s => new SandboxSpec
        {
            Command = s.Command, Environment = s.Environment, WorkingDirectory = s.WorkingDirectory, ScratchPaths = s.ScratchPaths,
            InputsHostDirectory = s.InputsHostDirectory, InputNames = s.InputNames,
            AdditionalFiles = new Dictionary<string, ReadOnlyMemory<byte>>
            {
                ["build/.attrs.json"] = Encoding.UTF8.GetBytes("{\"a\":1}\n"),
                ["/etc/extra/conf"] = Encoding.UTF8.GetBytes("conf\n"),
            },
        });
        Assert.Equal("{\"a\":1}\nconf\n-rw-r--r--\n", await Run.Ok(spec));
        Assert.Equal("{\"a\":1}\n", File.ReadAllText(Path.Combine(tree.Build, ".attrs.json")));
    }

    [Fact]
    public async Task EtcHasTheMinimalFiles()
    {
        using var tree = new SandboxTree();
        string output = await Run.Ok(tree.Sh($"{B} ls -A /etc | {B} tr '\\n' ' '; echo; {B} cat /etc/hosts; {B} whoami"));
        Assert.Equal("group hosts passwd \n127.0.0.1 localhost\n::1 localhost\nnixbld\n", output);
    }

    [Fact]
    public async Task CommandIsFoundInThePathOfTheSpecEnvironment()
    {
        using var tree = new SandboxTree();
        string output = await Run.Ok(new SandboxSpec
        {
            Command = ["busybox", "echo", "found"],
            Environment = new Dictionary<string, string> { ["PATH"] = "/nowhere:/nix/store/" + SandboxTree.BusyboxInput + "/bin" },
            InputsHostDirectory = tree.Inputs,
            InputNames = tree.InputNames,
        });
        Assert.Equal("found\n", output);
    }

    [Fact]
    public async Task BinShIsTheStaticBusyboxWhenAsked()
    {
        using var tree = new SandboxTree();
        var with = With(tree.Spec("/bin/sh", "-c", "echo from-bin-sh"), s => Copy(s, binSh: SandboxSpec.BusyboxShell));
        Assert.Equal("from-bin-sh\n", await Run.Ok(with));

        var (result, _) = await Run.Async(tree.Sh($"{B} test -e /bin/sh"));
        Assert.Equal(1, result.ExitCode);
    }

    [Fact]
    public async Task ReadOnlyHostPathsAreExposedAtTheSamePath()
    {
        using var tree = new SandboxTree();
        string dir = tree.Scratch("ro-host");
        File.WriteAllText(Path.Combine(dir, "f"), "ro\n");
        var spec = Copy(tree.Sh($"{B} cat {dir}/f; echo x 2>/dev/null > {dir}/g || echo denied; echo y 2>/dev/null > /dev/zero-test || echo no-dev-write"),
            readOnly: [dir]);
        Assert.Equal("ro\ndenied\nno-dev-write\n", await Run.Ok(spec));
    }

    [Fact]
    public async Task ExitCodesAndSignalsAreReported()
    {
        using var tree = new SandboxTree();
        var (exited, _) = await Run.Async(tree.Sh("exit 3"));
        Assert.Equal(SandboxOutcome.Exited, exited.Outcome);
        Assert.Equal(3, exited.ExitCode);
        Assert.False(exited.Succeeded);

        var (signaled, _) = await Run.Async(tree.Sh($"{B} kill -TERM $$"));
        Assert.Equal(SandboxOutcome.Signaled, signaled.Outcome);
        Assert.Equal(15, signaled.Signal);
    }

    [Fact]
    public async Task OutputIsStreamedToTheSinkAndTheLogFile()
    {
        using var tree = new SandboxTree();
        string logFile = Path.Combine(tree.Root, "build.log");
        var spec = Copy(tree.Sh($"echo one; echo two >&2; {B} seq 1 20000"), logFile: logFile);
        var (result, output) = await Run.Async(spec);
        Assert.True(result.Succeeded);
        string expected = "one\ntwo\n" + string.Concat(Enumerable.Range(1, 20000).Select(i => i + "\n"));
        Assert.Equal(expected, output);
        Assert.Equal(expected, File.ReadAllText(logFile));
        Assert.Equal(Encoding.UTF8.GetByteCount(expected), result.LogBytes);
        Assert.EndsWith("19999\n20000\n", result.LogTail);
    }

    [Fact]
    public async Task NetworkAccessBringsTheHostResolverFiles()
    {
        using var tree = new SandboxTree();
        string output = await Run.Ok(Copy(tree.Sh($"{B} ls /etc | {B} tr '\\n' ' '"), network: true));
        foreach (var f in new[] { "resolv.conf", "hosts", "services" }.Where(f => File.Exists("/etc/" + f)))
        {
            Assert.Contains(f, output);
        }
    }

    [Fact]
    public async Task ConcurrentRunsFromManyThreads()
    {
        // Each run has its own scratch directories: as root, each runs as a build user of its own, which owns them.
        var trees = Enumerable.Range(0, 6).Select(_ => new SandboxTree()).ToArray();
        try
        {
            var runs = Enumerable.Range(0, 6).Select(i => Task.Run(() =>
                Run.Ok(trees[i].Sh($"echo run-{i} > /build/run-{i}; {B} cat /build/run-{i}")))).ToArray();
            var outputs = await Task.WhenAll(runs);
            for (int i = 0; i < outputs.Length; i++)
            {
                Assert.Equal($"run-{i}\n", outputs[i]);
            }
        }
        finally
        {
            foreach (var tree in trees)
            {
                tree.Dispose();
            }
        }
    }

    internal static SandboxSpec With(SandboxSpec spec, Func<SandboxSpec, SandboxSpec> change) => change(spec);

    internal static SandboxSpec Copy(SandboxSpec s, string? binSh = null, IReadOnlyList<string>? readOnly = null, string? logFile = null,
        bool? network = null, TimeSpan? timeout = null, TimeSpan? silence = null, long? logLimit = null, string? system = null, long? minMemory = null,
        IReadOnlyList<string>? protectedPaths = null, BuildUser? user = null) => new()
    {
        Command = s.Command,
        Environment = s.Environment,
        WorkingDirectory = s.WorkingDirectory,
        ScratchPaths = s.ScratchPaths,
        InputsHostDirectory = s.InputsHostDirectory,
        InputsDir = s.InputsDir,
        InputNames = s.InputNames,
        AdditionalFiles = s.AdditionalFiles,
        ReadOnlyHostPaths = readOnly ?? s.ReadOnlyHostPaths,
        BinSh = binSh ?? s.BinSh,
        Network = network ?? s.Network,
        Timeout = timeout ?? s.Timeout,
        SilenceTimeout = silence ?? s.SilenceTimeout,
        LogLimit = logLimit ?? s.LogLimit,
        LogFile = logFile ?? s.LogFile,
        System = system ?? s.System,
        MinMemory = minMemory ?? s.MinMemory,
        ProtectedHostPaths = protectedPaths ?? s.ProtectedHostPaths,
        User = user ?? s.User,
    };
}
