using System.Text;
using System.Text.RegularExpressions;

namespace TvixFuseBuild.Tool.Tests;

/// <summary>Files every error case reads: a store with one tree in it, bad requests of every kind, a FIFO, a socket.</summary>
public sealed class ErrorPathFixture : IDisposable
{
    public ErrorPathFixture()
    {
        Root = Directory.CreateTempSubdirectory("tvix-fuse-errors-test-").FullName;
        File.SetUnixFileMode(Root, (UnixFileMode)0x1ED);
        Environment = new Dictionary<string, string> { ["XDG_DATA_HOME"] = Path.Combine(Root, "data") };
        Directory.CreateDirectory(Path.Combine(Root, "tree", "sub"));
        File.WriteAllText(Path.Combine(Root, "tree", "hello.txt"), "hello\n");
        Directory.CreateDirectory(Path.Combine(Root, "mnt"));

        var import = ToolProcess.Run(["import", Path.Combine(Root, "tree")], Environment);
        Assert.True(import.ExitCode == 0, import.Stderr);
        TreeDigest = import.Stdout.Split('\t')[2];

        Write("array.json", "[]");
        Write("null.json", "null");
        Write("string.json", "\"build me\"");
        Write("number.json", "42");
        Write("wrong-type.json", "{ \"commandArgs\": 5 }");
        Write("unknown-field.json", "{ \"commandArgs\": [\"sh\"], \"comandArgs\": [] }");
        Write("long-field.json", $"{{ \"{new string('x', 1 << 20)}\": 1 }}");
        Write("truncated.json", "{ \"commandArgs\": [\"sh\"");
        Write("invalid.json", "{ \"commandArgs\": [\"sh\"], \"outputs\": [\"/abs\"] }");
        Write("empty.json", "");
        File.WriteAllBytes(Path.Combine(Root, "garbage.bin"), [0x0a, 0xff, 0xff, 0xff, 0x01, 0x02]);
        Write("nodes-bad.json", "[{\"file\": {\"name\": 5}}]");
        Write("nodes-bad.txt", "name\tfile\tnot-a-digest\t3\n");
        Write("needles", "abc\n");
        Write("needles-gap", "abc\n\ndef\n");
        Run("mkfifo", Path.Combine(Root, "fifo"));
    }

    public string Root { get; }

    public Dictionary<string, string> Environment { get; }

    public string TreeDigest { get; }

    private void Write(string name, string text) => File.WriteAllText(Path.Combine(Root, name), text);

    private static void Run(string program, params string[] arguments)
    {
        using var process = System.Diagnostics.Process.Start(program, arguments)!;
        process.WaitForExit();
        Assert.Equal(0, process.ExitCode);
    }

    public void Dispose()
    {
        using var chmod = System.Diagnostics.Process.Start("chmod", ["-R", "u+rwX", Root])!;
        chmod.WaitForExit();
        Directory.Delete(Root, recursive: true);
    }
}

