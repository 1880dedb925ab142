using System.Text.RegularExpressions;
using TvixFuseBuild.MSBuild.Tests.Support;

namespace TvixFuseBuild.MSBuild.Tests;

/// <summary>What a user of the package sees: where errors point, what a build says per step, what a clean leaves, the shell.</summary>
[Collection(DotnetBuildCollection.Name)]
public sealed partial class StepExperienceTests(PackedFeed feed)
{
    [Fact]
    public void ErrorsPointAtTheItemInTheUsersProject()
    {
        // The failing step comes from an imported file, named through a property (its only TvixBuildStep element).
        var project = feed.CreateProject(
            "ErrorPlaces",
            """
              <PropertyGroup>
                <FailingName>failing</FailingName>
              </PropertyGroup>
              <Import Project="steps.targets" />
              <ItemGroup>
                <TvixBuildStep Include="fine" Command="sh" Arguments="-c;echo &gt; $out" ProvideBinSh="true" />
                  <TvixBuildInput Include="missing-input.txt" Step="fine" />
              </ItemGroup>
            """,
            ("Program.cs", "System.Console.WriteLine(1);"),
            ("steps.targets", """
                <Project>
                  <ItemGroup>

                      <TvixBuildStep Include="$(FailingName)" Command="sh" Arguments="-c;echo failing-log-line%3B exit 3" ProvideBinSh="true" />
                  </ItemGroup>
                </Project>
                """));
        string csproj = project.PathOf("ErrorPlaces.csproj");
        string targets = project.PathOf("steps.targets");

        var missing = project.Build();
        Assert.NotEqual(0, missing.ExitCode);
        var (inputLine, inputColumn) = Locate(csproj, "missing-input.txt");
        Assert.Contains(
            $"{csproj}({inputLine},{inputColumn}): error TVB0002: the input {project.PathOf("missing-input.txt")} of the step 'fine' does not exist",
            missing.Output, StringComparison.Ordinal);

        File.WriteAllText(project.PathOf("missing-input.txt"), "here now");
        var failing = project.Build();
        Assert.NotEqual(0, failing.ExitCode);
        var (stepLine, stepColumn) = Locate(targets, "$(FailingName)");
        // As it happens and again in the summary, each line of the message (MSBuild splits it): every time at the item.
        var errors = failing.Output.Split('\n').Where(l => l.Contains("error TVB0003", StringComparison.Ordinal)).ToList();
        string at = $"{targets}({stepLine},{stepColumn}): error TVB0003: ";
        Assert.True(errors.All(e => e.Contains(at, StringComparison.Ordinal)), $"not all at {at}:\n{string.Join('\n', errors)}");
        Assert.Contains(errors, e => e.Contains(at + "failing: the command exited with status 3", StringComparison.Ordinal));
        Assert.Contains(errors, e => e.Contains(at + "  failing-log-line", StringComparison.Ordinal));
        Assert.DoesNotContain(failing.Output.Split('\n'), l => l.Contains("error", StringComparison.Ordinal) && l.Contains("TvixFuseBuild.MSBuild.targets", StringComparison.Ordinal));
        Assert.Empty(feed.LeftoverBuildDirectories());
        Assert.Empty(feed.LeftoverMounts());
    }

