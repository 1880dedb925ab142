using System.Text;
using TvixFuseBuild.Castore.Hashing;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Stores.Local;
using TvixFuseBuild.Castore.Transfer;

namespace TvixFuseBuild.Castore.Tests;

/// <summary>
/// The import cache: an unchanged file's digest is taken from the table instead of hashing the file, and every doubt
/// (a changed file even with its modification time put back, a file too fresh to trust, a blob gone from the store, a
/// damaged table) means the file is read again.
/// </summary>
public sealed class ImportCacheTests : IDisposable
{
    private readonly TempDirectory _temp = new();

    public void Dispose() => _temp.Dispose();

    private CastoreStore NewStore() => CastoreStore.Open("local://" + _temp.Combine("store"));

    private static async Task<Node> ImportAsync(string path, CastoreStore store) =>
        await HostImporter.ImportAsync(
            path, HostImporter.DefaultName(path), store.Blobs, store.Directories, new ImportOptions { Cache = store.Local!.ImportCache });

    /// <summary>A toolchain-like tree whose files are older than the racy margin, so that an import records them.</summary>
    private string AgedTree()
    {
        string root = Directory.CreateDirectory(_temp.Combine("tools")).FullName;
        Directory.CreateDirectory(Path.Combine(root, "bin"));
        File.WriteAllText(Path.Combine(root, "bin", "tool"), "#!/bin/sh\necho one\n");
        File.SetUnixFileMode(Path.Combine(root, "bin", "tool"), (UnixFileMode)0x1ED);
        File.WriteAllBytes(Path.Combine(root, "lib.so"), Enumerable.Range(0, 300_000).Select(i => (byte)(i * 7)).ToArray());
        File.CreateSymbolicLink(Path.Combine(root, "bin", "alias"), "tool");
        File.WriteAllText(Path.Combine(root, "empty"), "");

        // ctime cannot be set back: the files must really be older than the margin when the import starts.
        Thread.Sleep(TimeSpan.FromTicks(ImportCache.RacyMarginNs / 100) + TimeSpan.FromMilliseconds(200));
        return root;
    }

    /// <summary>Records <paramref name="digest"/> for <paramref name="file"/> as it is now, in the table of <paramref name="root"/>.</summary>
    private static void Substitute(ImportCache cache, string root, string file, B3Digest digest)
    {
        var entries = cache.Load(root);
        var now = ImportCacheEntry.Of(file, digest);
        Assert.True(entries.ContainsKey((now.Device, now.Inode)), $"{file} is not in the table of {root}");
        entries[(now.Device, now.Inode)] = now;
        cache.Save(root, entries.Values, ImportCache.NowNs());
    }

    private static async Task<FileNode> FileAsync(CastoreStore store, Node root, params string[] path)
    {
        Node node = root;
        foreach (string name in path)
        {
            var directory = await store.Directories.GetAsync(((DirectoryNode)node).Digest);
            Assert.NotNull(directory);
            node = directory.Entries.Single(e => e.Name.ToString() == name);
        }

        return Assert.IsType<FileNode>(node);
    }

    private static async Task<B3Digest> StoreBlobAsync(CastoreStore store, string text)
    {
        await using var writer = store.Blobs.OpenWrite();
        await writer.WriteAsync(Encoding.UTF8.GetBytes(text));
        return await writer.CompleteAsync();
    }

    [Fact]
    public async Task AnUnchangedFileIsTakenFromTheTableAndNotRead()
    {
        string root = AgedTree();
        await using var store = NewStore();
        var cache = store.Local!.ImportCache;
        var first = await ImportAsync(root, store);
        Assert.Equal(2, cache.Load(root).Count); // bin/tool and lib.so; the empty file and the symlink are never recorded

        // A digest that is not the file's: only a lookup in the table can give it.
        var other = await StoreBlobAsync(store, "not the tool's bytes");
        Substitute(cache, root, Path.Combine(root, "bin", "tool"), other);
        var second = await ImportAsync(root, store);
        Assert.Equal(other, (await FileAsync(store, second, "bin", "tool")).Digest);
        Assert.Equal((await FileAsync(store, first, "lib.so")).Digest, (await FileAsync(store, second, "lib.so")).Digest);
        Assert.True((await FileAsync(store, second, "bin", "tool")).Executable);
    }

