using System.Diagnostics;
using TvixFuseBuild.Castore.Hashing;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Stores.Local;
using TvixFuseBuild.Castore.Transfer;

namespace TvixFuseBuild.Castore.Tests;

public sealed class GarbageCollectorTests : IDisposable
{
    private readonly TempDirectory _temp = new();
    private readonly CastoreStore _castore;
    private readonly LocalStore _store;

    public GarbageCollectorTests()
    {
        _castore = CastoreStore.Open(_temp.Combine("store"));
        _store = _castore.Local!;
    }

    public void Dispose() => _temp.Dispose();

    private async Task<DirectoryNode> ImportAsync(string name, params (string Path, string Contents)[] files)
    {
        string root = _temp.Combine("src", name);
        foreach (var (path, contents) in files)
        {
            string full = Path.Combine(root, path);
            Directory.CreateDirectory(Path.GetDirectoryName(full)!);
            File.WriteAllText(full, contents);
        }

        return (DirectoryNode)await HostImporter.ImportAsync(root, _castore);
    }

    /// <summary>Every blob and directory file of the closure of <paramref name="root"/>, as it should be on disk.</summary>
    private List<string> ClosurePaths(B3Digest root)
    {
        var paths = new List<string>();
        var pending = new Stack<B3Digest>([root]);
        while (pending.TryPop(out var digest))
        {
            paths.Add(_store.DirectoryPath(digest));
            var directory = CastoreDirectory.Decode(File.ReadAllBytes(_store.DirectoryPath(digest)));
            paths.AddRange(directory.Files.Select(f => _store.BlobPath(f.Digest)));
            foreach (var child in directory.Directories)
            {
                pending.Push(child.Digest);
            }
        }

        return paths;
    }

    private List<string> ObjectFiles() =>
    [
        .. Directory.EnumerateFiles(Path.Combine(_store.Root, "blobs"), "*", SearchOption.AllDirectories),
        .. Directory.EnumerateFiles(Path.Combine(_store.Root, "directories"), "*", SearchOption.AllDirectories),
    ];

    private static void SetAge(IEnumerable<string> paths, TimeSpan age)
    {
        foreach (string path in paths)
        {
            File.SetLastWriteTimeUtc(path, DateTime.UtcNow - age);
        }
    }

    private void AgeEverything(TimeSpan age) => SetAge(ObjectFiles(), age);

    /// <summary>No directory left in the store refers to an object that is gone.</summary>
    private void AssertEveryDirectoryWhole()
    {
        foreach (string path in Directory.EnumerateFiles(Path.Combine(_store.Root, "directories"), "*", SearchOption.AllDirectories))
        {
            var directory = CastoreDirectory.Decode(File.ReadAllBytes(path));
            Assert.Equal(Path.GetFileName(path), directory.Digest.ToHex());
            foreach (var file in directory.Files)
            {
                Assert.True(File.Exists(_store.BlobPath(file.Digest)), $"{path} refers to blob {file.Digest}, which is gone");
            }

            foreach (var child in directory.Directories)
            {
                Assert.True(File.Exists(_store.DirectoryPath(child.Digest)), $"{path} refers to directory {child.Digest}, which is gone");
            }
        }
    }

    private Task<GcReport> CollectAsync(TimeSpan? olderThan = null, long? maxSize = null, bool dryRun = false, IExternalRoots? external = null) =>
        GarbageCollector.CollectAsync(_store, new GcOptions
        {
            OlderThan = olderThan ?? GcOptions.DefaultOlderThan,
            MaxSize = maxSize,
            DryRun = dryRun,
            ExternalRoots = external,
        });

