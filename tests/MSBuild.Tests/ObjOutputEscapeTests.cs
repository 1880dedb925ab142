using TvixFuseBuild.Castore.Tests;
using TvixFuseBuild.MSBuild.Tests.Support;

namespace TvixFuseBuild.MSBuild.Tests;

/// <summary>
/// Never replace what is not ours (issue 12), under obj/: a symlink planted at a step's result file is refused, not
/// followed, and a device in place of a step's output is neither replaced nor removed. Real `dotnet build`s, as root.
/// </summary>
[Collection(DotnetBuildCollection.Name)]
public sealed class ObjOutputEscapeTests(PackedFeed feed)
{
    [Fact]
    public void AResultFileSymlinkIsRefusedAndADeviceInPlaceOfAnOutputStaysADevice()
    {
        SpecialFiles.RequireRoot();
        var project = feed.CreateProject(
            "ObjEscape",
            $"""
              <ItemGroup>
                <TvixBuildStep Include="gen" Command="sh" Arguments="-c;mkdir $out%3B cp $data/* $out/" />
                <TvixBuildInput Include="{feed.Toolchain}" Step="gen" Name="toolchain" />
                <TvixBuildInput Include="data" Step="gen" />
              </ItemGroup>
            """,
            ("Program.cs", "System.Console.WriteLine(1);"),
            ("data/a.txt", "a"));
        string output = project.PathOf("obj/Debug/net10.0/tvix/gen/out");
        string result = project.PathOf("obj/Debug/net10.0/tvix/gen.result");

        var first = project.Build();
        Assert.True(first.ExitCode == 0, first.ToString());
        Assert.Equal("a", File.ReadAllText(Path.Combine(output, "a.txt")));
        Assert.StartsWith("out directory blake3-", File.ReadAllText(result));

        // A symlink in place of the result file, old enough that the step runs again.
        string outside = project.PathOf("outside.txt");
        File.WriteAllText(outside, "keep me");
        File.SetLastWriteTimeUtc(outside, new DateTime(2000, 1, 1, 0, 0, 0, DateTimeKind.Utc));
        File.Delete(result);
        File.CreateSymbolicLink(result, outside);
        File.WriteAllText(project.PathOf("data/a.txt"), "a2");
        // The link's own time too: whichever of the two MSBuild looks at, the result is older than the inputs.
        using (var touch = System.Diagnostics.Process.Start("touch", ["-h", "-d", "2000-01-01", result])!)
        {
            touch.WaitForExit();
            Assert.Equal(0, touch.ExitCode);
        }
        var second = project.Build();
        Assert.True(second.ExitCode != 0, second.ToString());
        Assert.Contains($"gen: cannot write the result file {result}: refusing to replace {result}: it is a symbolic link", ErrorLine(second.Output, "TVB0008"));
        Assert.Equal("keep me", File.ReadAllText(outside));
        Assert.Equal(outside, new FileInfo(result).LinkTarget);

        // A device in place of the (directory) output: refused, and still the same device.
        Directory.Delete(output, recursive: true);
        SpecialFiles.MakeNullDevice(output);
        var third = project.Build();
        Assert.NotEqual(0, third.ExitCode);
        Assert.Contains($"refusing to export a directory to {output}: it is a character device", ErrorLine(third.Output, "TVB0008"));
        Assert.Equal(SpecialFiles.NullDevice, SpecialFiles.Describe(output));
        Assert.Equal("keep me", File.ReadAllText(outside));
        Assert.Empty(feed.LeftoverBuildDirectories());
        Assert.Empty(feed.LeftoverMounts());
    }

    private static string ErrorLine(string output, string code) =>
        output.Split('\n').FirstOrDefault(l => l.Contains($"error {code}:", StringComparison.Ordinal))
        ?? throw new Xunit.Sdk.XunitException($"no error {code} in the build's output:\n{output}");
}
