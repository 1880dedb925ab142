using System.Net.Sockets;
using System.Text;
using TvixFuseBuild.Castore.Hashing;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Transfer;

namespace TvixFuseBuild.Castore.Tests;

public sealed class ImportExportTests : IDisposable
{
    // A real multi-thousand-file tree present on every Debian machine with python3.
    internal const string RealTree = "/usr/lib/python3";

    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    private CastoreStore NewStore() => CastoreStore.Open("local://" + _temp.Combine("store"));

    [Fact]
    public async Task RealTreeImportMatchesB3sumFileByFile()
    {
        string b3sum = ProcessRunner.RequireTool("b3sum");
        await using var store = NewStore();
        var root = await HostImporter.ImportAsync(RealTree, store);

        var fromStore = new Dictionary<string, (B3Digest Digest, bool Executable)>();
        await CollectFilesAsync(store, root, "", fromStore);
        var files = Directory.EnumerateFiles(RealTree, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 })
            .Where(f => new FileInfo(f).LinkTarget is null)
            .ToList();
        Assert.True(files.Count > 2000, $"{RealTree} has only {files.Count} files");
        Assert.Equal(files.Count, fromStore.Count);

        foreach (var chunk in files.Chunk(500))
        {
            var (code, stdout, stderr) = ProcessRunner.Run(b3sum, ["--no-names", .. chunk]);
            Assert.True(code == 0, stderr);
            var sums = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal(chunk.Length, sums.Length);
            for (int i = 0; i < chunk.Length; i++)
            {
                string relative = Path.GetRelativePath(RealTree, chunk[i]);
                Assert.Equal(sums[i].Trim(), fromStore[relative].Digest.ToHex());
                bool executable = (File.GetUnixFileMode(chunk[i]) & UnixFileMode.UserExecute) != 0;
                Assert.Equal(executable, fromStore[relative].Executable);
            }
        }
    }

    private static async Task CollectFilesAsync(CastoreStore store, Node node, string prefix, Dictionary<string, (B3Digest, bool)> files)
    {
        switch (node)
        {
            case FileNode f:
                files[prefix] = (f.Digest, f.Executable);
                break;
            case DirectoryNode d:
                var directory = await store.Directories.GetAsync(d.Digest);
                Assert.NotNull(directory);
                foreach (var child in directory.Entries)
                {
                    await CollectFilesAsync(store, child, prefix.Length == 0 ? child.Name.ToString() : $"{prefix}/{child.Name}", files);
                }

                break;
        }
    }

    [Fact]
    public async Task ImportThenExportGivesAnIdenticalTree()
    {
        string source = MakeAwkwardTree();
        await using var store = NewStore();
        var root = await HostImporter.ImportAsync(source, store);
        string exported = _temp.Combine("exported");
        await HostExporter.ExportAsync(root, store, exported);

        var (code, stdout, stderr) = ProcessRunner.Run(ProcessRunner.RequireTool("diff"), "-r", "--no-dereference", source, exported);
        Assert.True(code == 0, stdout + stderr);
        AssertSameShape(source, exported);
        Assert.DoesNotContain(Directory.EnumerateFileSystemEntries(_temp.Path), p => Path.GetFileName(p).StartsWith(".exported.export-", StringComparison.Ordinal));
    }

    [Fact]
    public async Task RealTreeRoundTrip()
    {
        await using var store = NewStore();
        var root = await HostImporter.ImportAsync(RealTree, store);
        string exported = _temp.Combine("python3");
        await HostExporter.ExportAsync(root, store, exported);
        var (code, stdout, stderr) = ProcessRunner.Run(ProcessRunner.RequireTool("diff"), "-r", "--no-dereference", RealTree, exported);
        Assert.True(code == 0, stdout + stderr);
        AssertSameShape(RealTree, exported);

        // Importing the export gives the same node: the round trip is exact.
        Assert.Equal(root, await HostImporter.ImportAsync(exported, store));
    }

    private string MakeAwkwardTree()
    {
        string root = _temp.Combine("source");
        Directory.CreateDirectory(Path.Combine(root, "empty-dir"));
        Directory.CreateDirectory(Path.Combine(root, "a", "b", "c"));
        File.WriteAllText(Path.Combine(root, "a", "b", "c", "deep.txt"), "deep");
        File.WriteAllBytes(Path.Combine(root, "empty-file"), []);
        var big = new byte[(5 * 1024 * 1024) + 3];
        Random.Shared.NextBytes(big);
        File.WriteAllBytes(Path.Combine(root, "big.bin"), big);
        File.WriteAllText(Path.Combine(root, "run.sh"), "#!/bin/sh\necho hi\n");
        File.SetUnixFileMode(Path.Combine(root, "run.sh"), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        File.WriteAllText(Path.Combine(root, "same-1"), "same bytes");
        File.WriteAllText(Path.Combine(root, "same-2"), "same bytes");
        File.CreateSymbolicLink(Path.Combine(root, "rel-link"), "a/b/c/deep.txt");
        File.CreateSymbolicLink(Path.Combine(root, "abs-link"), "/nix/store/somewhere-else");
        File.CreateSymbolicLink(Path.Combine(root, "dangling"), "does/not/exist");
        File.CreateSymbolicLink(Path.Combine(root, "dir-link"), "a");
        File.WriteAllText(Path.Combine(root, "ünïcödé name"), "utf-8 names");
        File.WriteAllText(Path.Combine(root, "a", ".hidden"), "dotfile");
        return root;
    }

    private static void AssertSameShape(string expectedRoot, string actualRoot)
    {
        var options = new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 };
        var expected = Directory.EnumerateFileSystemEntries(expectedRoot, "*", options).Select(p => Path.GetRelativePath(expectedRoot, p)).Order(StringComparer.Ordinal).ToList();
        var actual = Directory.EnumerateFileSystemEntries(actualRoot, "*", options).Select(p => Path.GetRelativePath(actualRoot, p)).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(expected, actual);
        foreach (var relative in expected)
        {
            var e = new FileInfo(Path.Combine(expectedRoot, relative));
            var a = new FileInfo(Path.Combine(actualRoot, relative));
            Assert.Equal(e.LinkTarget, a.LinkTarget);
            if (a.LinkTarget is not null)
            {
                continue;
            }

            bool isDirectory = Directory.Exists(a.FullName);
            bool executable = isDirectory || (File.GetUnixFileMode(e.FullName) & UnixFileMode.UserExecute) != 0;
            var mode = File.GetUnixFileMode(a.FullName);
            var expectedMode = executable
                ? UnixFileMode.UserRead | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute
                : UnixFileMode.UserRead | UnixFileMode.GroupRead | UnixFileMode.OtherRead;
            Assert.True(mode == expectedMode, $"{relative}: mode {mode}, expected {expectedMode}");
        }
    }

    [Fact]
    public async Task ExportWritableGivesOwnerWrite()
    {
        string source = MakeAwkwardTree();
        await using var store = NewStore();
        var root = await HostImporter.ImportAsync(source, store);
        string exported = _temp.Combine("writable");
        await HostExporter.ExportAsync(root, store, exported, new ExportOptions { Writable = true });
        Assert.True((File.GetUnixFileMode(Path.Combine(exported, "big.bin")) & UnixFileMode.UserWrite) != 0);
        Assert.True((File.GetUnixFileMode(Path.Combine(exported, "a")) & UnixFileMode.UserWrite) != 0);
        Assert.Equal("0755", Convert.ToString((int)File.GetUnixFileMode(Path.Combine(exported, "run.sh")), 8).PadLeft(4, '0'));
    }

    [Fact]
    public async Task SingleFileAndSymlinkImports()
    {
        await using var store = NewStore();
        string file = _temp.Combine("hello.txt");
        File.WriteAllText(file, "Hello World!");
        var node = Assert.IsType<FileNode>(await HostImporter.ImportAsync(file, store));
        Assert.Equal("hello.txt", node.Name.ToString());
        Assert.Equal("blake3-XKeBWty0hOmhNsEe/mnB1TAXbVSbXRjQOOtSgLSzRww=", node.Digest.ToString());
        Assert.Equal(12UL, node.Size);
        Assert.False(node.Executable);

        string link = _temp.Combine("link");
        File.CreateSymbolicLink(link, "hello.txt");
        var symlink = Assert.IsType<SymlinkNode>(await HostImporter.ImportAsync(link, store));
        Assert.Equal("hello.txt", symlink.Target.ToString());
    }

    [Fact]
    public async Task NonUtf8NamesAndTargetsSurviveTheRoundTrip()
    {
        await using var store = NewStore();
        byte[] weird = [0x66, 0xff, 0xfe, 0x6f]; // "f\xff\xfeo"
        var inner = CastoreDirectory.FromNodes([
            new FileNode(PathComponent.Create(weird), Blake3.Hash([]), 0, false),
            new SymlinkNode(PathComponent.Create("l"), SymlinkTarget.Create(weird)),
        ]);
        await using (var blob = store.Blobs.OpenWrite())
        {
            await blob.CompleteAsync();
        }

        await store.Directories.PutAsync(inner);
        var root = new DirectoryNode("weird", inner.Digest, inner.Size);
        string exported = _temp.Combine("weird");
        await HostExporter.ExportAsync(root, store, exported);
        Assert.Equal(root, await HostImporter.ImportAsync(exported, store));
    }

    [Fact]
    public async Task UnsupportedFileTypesAreRefusedNamingThePath()
    {
        await using var store = NewStore();
        string dir = _temp.Combine("with-specials");
        Directory.CreateDirectory(dir);
        string fifo = Path.Combine(dir, "a-fifo");
        Assert.Equal(0, ProcessRunner.Run(ProcessRunner.RequireTool("mkfifo"), fifo).ExitCode);
        var error = await Assert.ThrowsAsync<ImportException>(() => HostImporter.ImportAsync(dir, store));
        Assert.Equal($"cannot import {fifo}: it is a fifo; only regular files, directories and symlinks can be imported", error.Message);

        File.Delete(fifo);
        string socketPath = Path.Combine(dir, "a-socket");
        using (var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified))
        {
            socket.Bind(new UnixDomainSocketEndPoint(socketPath));
            error = await Assert.ThrowsAsync<ImportException>(() => HostImporter.ImportAsync(dir, store));
            Assert.Contains($"{socketPath}: it is a socket", error.Message);
        }

        error = await Assert.ThrowsAsync<ImportException>(() => HostImporter.ImportAsync("/dev/null", store));
        Assert.Contains("/dev/null: it is a character device", error.Message);
    }

    [Fact]
    public async Task PseudoFilesAreStoredWithTheBytesReadingGives()
    {
        // procfs says size 0, sysfs says 4096: neither is the length of what reading gives.
        await using var store = NewStore();
        foreach (string path in new[] { "/proc/version", "/proc/self/mounts", "/sys/kernel/mm/transparent_hugepage/enabled", "/sys/kernel/uevent_seqnum" })
        {
            Assert.True(File.Exists(path), $"{path} is missing on this host");
            var node = (FileNode)await HostImporter.ImportAsync(path, store);
            byte[] stored = await ReadBlobAsync(store, node.Digest);
            Assert.NotEmpty(stored);
            Assert.Equal((ulong)stored.Length, node.Size);
            Assert.Equal(Blake3.Hash(stored), node.Digest);
        }

        // Files that do not change between reads are stored exactly as cat shows them.
        var version = (FileNode)await HostImporter.ImportAsync("/proc/version", store);
        Assert.Equal(File.ReadAllBytes("/proc/version"), await ReadBlobAsync(store, version.Digest));

        // An empty regular file is still an empty file, and a directory of pseudo-files is read the same way.
        string empty = _temp.Combine("empty");
        File.WriteAllBytes(empty, []);
        Assert.Equal(0UL, ((FileNode)await HostImporter.ImportAsync(empty, store)).Size);
        var sys = (DirectoryNode)await HostImporter.ImportAsync("/sys/kernel/mm/transparent_hugepage", store);
        var directory = await store.Directories.GetAsync(sys.Digest);
        Assert.All(directory!.Files, f => Assert.NotEqual(4096UL, f.Size));
    }

    private static async Task<byte[]> ReadBlobAsync(CastoreStore store, B3Digest digest)
    {
        using var reader = await store.Blobs.OpenReadAsync(digest) ?? throw new InvalidOperationException($"blob {digest} is missing");
        byte[] buffer = new byte[reader.Length];
        int read = 0;
        while (read < buffer.Length)
        {
            int n = await reader.ReadAtAsync(read, buffer.AsMemory(read));
            Assert.True(n > 0);
            read += n;
        }

        return buffer;
    }

    [Fact]
    public async Task MissingPathIsAClearError()
    {
        await using var store = NewStore();
        var error = await Assert.ThrowsAsync<ImportException>(() => HostImporter.ImportAsync(_temp.Combine("nope"), store));
        Assert.Equal($"cannot import {_temp.Combine("nope")}: no such file or directory", error.Message);
    }

    [Fact]
    public async Task RootHasNoNameToGive()
    {
        await using var store = NewStore();
        var error = await Assert.ThrowsAsync<ImportException>(() => HostImporter.ImportAsync("/", store));
        Assert.Contains("has no name", error.Message);
    }

    [Fact]
    public async Task AlreadyPresentBlobsAreNotRewritten()
    {
        await using var store = NewStore();
        string file = _temp.Combine("big");
        var bytes = new byte[1024 * 1024];
        Random.Shared.NextBytes(bytes);
        File.WriteAllBytes(file, bytes);
        var first = Assert.IsType<FileNode>(await HostImporter.ImportAsync(file, store));
        var local = Stores.Local.LocalStore.Open(_temp.Combine("store"));
        string blobPath = local.BlobPath(first.Digest);
        var before = new FileInfo(blobPath);
        long inode = Inode(blobPath);

        await Task.Delay(20);
        var second = Assert.IsType<FileNode>(await HostImporter.ImportAsync(file, store));
        Assert.Equal(first, second);
        Assert.Equal(inode, Inode(blobPath));
        Assert.Equal(before.LastWriteTimeUtc, new FileInfo(blobPath).LastWriteTimeUtc);
    }

    private static long Inode(string path)
    {
        var (code, stdout, _) = ProcessRunner.Run("stat", "-c", "%i", path);
        Assert.Equal(0, code);
        return long.Parse(stdout.Trim());
    }

    [Fact]
    public async Task ExportRefusesAnExistingDestinationAndMissingObjects()
    {
        await using var store = NewStore();
        string existing = _temp.Combine("exists");
        Directory.CreateDirectory(existing);
        var node = new FileNode("f", Blake3.Hash("nope"u8), 4, false);
        var error = await Assert.ThrowsAsync<ExportException>(() => HostExporter.ExportAsync(node, store, existing));
        Assert.Contains("already exists", error.Message);

        var missing = await Assert.ThrowsAsync<ObjectNotFoundException>(() => HostExporter.ExportAsync(node, store, _temp.Combine("x")));
        Assert.Contains("not found", missing.Message);
        Assert.False(Path.Exists(_temp.Combine("x")));
        Assert.DoesNotContain(Directory.EnumerateFileSystemEntries(_temp.Path), p => Path.GetFileName(p).StartsWith(".x.", StringComparison.Ordinal));
    }

    [Fact]
    public async Task FailedExportOfATreeLeavesNothingBehind()
    {
        await using var store = NewStore();
        var present = Blake3.Hash("present"u8);
        await using (var w = store.Blobs.OpenWrite())
        {
            await w.WriteAsync(Encoding.UTF8.GetBytes("present"));
            await w.CompleteAsync();
        }

        var inner = CastoreDirectory.FromNodes([
            new FileNode("ok", present, 7, false),
            new FileNode("zz-missing", Blake3.Hash("absent"u8), 6, false),
        ]);
        await store.Directories.PutAsync(inner);
        await Assert.ThrowsAsync<ObjectNotFoundException>(() =>
            HostExporter.ExportAsync(new DirectoryNode("t", inner.Digest, inner.Size), store, _temp.Combine("t")));
        Assert.Equal(["store"], Directory.EnumerateFileSystemEntries(_temp.Path).Select(Path.GetFileName));
    }
}
