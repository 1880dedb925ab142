using System.Diagnostics;
using System.Text;
using TvixFuseBuild.Build.Refscan;
using static TvixFuseBuild.Build.Tests.Refscan.RefscanTestData;

namespace TvixFuseBuild.Build.Tests.Refscan;

public sealed class PathScanTests : IDisposable
{
    private static readonly int Page = Environment.SystemPageSize;

    private readonly string _dir = TempDir();

    // rm, not Directory.Delete: .NET cannot name the files whose names are not UTF-8.
    public void Dispose() => Run("rm", "-rf", "--", _dir);

    public static IEnumerable<object[]> VectorNames() => VectorCases().Select(c => new object[] { c.Name });

    [Theory]
    [MemberData(nameof(VectorNames))]
    public void VectorsPassInFilesAcrossEveryMappingBoundary(string name)
    {
        var c = VectorCases().Single(v => v.Name == name);
        foreach (var needles in Engines(c.Needles))
        {
            foreach (int parallel in new[] { 1, 2 })
            {
                // Pieces of one page, mapped (never read): the haystack is placed so that the page boundary falls
                // at each of its positions in turn.
                var scanner = new ReferenceScanner(needles, new ReferenceScanOptions { ChunkSize = Page, ReadBelow = 0, MaxDegreeOfParallelism = parallel });
                for (int shift = 0; shift <= c.Haystack.Length; shift++)
                {
                    var content = new byte[2 * Page + 7];
                    c.Haystack.CopyTo(content, Page - shift);
                    string file = Path.Combine(_dir, "f");
                    File.WriteAllBytes(file, content);
                    Assert.Equal(c.Found, scanner.ScanPath(file).ToArray());
                }

                // The file on its own: read (small) and mapped.
                string plain = Path.Combine(_dir, "plain");
                File.WriteAllBytes(plain, c.Haystack);
                Assert.Equal(c.Found, scanner.ScanPath(plain).ToArray());
                Assert.Equal(c.Found, new ReferenceScanner(needles, new ReferenceScanOptions { MaxDegreeOfParallelism = parallel }).ScanPath(plain).ToArray());
            }
        }
    }

    [Fact]
    public void NeedlesAcrossManyPieceBoundariesOfOneFile()
    {
        var random = new Random(3);
        var nix = Enumerable.Range(0, 40).Select(_ => RandomNixHash(random)).ToArray();
        var content = new byte[12 * Page + 100];
        random.NextBytes(content);
        // One needle across each page boundary, each crossing it at a different offset.
        int n = 0;
        for (int boundary = Page; boundary < content.Length - 32; boundary += Page)
        {
            nix[n++].CopyTo(content, boundary - (1 + (7 * n % 31)));
        }

        nix[n++].CopyTo(content, content.Length - 32);
        string file = Path.Combine(_dir, "big");
        File.WriteAllBytes(file, content);
        int[] expected = Naive(nix, content);
        Assert.True(expected.Length >= n - 1, "the planted needles survive");
        foreach (var needles in Engines(nix))
        {
            foreach (int parallel in new[] { 1, 2 })
            {
                var scanner = new ReferenceScanner(needles, new ReferenceScanOptions { ChunkSize = Page, ReadBelow = 0, MaxDegreeOfParallelism = parallel });
                Assert.Equal(expected, scanner.ScanPath(file).ToArray());
            }
        }
    }

    [Fact]
    public void ATreeOfFilesSymlinksAndEmptyFiles()
    {
        var needles = NeedleSet.FromStrings(["in-file", "in-target", "in-name", "in-deep-file", "nowhere", "in-linked-file"]);
        Directory.CreateDirectory(Path.Combine(_dir, "out", "a", "b", "c"));
        File.WriteAllText(Path.Combine(_dir, "out", "x"), "...in-file...");
        File.WriteAllText(Path.Combine(_dir, "out", "a", "b", "c", "deep"), "in-deep-file");
        File.WriteAllBytes(Path.Combine(_dir, "out", "a", "empty"), []);
        File.WriteAllText(Path.Combine(_dir, "out", "a", "in-name"), "nothing here");
        File.CreateSymbolicLink(Path.Combine(_dir, "out", "link"), "/nix/store/in-target");
        File.CreateSymbolicLink(Path.Combine(_dir, "out", "dangling"), "nonexistent");

        // A symlink to a file with a needle is not followed: only its target text counts.
        File.WriteAllText(Path.Combine(_dir, "elsewhere"), "in-linked-file");
        File.CreateSymbolicLink(Path.Combine(_dir, "out", "to-elsewhere"), Path.Combine(_dir, "elsewhere"));
        Directory.CreateSymbolicLink(Path.Combine(_dir, "out", "to-dir"), _dir);

        foreach (int parallel in new[] { 1, 2, 8 })
        {
            var options = new ReferenceScanOptions { MaxDegreeOfParallelism = parallel };
            Assert.Equal([0, 1, 3], new ReferenceScanner(needles, options).ScanPath(Path.Combine(_dir, "out")).ToArray());
            Assert.Equal([0, 1, 2, 3], new ReferenceScanner(needles, options with { IncludeNames = true }).ScanPath(Path.Combine(_dir, "out")).ToArray());
        }

        // A symlink given as the path is scanned as a symlink: its target.
        Assert.Equal([1], new ReferenceScanner(needles).ScanPath(Path.Combine(_dir, "out", "link")).ToArray());
        Assert.Empty(new ReferenceScanner(needles).ScanPath(Path.Combine(_dir, "out", "to-elsewhere")));

        // The name of the scanned path itself is not part of its contents.
        Assert.Empty(new ReferenceScanner(needles, new ReferenceScanOptions { IncludeNames = true }).ScanPath(Path.Combine(_dir, "out", "a", "in-name")));

        // An empty needle is found in an empty file (an object was scanned), but not in an empty directory.
        var withEmpty = NeedleSet.FromStrings(["", "x"]);
        Assert.Equal([0], new ReferenceScanner(withEmpty).ScanPath(Path.Combine(_dir, "out", "a", "empty")).ToArray());
        Directory.CreateDirectory(Path.Combine(_dir, "hollow"));
        Assert.Empty(new ReferenceScanner(withEmpty).ScanPath(Path.Combine(_dir, "hollow")));
    }

