using System.Text.Json;
using System.Text.RegularExpressions;
using TvixFuseBuild.MSBuild.Tests.Support;

namespace TvixFuseBuild.MSBuild.Tests;

/// <summary>scripts/pack, and the way the package README says to consume what it packs.</summary>
[Collection(DotnetBuildCollection.Name)]
public sealed partial class PackScriptTests(PackedFeed feed)
{
    private const string FeedPlaceholder = "/path/to/TvixFuseBuild/artifacts/feed";

    [Fact]
    public void VersionFollowsTheSourcesInGit()
    {
        // A repository of its own: the script, the Version it starts from, and sources.
        string repo = Directory.CreateDirectory(Path.Combine(feed.Root, "pack-version-repo")).FullName;
        Directory.CreateDirectory(Path.Combine(repo, "scripts"));
        File.Copy(Path.Combine(feed.RepoRoot, "scripts", "pack"), Path.Combine(repo, "scripts", "pack"));
        Write(repo, "Directory.Build.props", "<Project>\n  <PropertyGroup>\n    <Version>2.3.4</Version>\n  </PropertyGroup>\n</Project>\n");
        File.WriteAllText(Path.Combine(repo, ".gitignore"), "bin/\n");
        Write(repo, "src/Task/Task.cs", "class Task {}");
        Write(repo, "docs/notes.md", "notes");
        Git(repo, "init", "-q");
        Git(repo, "add", "-A");
        Git(repo, "commit", "-q", "-m", "one");

        string clean = PrintVersion(repo);
        Assert.Equal("2.3.4-dev.1", clean);
        Assert.Equal(clean, PrintVersion(repo));

        // A change to the sources: a version of its own, the same one as long as the sources stay so.
        Write(repo, "src/Task/Task.cs", "class Task { int x; }");
        string changed = PrintVersion(repo);
        Assert.Matches(LocalVersion(), changed);
        Assert.Equal(changed, PrintVersion(repo));

        Write(repo, "src/Task/Task.cs", "class Task { int y; }");
        string changedAgain = PrintVersion(repo);
        Assert.Matches(LocalVersion(), changedAgain);
        Assert.NotEqual(changed, changedAgain);

        // Back as committed: the committed version again. A new untracked source counts; ignored files and files
        // outside the sources do not.
        Write(repo, "src/Task/Task.cs", "class Task {}");
        Assert.Equal(clean, PrintVersion(repo));
        Write(repo, "src/Task/bin/Task.dll", "built");
        Write(repo, "docs/notes.md", "other notes");
        Assert.Equal(clean, PrintVersion(repo));
        Write(repo, "src/Task/New.cs", "class New {}");
        Assert.Matches(LocalVersion(), PrintVersion(repo));

        Git(repo, "add", "-A");
        Git(repo, "commit", "-q", "-m", "two");
        Assert.Equal("2.3.4-dev.2", PrintVersion(repo));
    }

