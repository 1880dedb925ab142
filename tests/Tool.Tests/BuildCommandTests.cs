using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Google.Protobuf;
using SnixBuild = Snix.Build.V1;
using TvixBuild = Tvix.Build.V1;

namespace TvixFuseBuild.Tool.Tests;

/// <summary>The <c>build</c> and <c>run</c> commands as users run them: real processes, real sandboxes, real mounts.</summary>
public sealed class BuildCommandTests : IDisposable
{
    private const string OutPath = "nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo";
    private readonly string _temp;
    private readonly Dictionary<string, string> _environment;

    public BuildCommandTests()
    {
        _temp = Directory.CreateTempSubdirectory("tvix-fuse-build-cli-test-").FullName;
        File.SetUnixFileMode(_temp, (UnixFileMode)0x1ED);
        // Isolates the default store and the result cache.
        _environment = new Dictionary<string, string> { ["XDG_DATA_HOME"] = Path.Combine(_temp, "data") };
    }

    public void Dispose()
    {
        var chmod = System.Diagnostics.Process.Start("chmod", ["-R", "u+rwX", _temp])!;
        chmod.WaitForExit();
        Directory.Delete(_temp, recursive: true);
    }

    private ToolProcess.Result Tool(string[] arguments, string? stdin = null, string? workingDirectory = null) =>
        ToolProcess.Run(arguments, _environment, stdin, workingDirectory: workingDirectory);

