using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using TvixFuseBuild.Build.Nix;
using TvixFuseBuild.Build.Tests.Nix;

namespace TvixFuseBuild.Tool.Tests;

/// <summary>
/// <c>tvix-fuse-build drv</c> against real Nix 2.8 (scripts/setup installs it): derivations written here with
/// <c>builtins.derivation</c> (builder: a busybox in the Nix store), instantiated with nix-instantiate, built by
/// nix-build and by the tool in turn, and compared by NAR hash, references, exit status and message.
/// </summary>
public sealed partial class NixParityTests : IDisposable
{
    private readonly string _temp;
    private readonly Dictionary<string, string> _environment;
    private readonly string _nonce = Guid.NewGuid().ToString("N");
    private readonly List<string> _created = [];
    private string? _busybox;

    public NixParityTests()
    {
        _temp = Directory.CreateTempSubdirectory("tvix-fuse-build-nix-test-").FullName;
        File.SetUnixFileMode(_temp, (UnixFileMode)0x1ED);
        _environment = new Dictionary<string, string> { ["XDG_DATA_HOME"] = Path.Combine(_temp, "data"), ["TMPDIR"] = _temp };
    }

    public void Dispose()
    {
        // Whatever this test put in the Nix store and nothing refers to any more.
        if (_created.Count > 0)
        {
            Run("nix-store", ["--delete", .. _created.Where(p => Directory.Exists(p) || File.Exists(p) || new FileInfo(p).LinkTarget is not null)]);
        }

        Directory.Delete(_temp, recursive: true);
    }


    private static ToolProcess.Result Run(string program, IEnumerable<string> arguments, IDictionary<string, string>? environment = null, string? workingDirectory = null)
    {
        var (exitCode, stdout, stderr) = NixCommand.Run(program, arguments, environment, workingDirectory);
        return new ToolProcess.Result(exitCode, stdout, stderr);
    }

    private static string Check(ToolProcess.Result result, string what)
    {
        Assert.True(result.ExitCode == 0, $"{what} failed ({result.ExitCode}): {result.Stderr}");
        return result.Stdout.Trim();
    }

    /// <summary>A busybox tree (bin/busybox, bin/sh) in the Nix store; content-addressed, so the same path every time.</summary>
    private string Busybox()
    {
        if (_busybox is not null)
        {
            return _busybox;
        }

        string tree = Path.Combine(_temp, "busybox");
        Directory.CreateDirectory(Path.Combine(tree, "bin"));
        File.Copy("/bin/busybox", Path.Combine(tree, "bin", "busybox"));
        File.CreateSymbolicLink(Path.Combine(tree, "bin", "sh"), "busybox");
        return _busybox = Check(Run("nix-store", ["--add", tree]), "nix-store --add busybox");
    }

    /// <summary>Writes a .nix file (<c>mk</c> makes a derivation with the busybox builder and this test's nonce) and instantiates it.</summary>
    private string Instantiate(string expression)
    {
        string file = Path.Combine(_temp, $"case-{Guid.NewGuid():N}.nix");
        File.WriteAllText(file, $$"""
            let
              bb = builtins.storePath {{Busybox()}};
              nonce = "{{_nonce}}";
              mk = attrs: builtins.derivation ({ system = "x86_64-linux"; builder = "${bb}/bin/sh"; inherit nonce; } // attrs);
              script = text: builtins.toFile "builder.sh" text;
            in
            {{expression}}
            """);
        string drv = Check(Run("nix-instantiate", [file]), "nix-instantiate");
        _created.Add(drv);
        return drv;
    }

    private static List<string> Outputs(string drv) =>
        [.. Check(Run("nix-store", ["--query", "--outputs", drv]), "nix-store -q --outputs").Split('\n')];

    private sealed record Built(int ExitCode, string Stderr, SortedDictionary<string, string> Outputs);

