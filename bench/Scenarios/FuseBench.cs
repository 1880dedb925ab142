using System.Diagnostics;
using System.Runtime.InteropServices;

namespace TvixFuseBuild.Bench.Scenarios;

/// <summary>
/// Our FUSE filesystem against squashfuse and the native tree, on the same data in one run: a copy of
/// /usr/share/dotnet imported into the local store (and packed with mksquashfs), and a generated 100,000-entry tree.
/// Every mount of ours is the real <c>tvix-fuse-build mount</c> in its own process, timed from its "mounted" line.
/// (1) cold read of every file: fresh mounts after dropping the page cache, ours vs squashfuse;
/// (2) warm re-read in the same mount vs the native tree from the page cache;
/// (3) a find walk printing stat fields over 100,000 entries, metadata cold (dentries and inodes dropped), vs native.
/// Runs interleave ours and the peer and report medians. Needs root (drop_caches, mount).
/// </summary>
internal sealed partial class FuseBench : IBenchScenario
{
    public string Name => "fuse";

    public string Description => "tvix-fuse-build mount vs squashfuse (cold read), the native tree (warm read, find walk)";

    private const string ReadAll = "find . -type f -print0 | xargs -0 cat > /dev/null";

    // %s %m %U %G %T@ %n: size, mode, owner, group, mtime, links; %y/%Y: types. Every entry is stat'ed.
    private const string Walk = "find . -printf '%s %m %U %G %T@ %n %y\\n' > /dev/null";

    public Task<IReadOnlyList<BenchResult>> RunAsync(BenchContext context, CancellationToken cancellationToken)
    {
        if (Environment.UserName != "root")
        {
            throw new InvalidOperationException("the fuse benchmark needs root (it drops caches and mounts)");
        }

        string work = context.WorkDir;
        string store = "local://" + Path.Combine(work, "store");

        // The data: the dotnet tree, its import, its squashfs; the 100,000-entry tree and its import.
        string tree = Path.Combine(work, "dotnet");
        BenchData.CopyTree(context.Quick ? "/usr/share/dotnet/shared" : "/usr/share/dotnet", tree);
        var files = Directory.EnumerateFiles(tree, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 })
            .Where(f => new FileInfo(f).LinkTarget is null).ToList();
        long bytes = files.Sum(f => new FileInfo(f).Length);
        string dotnetNodes = Import(store, tree, Path.Combine(work, "dotnet.nodes"));
        string image = Path.Combine(work, "dotnet.sqfs");
        Measure.Process("mksquashfs", [tree, image, "-quiet", "-no-progress", "-noappend"]);

        string many = Path.Combine(work, "many");
        int entries = GenerateManyEntries(many, context.Quick ? 10_000 : 100_000);
        string manyNodes = Import(store, many, Path.Combine(work, "many.nodes"));

        string mountpoint = Path.Combine(work, "mnt");
        Directory.CreateDirectory(mountpoint);
        var cold = new List<double>();
        var coldPassthrough = new List<double>();
        var squash = new List<double>();
        var warm = new List<double>();
        var nativeWarm = new List<double>();
        var walk = new List<double>();
        var nativeWalk = new List<double>();
        var walkWarm = new List<double>();
        var nativeWalkWarm = new List<double>();
        var warmPerFileOpen = new List<double>();
        for (int i = 0; i < context.Repetitions; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();

            // (1) cold: ours (default: serving every read), ours with passthrough, squashfuse.
            Measure.DropCaches();
            using (var mount = OurMount.Start(store, dotnetNodes, mountpoint))
            {
                cold.Add(Timed(Path.Combine(mountpoint, "dotnet"), ReadAll));

                // (2) warm: the same mount again, and the native tree warm.
                warm.Add(Timed(Path.Combine(mountpoint, "dotnet"), ReadAll));
                CheckSame(tree, Path.Combine(mountpoint, "dotnet"), files.Count);
            }

            Timed(tree, ReadAll);
            nativeWarm.Add(Timed(tree, ReadAll));

            Measure.DropCaches();
            using (var mount = OurMount.Start(store, dotnetNodes, mountpoint, "--passthrough"))
            {
                coldPassthrough.Add(Timed(Path.Combine(mountpoint, "dotnet"), ReadAll));
            }

            using (var mount = OurMount.Start(store, dotnetNodes, mountpoint, "--per-file-open"))
            {
                Timed(Path.Combine(mountpoint, "dotnet"), ReadAll);
                warmPerFileOpen.Add(Timed(Path.Combine(mountpoint, "dotnet"), ReadAll));
                CheckSame(tree, Path.Combine(mountpoint, "dotnet"), files.Count);
            }

            Measure.DropCaches();
            using (var mount = Squashfuse.Start(image, mountpoint))
            {
                squash.Add(Timed(mountpoint, ReadAll));
                CheckSame(tree, mountpoint, files.Count);
            }

            // (3) the walk, metadata cold: dentries and inodes dropped, the page cache (store objects, native
            // inode tables) kept; then warm, in the same mount.
            Timed(many, Walk);
            DropDentriesAndInodes();
            nativeWalk.Add(Timed(many, Walk));
            nativeWalkWarm.Add(Timed(many, Walk));
            DropDentriesAndInodes();
            using (var mount = OurMount.Start(store, manyNodes, mountpoint))
            {
                walk.Add(Timed(Path.Combine(mountpoint, "many"), Walk));
                walkWarm.Add(Timed(Path.Combine(mountpoint, "many"), Walk));
            }
        }