    [Fact]
    public async Task KeepsTheClosuresOfRootsAndRemovesTheRest()
    {
        var a = await ImportAsync("a", ("x", "shared"), ("sub/y", "only in a"));
        var b = await ImportAsync("b", ("x", "shared"), ("z", "only in b"), ("sub2/w", "only in b, deeper"));
        await _store.Roots.AddAsync("a", a.Digest, replace: false);
        var keep = ClosurePaths(a.Digest);
        var gone = ClosurePaths(b.Digest).Except(keep).ToList();
        AgeEverything(TimeSpan.FromHours(2));

        var report = await CollectAsync();

        Assert.All(keep, p => Assert.True(File.Exists(p), $"{p} (reachable from root a) was removed"));
        Assert.All(gone, p => Assert.False(File.Exists(p), $"{p} (unreachable) is still there"));
        Assert.Equal(2, report.DirectoriesRemoved);
        Assert.Equal(2, report.BlobsRemoved);
        Assert.Equal(keep.Count, report.ObjectsKept);
        Assert.Equal(keep.Count, report.KeptReachable);
        Assert.Equal(keep.Sum(p => new FileInfo(p).Length), report.BytesKept);
        AssertEveryDirectoryWhole();

        // The root is listed; without it, everything goes.
        Assert.Equal([new StoreRoot("a", a.Digest)], _store.Roots.List());
        Assert.True(_store.Roots.Remove("a"));
        Assert.False(_store.Roots.Remove("a"));
        var second = await CollectAsync();
        Assert.Equal(keep.Count, second.BlobsRemoved + second.DirectoriesRemoved);
        Assert.Empty(ObjectFiles());
    }

    [Fact]
    public async Task DryRunRemovesNothingAndReportsWhatTheRealRunDoes()
    {
        var a = await ImportAsync("a", ("x", "one"), ("d/y", "two"));
        await ImportAsync("b", ("x", "three"), ("d/e/y", "four"));
        await _store.Roots.AddAsync("a", a.Digest, replace: false);
        AgeEverything(TimeSpan.FromDays(1));
        var before = ObjectFiles().Order().ToList();

        var dry = await CollectAsync(dryRun: true);
        Assert.Equal(before, ObjectFiles().Order().ToList());
        Assert.True(dry.DryRun);
        Assert.True(dry.BlobsRemoved + dry.DirectoriesRemoved > 0);

        var real = await CollectAsync();
        Assert.Equal(dry with { DryRun = false }, real);
        Assert.Equal(before.Count - real.BlobsRemoved - real.DirectoriesRemoved, ObjectFiles().Count);
    }

    [Fact]
    public async Task YoungObjectsAndWhatTheyReferToAreKept()
    {
        var b = await ImportAsync("b", ("x", "old blob"), ("sub/y", "another old blob"));
        var closure = ClosurePaths(b.Digest);
        AgeEverything(TimeSpan.FromHours(5));
        SetAge([_store.DirectoryPath(b.Digest)], TimeSpan.FromMinutes(10));

        // The root directory is younger than an hour: it and everything below stay, however old.
        var report = await CollectAsync();
        Assert.Equal(0, report.BlobsRemoved + report.DirectoriesRemoved);
        Assert.Equal(closure.Count, report.KeptYoung);
        Assert.All(closure, p => Assert.True(File.Exists(p)));

        // Younger than six hours is not younger than five minutes.
        Assert.Equal(0, (await CollectAsync(TimeSpan.FromHours(6))).BlobsRemoved);
        var removed = await CollectAsync(TimeSpan.FromMinutes(5));
        Assert.Equal(closure.Count, removed.BlobsRemoved + removed.DirectoriesRemoved);
        Assert.Empty(ObjectFiles());

        // 0s: even what was written a moment ago goes.
        await ImportAsync("c", ("x", "brand new"));
        Assert.Equal(2, ObjectFiles().Count);
        var zero = await CollectAsync(TimeSpan.Zero);
        Assert.Equal(1, zero.BlobsRemoved);
        Assert.Equal(1, zero.DirectoriesRemoved);
    }