    /// <summary>Imports a busybox tree (bin/ with its applets) and returns its tvix Node JSON, named as a store path.</summary>
    private JsonNode ImportBusybox()
    {
        string tree = Path.Combine(_temp, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-busybox");
        Directory.CreateDirectory(Path.Combine(tree, "bin"));
        File.Copy("/bin/busybox", Path.Combine(tree, "bin", "busybox"));
        foreach (string applet in new[] { "sh", "echo", "mkdir", "cat", "ln", "sleep" })
        {
            File.CreateSymbolicLink(Path.Combine(tree, "bin", applet), "busybox");
        }

        var import = Tool(["import", "--json", tree]);
        Assert.True(import.ExitCode == 0, import.Stderr);
        return JsonNode.Parse(import.Stdout)!.AsArray()[0]!;
    }

    private static string Base64(string text) => Convert.ToBase64String(Encoding.UTF8.GetBytes(text));

    private JsonObject Request(JsonNode busybox, string script) => new()
    {
        ["inputs"] = new JsonArray(busybox.DeepClone()),
        ["commandArgs"] = new JsonArray("/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-busybox/bin/sh", "-c", script),
        ["workingDir"] = "build",
        ["scratchPaths"] = new JsonArray("build", "nix/store"),
        ["inputsDir"] = "nix/store",
        ["outputs"] = new JsonArray(OutPath),
        ["environmentVars"] = new JsonArray(
            new JsonObject { ["key"] = "PATH", ["value"] = Base64("/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-busybox/bin") },
            new JsonObject { ["key"] = "out", ["value"] = Base64("/" + OutPath) }),
        ["refscanNeedles"] = new JsonArray("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "fhaj6gmwns62s6ypkcldbaj2ybvkhx3p"),
    };

    [Fact]
    public void BuildReadsJsonAndRepliesWithATvixBuild()
    {
        var busybox = ImportBusybox();
        string request = Path.Combine(_temp, "request.json");
        File.WriteAllText(request, Request(busybox, "echo building; mkdir $out; echo /nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-busybox > $out/ref").ToJsonString());

        var result = Tool(["build", request]);
        Assert.True(result.ExitCode == 0, result.Stderr);
        Assert.Contains("building", result.Stderr); // the log is streamed to stderr
        var reply = JsonParser.Default.Parse<TvixBuild.Build>(result.Stdout);
        Assert.Equal("fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo", reply.Outputs.Single().Directory.Name.ToStringUtf8());
        Assert.Equal([0UL], reply.OutputsNeedles.Single().Needles);
        Assert.Equal(OutPath, reply.BuildRequest.Outputs.Single());

        // The output is in the store: ls finds it by digest.
        var ls = Tool(["ls", reply.Outputs.Single().Directory.Digest.ToBase64() is var b64 ? "blake3-" + b64 : ""]);
        Assert.True(ls.ExitCode == 0, ls.Stderr);
        Assert.Contains(" ref", ls.Stdout);
    }

    [Fact]
    public void OnATerminalBuildAndImportPrintWhatPeopleCanRead()
    {
        var busybox = ImportBusybox();
        string request = Path.Combine(_temp, "request.json");
        File.WriteAllText(request, Request(busybox, "mkdir $out; echo /nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-busybox > $out/ref").ToJsonString());

        var build = ToolProcess.RunInTerminal(["build", request], _environment);
        Assert.True(build.ExitCode == 0, build.Stdout);
        Assert.Contains("built 1 output:\n", build.Stdout);
        Assert.True(
            Regex.IsMatch(build.Stdout, @"\n  /nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo: directory blake3-[A-Za-z0-9+/]{43}=, castore size 2; references bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-busybox\n"),
            build.Stdout);
        Assert.DoesNotContain("buildRequest", build.Stdout);

        // Answered from the result cache, it says so; asked for JSON, it writes JSON even on a terminal.
        var cached = ToolProcess.RunInTerminal(["build", request], _environment);
        Assert.Contains("1 output, from the result cache", cached.Stdout);
        var json = ToolProcess.RunInTerminal(["build", "--format", "json", request], _environment);
        Assert.Contains("\"buildRequest\"", json.Stdout);

        // import --json: the JSON, and the readable lines after it.
        string file = Path.Combine(_temp, "hello.txt");
        File.WriteAllText(file, "hello\n");
        var import = ToolProcess.RunInTerminal(["import", "--json", file], _environment);
        Assert.Contains("\"name\": \"aGVsbG8udHh0\"", import.Stdout);
        Assert.True(Regex.IsMatch(import.Stdout, @"\nhello\.txt\tfile\tblake3-[A-Za-z0-9+/]{43}=\t6\n"), import.Stdout);
    }

    [Fact]
    public void AResultCacheHitBuildsNoProtobufDescriptors()
    {
        var busybox = ImportBusybox();
        string json = Path.Combine(_temp, "request.json"), binary = Path.Combine(_temp, "request.bin");
        File.WriteAllText(json, Request(busybox, "mkdir $out; echo hi > $out/hi").ToJsonString());
        File.WriteAllBytes(binary, JsonParser.Default.Parse<SnixBuild.BuildRequest>(File.ReadAllText(json)).ToByteArray());
        string[][] hits =
        [
            ["build", "--quiet", "--out", Path.Combine(_temp, "reply-{0}.json"), json],
            ["build", "--quiet", "--protocol", "snix", "--out", Path.Combine(_temp, "reply-{0}.bin"), binary],
        ];
        foreach (var command in hits)
        {
            var built = Tool([.. command.Select(a => a.Replace("{0}", "built", StringComparison.Ordinal))]);
            Assert.True(built.ExitCode == 0, built.Stderr);

            // With nothing precompiled, the JIT's summary lists every method the cache hit ran.
            string summary = Path.Combine(_temp, "jit-summary.txt");
            var hit = ToolProcess.Run(
                command.Select(a => a.Replace("{0}", "hit", StringComparison.Ordinal)),
                new Dictionary<string, string>(_environment) { ["DOTNET_ReadyToRun"] = "0", ["DOTNET_JitDisasmSummary"] = "1", ["DOTNET_JitStdOutFile"] = summary },
                executable: ToolProcess.FrameworkDependentExecutable);
            Assert.True(hit.ExitCode == 0, hit.Stderr);
            string extension = command[^1] == json ? "json" : "bin";
            Assert.Equal(File.ReadAllBytes(Path.Combine(_temp, $"reply-built.{extension}")), File.ReadAllBytes(Path.Combine(_temp, $"reply-hit.{extension}")));
            string compiled = File.ReadAllText(summary);
            Assert.Contains("ResultCache:TryGetAsync", compiled);
            Assert.Contains(extension == "json" ? "JsonMessageReader:Parse" : "BinaryMessageReader:Parse", compiled);
            if (extension == "json")
            {
                Assert.Contains("JsonMessageWriter:Write", compiled);
            }

            Assert.DoesNotContain("Google.Protobuf.Reflection.", compiled);
            Assert.DoesNotContain("Google.Protobuf.JsonParser", compiled);
            Assert.DoesNotContain("Google.Protobuf.JsonFormatter", compiled);
            Assert.DoesNotContain("BuildReflection", compiled);
            Assert.DoesNotContain("CastoreReflection", compiled);
        }
    }

    [Fact]
    public async Task BuildReadsBinaryFromStdinAndRepliesWithASnixBuildResponseInBinary()
    {
        var busybox = ImportBusybox();
        var json = Request(busybox, "mkdir $out; echo hi > $out/hi").ToJsonString();
        var snixRequest = JsonParser.Default.Parse<SnixBuild.BuildRequest>(json);
        string requestFile = Path.Combine(_temp, "request.bin");
        File.WriteAllBytes(requestFile, snixRequest.ToByteArray());
        string replyFile = Path.Combine(_temp, "reply.bin");

        using var process = ToolProcess.Start(["build", "--protocol", "snix", "--out", replyFile, "-"], _environment, redirectStdin: true);
        process.StandardInput.BaseStream.Write(File.ReadAllBytes(requestFile));
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        string stderr = await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(2));
        Assert.True(process.ExitCode == 0, stderr);
        Assert.Equal(string.Empty, await stdout);
        var reply = SnixBuild.BuildResponse.Parser.ParseFrom(File.ReadAllBytes(replyFile));
        Assert.True(reply.Outputs.Single().Output_.Directory.Name.IsEmpty);
    }

    [Fact]
    public void AFailingCommandExitsOneWithTheStatusAndTheLastLogLines()
    {
        var busybox = ImportBusybox();
        string request = Path.Combine(_temp, "request.json");
        File.WriteAllText(request, Request(busybox, "echo line one; echo line two; exit 7").ToJsonString());
        var result = Tool(["build", "--quiet", request]);
        Assert.Equal(1, result.ExitCode);
        Assert.Contains("tvix-fuse-build: error: build failed: the command exited with status 7", result.Stderr);
        Assert.Contains("  line one\n  line two", result.Stderr);
        Assert.DoesNotContain("   at ", result.Stderr);
    }

    [Fact]
    public void AMissingOutputFailsNamingIt()
    {
        var busybox = ImportBusybox();
        string request = Path.Combine(_temp, "request.json");
        File.WriteAllText(request, Request(busybox, "true").ToJsonString());
        var result = Tool(["build", request]);
        Assert.Equal(1, result.ExitCode);
        Assert.Contains($"did not produce the output {OutPath}", result.Stderr);
    }

    [Fact]
    public void ASecondIdenticalBuildIsAnsweredFromTheResultCache()
    {
        var busybox = ImportBusybox();
        string request = Path.Combine(_temp, "request.json");
        File.WriteAllText(request, Request(busybox, "echo RUNNING-THE-COMMAND; mkdir $out; echo x > $out/x").ToJsonString());
        var first = Tool(["build", request]);
        Assert.True(first.ExitCode == 0, first.Stderr);
        Assert.Contains("RUNNING-THE-COMMAND", first.Stderr);

        var second = Tool(["build", request]);
        Assert.True(second.ExitCode == 0, second.Stderr);
        Assert.DoesNotContain("RUNNING-THE-COMMAND", second.Stderr);
        Assert.Contains("not running it again", second.Stderr);
        Assert.Equal(first.Stdout, second.Stdout);

        var forced = Tool(["build", "--rebuild", request]);
        Assert.Contains("RUNNING-THE-COMMAND", forced.Stderr);
        Assert.Equal(first.Stdout, forced.Stdout);
    }

    [Fact]
    public void MalformedRequestsAreOneClearLine()
    {
        string file = Path.Combine(_temp, "bad.json");
        File.WriteAllText(file, "{ \"commandArgs\": 5 }");
        var result = Tool(["build", file]);
        Assert.Equal(1, result.ExitCode);
        Assert.Single(result.Stderr.Trim().Split('\n'));

        var missing = Tool(["build", Path.Combine(_temp, "nope.json")]);
        Assert.Equal(1, missing.ExitCode);
        Assert.Contains("nope.json", missing.Stderr);
    }

    public static TheoryData<string> ValidationCases()
    {
        var data = new TheoryData<string>();
        foreach (var c in LoadVectors().GetProperty("cases").EnumerateArray())
        {
            data.Add(c.GetProperty("case").GetString()!);
        }

        return data;
    }

    private static JsonElement LoadVectors()
    {
        string path = Path.Combine(AppContext.BaseDirectory, "vectors", "buildrequest.json");
        Assert.True(File.Exists(path), $"missing vector file {path}");
        return JsonDocument.Parse(File.ReadAllText(path)).RootElement.Clone();
    }

    /// <summary>Every validation vector through the CLI: invalid requests print tvix's message, valid ones pass validation.</summary>
    [Theory]
    [MemberData(nameof(ValidationCases))]
    public void ValidationVectorsThroughTheCli(string caseName)
    {
        var vectors = LoadVectors();
        var vector = vectors.GetProperty("cases").EnumerateArray().Single(c => c.GetProperty("case").GetString() == caseName);
        var request = JsonNode.Parse(vectors.GetProperty("base").GetRawText())!.AsObject();
        foreach (var change in vector.GetProperty("change").EnumerateObject())
        {
            request[change.Name] = JsonNode.Parse(change.Value.GetRawText());
        }

        string file = Path.Combine(_temp, "request.json");
        File.WriteAllText(file, ToProtoJson(request).ToJsonString());
        var result = Tool(["build", "--quiet", file]);
        if (vector.GetProperty("valid").GetBoolean())
        {
            // Valid for tvix: whatever else happens (this request cannot run here), no tvix validation message.
            foreach (var invalid in vectors.GetProperty("cases").EnumerateArray().Where(c => !c.GetProperty("valid").GetBoolean()))
            {
                Assert.DoesNotContain($"invalid request: {invalid.GetProperty("message").GetString()}", result.Stderr);
            }
        }
        else
        {
            Assert.Equal(1, result.ExitCode);
            Assert.StartsWith($"tvix-fuse-build: error: invalid request: {vector.GetProperty("message").GetString()}", result.Stderr);
        }
    }

    /// <summary>The vectors spell bytes as *_hex or UTF-8 strings; protobuf JSON wants base64.</summary>
    private static JsonNode ToProtoJson(JsonNode node)
    {
        switch (node)
        {
            case JsonObject obj:
                var result = new JsonObject();
                foreach (var (key, value) in obj)
                {
                    if (key.EndsWith("_hex", StringComparison.Ordinal))
                    {
                        result[Camel(key[..^4])] = Convert.ToBase64String(Convert.FromHexString(value!.GetValue<string>()));
                    }
                    else if (key is "name" or "target" or "value" or "contents" or "digest" && value is JsonValue v && v.TryGetValue<string>(out var text))
                    {
                        result[Camel(key)] = Base64(text);
                    }
                    else
                    {
                        result[Camel(key)] = value is null ? null : ToProtoJson(value);
                    }
                }

                return result;
            case JsonArray array:
                return new JsonArray(array.Select(e => e is null ? null : ToProtoJson(e)).ToArray());
            default:
                return node.DeepClone();
        }
    }

    private static string Camel(string snake)
    {
        var parts = snake.Split('_');
        return parts[0] + string.Concat(parts.Skip(1).Select(p => char.ToUpperInvariant(p[0]) + p[1..]));
    }

    [Fact]
    public async Task TheNextBuildRemovesWhatABuildKilledWithSigkillLeft()
    {
        string tmp = Path.Combine(_temp, "tmp");
        Directory.CreateDirectory(tmp);
        var environment = new Dictionary<string, string>(_environment) { ["TMPDIR"] = tmp };
        var busybox = ImportBusybox();
        string slow = Path.Combine(_temp, "slow.json");
        File.WriteAllText(slow, Request(busybox, "echo started >&2; sleep 1000").ToJsonString());
        string fast = Path.Combine(_temp, "fast.json");
        File.WriteAllText(fast, Request(busybox, "mkdir -p $out; echo fast > $out/x").ToJsonString());

        using var killed = ToolProcess.Start(["build", slow], environment);
        var stdout = killed.StandardOutput.ReadToEndAsync();
        while (await killed.StandardError.ReadLineAsync().WaitAsync(TimeSpan.FromMinutes(1)) is { } line && line != "started")
        {
        }

        Assert.Equal(0, ToolProcess.Signal(killed.Id, 9));
        await killed.WaitForExitAsync();
        await stdout;
        string parent = Assert.Single(Directory.EnumerateDirectories(tmp, "tvix-fuse-builds-*"));
        string leftover = Assert.Single(Directory.EnumerateDirectories(parent));
        Assert.Contains(File.ReadAllLines("/proc/self/mountinfo"), l => l.Contains(leftover, StringComparison.Ordinal));

        var next = ToolProcess.Run(["build", fast], environment);
        Assert.True(next.ExitCode == 0, next.Stderr);
        Assert.False(Directory.Exists(leftover), $"{leftover} is still there: {next.Stderr}");
        Assert.Empty(Directory.EnumerateFileSystemEntries(parent));
        Assert.DoesNotContain(File.ReadAllLines("/proc/self/mountinfo"), l => l.Contains(leftover, StringComparison.Ordinal));
    }

    [Fact]
    public void AnUnprivilegedUserBuildsInDirectoriesOfItsOwn()
    {
        const string User = "tfb-build-user";
        bool created = false;
        if (Exec(["id", "-u", User]).ExitCode != 0)
        {
            Assert.Equal(0, Exec(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", User]).ExitCode);
            created = true;
        }

        try
        {
            string uid = Exec(["id", "-u", User]).Stdout.Trim();
            string tree = Path.Combine(_temp, "tools");
            Directory.CreateDirectory(Path.Combine(tree, "bin"));
            File.Copy("/bin/busybox", Path.Combine(tree, "bin", "busybox"));
            foreach (string applet in new[] { "sh", "mkdir", "stat", "id" })
            {
                File.CreateSymbolicLink(Path.Combine(tree, "bin", applet), "busybox");
            }

            string work = Path.Combine(_temp, "work");
            string tmp = Path.Combine(_temp, "tmp");
            Directory.CreateDirectory(work);
            Directory.CreateDirectory(tmp);
            Assert.Equal(0, Exec(["chown", "-R", $"{User}:", _temp]).ExitCode);
            string[] asUser =
            [
                "setpriv", $"--reuid={User}", $"--regid={User}", "--init-groups", "--",
                "env", "CI=true", $"HOME={_temp}", $"XDG_DATA_HOME={_temp}/data", $"TMPDIR={tmp}", ToolProcess.Executable,
            ];

            var ok = Exec([.. asUser, "run", "--input", tree + "=tools", "--", "sh", "-c", "mkdir $out; stat -c %a /build > $out/mode; id -u > $out/uid"], work);
            Assert.True(ok.ExitCode == 0, ok.Stderr);
            Assert.Equal("700\n", File.ReadAllText(Path.Combine(work, "result-out", "mode")));
            Assert.Equal("1000\n", File.ReadAllText(Path.Combine(work, "result-out", "uid")));
            string parent = Path.Combine(tmp, "tvix-fuse-builds-" + uid);
            Assert.Equal($"{uid} 700", Exec(["stat", "-c", "%u %a", parent]).Stdout.Trim());
            Assert.Empty(Directory.EnumerateFileSystemEntries(parent));

            // A kept directory shows what the build had: the user's, mode 0700.
            var failed = Exec([.. asUser, "run", "--keep-failed", "--input", tree + "=tools", "--", "sh", "-c", "exit 3"], work);
            Assert.NotEqual(0, failed.ExitCode);
            string kept = failed.Stderr.Split('\n').Single(l => l.Contains("the build directory is kept at ", StringComparison.Ordinal)).Split("kept at ")[1].Trim();
            Assert.StartsWith(parent + "/", kept);
            Assert.Equal($"{uid} 700", Exec(["stat", "-c", "%u %a", kept]).Stdout.Trim());
            Assert.Equal($"{uid} 700", Exec(["stat", "-c", "%u %a", Path.Combine(kept, "scratch", "0")]).Stdout.Trim());
        }
        finally
        {
            Exec(["chown", "-R", "root:", _temp]);
            if (created)
            {
                Exec(["userdel", User]);
            }
        }
    }

    private static (int ExitCode, string Stdout, string Stderr) Exec(string[] command, string? workingDirectory = null)
    {
        var psi = new System.Diagnostics.ProcessStartInfo(command[0], command[1..])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        using var p = System.Diagnostics.Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr);
    }

    [Fact]
    public void BuildRefusesAReadOnlyPathThroughASymlinkNamingIt()
    {
        var busybox = ImportBusybox();
        string link = Path.Combine(_temp, "etc-link");
        File.CreateSymbolicLink(link, "/etc");
        var request = Request(busybox, "cat /etc-link/hostname > $out");
        request["constraints"] = new JsonObject
        {
            ["system"] = TvixFuseBuild.Sandbox.SandboxRunner.SupportedSystems[0],
            ["availableRoPaths"] = new JsonArray(link),
        };
        string file = Path.Combine(_temp, "ro.json");
        File.WriteAllText(file, request.ToJsonString());
        var result = Tool(["build", file]);
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains(
            $"read-only path {link}: {link} is a symbolic link; read-only paths are never resolved through symlinks, name the target", result.Stderr);
        Assert.DoesNotContain("   at ", result.Stderr);
    }

    [Fact]
    public void RunImportsBuildsAndExportsResults()
    {
        string work = Path.Combine(_temp, "work");
        Directory.CreateDirectory(work);
        string tree = Path.Combine(_temp, "tools");
        Directory.CreateDirectory(Path.Combine(tree, "bin"));
        File.Copy("/bin/busybox", Path.Combine(tree, "bin", "busybox"));
        foreach (string applet in new[] { "sh", "mkdir", "echo", "chmod" })
        {
            File.CreateSymbolicLink(Path.Combine(tree, "bin", applet), "busybox");
        }

        var result = Tool(
            ["run", "--input", tree + "=tools", "--output", "out", "--output", "doc", "--",
             "sh", "-c", "mkdir -p $out/bin $doc; echo \"#!$tools/bin/sh\" > $out/bin/hi; chmod 555 $out/bin/hi; echo see $out > $doc/README"],
            workingDirectory: work);
        Assert.True(result.ExitCode == 0, result.Stderr);
        Assert.StartsWith("#!/nix/store/", File.ReadAllText(Path.Combine(work, "result-out", "bin", "hi")));
        Assert.True((File.GetUnixFileMode(Path.Combine(work, "result-out", "bin", "hi")) & UnixFileMode.UserExecute) != 0);
        Assert.StartsWith("see /nix/store/", File.ReadAllText(Path.Combine(work, "result-doc", "README")));

        var lines = result.Stdout.Trim().Split('\n');
        Assert.Contains(lines, l => l.StartsWith("out\t", StringComparison.Ordinal) && l.EndsWith("references tools", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.StartsWith("doc\t", StringComparison.Ordinal) && l.EndsWith("references out", StringComparison.Ordinal));

        // Running again replaces the results.
        var again = Tool(["run", "--input", tree + "=tools", "--", "sh", "-c", "mkdir $out; echo second > $out/x"], workingDirectory: work);
        Assert.True(again.ExitCode == 0, again.Stderr);
        Assert.Equal("second\n", File.ReadAllText(Path.Combine(work, "result-out", "x")));
    }

    [Fact]
    public void RunDryRunPrintsTheNixShapedRequest()
    {
        var result = Tool(["run", "--dry-run", "--env", "FOO=bar", "--", "/bin/true"]);
        Assert.True(result.ExitCode == 0, result.Stderr);
        var request = JsonParser.Default.Parse<TvixBuild.BuildRequest>(result.Stdout);
        Assert.Equal("build", request.WorkingDir);
        Assert.Equal(["build", "nix/store"], request.ScratchPaths);
        Assert.Equal("nix/store", request.InputsDir);
        var env = request.EnvironmentVars.ToDictionary(e => e.Key, e => e.Value.ToStringUtf8());
        Assert.Equal("bar", env["FOO"]);
        Assert.Equal("/homeless-shelter", env["HOME"]);
        Assert.Equal("/build", env["NIX_BUILD_TOP"]);
        Assert.Equal("/" + request.Outputs.Single(), env["out"]);
        Assert.Equal(request.EnvironmentVars.Select(e => e.Key).Order(StringComparer.Ordinal), request.EnvironmentVars.Select(e => e.Key));
    }
}
