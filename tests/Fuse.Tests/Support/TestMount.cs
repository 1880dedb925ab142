using System.Collections.Concurrent;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Fuse.Tests.Support;

/// <summary>
/// A real mount in a fresh temporary directory, torn down even when the test fails: dispose unmounts, and a lazy
/// umount2 catches whatever is left before the directory is removed.
/// </summary>
internal sealed class TestMount : IAsyncDisposable
{
    private TestMount(string path, CastoreMount mount, ConcurrentQueue<string> log)
    {
        Path = path;
        Mount = mount;
        LogLines = log;
    }

    public string Path { get; }

    public CastoreMount Mount { get; }

    /// <summary>What the filesystem logged.</summary>
    public ConcurrentQueue<string> LogLines { get; }

    public string this[string relative] => System.IO.Path.Combine(Path, relative);

    public static Task<TestMount> StartAsync(FixtureStores stores, CastoreMountOptions? options = null) =>
        StartAsync(stores.Nodes, stores.Blobs, stores.Directories, options);

    public static async Task<TestMount> StartAsync(
        IEnumerable<Node> nodes, IBlobService blobs, IDirectoryService directories, CastoreMountOptions? options = null)
    {
        string path = Directory.CreateTempSubdirectory("tfb-fuse-test-").FullName;
        var log = new ConcurrentQueue<string>();
        try
        {
            var mount = await CastoreMount.MountAsync(
                path, nodes, blobs, directories, (options ?? new CastoreMountOptions()) with { Log = log.Enqueue });
            return new TestMount(path, mount, log);
        }
        catch
        {
            Cleanup(path);
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await Mount.DisposeAsync();
        }
        finally
        {
            Cleanup(Path);
        }
    }

    /// <summary>Detaches anything still mounted at <paramref name="path"/> and removes the directory.</summary>
    public static void Cleanup(string path)
    {
        for (int i = 0; i < 5 && IsMounted(path); i++)
        {
            Posix.Umount2(path, 2 /* MNT_DETACH */);
        }

        try
        {
            Directory.Delete(path, recursive: false);
        }
        catch (IOException)
        {
        }
    }

    public static bool IsMounted(string path) =>
        File.ReadAllLines("/proc/self/mountinfo").Any(line => line.Split(' ')[4] == path);
}