    [Fact]
    public async Task MaxSizeRemovesTheOldestFirstAndNeverARemainingDirectorysChildren()
    {
        var t1 = await ImportAsync("t1", ("blob", new string('1', 10_000)));
        var t2 = await ImportAsync("t2", ("blob", new string('2', 10_000)));
        var t3 = await ImportAsync("t3", ("blob", new string('3', 10_000)));
        var rooted = await ImportAsync("r", ("blob", new string('r', 50_000)));
        await _store.Roots.AddAsync("r", rooted.Digest, replace: false);
        AgeEverything(TimeSpan.FromHours(10));

        // t1 is the oldest tree. t2's blob is the oldest object of all, but its directory is younger than t1: the blob
        // cannot go before the directory that refers to it.
        SetAge([_store.DirectoryPath(t1.Digest)], TimeSpan.FromHours(4));
        SetAge(ClosurePaths(t1.Digest).Skip(1), TimeSpan.FromHours(5));
        SetAge([_store.DirectoryPath(t2.Digest)], TimeSpan.FromHours(3));
        SetAge(ClosurePaths(t2.Digest).Skip(1), TimeSpan.FromHours(8));
        SetAge(ClosurePaths(t3.Digest), TimeSpan.FromHours(2));

        long total = ObjectFiles().Sum(p => new FileInfo(p).Length);
        var t1Paths = ClosurePaths(t1.Digest);
        long t1Size = t1Paths.Sum(p => new FileInfo(p).Length);
        var report = await CollectAsync(maxSize: total - t1Size);

        Assert.Equal(1, report.BlobsRemoved);
        Assert.Equal(1, report.DirectoriesRemoved);
        Assert.All(t1Paths, p => Assert.False(File.Exists(p)));
        Assert.All(ClosurePaths(t2.Digest).Concat(ClosurePaths(t3.Digest)), p => Assert.True(File.Exists(p)));
        Assert.Equal(4, report.KeptUnderMaxSize);
        AssertEveryDirectoryWhole();

        // A limit below what the roots keep removes everything unreachable and nothing reachable.
        var zero = await CollectAsync(maxSize: 0);
        Assert.Equal(4, zero.BlobsRemoved + zero.DirectoriesRemoved);
        Assert.Equal(ClosurePaths(rooted.Digest).Order(), ObjectFiles().Order());
        Assert.True(zero.BytesKept > 0);
        AssertEveryDirectoryWhole();
    }

    [Fact]
    public async Task ATempRootOfALiveProcessProtectsAndADeadProcesssFileIsRemoved()
    {
        var p = await ImportAsync("p", ("x", "used by another process"), ("d/y", "also"));
        var closure = ClosurePaths(p.Digest);
        Directory.CreateDirectory(Path.Combine(_store.Root, "temproots"));
        string file = Path.Combine(_store.Root, "temproots", "4194304-0badcafe");
        File.WriteAllText(file, p.Digest.ToHex() + "\n");

        // A real process holds the file's lock, as a living owner does.
        var psi = new ProcessStartInfo(ProcessRunner.RequireTool("flock"))
        {
            ArgumentList = { "--exclusive", file, "--command", "echo locked; exec sleep 600" },
            RedirectStandardOutput = true,
            UseShellExecute = false,
        };
        using var holder = Process.Start(psi)!;
        try
        {
            Assert.Equal("locked", await holder.StandardOutput.ReadLineAsync());
            var kept = await CollectAsync(TimeSpan.Zero);
            Assert.Equal(0, kept.BlobsRemoved + kept.DirectoriesRemoved);
            Assert.Equal(1, kept.LiveTempRootFiles);
            Assert.Equal(closure.Count, kept.KeptReachable);
            Assert.True(File.Exists(file));
        }
        finally
        {
            holder.Kill(entireProcessTree: true);
            await holder.WaitForExitAsync();
        }

        // Its owner is gone: the file is ignored and removed, and so is what it kept.
        var collected = await CollectAsync(TimeSpan.Zero);
        Assert.Equal(1, collected.DeadTempRootFiles);
        Assert.Equal(0, collected.LiveTempRootFiles);
        Assert.False(File.Exists(file));
        Assert.Equal(closure.Count, collected.BlobsRemoved + collected.DirectoriesRemoved);
    }