    [Fact]
    public void PackedFeedIsConsumedAsTheReadmeSaysAndARepackIsPickedUp()
    {
        // The build the tests run against, packed by the script into a feed of this run.
        string packFeed = Path.Combine(feed.Root, "pack-feed");
        string[] pack = ["--no-build", "-c", feed.Configuration, "--feed", packFeed];
        var packed = Pack(feed.RepoRoot, pack);
        Assert.True(packed.ExitCode == 0, packed.ToString());
        string version = Pack(feed.RepoRoot, ["--print-version", "-c", feed.Configuration]).Output.Trim();
        Assert.True(File.Exists(Path.Combine(packFeed, $"{PackedFeed.PackageId}.{version}.nupkg")), packed.ToString());
        string props = Path.Combine(packFeed, "TvixFuseBuild.MSBuild.version.props");
        Assert.Contains($">{version}</TvixFuseBuildVersion>", File.ReadAllText(props), StringComparison.Ordinal);

        // A fresh project set up with the README's two snippets, the feed path put in.
        string readme = File.ReadAllText(Path.Combine(feed.RepoRoot, "src", "MSBuild", "README.md"));
        string nugetConfig = XmlBlock(readme, "<packageSources>").Replace(FeedPlaceholder, packFeed, StringComparison.Ordinal);
        string reference = XmlBlock(readme, "TvixFuseBuild.MSBuild.version.props").Replace(FeedPlaceholder, packFeed, StringComparison.Ordinal);
        var project = feed.CreateProject(
            "PackConsumer",
            reference + """
              <ItemGroup>
                <TvixBuildStep Include="hello" Command="sh" Arguments="-c;echo packed-and-consumed &gt; $out" ProvideBinSh="true" />
              </ItemGroup>
            """,
            referencePackage: false,
            ("Program.cs", "System.Console.WriteLine(1);"),
            ("nuget.config", nugetConfig));

        var build = project.Build();
        Assert.True(build.ExitCode == 0, build.ToString());
        Assert.Contains("TvixBuild hello: ", build.Output, StringComparison.Ordinal);
        Assert.Equal("packed-and-consumed\n", File.ReadAllText(project.PathOf("obj/Debug/net10.0/tvix/hello/out")));
        Assert.Equal(version, RestoredVersion(project));

        // Packing the same sources again: the same version, nothing new to restore.
        var again = Pack(feed.RepoRoot, pack);
        Assert.True(again.ExitCode == 0, again.ToString());
        Assert.Contains("is already there", again.Output, StringComparison.Ordinal);
        Assert.Single(Directory.GetFiles(packFeed, "*.nupkg"));
        Assert.Contains($">{version}</TvixFuseBuildVersion>", File.ReadAllText(props), StringComparison.Ordinal);

        // Another version in the feed, as changed sources get: the next build restores it, with nothing edited.
        string next = version + ".repacked";
        var repacked = Pack(feed.RepoRoot, [.. pack, "--version", next]);
        Assert.True(repacked.ExitCode == 0, repacked.ToString());
        var rebuild = project.Build();
        Assert.True(rebuild.ExitCode == 0, rebuild.ToString());
        Assert.Equal(next, RestoredVersion(project));
        Assert.True(Directory.Exists(Path.Combine(feed.Packages, PackedFeed.PackageId.ToLowerInvariant(), next)));
        Assert.Empty(Directory.GetFileSystemEntries(packFeed, ".pack.*"));
    }

    [Fact]
    public void PackRejectsUnknownArguments()
    {
        var result = Pack(feed.RepoRoot, ["--bogus"]);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("unknown argument '--bogus'", result.Output, StringComparison.Ordinal);
        Assert.Contains("usage: scripts/pack", result.Output, StringComparison.Ordinal);
    }

    [GeneratedRegex(@"^2\.3\.4-dev\.1\.local-[0-9a-f]{12}$")]
    private static partial Regex LocalVersion();

    private DotnetResult Pack(string repo, string[] arguments)
    {
        // The script runs the dotnet that runs the tests.
        var environment = new Dictionary<string, string?>(feed.BuildEnvironment)
        {
            ["PATH"] = $"{Path.GetDirectoryName(Dotnet.Host)}:{Environment.GetEnvironmentVariable("PATH")}",
        };
        return Dotnet.Run(repo, environment, arguments, TimeSpan.FromMinutes(5), program: Path.Combine(repo, "scripts", "pack"));
    }

    private string PrintVersion(string repo)
    {
        var result = Pack(repo, ["--print-version"]);
        Assert.True(result.ExitCode == 0, result.ToString());
        return result.Output.Trim();
    }

    private static string RestoredVersion(TestProject project)
    {
        using var assets = JsonDocument.Parse(File.ReadAllText(project.PathOf("obj/project.assets.json")));
        string library = Assert.Single(
            assets.RootElement.GetProperty("libraries").EnumerateObject().Select(l => l.Name),
            n => n.StartsWith(PackedFeed.PackageId + "/", StringComparison.Ordinal));
        return library[(PackedFeed.PackageId.Length + 1)..];
    }

    /// <summary>The README's ```xml block that contains <paramref name="marker"/>.</summary>
    private static string XmlBlock(string markdown, string marker) =>
        Assert.Single(
            Regex.Matches(markdown, "```xml\n(.*?)```", RegexOptions.Singleline).Select(m => m.Groups[1].Value),
            b => b.Contains(marker, StringComparison.Ordinal));

    private static void Write(string root, string relative, string contents)
    {
        string path = Path.Combine(root, relative);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, contents);
    }

    private static void Git(string repo, params string[] arguments)
    {
        var info = new System.Diagnostics.ProcessStartInfo("git")
        {
            WorkingDirectory = repo,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string argument in (string[])["-c", "user.name=tests", "-c", "user.email=tests@localhost", "-c", "init.defaultBranch=main", .. arguments])
        {
            info.ArgumentList.Add(argument);
        }

        using var git = System.Diagnostics.Process.Start(info)!;
        string output = git.StandardOutput.ReadToEnd() + git.StandardError.ReadToEnd();
        git.WaitForExit();
        Assert.True(git.ExitCode == 0, $"git {string.Join(' ', arguments)}: {output}");
    }
}