    /// <summary>Each valid output's NAR hash and references, then deletes it from the Nix store.</summary>
    private SortedDictionary<string, string> Collect(string drv)
    {
        var outputs = new SortedDictionary<string, string>(StringComparer.Ordinal);
        var valid = new List<string>();
        foreach (string output in Outputs(drv))
        {
            _created.Add(output);
            if (Run("nix-store", ["--check-validity", output]).ExitCode != 0)
            {
                continue;
            }

            string hash = Check(Run("nix-hash", ["--type", "sha256", "--base32", output]), "nix-hash");
            Assert.Equal($"sha256:{hash}", Check(Run("nix-store", ["--query", "--hash", output]), "nix-store -q --hash"));
            string references = Check(Run("nix-store", ["--query", "--references", output]), "nix-store -q --references");
            outputs[output] = $"{hash} references [{string.Join(' ', references.Split('\n', StringSplitOptions.RemoveEmptyEntries).Order(StringComparer.Ordinal))}]";
            valid.Add(output);
        }

        if (valid.Count > 0)
        {
            Check(Run("nix-store", ["--delete", .. valid]), "nix-store --delete");
        }

        return outputs;
    }

    private Built BuildWithNix(string drv)
    {
        var result = Run("nix-build", ["--no-out-link", drv]);
        return new Built(result.ExitCode, result.Stderr, Collect(drv));
    }

    private (Built Built, ToolProcess.Result Process) BuildWithTool(string drv, params string[] extra)
    {
        var result = ToolProcess.Run(["drv", "--no-out-link", "--json", .. extra, drv], _environment);
        return (new Built(result.ExitCode, result.Stderr, Collect(drv)), result);
    }

    /// <summary>Builds <paramref name="expression"/> with Nix, then with the tool; both must agree on everything.</summary>
    private (Built Nix, Built Tool, ToolProcess.Result ToolRun) Compare(string expression, bool expectSuccess = true)
    {
        string drv = Instantiate(expression);
        var nix = BuildWithNix(drv);
        var (tool, run) = BuildWithTool(drv);
        Assert.True(expectSuccess == (nix.ExitCode == 0), $"nix-build exited {nix.ExitCode}: {nix.Stderr}");
        Assert.True(nix.ExitCode == tool.ExitCode, $"nix-build exited {nix.ExitCode}, tvix-fuse-build {tool.ExitCode}: {run.Stderr}");
        Assert.Equal(nix.Outputs, tool.Outputs);
        if (expectSuccess)
        {
            Assert.NotEmpty(nix.Outputs);

            // --json names the same references as the Nix store does.
            var json = JsonNode.Parse(run.Stdout)!.AsArray().Single()!;
            foreach (var (name, output) in json["outputs"]!.AsObject())
            {
                string path = output!["path"]!.GetValue<string>();
                var references = output["references"]!.AsArray().Select(r => r!.GetValue<string>());
                Assert.EndsWith($"references [{string.Join(' ', references)}]", nix.Outputs[path]);
            }
        }

        return (nix, tool, run);
    }

    [Fact]
    public void ATreeWithEveryNodeKindAndOddNames()
    {
        Compare("""
            mk { name = "tree"; args = [ "-e" (script ''
              mkdir -p $out/sub/deeper $out/empty-dir
              echo hello > $out/file
              printf 'no newline' > $out/sub/deeper/x
              printf '#!/bin/sh\necho hi\n' > $out/exec; chmod 755 $out/exec
              : > $out/empty
              seq 1 30000 > $out/big
              ln -s file $out/rel-link; ln -s /nonexistent/target $out/dangling; ln -s sub $out/dir-link
              touch "$out/sub/odd name" "$out/sub/tab	x" "$out/sub/quote\"'" "$out/sub/ünïcödé" "$out/sub/-dash" "$out/sub/.hidden" "$out/sub/back\\slash"
              echo "my own path: $out" > $out/self
            '') ]; }
            """);
    }

    /// <summary>What a build can see of its own sandbox that Nix shows the same (README: what differs, and why).</summary>
    [Fact]
    public void TheSandboxAsABuilderSeesIt()
    {
        Compare("""
            mk { name = "sandbox-view"; args = [ "-e" (script ''
              mkdir $out
              stat -c '%a %u %g' /build > $out/build
              id > $out/id
              hostname > $out/hostname
              cat /proc/sys/kernel/hostname > $out/proc-hostname
              pwd > $out/pwd
              chmod 4755 $out/build 2>$out/setuid || echo "exit $?" >> $out/setuid
            '') ]; }
            """);
    }

