using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores.Memory;
using TvixFuseBuild.Fuse.Tests.Support;

namespace TvixFuseBuild.Fuse.Tests;

/// <summary>A generated host tree, imported into a store and mounted once for the tests of the class.</summary>
public sealed class ImportedTreeFixture : IAsyncLifetime
{
    public string Work { get; private set; } = null!;

    public string Original { get; private set; } = null!;

    public MemoryBlobService Blobs { get; } = new();

    public MemoryDirectoryService Directories { get; } = new();

    public Node Root { get; private set; } = null!;

    internal TestMount Mount { get; private set; } = null!;

    public string Mounted => Mount["tree"];

    public async Task InitializeAsync()
    {
        Work = Directory.CreateTempSubdirectory("tfb-fuse-tree-").FullName;
        Original = Path.Combine(Work, "tree");
        HostTree.Generate(Original, seed: 42, files: 320);
        Root = await HostTree.ImportAsync(Original, "tree", Blobs, Directories);
        Mount = await TestMount.StartAsync([Root], Blobs, Directories);
    }

    public async Task DisposeAsync()
    {
        try
        {
            if (Mount is not null)
            {
                await Mount.DisposeAsync();
            }
        }
        finally
        {
            Directory.Delete(Work, recursive: true);
        }
    }
}

/// <summary>Standard tools see the mounted tree exactly as the original (modes aside: the store keeps only the x bit).</summary>
public sealed class ImportedTreeTests(ImportedTreeFixture tree) : IClassFixture<ImportedTreeFixture>
{
    [Fact]
    public void DiffFindsNoDifference()
    {
        var (code, stdout, stderr) = Run.Process("diff", "-r", "--no-dereference", tree.Original, tree.Mounted);
        Assert.True(code == 0, $"diff -r exited {code}:\n{stdout}{stderr}");
        Assert.Empty(stdout);
    }

    [Fact]
    public void FindListsTheSameEntries()
    {
        string[] arguments = [".", "-type", "d", "-printf", "%P|d\n", "-o", "-printf", "%P|%y|%s|%l\n"];
        string original = Run.CheckedIn(tree.Original, "find", arguments);
        string mounted = Run.CheckedIn(tree.Mounted, "find", arguments);
        Assert.Equal(Sorted(original), Sorted(mounted));
        Assert.True(original.Split('\n').Length > 300);
    }

    [Fact]
    public void DuReportsTheSameSizesForFilesAndLinks()
    {
        var nonDirectories = Run.CheckedIn(tree.Original, "find", ".", "-not", "-type", "d")
            .Split('\n', StringSplitOptions.RemoveEmptyEntries).ToHashSet();
        var regularFiles = Run.CheckedIn(tree.Original, "find", ".", "-type", "f")
            .Split('\n', StringSplitOptions.RemoveEmptyEntries).ToHashSet();

        string[] Filter(string du, HashSet<string> keep) => du.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Where(line => keep.Contains(line[(line.IndexOf('\t') + 1)..])).Order(StringComparer.Ordinal).ToArray();

        // Apparent sizes of every file and symlink, and the blocks of every regular file.
        Assert.Equal(
            Filter(Run.CheckedIn(tree.Original, "du", "-ab", "--apparent-size", "."), nonDirectories),
            Filter(Run.CheckedIn(tree.Mounted, "du", "-ab", "--apparent-size", "."), nonDirectories));
        Assert.Equal(
            Filter(Run.CheckedIn(tree.Original, "du", "-a", "-B1", "."), regularFiles),
            Filter(Run.CheckedIn(tree.Mounted, "du", "-a", "-B1", "."), regularFiles));
    }

    [Fact]
    public void TarArchivesAreByteIdentical()
    {
        // Normalized as the store normalizes: no times, no owners, no write bits.
        const string Tar = "tar --sort=name --mtime=@1 --owner=0 --group=0 --numeric-owner --mode=a-w --format=gnu -cf - . | sha256sum";
        string original = Run.CheckedIn(tree.Original, "bash", "-o", "pipefail", "-c", Tar);
        string mounted = Run.CheckedIn(tree.Mounted, "bash", "-o", "pipefail", "-c", Tar);
        Assert.Equal(original, mounted);
    }

