using System.Runtime.InteropServices;
using TvixFuseBuild.Castore.Hashing;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.MSBuild.Tests.Support;

namespace TvixFuseBuild.MSBuild.Tests;

/// <summary>
/// Builder=: the step runs on a real <c>tvix-fuse-build serve</c> process (the tool built from src/Tool), with a store
/// of its own: the inputs go up to it, the build runs there, the outputs come back and are compiled in.
/// </summary>
[Collection(DotnetBuildCollection.Name)]
public sealed partial class BuilderTests(PackedFeed feed)
{
    [Fact]
    public async Task StepRunsOnTheRemoteBuilderAndItsOutputsComeBack()
    {
        string remoteStore = Path.Combine(feed.Root, "remote-store");
        string socket = Path.Combine(feed.Root, "builder.sock");
        string tool = Path.Combine(feed.RepoRoot, "src", "Tool", "bin", feed.Configuration, "net10.0", "TvixFuseBuild.Tool.dll");
        Assert.True(File.Exists(tool), $"{tool} is not built");
        var environment = new Dictionary<string, string?>(feed.BuildEnvironment)
        {
            ["XDG_DATA_HOME"] = Path.Combine(feed.Root, "remote-data"),
        };

        using var serve = Dotnet.Start(feed.Root, environment, [tool, "--store", $"local://{remoteStore}", "serve", "--listen", $"unix:{socket}"]);
        var serveOutput = Task.WhenAll(serve.StandardOutput.ReadToEndAsync(), serve.StandardError.ReadToEndAsync());
        try
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (!File.Exists(socket) && !serve.HasExited && DateTime.UtcNow < deadline)
            {
                await Task.Delay(50);
            }

            Assert.True(File.Exists(socket), $"serve did not listen on {socket}");
            var project = feed.CreateProject(
                "Remote",
                $"""
                  <ItemGroup>
                    <TvixBuildStep Include="codegen" Command="sh" Arguments="-eu;-c;. &quot;$gen&quot;" Compile="true" Builder="unix:{socket}" />
                    <TvixBuildInput Include="{feed.Toolchain}" Step="codegen" Name="toolchain" />
                    <TvixBuildInput Include="gen.sh" Step="codegen" Name="gen" />
                    <TvixBuildInput Include="message.txt" Step="codegen" Name="message" />
                  </ItemGroup>
                """,
                ("Program.cs", "System.Console.WriteLine(\"program says: \" + Gen.Generated.Message);"),
                ("gen.sh", """
                    mkdir -p "$out"
                    printf 'namespace Gen;\ninternal static class Generated { public const string Message = "%s"; }\n' "$(cat "$message")" > "$out/Generated.g.cs"
                    """),
                ("message.txt", "built remotely"));

            var build = project.Build();
            Assert.True(build.ExitCode == 0, build.ToString());
            Assert.Contains($"TvixBuild codegen: ran in ", build.Output, StringComparison.Ordinal);
            Assert.Contains($" ms on unix:{socket}", build.Output, StringComparison.Ordinal);
            var run = project.RunProgram();
            Assert.Equal("program says: built remotely", run.Output.Trim());

            // The remote built it: the generated file is in the builder's store, where only that build could put it.
            var generated = Blake3.Hash(File.ReadAllBytes(project.PathOf("obj/Debug/net10.0/tvix/codegen/out/Generated.g.cs")));
            await using (var store = CastoreStore.Open($"local://{remoteStore}"))
            {
                Assert.True(await store.Blobs.HasAsync(generated), "the output is not in the builder's store");
            }

            // A clean build of the same step: the local result cache answers, the builder is not asked again.
            project.DeleteBuildOutputs();
            var again = project.Build();
            Assert.True(again.ExitCode == 0, again.ToString());
            Assert.Contains("TvixBuild codegen: from the cache", again.Output, StringComparison.Ordinal);

            // A failing command on the builder fails the build with the command's error code, status and log lines.
            File.WriteAllText(project.PathOf("gen.sh"), "echo remote-failure; exit 4");
            var failed = project.Build();
            Assert.NotEqual(0, failed.ExitCode);
            Assert.True(
                failed.Output.Contains("error TVB0003", StringComparison.Ordinal) && failed.Output.Contains("remote-failure", StringComparison.Ordinal) &&
                failed.Output.Contains("exited with status 4", StringComparison.Ordinal),
                failed.ToString());
        }
        finally
        {
            if (!serve.HasExited)
            {
                Kill(serve.Id, 15);
                if (!serve.WaitForExit(TimeSpan.FromSeconds(30)))
                {
                    serve.Kill(entireProcessTree: true);
                }
            }

            await serveOutput;
        }

        Assert.Empty(feed.LeftoverMounts());
        Assert.Empty(feed.LeftoverBuildDirectories());
    }

    [LibraryImport("libc", EntryPoint = "kill")]
    private static partial int Kill(int pid, int signal);
}