    [Fact]
    public void MultipleOutputsWithCrossReferences()
    {
        var (nix, _, _) = Compare("""
            mk { name = "multi"; outputs = [ "out" "dev" "lib" ]; args = [ "-e" (script ''
              mkdir -p $out $dev $lib
              echo $lib > $out/uses-lib
              echo "$out $lib" > $dev/uses-both
              echo nothing > $lib/plain
            '') ]; }
            """);
        Assert.Equal(3, nix.Outputs.Count);
        Assert.Contains(nix.Outputs, o => o.Key.EndsWith("-multi-dev", StringComparison.Ordinal) && o.Value.Split(' ').Length == 4);
    }

    [Theory]
    [InlineData("name", "mkdir -p $out/sub; touch $out/sub/$hash-named")]
    [InlineData("directory-name", "mkdir -p $out/$hash-dir/inner")]
    [InlineData("symlink", "mkdir $out; ln -s ../../x/$hash-target $out/link")]
    [InlineData("contents", "mkdir $out; echo \"before $hash after\" > $out/file")]
    [InlineData("top-symlink", "ln -s /nix/store/$hash-src $out")]
    public void AReferenceFoundOnlyIn(string where, string command)
    {
        var (nix, _, _) = Compare($$"""
            let src = builtins.toFile "src-{{where}}" "referenced"; in
            mk { name = "ref-{{where}}"; hash = builtins.substring 11 32 "${src}"; args = [ "-e" (script ''
              {{command}}
            '') ]; }
            """);

        // Nix itself sees the reference (else the comparison proves nothing).
        Assert.Contains($"-src-{where}", nix.Outputs.Single().Value);
    }

    [Fact]
    public void PassAsFile()
    {
        Compare("""
            mk { name = "pass-as-file"; passAsFile = [ "big" "small" ]; big = builtins.concatStringsSep "," (builtins.genList toString 5000); small = "s p a c e"; plain = "v";
              args = [ "-e" (script ''
                mkdir $out
                cat $bigPath > $out/big; cat $smallPath > $out/small; echo "$bigPath $smallPath" > $out/paths
                test -z "$big" && echo "big not in the environment" > $out/unset
                echo "$plain $passAsFile" > $out/plain
              '') ]; }
            """);
    }

    [Fact]
    public void StructuredAttrsAndPlaceholders()
    {
        Compare("""
            mk { name = "structured"; __structuredAttrs = true; outputs = [ "out" "dev" ];
              foo = "it's"; n = 3; f = 1.5; b = true; l = [ "a" 1 ]; o = { x = "y"; }; nested = { deep = [ { a = 1; } ]; };
              args = [ "-e" (script ''
                mkdir $1 $2
                cp /build/.attrs.json $1/attrs.json
                cp /build/.attrs.sh $1/attrs.sh
                echo "no references" > $2/file
                test -z "$out" && echo "no out variable" > $1/env
                test -n "$NIX_ATTRS_JSON_FILE" && test -n "$NIX_ATTRS_SH_FILE" && echo "both set" >> $1/env
              '') (builtins.placeholder "out") (builtins.placeholder "dev") ]; }
            """);
    }

    private static string SriOf(string algorithm, byte[] digest) => $"{algorithm}-{Convert.ToBase64String(digest)}";

    [Fact]
    public void FixedOutputsWithTheRightHashInEachForm()
    {
        byte[] contents = Encoding.UTF8.GetBytes("fixed output\n");
        string flatSha256 = NixBase32.Encode(SHA256.HashData(contents));
        string flatSha1 = Convert.ToHexStringLower(SHA1.HashData(contents));

        string tree = Path.Combine(_temp, "fod-tree");
        Directory.CreateDirectory(Path.Combine(tree, "d"));
        File.WriteAllBytes(Path.Combine(tree, "d", "file"), contents);
        string recursiveSha512 = Check(Run("nix-hash", ["--type", "sha512", "--base32", tree]), "nix-hash");
        Assert.True(NixBase32.TryDecode(recursiveSha512, 64, out byte[] recursiveDigest));

        foreach (string attrs in new[]
        {
            $"outputHashMode = \"flat\"; outputHashAlgo = \"sha256\"; outputHash = \"{flatSha256}\";",
            $"outputHashAlgo = \"sha1\"; outputHash = \"{flatSha1}\";",
            $"outputHashMode = \"recursive\"; outputHashAlgo = \"sha512\"; outputHash = \"{recursiveSha512}\";",
            $"outputHashMode = \"recursive\"; outputHash = \"{SriOf("sha512", recursiveDigest)}\";",
            $"outputHash = \"{SriOf("sha256", SHA256.HashData(contents))}\";",
        })
        {
            bool recursive = attrs.Contains("recursive", StringComparison.Ordinal);
            Compare($$"""
                mk { name = "fod-{{_nonce}}-{{Guid.NewGuid():N}}"; {{attrs}} args = [ "-e" (script ''
                  {{(recursive ? "mkdir -p $out/d; printf 'fixed output\\n' > $out/d/file" : "printf 'fixed output\\n' > $out")}}
                '') ]; }
                """);
        }
    }