    [Fact]
    public async Task ThisProcesssTempRootsProtectUntilDisposedAndLeaveNothingBehind()
    {
        var q = await ImportAsync("q", ("x", "in use here"));
        var closure = ClosurePaths(q.Digest);
        using (var roots = _store.CreateTempRoots())
        {
            await roots.AddAsync(q.Digest);
            using (var second = _castore.CreateTempRoots())
            {
                await second.AddAsync(q.Digest);
            }

            var report = await CollectAsync(TimeSpan.Zero);
            Assert.Equal(0, report.BlobsRemoved + report.DirectoriesRemoved);
            Assert.Equal(1, report.LiveTempRootFiles);
            Assert.Single(Directory.EnumerateFiles(Path.Combine(_store.Root, "temproots")));
            Assert.Equal(1, StoreStatistics.Of(_store).TempRootProcesses);
        }

        Assert.Empty(Directory.EnumerateFiles(Path.Combine(_store.Root, "temproots")));
        var collected = await CollectAsync(TimeSpan.Zero);
        Assert.Equal(closure.Count, collected.BlobsRemoved + collected.DirectoriesRemoved);
    }

    [Fact]
    public async Task ARegistrationWaitsForACollectionHoldingTheLockAndIsThenSeen()
    {
        var q = await ImportAsync("q", ("x", "registered during a sweep"));
        AgeEverything(TimeSpan.FromDays(1));
        using var roots = _store.CreateTempRoots();
        Task registration;
        using (await GcLock.AcquireExclusiveAsync(_store, null, CancellationToken.None))
        {
            // A collection is sweeping: the registration cannot have happened while it holds the lock.
            registration = roots.AddAsync(q.Digest).AsTask();
            Assert.False(registration.IsCompleted);
            Assert.False(File.Exists(Path.Combine(_store.Root, "temproots")) && Directory.EnumerateFiles(Path.Combine(_store.Root, "temproots")).Any());
        }

        await registration;
        var report = await CollectAsync(TimeSpan.Zero);
        Assert.Equal(0, report.BlobsRemoved + report.DirectoriesRemoved);
        Assert.Equal(2, report.KeptReachable);
    }

    [Fact]
    public async Task AddingARootChecksTheObjectAndItsClosure()
    {
        var missing = Blake3.Hash("never stored"u8);
        var e = await Assert.ThrowsAsync<ObjectNotFoundException>(() => _store.Roots.AddAsync("r", missing, replace: false));
        Assert.Contains(missing.ToString(), e.Message);
        Assert.Empty(_store.Roots.List());

        var t = await ImportAsync("t", ("x", "here"), ("sub/y", "soon gone"));
        File.Delete(_store.BlobPath(Blake3.Hash("soon gone"u8)));
        await Assert.ThrowsAsync<ObjectNotFoundException>(() => _store.Roots.AddAsync("t", t.Digest, replace: false));
        Assert.Empty(_store.Roots.List());

        var blob = Blake3.Hash("here"u8);
        await _store.Roots.AddAsync("blob", blob, replace: false);
        await Assert.ThrowsAsync<StoreRootException>(() => _store.Roots.AddAsync("blob", t.Digest, replace: false));
        await Assert.ThrowsAsync<StoreRootException>(() => _store.Roots.AddAsync("../escape", blob, replace: false));
        await Assert.ThrowsAsync<StoreRootException>(() => _store.Roots.AddAsync(".hidden", blob, replace: false));
        Assert.Equal([new StoreRoot("blob", blob)], _store.Roots.List());
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(_store.Root, "temproots")));
    }

    [Fact]
    public async Task ExternalRootsAreKeptAndTheirStaleEntriesReported()
    {
        var e = await ImportAsync("e", ("x", "kept by the result cache"));
        var gone = Blake3.Hash("not in this store"u8);
        var external = new FakeExternalRoots([e.Digest, gone]);
        AgeEverything(TimeSpan.FromDays(3));

        var report = await CollectAsync(TimeSpan.Zero, external: external);
        Assert.Equal(0, report.BlobsRemoved + report.DirectoriesRemoved);
        Assert.Equal(1, report.StaleResultsRemoved);
        Assert.Equal([gone], external.Stale);
    }

    private sealed class FakeExternalRoots(B3Digest[] digests) : IExternalRoots
    {
        public List<B3Digest> Stale { get; } = [];

        public IEnumerable<B3Digest> Read() => digests;

        public int RemoveStale(Func<B3Digest, bool> isPresent, bool dryRun)
        {
            Stale.AddRange(digests.Where(d => !isPresent(d)));
            return Stale.Count;
        }
    }
}