    [Fact]
    public void NamesThatAreNotUtf8AndSpecialFiles()
    {
        // Names of raw bytes, a FIFO (which must not be opened: that would block) and a socket-free tree.
        Run("python3", "-c",
            "import os,sys; d=sys.argv[1]; os.mkdir(d+'/t'); open(os.fsencode(d)+b'/t/\\xff\\xfename','wb').write(b'needle-in-raw'); os.mkfifo(d+'/t/fifo')",
            _dir);
        var needles = NeedleSet.Create(["needle-in-raw"u8.ToArray(), [0xff, 0xfe], "fifo"u8.ToArray()]);
        Assert.Equal([0], new ReferenceScanner(needles).ScanPath(Path.Combine(_dir, "t")).ToArray());
        Assert.Equal([0, 1, 2], new ReferenceScanner(needles, new ReferenceScanOptions { IncludeNames = true }).ScanPath(Path.Combine(_dir, "t")).ToArray());

        var e = Assert.Throws<IOException>(() => new ReferenceScanner(needles).ScanPath(Path.Combine(_dir, "t", "fifo")));
        Assert.Equal($"{Path.Combine(_dir, "t", "fifo")}: not a regular file, directory or symlink", e.Message);
    }

    [Fact]
    public void MissingPathsAreNamedInTheError()
    {
        string missing = Path.Combine(_dir, "missing");
        var e = Assert.Throws<IOException>(() => new ReferenceScanner(NeedleSet.FromStrings(["x"])).ScanPath(missing));
        Assert.Equal($"cannot stat {missing}: No such file or directory", e.Message);
    }

    [Fact]
    public void ManyFilesInParallelAgreeWithOneThread()
    {
        var random = new Random(11);
        var nix = Enumerable.Range(0, 200).Select(_ => RandomNixHash(random)).ToArray();
        var all = new List<byte[]>();
        for (int d = 0; d < 20; d++)
        {
            string sub = Path.Combine(_dir, "tree", $"d{d}", $"e{d % 3}");
            Directory.CreateDirectory(sub);
            for (int f = 0; f < 15; f++)
            {
                var content = new byte[random.Next(0, 3 * Page)];
                random.NextBytes(content);
                if (content.Length > 40 && random.Next(3) == 0)
                {
                    nix[random.Next(nix.Length)].CopyTo(content, random.Next(content.Length - 32));
                }

                File.WriteAllBytes(Path.Combine(sub, $"f{f}"), content);
                all.Add(content);
            }
        }

        int[] expected = Naive(nix, [.. all]);
        Assert.NotEmpty(expected);
        foreach (var needles in Engines(nix))
        {
            foreach (var options in new[]
            {
                new ReferenceScanOptions { MaxDegreeOfParallelism = 1 },
                new ReferenceScanOptions { MaxDegreeOfParallelism = 4, ChunkSize = Page, ReadBelow = 0 },
                new ReferenceScanOptions { MaxDegreeOfParallelism = 2, ReadBelow = 16 << 20 },
            })
            {
                Assert.Equal(expected, new ReferenceScanner(needles, options).ScanPath(Path.Combine(_dir, "tree")).ToArray());
            }
        }
    }

    [Fact]
    public void ACancelledScanStops()
    {
        Directory.CreateDirectory(Path.Combine(_dir, "c"));
        File.WriteAllText(Path.Combine(_dir, "c", "f"), "x");
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => new ReferenceScanner(NeedleSet.FromStrings(["x"])).ScanPath(Path.Combine(_dir, "c"), cts.Token));
    }

    [Fact]
    public void OptionsAreChecked()
    {
        var needles = NeedleSet.FromStrings(["x"]);
        Assert.Throws<ArgumentOutOfRangeException>(() => new ReferenceScanner(needles, new ReferenceScanOptions { ChunkSize = Page + 1 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new ReferenceScanner(needles, new ReferenceScanOptions { MaxDegreeOfParallelism = 0 }));
        Assert.Throws<ArgumentException>(() => new ReferenceScanner(needles).Scan("x"u8, new NeedleHits(2)));
    }

    internal static void Run(string program, params string[] args)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardError = true };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }

        using var p = Process.Start(psi)!;
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, $"{program} failed: {stderr}");
    }
}