    [Fact]
    public void AFixedOutputWithTheWrongHashFailsWithNixsMessage()
    {
        string wrong = SriOf("sha256", SHA256.HashData("something else"u8));
        var (nix, tool, run) = Compare($$"""
            mk { name = "fod-wrong-{{_nonce}}"; outputHash = "{{wrong}}"; args = [ "-e" (script ''
              printf 'fixed output\n' > $out
            '') ]; }
            """, expectSuccess: false);
        Assert.Equal(102, nix.ExitCode);
        var nixMessage = MismatchMessage().Match(nix.Stderr);
        var toolMessage = MismatchMessage().Match(tool.Stderr);
        Assert.True(nixMessage.Success, nix.Stderr);
        Assert.True(toolMessage.Success, tool.Stderr);
        Assert.Equal(nixMessage.Value, toolMessage.Value);
        Assert.Contains(wrong, toolMessage.Value);
        Assert.Empty(run.Stdout);

        // Nix registers what it got at its content-addressed path; that is this test's to remove.
        foreach (Match path in Regex.Matches(nix.Stderr, @"/nix/store/[0-9a-z]{32}-fod-wrong-[0-9a-f]+"))
        {
            _created.Add(path.Value);
        }
    }

    [GeneratedRegex(@"hash mismatch in fixed-output derivation '[^']+':\n +specified: \S+\n +got: +\S+")]
    private static partial Regex MismatchMessage();

    [Fact]
    public void AFailingBuilderExits100()
    {
        var (nix, _, run) = Compare("""
            mk { name = "failing"; args = [ "-e" (script ''
              echo "about to fail"
              exit 3
            '') ]; }
            """, expectSuccess: false);
        Assert.Equal(100, nix.ExitCode);
        Assert.Contains("about to fail", run.Stderr);
        Assert.Empty(nix.Outputs);
    }

    [Fact]
    public void AMissingOutputFailsAsInNix()
    {
        var (nix, _, run) = Compare("""
            mk { name = "missing-output"; outputs = [ "out" "dev" ]; args = [ "-e" (script ''
              mkdir $out
            '') ]; }
            """, expectSuccess: false);
        Assert.Contains("-missing-output-dev", run.Stderr);
        Assert.Empty(nix.Outputs);
    }

    [Fact]
    public void AnInputDerivationWhoseOutputIsNotInTheNixStoreIsNamed()
    {
        string drv = Instantiate("""
            let dep = mk { name = "never-built"; args = [ "-e" (script "mkdir $out") ]; }; in
            mk { name = "needs-dep"; inherit dep; args = [ "-e" (script "mkdir $out") ]; }
            """);
        string dependency = Check(Run("nix-store", ["--query", "--references", drv]), "nix-store -q --references")
            .Split('\n').Single(p => p.EndsWith("-never-built.drv", StringComparison.Ordinal));
        _created.Add(dependency);
        string missing = Outputs(dependency).Single();

        var result = ToolProcess.Run(["drv", "--no-out-link", drv], _environment);
        Assert.Equal(1, result.ExitCode);
        Assert.Contains(missing, result.Stderr);
        Assert.Contains(dependency, result.Stderr);
        Assert.DoesNotContain("   at ", result.Stderr);
        Assert.Empty(result.Stdout);
    }