    [Fact]
    public async Task AChangedFileOfTheSameSizeWithItsModificationTimePutBackIsReadAgain()
    {
        string root = AgedTree();
        string tool = Path.Combine(root, "bin", "tool");
        await using var store = NewStore();
        var cache = store.Local!.ImportCache;
        await ImportAsync(root, store);
        var other = await StoreBlobAsync(store, "not the tool's bytes");
        Substitute(cache, root, tool, other);
        Assert.Equal(other, (await FileAsync(store, await ImportAsync(root, store), "bin", "tool")).Digest);

        // Same size, and the modification time put back to the nanosecond with `touch -d`: only the change time tells.
        var before = ImportCacheEntry.Of(tool, default);
        File.WriteAllText(tool, "#!/bin/sh\necho two\n");
        string mtime = $"@{before.ModifyTimeNs / 1_000_000_000}.{before.ModifyTimeNs % 1_000_000_000:D9}";
        var (code, _, stderr) = ProcessRunner.Run(ProcessRunner.RequireTool("touch"), "-m", "-d", mtime, tool);
        Assert.True(code == 0, stderr);
        var after = ImportCacheEntry.Of(tool, default);
        Assert.Equal((before.Device, before.Inode, before.Size, before.ModifyTimeNs), (after.Device, after.Inode, after.Size, after.ModifyTimeNs));
        Assert.NotEqual(before.ChangeTimeNs, after.ChangeTimeNs);

        var node = await ImportAsync(root, store);
        Assert.Equal(Blake3.Hash(Encoding.UTF8.GetBytes("#!/bin/sh\necho two\n")), (await FileAsync(store, node, "bin", "tool")).Digest);
    }

    [Fact]
    public async Task AFileChangedJustBeforeTheImportIsNotRecorded()
    {
        string root = AgedTree();
        string tool = Path.Combine(root, "bin", "tool");
        File.WriteAllText(tool, "#!/bin/sh\necho fresh\n");
        await using var store = NewStore();
        var cache = store.Local!.ImportCache;
        var node = await ImportAsync(root, store);

        var status = ImportCacheEntry.Of(tool, default);
        Assert.False(cache.Load(root).ContainsKey((status.Device, status.Inode)), "a file younger than the racy margin was recorded");
        Assert.Equal(Blake3.Hash(Encoding.UTF8.GetBytes("#!/bin/sh\necho fresh\n")), (await FileAsync(store, node, "bin", "tool")).Digest);
    }

    [Fact]
    public async Task ABlobGoneFromTheStoreIsReadAndStoredAgain()
    {
        string root = AgedTree();
        await using var store = NewStore();
        var node = await ImportAsync(root, store);
        var lib = await FileAsync(store, node, "lib.so");
        File.Delete(Path.Combine(store.Local!.Root, "blobs", lib.Digest.ToHex()[..2], lib.Digest.ToHex()));
        Assert.False(await store.Blobs.HasAsync(lib.Digest));

        var again = await ImportAsync(root, store);
        Assert.Equal(lib.Digest, (await FileAsync(store, again, "lib.so")).Digest);
        Assert.True(await store.Blobs.HasAsync(lib.Digest));
    }

    [Fact]
    public async Task ADamagedTableIsIgnoredAndRewritten()
    {
        string root = AgedTree();
        await using var store = NewStore();
        var cache = store.Local!.ImportCache;
        var first = await ImportAsync(root, store);
        string table = Assert.Single(Directory.GetFiles(cache.Directory));
        byte[] bytes = File.ReadAllBytes(table);
        bytes[^40] ^= 0xff; // a record's digest byte: the checksum no longer matches
        File.WriteAllBytes(table, bytes);
        Assert.Empty(cache.Load(root));

        var second = await ImportAsync(root, store);
        Assert.Equal(((DirectoryNode)first).Digest, ((DirectoryNode)second).Digest);
        Assert.Equal(2, cache.Load(root).Count);
    }

    [Fact]
    public async Task ATableIsNeverWrittenThroughASymlinkInPlaceOfTheImportsDirectory()
    {
        string root = AgedTree();
        await using var store = NewStore();
        string elsewhere = Directory.CreateDirectory(_temp.Combine("elsewhere")).FullName;
        File.CreateSymbolicLink(store.Local!.ImportCache.Directory, elsewhere);

        var node = await ImportAsync(root, store);
        Assert.Equal(Blake3.Hash(Encoding.UTF8.GetBytes("#!/bin/sh\necho one\n")), (await FileAsync(store, node, "bin", "tool")).Digest);
        Assert.Empty(Directory.EnumerateFileSystemEntries(elsewhere));
        Assert.Empty(Directory.GetFiles(Path.Combine(store.Local.Root, "tmp")));
    }

    [Fact]
    public async Task ConcurrentImportsOfOnePathLeaveACompleteTable()
    {
        string root = AgedTree();
        await using var store = NewStore();
        var nodes = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Task.Run(() => ImportAsync(root, store))));
        Assert.Single(nodes.Select(n => ((DirectoryNode)n).Digest).Distinct());
        Assert.Equal(2, store.Local!.ImportCache.Load(root).Count);
        Assert.Empty(Directory.GetFiles(Path.Combine(store.Local.Root, "tmp")));
    }
}