        string size = $"{files.Count} files, {bytes / 1e6:0} MB";
        double c = BenchData.Median(cold), cp = BenchData.Median(coldPassthrough), s = BenchData.Median(squash);
        double w = BenchData.Median(warm), nw = BenchData.Median(nativeWarm), wp = BenchData.Median(warmPerFileOpen);
        double f = BenchData.Median(walk), nf = BenchData.Median(nativeWalk);
        double fw = BenchData.Median(walkWarm), nfw = BenchData.Median(nativeWalkWarm);
        return Task.FromResult<IReadOnlyList<BenchResult>>(
        [
            new BenchResult($"cold read of every file ({size})", Measure.Time(c), Measure.Time(s), "squashfuse", s / c, ">= 2x", s / c >= 2,
                $"{Measure.Rate(bytes, c)} vs {Measure.Rate(bytes, s)}"),
            new BenchResult("cold read, --passthrough (the kernel reads the store's files)", Measure.Time(cp), Measure.Time(s), "squashfuse", s / cp, null, null,
                Measure.Rate(bytes, cp)),
            new BenchResult("warm re-read, same mount", Measure.Time(w), Measure.Time(nw), "native, page cache", nw / w, ">= 0.9x", nw / w >= 0.9),
            new BenchResult("warm re-read, --per-file-open", Measure.Time(wp), Measure.Time(nw), "native, page cache", nw / wp, null, null,
                "an OPEN and a RELEASE per file; opt-out"),
            new BenchResult($"find -printf stat fields, {entries} entries, metadata cold", Measure.Time(f), Measure.Time(nf), "native", nf / f, ">= 0.5x", nf / f >= 0.5,
                "dentries/inodes dropped, page cache kept"),
            new BenchResult($"find -printf stat fields, {entries} entries, warm", Measure.Time(fw), Measure.Time(nfw), "native", nfw / fw, null, null),
        ]);
    }

    private static double Timed(string directory, string script)
    {
        var sw = Stopwatch.StartNew();
        Run("sh", ["-c", $"cd '{directory}' && {script}"]);
        return sw.Elapsed.TotalSeconds;
    }

    /// <summary>Makes sure a timed read saw the whole tree (same files, same sizes), outside the timing.</summary>
    private static void CheckSame(string original, string mounted, int files)
    {
        const string List = "find . -type f -printf '%P %s\\n' | sort";
        string expected = Run("sh", ["-c", $"cd '{original}' && {List}"]);
        string actual = Run("sh", ["-c", $"cd '{mounted}' && {List}"]);
        if (expected != actual || expected.Count(c => c == '\n') != files)
        {
            throw new InvalidOperationException($"{mounted} does not hold the same {files} files as {original}");
        }
    }

    private static void DropDentriesAndInodes() => File.WriteAllText("/proc/sys/vm/drop_caches", "2");

    /// <summary>Imports a tree with the real tool; writes the nodes file 'mount --nodes' reads.</summary>
    private static string Import(string store, string path, string nodesFile)
    {
        Measure.Process("dotnet", [BenchData.Tool, "--store", store, "import", path], nodesFile);
        return nodesFile;
    }

    /// <summary>Directories of 100 small files each (some empty, some executable) plus their directories: <paramref name="count"/> entries.</summary>
    private static int GenerateManyEntries(string root, int count)
    {
        var random = new Random(1);
        int made = 0;
        for (int d = 0; made < count; d++)
        {
            string directory = Path.Combine(root, $"d{d / 100:000}", $"e{d % 100:00}");
            Directory.CreateDirectory(directory);
            made += d % 100 == 0 ? 2 : 1;
            for (int i = 0; i < 99 && made < count; i++, made++)
            {
                var content = new byte[random.Next(0, 200)];
                random.NextBytes(content);
                string file = Path.Combine(directory, $"f{i:00}");
                File.WriteAllBytes(file, content);
                if (i % 10 == 0)
                {
                    File.SetUnixFileMode(file, (UnixFileMode)0x1ED);
                }
            }
        }

        return made;
    }

    private static string Run(string file, string[] arguments)
    {
        string output = Path.GetTempFileName();
        try
        {
            Measure.Process(file, arguments, output);
            return File.ReadAllText(output);
        }
        finally
        {
            File.Delete(output);
        }
    }

    [LibraryImport("libc", EntryPoint = "umount2", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Umount2(string target, int flags);

    [LibraryImport("libc", EntryPoint = "kill")]
    private static partial int Kill(int pid, int signal);

    private static bool IsMounted(string path) =>
        File.ReadAllLines("/proc/self/mountinfo").Any(line => line.Split(' ')[4] == path);

    /// <summary>Stops a serving process and makes sure nothing stays mounted.</summary>
    private static void Stop(Process process, string mountpoint)
    {
        if (!process.HasExited)
        {
            Kill(process.Id, 15);
            if (!process.WaitForExit(15_000))
            {
                process.Kill(entireProcessTree: true);
                process.WaitForExit();
            }
        }

        while (IsMounted(mountpoint))
        {
            Umount2(mountpoint, 2 /* MNT_DETACH */);
        }

        process.Dispose();
    }

    /// <summary><c>tvix-fuse-build mount</c> in its own process, ready when it prints its "mounted" line.</summary>
    private sealed class OurMount(Process process, string mountpoint) : IDisposable
    {
        public static OurMount Start(string store, string nodes, string mountpoint, params string[] extra)
        {
            var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (string argument in (string[])[BenchData.Tool, "--store", store, "mount", mountpoint, "--nodes", nodes, .. extra])
            {
                start.ArgumentList.Add(argument);
            }

            var process = Process.Start(start) ?? throw new InvalidOperationException("cannot start tvix-fuse-build mount");
            var mount = new OurMount(process, mountpoint);
            process.ErrorDataReceived += (_, e) =>
            {
                if (e.Data is { } line)
                {
                    Console.Error.WriteLine(line);
                }
            };
            process.BeginErrorReadLine();
            var ready = process.StandardOutput.ReadLineAsync();
            if (!ready.Wait(TimeSpan.FromSeconds(60)) || ready.Result?.StartsWith("mounted ", StringComparison.Ordinal) != true)
            {
                mount.Dispose();
                throw new InvalidOperationException($"tvix-fuse-build mount did not become ready ({ready.Status})");
            }

            return mount;
        }

        public void Dispose() => Stop(process, mountpoint);
    }

    /// <summary>squashfuse in the foreground (its default: multi-threaded), ready once the mount appears.</summary>
    private sealed class Squashfuse(Process process, string mountpoint) : IDisposable
    {
        public static Squashfuse Start(string image, string mountpoint)
        {
            var start = new ProcessStartInfo("squashfuse") { UseShellExecute = false, RedirectStandardError = true };
            foreach (string argument in new[] { "-f", image, mountpoint })
            {
                start.ArgumentList.Add(argument);
            }

            var process = Process.Start(start) ?? throw new InvalidOperationException("cannot start squashfuse");
            var mount = new Squashfuse(process, mountpoint);
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (!IsMounted(mountpoint))
            {
                if (process.HasExited || DateTime.UtcNow > deadline)
                {
                    mount.Dispose();
                    throw new InvalidOperationException($"squashfuse did not mount: {process.StandardError.ReadToEnd()}");
                }

                Thread.Sleep(20);
            }

            return mount;
        }

        public void Dispose()
        {
            // squashfuse exits when its filesystem is unmounted.
            Umount2(mountpoint, 2 /* MNT_DETACH */);
            if (!process.WaitForExit(15_000))
            {
                process.Kill();
            }

            Stop(process, mountpoint);
        }
    }
}