    [Fact]
    public void StepsHaveAShellSayWhatTheyDidInOneLineAndCleanRemovesTheirState()
    {
        // No toolchain input: busybox at /bin/sh runs the script, and its applets need no PATH.
        const string steps = """
              <ItemGroup>
                <TvixBuildStep Include="shell" Command="sh" Arguments="-eu;-c;. &quot;$script&quot;" ProvideBinSh="true" />
                <TvixBuildInput Include="shell.sh" Step="shell" Name="script" />
              </ItemGroup>
            """;
        const string outside = """
              <ItemGroup>
                <TvixBuildStep Include="outside" Command="sh" Arguments="-c;echo kept &gt; $out" ProvideBinSh="true" OutputDirectory="generated" />
              </ItemGroup>
            """;
        var project = feed.CreateProject(
            "ShellSteps",
            steps + outside,
            ("Program.cs", "System.Console.WriteLine(1);"),
            ("shell.sh", """
                echo shell-command-ran
                mkdir "$out"
                echo "$PATH" > "$out/path"
                echo abc | sed s/b/B/ > "$out/sed"
                echo 6 7 | awk '{ print $1 * $2 }' > "$out/awk"
                ls /bin > "$out/bin"
                """));
        string tvix = project.PathOf("obj/Debug/net10.0/tvix");

        // 1. Each step: one line at minimal verbosity, and not its command's output (that is for -v n).
        var first = BuildMinimal(project);
        Assert.True(first.ExitCode == 0, first.ToString());
        Assert.Matches(StepLine("shell", @"ran in \d+ ms"), OnlyLineOf(first, "TvixBuild shell:"));
        Assert.Matches(StepLine("outside", @"ran in \d+ ms"), OnlyLineOf(first, "TvixBuild outside:"));
        Assert.DoesNotContain("shell-command-ran", first.Output, StringComparison.Ordinal);
        Assert.Equal("/bin\n", File.ReadAllText(Path.Combine(tvix, "shell/out/path")));
        Assert.Equal("aBc\n", File.ReadAllText(Path.Combine(tvix, "shell/out/sed")));
        Assert.Equal("42\n", File.ReadAllText(Path.Combine(tvix, "shell/out/awk")));
        Assert.Equal("sh\n", File.ReadAllText(Path.Combine(tvix, "shell/out/bin")));
        Assert.Equal("kept\n", File.ReadAllText(project.PathOf("generated/out")));

        // 2. Nothing changed.
        var second = BuildMinimal(project);
        Assert.True(second.ExitCode == 0, second.ToString());
        Assert.Equal("TvixBuild shell: up to date", OnlyLineOf(second, "TvixBuild shell:"));
        Assert.Equal("TvixBuild outside: up to date", OnlyLineOf(second, "TvixBuild outside:"));

        // 3. dotnet clean: no step state under obj/; the output outside obj/ and bin/ is not the clean's to remove.
        var clean = project.Dotnet("clean", "-nodeReuse:false", "--disable-build-servers", "-tl:off", "-v:m", "-nologo");
        Assert.True(clean.ExitCode == 0, clean.ToString());
        Assert.False(Directory.Exists(tvix), string.Join('\n', Directory.Exists(tvix) ? Directory.GetFileSystemEntries(tvix, "*", SearchOption.AllDirectories) : []));
        Assert.Empty(Directory.GetFiles(project.PathOf("obj"), "*.step", SearchOption.AllDirectories));
        Assert.Empty(Directory.GetFiles(project.PathOf("obj"), "*.result", SearchOption.AllDirectories));
        Assert.Equal("kept\n", File.ReadAllText(project.PathOf("generated/out")));

        // 4. After the clean, the result cache answers.
        var third = BuildMinimal(project);
        Assert.True(third.ExitCode == 0, third.ToString());
        Assert.StartsWith("TvixBuild shell: from the cache", OnlyLineOf(third, "TvixBuild shell:"), StringComparison.Ordinal);
        Assert.StartsWith("TvixBuild outside: from the cache", OnlyLineOf(third, "TvixBuild outside:"), StringComparison.Ordinal);
        Assert.Equal("42\n", File.ReadAllText(Path.Combine(tvix, "shell/out/awk")));

        // 5. A step no longer declared is cleaned through the step file it left.
        string csproj = project.PathOf("ShellSteps.csproj");
        File.WriteAllText(csproj, File.ReadAllText(csproj).Replace(steps, "", StringComparison.Ordinal));
        Assert.DoesNotContain("shell.sh", File.ReadAllText(csproj), StringComparison.Ordinal);
        var cleanAgain = project.Dotnet("clean", "-nodeReuse:false", "--disable-build-servers", "-tl:off", "-v:m", "-nologo");
        Assert.True(cleanAgain.ExitCode == 0, cleanAgain.ToString());
        Assert.False(Directory.Exists(tvix));
        Assert.Empty(feed.LeftoverBuildDirectories());
        Assert.Empty(feed.LeftoverMounts());
    }

    private static DotnetResult BuildMinimal(TestProject project) =>
        project.Dotnet("build", "-nodeReuse:false", "--disable-build-servers", "-tl:off", "-v:m", "-nologo", "-p:UseSharedCompilation=false");

    private static string OnlyLineOf(DotnetResult result, string prefix) =>
        Assert.Single(result.Output.Split('\n').Select(l => l.Trim()), l => l.StartsWith(prefix, StringComparison.Ordinal));

    private static Regex StepLine(string step, string rest) => new($"^TvixBuild {Regex.Escape(step)}: {rest}$");

    /// <summary>The line (1-based) holding <paramref name="marker"/>, and the column of the element's '&lt;' on it.</summary>
    private static (int Line, int Column) Locate(string file, string marker)
    {
        string[] lines = File.ReadAllLines(file);
        int index = Array.FindIndex(lines, l => l.Contains(marker, StringComparison.Ordinal));
        Assert.True(index >= 0, $"{marker} is not in {file}");
        return (index + 1, lines[index].IndexOf('<', StringComparison.Ordinal) + 1);
    }
}