    [Fact]
    public void InputsAreImportedOnceAndResultLinksAreGcRoots()
    {
        string drv = Instantiate("""
            let dep = mk { name = "dep"; args = [ "-e" (script "mkdir $out; echo dep > $out/file") ]; }; in
            mk { name = "uses-dep"; outputs = [ "out" "doc" ]; inherit dep; args = [ "-e" (script ''
              mkdir $out $doc; cat $dep/file > $out/copied; ln -s $dep $out/dep
            '') ]; }
            """);
        string dependency = Check(Run("nix-store", ["--query", "--references", drv]), "nix-store -q --references")
            .Split('\n').Single(p => p.EndsWith("-dep.drv", StringComparison.Ordinal));
        string dependencyOutput = Check(Run("nix-build", ["--no-out-link", dependency]), "nix-build dep");
        _created.Add(dependencyOutput);

        string work = Path.Combine(_temp, "work");
        Directory.CreateDirectory(work);
        var first = ToolProcess.Run(["drv", drv], _environment, workingDirectory: work);
        Assert.True(first.ExitCode == 0, first.Stderr);
        Assert.Contains("imported 3 of 3 input store paths", first.Stderr);
        var paths = Outputs(drv);
        _created.AddRange(paths);
        Assert.Equal(paths.Order(StringComparer.Ordinal), first.Stdout.Trim().Split('\n').Order(StringComparer.Ordinal));

        // ./result and ./result-doc point at the registered outputs, and are GC roots as nix-build makes them.
        string output = paths.Single(p => p.EndsWith("-uses-dep", StringComparison.Ordinal));
        Assert.Equal(output, new FileInfo(Path.Combine(work, "result")).LinkTarget);
        Assert.Equal(paths.Single(p => p.EndsWith("-doc", StringComparison.Ordinal)), new FileInfo(Path.Combine(work, "result-doc")).LinkTarget);
        Assert.Contains(Path.Combine(work, "result"), Check(Run("nix-store", ["--gc", "--print-roots"]), "nix-store --gc --print-roots"));
        Assert.Equal("dep\n", File.ReadAllText(Path.Combine(work, "result", "copied")));
        Assert.Contains(dependencyOutput, Check(Run("nix-store", ["--query", "--references", output]), "references"));

        // A second build over the same inputs imports nothing.
        var second = ToolProcess.Run(["drv", "--rebuild", "--no-out-link", drv], _environment, workingDirectory: work);
        Assert.True(second.ExitCode == 0, second.Stderr);
        Assert.DoesNotContain("imported", second.Stderr);

        // Outputs already valid are not built again, as with nix-build; --json still names their references.
        var again = ToolProcess.Run(["drv", "--json", "--no-out-link", drv], _environment, workingDirectory: work);
        Assert.True(again.ExitCode == 0, again.Stderr);
        Assert.Empty(again.Stderr);
        var outputs = JsonNode.Parse(again.Stdout)!.AsArray().Single()!["outputs"]!;
        Assert.Equal(
            Check(Run("nix-store", ["--query", "--references", output]), "references").Split('\n').Order(StringComparer.Ordinal),
            outputs["out"]!["references"]!.AsArray().Select(r => r!.GetValue<string>()));

        File.Delete(Path.Combine(work, "result"));
        File.Delete(Path.Combine(work, "result-doc"));
        Collect(drv);
    }

    [Fact]
    public void PrintRequestPrintsTheBuildRequest()
    {
        string drv = Instantiate("""mk { name = "printed"; args = [ "-e" (script "mkdir $out") ]; }""");
        var result = ToolProcess.Run(["drv", "--print-request", drv], _environment);
        Assert.True(result.ExitCode == 0, result.Stderr);
        var request = JsonNode.Parse(result.Stdout)!;
        Assert.Equal(Outputs(drv).Single()[1..], request["outputs"]!.AsArray().Single()!.GetValue<string>());
        Assert.Equal("build", request["workingDir"]!.GetValue<string>());

        var binary = ToolProcess.Run(["drv", "--print-request", "--binary", drv], _environment);
        Assert.True(binary.ExitCode == 0, binary.Stderr);
        Assert.NotEqual(result.Stdout, binary.Stdout);
        Assert.Equal(1, Run("nix-store", ["--check-validity", Outputs(drv).Single()]).ExitCode);
    }
}