    [Fact]
    public void ExecutableAndPlainFilesWithEqualBytesHaveDifferentInodes()
    {
        var groups = Directory.EnumerateFiles(tree.Original, "*", SearchOption.AllDirectories)
            .Where(path => new FileInfo(path).LinkTarget is null && new FileInfo(path).Length == 70_000)
            .GroupBy(path => (File.GetUnixFileMode(path) & UnixFileMode.UserExecute) != 0)
            .ToDictionary(g => g.Key, g => g.ToList());
        Assert.True(groups.ContainsKey(true) && groups.ContainsKey(false), "the tree has the shared content both ways");

        string Mounted(string original) => Path.Combine(tree.Mounted, Path.GetRelativePath(tree.Original, original));
        var executables = groups[true].Select(p => Posix.Stat(Mounted(p)).Ino).Distinct().ToList();
        var plain = groups[false].Select(p => Posix.Stat(Mounted(p)).Ino).Distinct().ToList();
        Assert.Single(executables);
        Assert.Single(plain);
        Assert.NotEqual(executables[0], plain[0]);
        Assert.Equal(0x16Du, Posix.Stat(Mounted(groups[true][0])).Permissions);
        Assert.Equal(0x124u, Posix.Stat(Mounted(groups[false][0])).Permissions);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task SixteenThreadsReadingRandomRangesGetExactlyTheSourceBytes(bool asynchronousStore)
    {
        // A mount of its own (cold caches), over a store that may answer from other threads like a remote one.
        var blobs = new CountingBlobService(tree.Blobs) { Asynchronous = asynchronousStore };
        var directories = new CountingDirectoryService(tree.Directories) { Asynchronous = asynchronousStore };
        await using var mount = await TestMount.StartAsync([tree.Root], blobs, directories);
        string mounted = mount["tree"];
        var files = Directory.EnumerateFiles(tree.Original, "*", SearchOption.AllDirectories)
            .Where(path => new FileInfo(path).LinkTarget is null)
            .Select(path => Path.GetRelativePath(tree.Original, path))
            .ToArray();

        int mismatches = 0, reads = 0;
        var threads = Enumerable.Range(0, 16).Select(t => new Thread(() =>
        {
            var random = new Random(t);
            var expected = new byte[1 << 20];
            var actual = new byte[1 << 20];
            for (int i = 0; i < 60; i++)
            {
                string file = files[random.Next(files.Length)];
                using var original = File.OpenHandle(Path.Combine(tree.Original, file));
                using var copy = File.OpenHandle(Path.Combine(mounted, file));
                long length = RandomAccess.GetLength(original);
                long offset = length == 0 ? 0 : random.NextInt64(length + 10);
                int size = random.Next(1, expected.Length);
                int n = RandomAccess.Read(original, expected.AsSpan(0, size), offset);
                int m = ReadFully(copy, actual.AsSpan(0, size), offset);
                if (n != m || !expected.AsSpan(0, n).SequenceEqual(actual.AsSpan(0, m)))
                {
                    Interlocked.Increment(ref mismatches);
                }

                Interlocked.Increment(ref reads);
            }
        })).ToList();
        threads.ForEach(thread => thread.Start());
        threads.ForEach(thread => thread.Join());

        Assert.Equal(16 * 60, reads);
        Assert.Equal(0, mismatches);
        Assert.NotEmpty(blobs.Reads);
        Assert.Empty(mount.LogLines);
    }

    private static int ReadFully(Microsoft.Win32.SafeHandles.SafeFileHandle handle, Span<byte> buffer, long offset)
    {
        int total = 0;
        while (total < buffer.Length)
        {
            int n = RandomAccess.Read(handle, buffer[total..], offset + total);
            if (n == 0)
            {
                break;
            }

            total += n;
        }

        return total;
    }

    private static string[] Sorted(string lines) =>
        lines.Split('\n', StringSplitOptions.RemoveEmptyEntries).Order(StringComparer.Ordinal).ToArray();
}
