using System.Diagnostics;
using System.Text.Json.Nodes;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Hashing;

namespace TvixFuseBuild.Tool.Tests;

/// <summary>
/// <c>gc</c>, <c>root</c> and <c>store info</c> as users run them, and a stress test: real import processes, a real
/// mount and repeated collections on one store at the same time.
/// </summary>
public sealed class GcCommandTests : IDisposable
{
    private readonly string _temp;
    private readonly Dictionary<string, string> _environment;
    private readonly List<Process> _processes = [];

    public GcCommandTests()
    {
        _temp = Directory.CreateTempSubdirectory("tvix-fuse-gc-test-").FullName;
        File.SetUnixFileMode(_temp, (UnixFileMode)0x1ED);

        // The default store and the result cache next to it, isolated.
        _environment = new Dictionary<string, string> { ["XDG_DATA_HOME"] = Path.Combine(_temp, "data") };
    }

    private string StoreRoot => Path.Combine(_temp, "data", "tvix-fuse-build", "store");

    public void Dispose()
    {
        ToolProcess.StopAll(_processes);
        foreach (string line in File.ReadAllLines("/proc/self/mountinfo"))
        {
            string mountpoint = line.Split(' ')[4];
            if (mountpoint.StartsWith(_temp + "/", StringComparison.Ordinal))
            {
                Process.Start("umount", ["-l", mountpoint])!.WaitForExit();
            }
        }

        Process.Start("chmod", ["-R", "u+rwX", _temp])!.WaitForExit();
        Directory.Delete(_temp, recursive: true);
    }

    private ToolProcess.Result Tool(params string[] arguments) => ToolProcess.Run(arguments, _environment, timeout: TimeSpan.FromMinutes(5));

    private ToolProcess.Result Ok(params string[] arguments)
    {
        var result = Tool(arguments);
        Assert.True(result.ExitCode == 0, $"{string.Join(' ', arguments)} exited {result.ExitCode}: {result.Stderr}");
        return result;
    }

    private string Tree(string name, IEnumerable<(string Path, string Contents)> files)
    {
        string root = Path.Combine(_temp, "src", name);
        foreach (var (path, contents) in files)
        {
            string full = Path.Combine(root, path);
            Directory.CreateDirectory(Path.GetDirectoryName(full)!);
            File.WriteAllText(full, contents);
        }

        return root;
    }

    /// <summary>Imports <paramref name="path"/> and returns the digest 'import' printed.</summary>
    private B3Digest Import(string path, params string[] options)
    {
        string line = Ok(["import", .. options, path]).Stdout.Trim();
        return B3Digest.Parse(line.Split('\t')[2]);
    }

    private string ObjectPath(string kind, B3Digest digest)
    {
        string hex = digest.ToHex();
        return Path.Combine(StoreRoot, kind, hex[..2], hex);
    }

    /// <summary>The object files of the closure of directory <paramref name="root"/>; fails if any is missing.</summary>
    private List<string> Closure(B3Digest root)
    {
        var paths = new List<string>();
        var pending = new Stack<B3Digest>([root]);
        while (pending.TryPop(out var digest))
        {
            string path = ObjectPath("directories", digest);
            Assert.True(File.Exists(path), $"directory {digest} (in the closure of {root}) is gone");
            paths.Add(path);
            var directory = CastoreDirectory.Decode(File.ReadAllBytes(path));
            foreach (var file in directory.Files)
            {
                string blob = ObjectPath("blobs", file.Digest);
                Assert.True(File.Exists(blob), $"blob {file.Digest} ({file.Name}, in the closure of {root}) is gone");
                paths.Add(blob);
            }

            foreach (var child in directory.Directories)
            {
                pending.Push(child.Digest);
            }
        }

        return paths;
    }

    private List<string> ObjectFiles() =>
    [
        .. Directory.EnumerateFiles(Path.Combine(StoreRoot, "blobs"), "*", SearchOption.AllDirectories),
        .. Directory.EnumerateFiles(Path.Combine(StoreRoot, "directories"), "*", SearchOption.AllDirectories),
    ];