/// <summary>
/// Every way a command line can be wrong that we could think of, through the real tool: bad usage exits 2, a failure 1,
/// and either way stderr has exactly one line <c>tvix-fuse-build: error: …</c>, short, with no stack trace, no
/// runtime resource key and no .NET type name.
/// </summary>
public sealed partial class ErrorPathTests(ErrorPathFixture fixture) : IClassFixture<ErrorPathFixture>
{
    private const string Hex = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    /// <summary>Name, exit code, arguments ({T}: the fixture's directory, {D}: a directory digest in its store), and a part of the message.</summary>
    public static TheoryData<string, int, string[], string> Cases() => new()
    {
        // The command line itself.
        { "no command", 2, [], "no command given" },
        { "misspelt command", 2, ["impot", "x"], "unknown command 'impot' (did you mean 'import'?)" },
        { "unknown root option", 2, ["--bogus", "ls", "{D}"], "unknown option '--bogus'" },
        { "misspelt option", 2, ["import", "--jsn", "{T}/tree"], "(did you mean '--json'?)" },
        { "unknown option taken for a path", 2, ["import", "--bogus"], "unknown option '--bogus' for 'tvix-fuse-build import'" },
        { "option of another command", 2, ["ls", "--timeout", "3", "{D}"], "unknown option '--timeout'" },
        { "extra argument", 2, ["cat", "{D}/hello.txt", "extra"], "unexpected argument 'extra'" },
        { "huge argument", 2, ["ls", new string('a', 100_000)], "… (100000 bytes)" },
        { "control characters in an argument", 2, ["ls", "\u001b[31mred\u001b[0m"], "\\e[31mred\\e[0m" },

        // Store addresses.
        { "unknown store scheme", 2, ["--store", "foo://bar", "ls", "{D}"], "unknown scheme 'foo'" },
        { "store without a port", 2, ["--store", "grpc+http://localhost", "ls", "{D}"], "no port" },
        { "offline and wait-connect", 2, ["--store", "grpc+http://localhost:1?offline=1&wait-connect=1", "ls", "{D}"], "contradict" },
        { "offline without a cache", 2, ["--store", "grpc+http://localhost:1?offline=1&cache=none", "ls", "{D}"], "needs the local cache" },
        { "relative local store", 2, ["--store", "local://relative", "ls", "{D}"], "invalid store address" },
        { "store in a missing place", 1, ["--store", "/proc/nope", "import", "{T}/tree"], "cannot open the store /proc/nope" },
        { "store that is a file", 1, ["--store", "local:///etc/passwd", "import", "{T}/tree"], "/etc/passwd is a file, not a directory" },
        { "store not a store", 1, ["--store", "/etc", "ls", "{D}"], "not a tvix-fuse-build store" },
        { "unreachable remote store", 1, ["--store", "grpc+unix:///nonexistent/castore.sock", "ls", "{D}"], "cannot reach the store" },

        // build
        { "build: missing request", 1, ["build", "{T}/missing.json"], "cannot read request {T}/missing.json: no such file" },
        { "build: request is a directory", 1, ["build", "{T}/tree"], "is a directory" },
        { "build: array request", 1, ["build", "{T}/array.json"], "expected a JSON object, found an array" },
        { "build: null request", 1, ["build", "{T}/null.json"], "expected a JSON object, found null" },
        { "build: string request", 1, ["build", "{T}/string.json"], "expected a JSON object" },
        { "build: number request", 1, ["build", "{T}/number.json"], "expected a JSON object" },
        { "build: wrong field type", 1, ["build", "{T}/wrong-type.json"], "commandArgs" },
        { "build: unknown field", 1, ["build", "{T}/unknown-field.json"], "comandArgs" },
        { "build: huge field name", 1, ["build", "{T}/long-field.json"], "bytes)" },
        { "build: truncated JSON", 1, ["build", "{T}/truncated.json"], "truncated.json" },
        { "build: empty request", 1, ["build", "{T}/empty.json"], "invalid request" },
        { "build: binary garbage", 1, ["build", "{T}/garbage.bin"], "malformed binary" },
        { "build: invalid request", 1, ["build", "{T}/invalid.json"], "invalid request" },
        { "build: timeout not a number", 2, ["build", "--timeout", "abc", "{T}/invalid.json"], "--timeout: 'abc' is not a number (SECONDS)" },
        { "build: negative timeout", 2, ["build", "--timeout", "-1", "{T}/invalid.json"], "--timeout must be positive" },
        { "build: log size not whole", 2, ["build", "--max-log-size", "1.5", "{T}/invalid.json"], "is not a whole number" },
        { "build: option without value", 2, ["build", "{T}/invalid.json", "--timeout"], "--timeout needs a value" },
        { "build: unknown protocol", 2, ["build", "--protocol", "tvx", "{T}/invalid.json"], "(did you mean 'tvix'?)" },
        { "build: unknown format", 2, ["build", "--format", "yaml", "{T}/invalid.json"], "is not one of binary, json" },

        // run
        { "run: no command", 2, ["run"], "'run' needs COMMAND" },
        { "run: command options before --", 2, ["run", "sh", "-c", "true"], "unknown option '-c'" },
        { "run: missing input", 1, ["run", "--input", "{T}/missing", "--", "true"], "no such file or directory" },
        { "run: bad --env", 2, ["run", "--env", "NOEQUALS", "--", "true"], "--env NOEQUALS: expected KEY=VALUE" },
        { "run: bad --name", 2, ["run", "--name", "a/b", "--", "true"], "--name" },

        // import
        { "import: no path", 2, ["import"], "'import' needs PATH" },
        { "import: missing path", 1, ["import", "{T}/missing"], "cannot import {T}/missing: no such file or directory" },
        { "import: fifo", 1, ["import", "{T}/fifo"], "it is a fifo" },
        { "import: device", 1, ["import", "/dev/null"], "it is a character device" },

        // export
        { "export: one operand", 2, ["export", "{D}"], "usage: export" },
        { "export: bad digest", 2, ["export", "blake3-nonsense", "{T}/out"], "" },
        { "export: not in the store", 1, ["export", Hex, "{T}/out"], "neither a directory nor a blob" },
        { "export: nodes file missing", 1, ["export", "--nodes", "{T}/missing", "{T}"], "cannot read nodes file {T}/missing: no such file" },
        { "export: nodes file malformed", 2, ["export", "--nodes", "{T}/nodes-bad.json", "{T}"], "node 0" },
        { "export: destination exists", 1, ["export", "{D}", "{T}/tree"], "" },

        // ls, cat
        { "ls: no digest", 2, ["ls"], "'ls' needs DIGEST[/PATH]" },
        { "ls: bad digest", 2, ["ls", "blake3-nonsense"], "" },
        { "ls: not in the store", 1, ["ls", Hex], "neither a directory nor a blob" },
        { "ls: no such path inside", 1, ["ls", "{D}/nope"], "no such file or directory" },
        { "cat: a directory", 2, ["cat", "{D}"], "is a directory" },
        { "cat: not in the store", 1, ["cat", Hex], "neither a directory nor a blob" },

        // mount
        { "mount: no mountpoint", 2, ["mount"], "'mount' needs MOUNTPOINT" },
        { "mount: neither source", 2, ["mount", "{T}/mnt"], "exactly one of" },
        { "mount: threads zero", 2, ["mount", "{T}/mnt", "--directory", "{D}", "--threads", "0"], "--threads must be between 1 and 256" },
        { "mount: threads not a number", 2, ["mount", "{T}/mnt", "--directory", "{D}", "--threads", "many"], "is not a whole number" },
        { "mount: bad digest", 2, ["mount", "{T}/mnt", "--directory", "nope"], "--directory" },
        { "mount: nodes file missing", 1, ["mount", "{T}/mnt", "--nodes", "{T}/missing"], "cannot read nodes file" },
        { "mount: nodes line malformed", 2, ["mount", "{T}/mnt", "--nodes", "{T}/nodes-bad.txt"], "nodes-bad.txt:1:" },
        { "mount: missing mountpoint", 1, ["mount", "{T}/missing", "--directory", "{D}"], "no such directory" },
        { "mount: directory not in the store", 1, ["mount", "{T}/mnt", "--directory", Hex], "is not in the store" },

        // refscan
        { "refscan: no needles", 2, ["refscan", "{T}/tree"], "'refscan' needs --needles FILE" },
        { "refscan: needles missing", 1, ["refscan", "--needles", "{T}/missing", "{T}/tree"], "cannot read needles file" },
        { "refscan: empty needle", 1, ["refscan", "--needles", "{T}/needles-gap", "{T}/tree"], "line 2 is empty" },
        { "refscan: threads not a number", 2, ["refscan", "--needles", "{T}/needles", "-j", "x", "{T}/tree"], "is not a whole number" },
        { "refscan: unknown engine", 2, ["refscan", "--needles", "{T}/needles", "--engine", "fast", "{T}/tree"], "is not one of" },

        // serve
        { "serve: no listen", 2, ["serve"], "'serve' needs --listen ADDR" },
        { "serve: relative socket", 2, ["serve", "--listen", "unix:relative.sock"], "--listen" },
        { "serve: no port", 2, ["serve", "--listen", "localhost"], "--listen" },
        { "serve: builds zero", 2, ["serve", "--listen", "unix:{T}/s.sock", "--max-builds", "0"], "--max-builds must be between 1 and 1024" },
        { "serve: grace not a number", 2, ["serve", "--listen", "unix:{T}/s.sock", "--grace-period", "soon"], "is not a number" },
        { "serve: socket in a missing directory", 1, ["serve", "--listen", "unix:{T}/missing/s.sock"], "does not exist" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void ErrorIsOneClearLine(string name, int exitCode, string[] arguments, string expected)
    {
        string[] args = [.. arguments.Select(Expand)];
        var result = ToolProcess.Run(args, fixture.Environment, timeout: TimeSpan.FromMinutes(2));
        string context = $"{name}: exit {result.ExitCode}, stderr:\n{Shorten(result.Stderr)}";

        Assert.True(result.ExitCode == exitCode, context);
        string[] errorLines = [.. result.Stderr.Split('\n').Where(l => l.StartsWith("tvix-fuse-build: error: ", StringComparison.Ordinal))];
        Assert.True(errorLines.Length == 1, context);
        Assert.True(result.Stderr.Split('\n').All(l => l.StartsWith("tvix-fuse-build: ", StringComparison.Ordinal) || l.StartsWith("Run 'tvix-fuse-build", StringComparison.Ordinal) || l.Length == 0), context);
        Assert.Contains(Expand(expected), errorLines[0]);
        Assert.False(ResourceKey().IsMatch(result.Stderr), context);
        Assert.DoesNotContain("System.", result.Stderr);
        Assert.DoesNotContain("Exception", result.Stderr);
        Assert.DoesNotContain("   at ", result.Stderr);
        Assert.True(result.Stderr.Length < 2_000, context);
        Assert.DoesNotContain('\u001b', result.Stderr);
        if (exitCode == 2)
        {
            Assert.EndsWith("--help' for usage.\n", result.Stderr);
        }
    }

    [Fact]
    public void BuildWithoutARequestOnATerminalPrintsItsUsage()
    {
        var result = ToolProcess.RunInTerminal(["build"], fixture.Environment);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("Usage:", result.Stdout);
        Assert.Contains("tvix-fuse-build build [<REQUEST>] [options]", result.Stdout);
        Assert.Contains("tvix-fuse-build: error: no request: give a REQUEST file, or '-' to type one on the terminal\n", result.Stdout);
    }

    [Fact]
    public void RemoteStoreThatCannotBeReachedFailsUnlessOffline()
    {
        // The tree is in the default local store, which is also the cache in front of a remote store.
        string[] ls = ["ls", fixture.TreeDigest];
        const string Unreachable = "grpc+http://nosuchhost.invalid:80";

        var online = ToolProcess.Run(["--store", Unreachable, .. ls], fixture.Environment);
        Assert.Equal(1, online.ExitCode);
        Assert.StartsWith($"tvix-fuse-build: error: cannot reach the store {Unreachable}: ", online.Stderr);
        Assert.Contains("--offline", online.Stderr);
        Assert.Equal("", online.Stdout);

        var flag = ToolProcess.Run(["--store", Unreachable, "--offline", .. ls], fixture.Environment);
        Assert.True(flag.ExitCode == 0, flag.Stderr);
        Assert.Contains("hello.txt", flag.Stdout);

        var query = ToolProcess.Run(["--store", Unreachable + "?offline=1", .. ls], fixture.Environment);
        Assert.True(query.ExitCode == 0, query.Stderr);
        Assert.Equal(flag.Stdout, query.Stdout);

        // Offline, what the cache lacks still needs the store.
        var missing = ToolProcess.Run(["--store", Unreachable, "--offline", "ls", Hex], fixture.Environment);
        Assert.Equal(1, missing.ExitCode);
        Assert.StartsWith("tvix-fuse-build: error: ", missing.Stderr);
    }

    [Fact]
    public void NamesWithControlCharactersAreEscaped()
    {
        string tree = Path.Combine(fixture.Root, "escapes");
        Directory.CreateDirectory(tree);
        File.WriteAllText(Path.Combine(tree, "evil\u001b]0;owned\u0007\nname"), "x");
        File.CreateSymbolicLink(Path.Combine(tree, "link"), "to\u001b[2J");

        var import = ToolProcess.Run(["import", tree], fixture.Environment);
        Assert.True(import.ExitCode == 0, import.Stderr);
        string digest = import.Stdout.Split('\t')[2];

        var ls = ToolProcess.Run(["ls", digest], fixture.Environment);
        Assert.True(ls.ExitCode == 0, ls.Stderr);
        Assert.DoesNotContain('\u001b', ls.Stdout);
        Assert.DoesNotContain('\u0007', ls.Stdout);
        Assert.Contains(@"evil\e]0;owned\x07\nname", ls.Stdout);
        Assert.Contains(@"link -> to\e[2J", ls.Stdout);
        Assert.Equal(2, ls.Stdout.TrimEnd('\n').Split('\n').Length);

        var json = ToolProcess.Run(["import", "--json", tree], fixture.Environment);
        Assert.True(json.ExitCode == 0, json.Stderr);
        Assert.DoesNotContain('\u001b', json.Stdout);

        var missing = ToolProcess.Run(["cat", digest + "/nope\u001b[1m"], fixture.Environment);
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains(@"nope\e[1m", missing.Stderr);
    }

    private string Expand(string text) => text.Replace("{T}", fixture.Root, StringComparison.Ordinal).Replace("{D}", fixture.TreeDigest, StringComparison.Ordinal);

    private static string Shorten(string text) => text.Length <= 4000 ? text : text[..4000] + $"… ({text.Length} characters)";

    // Runtime resource keys look like IO_FileNotFound_FileName or Arg_NullArgument.
    [GeneratedRegex(@"\b[A-Z][A-Za-z]*_[A-Z][a-z]+")]
    private static partial Regex ResourceKey();
}
