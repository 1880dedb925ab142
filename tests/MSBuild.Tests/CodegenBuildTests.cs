using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Hashing;
using TvixFuseBuild.MSBuild.Tests.Support;

namespace TvixFuseBuild.MSBuild.Tests;

/// <summary>Real <c>dotnet build</c>s of fresh projects that use the packed TvixFuseBuild.MSBuild from a local feed.</summary>
[Collection(DotnetBuildCollection.Name)]
public sealed class CodegenBuildTests(PackedFeed feed)
{
    private const string Generator = """
        echo "generator-ran"
        mkdir -p "$out"
        message=$(cat "$message")
        printf 'namespace Gen;\ninternal static class Generated { public const string Message = "%s"; }\n' "$message" > "$out/Generated.g.cs"
        """;

    [Fact]
    public void GeneratedSourceIsCompiledInThenSkippedRerunOnChangeAndReusedAfterClean()
    {
        var project = feed.CreateProject(
            "Codegen",
            $"""
              <ItemGroup>
                <TvixBuildStep Include="codegen" Command="sh" Arguments="-eu;-c;. &quot;$gen&quot;" Compile="true" />
                <TvixBuildInput Include="{feed.Toolchain}" Step="codegen" Name="toolchain" />
                <TvixBuildInput Include="gen.sh" Step="codegen" Name="gen" />
                <TvixBuildInput Include="message.txt" Step="codegen" Name="message" />

                <!-- A second step, with inputs of its own: it runs and is skipped on its own account. -->
                <TvixBuildStep Include="other" Command="sh" Arguments="-c;echo other-ran%3B mkdir $out%3B cp $data/* $out/" />
                <TvixBuildInput Include="{feed.Toolchain}" Step="other" Name="toolchain" />
                <TvixBuildInput Include="data" Step="other" />
              </ItemGroup>
            """,
            ("Program.cs", "System.Console.WriteLine(\"program says: \" + Gen.Generated.Message);"),
            ("data/a.txt", "a"),
            ("gen.sh", Generator),
            ("message.txt", "first message"));

        // 1. The step runs in the sandbox; its output is compiled in.
        var first = project.Build();
        Assert.True(first.ExitCode == 0, first.ToString());
        Assert.Contains("generator-ran", first.Output, StringComparison.Ordinal);
        Assert.Contains("TvixBuild codegen: ran in ", first.Output, StringComparison.Ordinal);
        Assert.Contains("other-ran", first.Output, StringComparison.Ordinal);
        Assert.Equal("a", File.ReadAllText(project.PathOf("obj/Debug/net10.0/tvix/other/out/a.txt")));
        Assert.Equal("program says: first message", Run(project));
        AssertNothingLeftBehind();

        // 2. Nothing changed: MSBuild skips the step's target.
        var second = project.Build();
        Assert.True(second.ExitCode == 0, second.ToString());
        Assert.Contains("Skipping target \"TvixBuildSteps\" because all output files are up-to-date", second.Output, StringComparison.Ordinal);
        Assert.Contains("TvixBuild codegen: up to date", second.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("generator-ran", second.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("other-ran", second.Output, StringComparison.Ordinal);

        // 3. A changed input runs it again, and the program says what the generator now wrote.
        File.WriteAllText(project.PathOf("message.txt"), "second message");
        var third = project.Build();
        Assert.True(third.ExitCode == 0, third.ToString());
        Assert.Contains("generator-ran", third.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("other-ran", third.Output, StringComparison.Ordinal);
        Assert.Equal("program says: second message", Run(project));

        // A file added to a directory input reruns the step that has it.
        File.WriteAllText(project.PathOf("data/b.txt"), "b");
        var added = project.Build();
        Assert.True(added.ExitCode == 0, added.ToString());
        Assert.Contains("other-ran", added.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("generator-ran", added.Output, StringComparison.Ordinal);
        Assert.Equal("b", File.ReadAllText(project.PathOf("obj/Debug/net10.0/tvix/other/out/b.txt")));

        // 4. A clean build of the same inputs: the result cache hands back the earlier outputs, the command does not run.
        project.DeleteBuildOutputs();
        var fourth = project.Build();
        Assert.True(fourth.ExitCode == 0, fourth.ToString());
        Assert.DoesNotContain("generator-ran", fourth.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("other-ran", fourth.Output, StringComparison.Ordinal);
        Assert.Contains("TvixBuild codegen: from the cache", fourth.Output, StringComparison.Ordinal);
        Assert.Contains("TvixBuild other: from the cache", fourth.Output, StringComparison.Ordinal);
        Assert.Equal("program says: second message", Run(project));
        AssertNothingLeftBehind();
    }

    [Fact]
    public void TaskCalledFromATargetReportsOutputsWithDigestAndReferences()
    {
        // Two outputs; `out` mentions the toolchain's store path and an extra needle, `doc` mentions nothing.
        var project = feed.CreateProject(
            "DirectTask",
            $"""
              <Target Name="RunTvixBuild" BeforeTargets="CoreCompile">
                <ItemGroup>
                  <_In Include="{feed.Toolchain}" Name="toolchain" />
                </ItemGroup>
                <TvixBuild Name="direct" Command="sh"
                           Arguments="-c;printf 'tool %s needle-%s\n' &quot;$toolchain&quot; &quot;$WHO&quot; &gt; $out%3B printf plain &gt; $doc"
                           Inputs="@(_In)" Outputs="out;doc" OutputDirectory="$(IntermediateOutputPath)direct"
                           Environment="WHO=xyzzy" RefscanNeedles="needle-xyzzy;absent-needle" Timeout="120000">
                  <Output TaskParameter="MaterializedOutputs" ItemName="_Out" />
                </TvixBuild>
                <Message Importance="high" Text="output %(_Out.OutputName) kind=%(_Out.Kind) digest=%(_Out.Digest) refs=[%(_Out.References)] at=%(_Out.FullPath)" />
              </Target>
            """,
            ("Program.cs", "System.Console.WriteLine(1);"));

        var build = project.Build();
        Assert.True(build.ExitCode == 0, build.ToString());
        string outLine = SingleLine(build.Output, "output out ");
        string docLine = SingleLine(build.Output, "output doc ");

        string outPath = project.PathOf("obj/Debug/net10.0/direct/out");
        string docPath = project.PathOf("obj/Debug/net10.0/direct/doc");
        Assert.StartsWith("tool /nix/store/", File.ReadAllText(outPath), StringComparison.Ordinal);
        Assert.Equal("plain", File.ReadAllText(docPath));
        Assert.Contains($"digest={Blake3.Hash(File.ReadAllBytes(outPath))}", outLine, StringComparison.Ordinal);
        Assert.Contains($"digest={Blake3.Hash(File.ReadAllBytes(docPath))}", docLine, StringComparison.Ordinal);
        Assert.Contains("kind=file", outLine, StringComparison.Ordinal);
        Assert.Contains("refs=[toolchain;needle-xyzzy]", outLine, StringComparison.Ordinal);
        Assert.Contains("refs=[]", docLine, StringComparison.Ordinal);
        Assert.Contains($"at={outPath}", outLine, StringComparison.Ordinal);
        AssertNothingLeftBehind();
    }

    [Fact]
    public void CodegenSampleBuildsAndPrintsWhatItsGeneratorWrote()
    {
        // The repository's sample as it is, but with this run's feed (the root's nuget.config) instead of its own.
        string sample = Path.Combine(feed.RepoRoot, "samples", "CodegenSample");
        string copy = Path.Combine(feed.Root, "CodegenSample");
        foreach (string file in Directory.EnumerateFiles(sample, "*", SearchOption.AllDirectories))
        {
            string relative = Path.GetRelativePath(sample, file);
            if (relative.StartsWith("bin/", StringComparison.Ordinal) || relative.StartsWith("obj/", StringComparison.Ordinal) || relative == "nuget.config")
            {
                continue;
            }

            Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(copy, relative))!);
            File.Copy(file, Path.Combine(copy, relative));
        }

        var project = new TestProject(feed, "CodegenSample", copy);
        var build = project.Build($"-p:TvixFuseBuildVersion={feed.Version}");
        Assert.True(build.ExitCode == 0, build.ToString());
        Assert.Contains("generate.sh: wrote /nix/store/", build.Output, StringComparison.Ordinal);
        string[] expected =
        [
            "Hello from the sandbox",
            .. Directory.GetFiles(Path.Combine(sample, "codegen", "messages")).Order(StringComparer.Ordinal).Select(f => $"- {File.ReadAllText(f).Trim()}"),
        ];
        Assert.Equal(expected, Run(project).Split('\n'));
        AssertNothingLeftBehind();
    }

    private static string Run(TestProject project)
    {
        var run = project.RunProgram();
        Assert.True(run.ExitCode == 0, run.ToString());
        return run.Output.Trim();
    }

    private static string SingleLine(string output, string prefix) =>
        Assert.Single(output.Split('\n').Select(l => l.Trim()), l => l.StartsWith(prefix, StringComparison.Ordinal));

    private void AssertNothingLeftBehind()
    {
        Assert.Empty(feed.LeftoverBuildDirectories());
        Assert.Empty(feed.LeftoverMounts());
    }
}