    /// <summary>Every object in the store hashes to its name: nothing half-written, nothing half-removed.</summary>
    private void AssertEveryObjectVerifies()
    {
        foreach (string path in Directory.EnumerateFiles(Path.Combine(StoreRoot, "blobs"), "*", SearchOption.AllDirectories))
        {
            Assert.Equal(Path.GetFileName(path), Blake3.Hash(File.ReadAllBytes(path)).ToHex());
        }

        foreach (string path in Directory.EnumerateFiles(Path.Combine(StoreRoot, "directories"), "*", SearchOption.AllDirectories))
        {
            Assert.Equal(Path.GetFileName(path), CastoreDirectory.Decode(File.ReadAllBytes(path)).Digest.ToHex());
        }
    }

    /// <summary>Imports a busybox tree (bin/ with its applets) and returns its tvix Node JSON, named as a store path.</summary>
    private JsonNode ImportBusybox()
    {
        string tree = Path.Combine(_temp, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-busybox");
        Directory.CreateDirectory(Path.Combine(tree, "bin"));
        File.Copy("/bin/busybox", Path.Combine(tree, "bin", "busybox"));
        foreach (string applet in new[] { "sh", "echo", "mkdir" })
        {
            File.CreateSymbolicLink(Path.Combine(tree, "bin", applet), "busybox");
        }

        return JsonNode.Parse(Ok("import", "--json", "--root", "busybox", tree).Stdout)!.AsArray()[0]!;
    }

    private static JsonObject BuildRequest(JsonNode busybox, string script)
    {
        const string Out = "nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo";
        const string Bin = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-busybox/bin";
        return new JsonObject
        {
            ["inputs"] = new JsonArray(busybox.DeepClone()),
            ["commandArgs"] = new JsonArray(Bin + "/sh", "-c", script),
            ["workingDir"] = "build",
            ["scratchPaths"] = new JsonArray("build", "nix/store"),
            ["inputsDir"] = "nix/store",
            ["outputs"] = new JsonArray(Out),
            ["environmentVars"] = new JsonArray(
                new JsonObject { ["key"] = "PATH", ["value"] = Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes(Bin)) },
                new JsonObject { ["key"] = "out", ["value"] = Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes("/" + Out)) }),
        };
    }

    private static JsonObject Json(ToolProcess.Result result) => JsonNode.Parse(result.Stdout)!.AsObject();

    [Fact]
    public void GcKeepsRootsAndReportsWhatItRemoved()
    {
        var kept = Import(Tree("kept", [("a", "kept"), ("sub/b", "kept too")]));
        var gone = Import(Tree("gone", [("a", "kept"), ("c", "not kept"), ("sub/d", "not kept either")]));
        Assert.Equal($"root kept -> {kept}\n", Ok("root", "add", "kept", kept.ToString()).Stdout);
        var closure = Closure(kept);

        // Everything is younger than the default hour: nothing goes.
        var young = Ok("gc");
        Assert.StartsWith("removed 0 blobs and 0 directories, 0 B\n", young.Stdout);
        Assert.Contains("younger than 1h", young.Stdout);

        var dry = Ok("gc", "--dry-run", "--older-than", "0s");
        Assert.StartsWith("would remove 2 blobs and 2 directories, ", dry.Stdout);
        Assert.Equal(closure.Count + 4, ObjectFiles().Count);

        var real = Ok("gc", "--older-than", "0s");
        Assert.Equal(dry.Stdout.Replace("would remove", "removed"), real.Stdout);
        Assert.Contains($"kept {closure.Count} objects", real.Stdout);
        Assert.Equal(closure.Order(), ObjectFiles().Order());
        Assert.False(File.Exists(ObjectPath("directories", gone)));

        Assert.Equal($"kept\t{kept}\n", Ok("root", "list").Stdout);
        Assert.Equal(kept.ToString(), JsonNode.Parse(Ok("root", "list", "--json").Stdout)![0]!["digest"]!.GetValue<string>());
        Ok("root", "remove", "kept");
        Assert.Equal("", Ok("root", "list").Stdout);
        var all = Json(Ok("gc", "--older-than", "0s", "--json"));
        Assert.Equal(closure.Count, all["blobsRemoved"]!.GetValue<int>() + all["directoriesRemoved"]!.GetValue<int>());
        Assert.Empty(ObjectFiles());
    }

    [Fact]
    public void RootAndGcRefuseBadInputClearly()
    {
        Ok("store", "info");
        string missing = Blake3.Hash("not in the store"u8).ToString();
        var notThere = Tool("root", "add", "r", missing);
        Assert.Equal(1, notThere.ExitCode);
        Assert.Equal($"tvix-fuse-build: error: {missing} is neither a directory nor a blob in the store {StoreRoot}", notThere.Stderr.Trim());
        Assert.False(Directory.Exists(Path.Combine(StoreRoot, "roots")) && Directory.EnumerateFileSystemEntries(Path.Combine(StoreRoot, "roots")).Any());

        var badName = Tool("root", "add", "../x", missing);
        Assert.Equal(2, badName.ExitCode);
        Assert.Contains("invalid root name '../x'", badName.Stderr);
        Assert.Equal(2, Tool("root", "add", "r", "blake3-nonsense").ExitCode);

        var noSuchRoot = Tool("root", "remove", "nope");
        Assert.Equal(1, noSuchRoot.ExitCode);
        Assert.Equal("tvix-fuse-build: error: there is no root named nope", noSuchRoot.Stderr.Trim());

        Assert.Equal(2, Tool("gc", "--older-than", "soon").ExitCode);
        Assert.Contains("not a duration", Tool("gc", "--older-than", "10").Stderr);
        Assert.Equal(2, Tool("gc", "--max-size", "big").ExitCode);
        var remote = Tool("--store", "memory://", "gc");
        Assert.Equal(2, remote.ExitCode);
        Assert.Contains("gc works on a local store", remote.Stderr);
        Assert.DoesNotContain("   at ", notThere.Stderr + badName.Stderr + remote.Stderr);
    }

    [Fact]
    public void MaxSizeStopsOnceTheStoreIsSmallEnough()
    {
        var roots = new List<B3Digest>();
        for (int i = 0; i < 4; i++)
        {
            roots.Add(Import(Tree($"t{i}", [("blob", new string((char)('a' + i), 100_000))])));
        }

        // Oldest first: t0, then t1, ...
        for (int i = 0; i < 4; i++)
        {
            foreach (string path in Closure(roots[i]))
            {
                File.SetLastWriteTimeUtc(path, DateTime.UtcNow - TimeSpan.FromHours(10 - i));
            }
        }

        long total = ObjectFiles().Sum(p => new FileInfo(p).Length);
        long two = Closure(roots[0]).Concat(Closure(roots[1])).Sum(p => new FileInfo(p).Length);
        var report = Json(Ok("gc", "--max-size", (total - two).ToString(System.Globalization.CultureInfo.InvariantCulture), "--json"));
        Assert.Equal(2, report["blobsRemoved"]!.GetValue<int>());
        Assert.Equal(total - two, report["bytesKept"]!.GetValue<long>());
        Assert.False(File.Exists(ObjectPath("directories", roots[0])));
        Assert.False(File.Exists(ObjectPath("directories", roots[1])));
        Closure(roots[2]);
        Closure(roots[3]);

        // Reachable objects stay even over the limit, and the report says so.
        Ok("root", "add", "t3", roots[3].ToString());
        var over = Ok("gc", "--max-size", "1K");
        Assert.Contains("over --max-size 1.0 KiB: the rest is reachable or younger than 1h", over.Stdout);
        Assert.Equal(Closure(roots[3]).Order(), ObjectFiles().Order());
    }

    [Fact]
    public void StoreInfoCountsWhatIsThere()
    {
        var digest = Import(Tree("info", [("a", "one"), ("b", "two"), ("sub/c", "three")]));
        Ok("root", "add", "info", digest.ToString());
        Directory.CreateDirectory(Path.Combine(StoreRoot, "quarantine"));
        File.WriteAllText(Path.Combine(StoreRoot, "quarantine", "corrupt.20261206T000000000"), "12345");

        var info = Json(Ok("store", "info", "--json"));
        var blobs = Directory.EnumerateFiles(Path.Combine(StoreRoot, "blobs"), "*", SearchOption.AllDirectories).ToList();
        var directories = Directory.EnumerateFiles(Path.Combine(StoreRoot, "directories"), "*", SearchOption.AllDirectories).ToList();
        Assert.Equal(StoreRoot, info["store"]!.GetValue<string>());
        Assert.Equal(3, info["blobs"]!.GetValue<int>());
        Assert.Equal(blobs.Count, info["blobs"]!.GetValue<int>());
        Assert.Equal(2, info["directories"]!.GetValue<int>());
        Assert.Equal(directories.Count, info["directories"]!.GetValue<int>());
        Assert.Equal(blobs.Concat(directories).Sum(p => new FileInfo(p).Length), info["bytes"]!.GetValue<long>());
        Assert.Equal(1, info["quarantined"]!.GetValue<int>());
        Assert.Equal(5, info["quarantinedBytes"]!.GetValue<long>());
        Assert.Equal(1, info["roots"]!.GetValue<int>());
        Assert.Equal(0, info["resultCacheEntries"]!.GetValue<int>());
        Assert.Equal(0, info["tempRootProcesses"]!.GetValue<int>());

        var text = Ok("store", "info").Stdout;
        Assert.Contains($"store         {StoreRoot}\n", text);
        Assert.Contains("objects       5, ", text);
        Assert.Contains("quarantine    1, 5 B", text);
        Assert.Contains("roots         1", text);
        Assert.Contains("result cache  0 entries", text);
        Assert.Contains("in use        0 running processes, 0 temp roots", text);
    }

    [Fact]
    public async Task ABlobServeToldAClientAboutIsKeptWhileServeRuns()
    {
        string file = Path.Combine(_temp, "told");
        File.WriteAllText(file, "a client was told this blob is there\n");
        var digest = Import(file);
        string socket = Path.Combine(_temp, "serve.sock");
        var serve = ToolProcess.Start(["serve", "--listen", "unix:" + socket], _environment);
        _processes.Add(serve);
        Assert.Equal($"listening on unix:{socket}", await serve.StandardOutput.ReadLineAsync());

        // The client asks whether the blob is there (and would then skip uploading it).
        var cat = Ok("--store", $"grpc+unix://{socket}?cache=none", "cat", digest.ToString());
        Assert.Equal("a client was told this blob is there\n", cat.Stdout);

        var kept = Json(Ok("gc", "--older-than", "0s", "--json"));
        Assert.Equal(0, kept["blobsRemoved"]!.GetValue<int>());
        Assert.Equal(1, kept["liveTempRootFiles"]!.GetValue<int>());
        Assert.True(File.Exists(ObjectPath("blobs", digest)));

        // Once serve is gone, nothing keeps it.
        Assert.Equal(0, ToolProcess.Signal(serve.Id, 15));
        await serve.WaitForExitAsync();
        Assert.Equal(143, serve.ExitCode); // 128 + SIGTERM, after the graceful stop
        Assert.Equal(1, Json(Ok("gc", "--older-than", "0s", "--json"))["blobsRemoved"]!.GetValue<int>());
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(StoreRoot, "temproots")));
    }

    /// <summary>
    /// Import processes (re-importing content a collection is removing at the same moment), a mount and a loop of
    /// 'gc --older-than 0s' on one store. Bounded by work, not time: a fixed number of imports, and collections until
    /// they are done (at least a few). Afterwards every import's closure and the mounted tree are whole, and every
    /// object in the store verifies.
    /// </summary>
    [Fact]
    public async Task ConcurrentImportsMountAndCollectionsNeverLoseOrBreakAnything()
    {
        const int Workers = 3, Rounds = 3, Files = 120;
        string Shared(int k) => $"shared content {k}\n";

        // Garbage with the shared content: the first collections remove it while the importers find it present.
        Import(Tree("garbage", Enumerable.Range(0, Files).Select(k => ($"g/{k % 7}/{k}", Shared(k)))));

        // A tree only the mount keeps.
        string mountedSource = Tree("mounted", Enumerable.Range(0, 40).Select(k => ($"m/{k % 3}/{k}", $"mounted {k}\n" + Shared(k))));
        var mountedRoot = Import(mountedSource);
        string mountpoint = Path.Combine(_temp, "mnt");
        Directory.CreateDirectory(mountpoint);
        var mount = ToolProcess.Start(["mount", mountpoint, "--directory", mountedRoot.ToString()], _environment);
        _processes.Add(mount);
        Assert.StartsWith("mounted ", await mount.StandardOutput.ReadLineAsync());

        var trees = new string[Workers, Rounds];
        for (int w = 0; w < Workers; w++)
        {
            for (int r = 0; r < Rounds; r++)
            {
                int wr = (w * Rounds) + r;
                trees[w, r] = Tree($"w{w}r{r}", Enumerable.Range(0, Files).Select(k => (
                    $"d{k % 5}/e{k % 3}/{k}",
                    k % 2 == 0 ? Shared(k) : $"unique to {wr}: {k}\n")));
            }
        }

        // Builds: outputs are kept by the build from their ingestion until the result cache names them, then by the cache.
        var busybox = ImportBusybox();
        var builds = new List<B3Digest>();
        var builder = Task.Run(() =>
        {
            for (int b = 0; b < 2; b++)
            {
                string request = Path.Combine(_temp, $"request{b}.json");
                File.WriteAllText(request, BuildRequest(busybox, $"mkdir $out; for i in 1 2 3 4 5 6 7 8; do echo {b} $i > $out/$i; done").ToJsonString());
                var reply = JsonNode.Parse(Ok("build", "--quiet", request).Stdout)!;
                builds.Add(new B3Digest(Convert.FromBase64String(reply["outputs"]![0]!["directory"]!["digest"]!.GetValue<string>())));
            }
        });

        int importersLeft = Workers;
        var digests = new B3Digest[Workers, Rounds];
        var importers = Enumerable.Range(0, Workers).Select(w => Task.Run(() =>
        {
            try
            {
                for (int r = 0; r < Rounds; r++)
                {
                    digests[w, r] = Import(trees[w, r], "--root", $"w{w}r{r}");
                }
            }
            finally
            {
                Interlocked.Decrement(ref importersLeft);
            }
        })).ToList();

        int collections = 0;
        long removed = 0;
        while (Volatile.Read(ref importersLeft) > 0 || !builder.IsCompleted || collections < 3)
        {
            var gc = Json(Ok("gc", "--older-than", "0s", "--json"));
            removed += gc["blobsRemoved"]!.GetValue<long>() + gc["directoriesRemoved"]!.GetValue<long>();
            collections++;
            Assert.True(collections < 500, "the importers never finished");
        }

        await Task.WhenAll(importers);
        await builder;
        Assert.True(removed > 0, "no collection removed anything: the garbage should have gone");

        // Each import's closure is whole and rooted; the mounted tree is whole and reads back as it was imported.
        for (int w = 0; w < Workers; w++)
        {
            for (int r = 0; r < Rounds; r++)
            {
                Closure(digests[w, r]);
                Assert.Contains($"w{w}r{r}\t{digests[w, r]}\n", Ok("root", "list").Stdout);
            }
        }

        Closure(mountedRoot);
        Assert.Equal(2, builds.Count);
        foreach (var output in builds)
        {
            Assert.Equal(9, Closure(output).Count);
        }

        foreach (string file in Directory.EnumerateFiles(mountedSource, "*", SearchOption.AllDirectories))
        {
            Assert.Equal(File.ReadAllText(file), File.ReadAllText(Path.Combine(mountpoint, Path.GetRelativePath(mountedSource, file))));
        }

        AssertEveryObjectVerifies();

        // Once the mount is gone, what only it kept goes too.
        Assert.Equal(0, ToolProcess.Signal(mount.Id, 15));
        await mount.WaitForExitAsync();
        Assert.Equal(143, mount.ExitCode); // 128 + SIGTERM, after unmounting
        Ok("gc", "--older-than", "0s");
        Assert.False(File.Exists(ObjectPath("directories", mountedRoot)));
        var info = Json(Ok("store", "info", "--json"));
        Assert.Equal(0, info["tempRootProcesses"]!.GetValue<int>());
        Assert.Equal(2, info["resultCacheEntries"]!.GetValue<int>());

        // A result-cache entry whose output is gone is stale: the next collection removes it.
        File.Delete(ObjectPath("directories", builds[0]));
        var stale = Json(Ok("gc", "--older-than", "0s", "--json"));
        Assert.Equal(1, stale["staleResultsRemoved"]!.GetValue<int>());
        Assert.Equal(8, stale["blobsRemoved"]!.GetValue<int>());
        Assert.Equal(1, Json(Ok("store", "info", "--json"))["resultCacheEntries"]!.GetValue<int>());
        Closure(builds[1]);
        Assert.Empty(Directory.EnumerateFileSystemEntries(Path.Combine(StoreRoot, "temproots")));
        AssertEveryObjectVerifies();
    }
}
