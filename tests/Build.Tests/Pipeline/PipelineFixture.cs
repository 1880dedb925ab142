using System.Diagnostics;
using TvixFuseBuild.Build.Pipeline;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Transfer;

namespace TvixFuseBuild.Build.Tests.Pipeline;

/// <summary>
/// A local store holding a busybox input (Debian's static busybox with its applets linked in bin/), a work root and a
/// result cache, all under one temporary directory that is removed at the end.
/// </summary>
public sealed class PipelineFixture : IAsyncLifetime
{
    public const string BusyboxName = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-busybox";

    public string Root { get; } = Directory.CreateTempSubdirectory("tvix-fuse-pipeline-test-").FullName;

    public CastoreStore Store { get; private set; } = null!;

    public DirectoryNode Busybox { get; private set; } = null!;

    public string BusyboxPath => "/nix/store/" + BusyboxName;

    public async Task InitializeAsync()
    {
        Assert.True(File.Exists("/bin/busybox"), "the static busybox is missing: run scripts/setup (busybox-static)");
        Assert.True(File.Exists("/dev/fuse"), "/dev/fuse is missing: these tests mount real FUSE filesystems");
        Store = CastoreStore.Open("local://" + Path.Combine(Root, "store"));
        string tree = Path.Combine(Root, "busybox-tree");
        Directory.CreateDirectory(Path.Combine(tree, "bin"));
        File.Copy("/bin/busybox", Path.Combine(tree, "bin", "busybox"));
        foreach (string applet in new[] { "sh", "cat", "echo", "ln", "ls", "mkdir", "id", "hostname", "pwd", "env", "chmod", "touch", "rm", "mv", "sleep", "printf", "test", "true", "false", "stat", "wc", "tr", "grep" })
        {
            File.CreateSymbolicLink(Path.Combine(tree, "bin", applet), "busybox");
        }

        Busybox = (DirectoryNode)(await HostImporter.ImportAsync(tree, PathComponent.Create(BusyboxName), Store.Blobs, Store.Directories))
            .WithName(PathComponent.Create(BusyboxName));
    }

    public BuildRunner Runner(bool keepFailed = false, bool rebuild = false, ResultCache? cache = null, List<string>? log = null) =>
        new(Store, new BuildRunnerOptions
        {
            WorkRoot = Path.Combine(Root, "work"),
            KeepFailed = keepFailed,
            Rebuild = rebuild,
            ResultCache = cache,
            Log = log is null ? null : line => { lock (log) { log.Add(line); } },
        });

    public ResultCache NewResultCache() => new(Path.Combine(Root, "results-" + Guid.NewGuid().ToString("N")));

    /// <summary>The directory (root's or the user's, mode 0700) that holds the build directories.</summary>
    public string BuildDirectories => BuildDirectory.ParentOf(Path.Combine(Root, "work"));

    /// <summary>What is left in the work root: builds must leave nothing unless told to keep it.</summary>
    public IEnumerable<string> LeftoverBuildDirectories()
    {
        string work = Path.Combine(Root, "work");
        var left = Directory.Exists(work) ? Directory.EnumerateFileSystemEntries(work).Where(e => e != BuildDirectories).ToList() : [];
        return Directory.Exists(BuildDirectories) ? [.. left, .. Directory.EnumerateFileSystemEntries(BuildDirectories)] : left;
    }

    public async Task DisposeAsync()
    {
        await Store.DisposeAsync();
        Assert.DoesNotContain(File.ReadAllText("/proc/self/mountinfo").Split('\n'), l => l.Contains(Root, StringComparison.Ordinal));
        HostTree.Remove(Root);
    }
}

[CollectionDefinition(Name)]
public sealed class PipelineCollection : ICollectionFixture<PipelineFixture>
{
    public const string Name = "pipeline";
}
