using System.Text;
using TvixFuseBuild.Build.Nix;
using TvixFuseBuild.Build.Refscan;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Transfer;
using static TvixFuseBuild.Build.Tests.Refscan.RefscanTestData;

namespace TvixFuseBuild.Build.Tests.Refscan;

/// <summary>The scan that rides along with an import: it must find exactly what a scan of the output's NAR finds.</summary>
public sealed class ImportScanTests : IDisposable
{
    private readonly string _dir = TempDir();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string Needle(int i) => NixStorePaths.HashPart($"needle {i}");

    private static async Task<(int[] Import, int[] Nar, int[] Walk)> ScanAllWays(string path, string[] needles)
    {
        await using var store = CastoreStore.Open("memory://");
        var scanner = ReferenceScanner.ForNeedles(needles);
        var scan = new ImportReferenceScan(scanner);
        var node = await HostImporter.ImportAsync(path, PathComponent.Create("out"), store.Blobs, store.Directories, new ImportOptions { Observer = scan });

        using var nar = new MemoryStream();
        await NarWriter.WriteAsync(node, store, nar);
        var walk = ReferenceScanner.ForNeedles(needles, new ReferenceScanOptions { IncludeNames = true }).ScanPath(path);
        return (scan.Found.ToArray(), scanner.Scan(nar.ToArray()).ToArray(), walk.ToArray());
    }

    [Fact]
    public async Task NamesTargetsAndContentsInOnePassEqualTheNarScan()
    {
        var needles = Enumerable.Range(0, 12).Select(Needle).ToArray();
        string output = Path.Combine(_dir, $"{needles[11]}-out");
        Directory.CreateDirectory(Path.Combine(output, $"{needles[0]}-dir", "inner"));
        File.WriteAllText(Path.Combine(output, $"{needles[1]}-file"), "nothing");
        File.CreateSymbolicLink(Path.Combine(output, "link"), $"/nix/store/{needles[2]}-target");
        File.WriteAllText(Path.Combine(output, $"{needles[0]}-dir", "inner", "small"), $"x{needles[3]}y");

        // A needle split between a name and a file's contents, or two names: no match in the NAR, none here.
        string split = needles[4];
        File.WriteAllText(Path.Combine(output, split[..16]), split[16..]);
        Directory.CreateDirectory(Path.Combine(output, needles[5][..10]));
        File.WriteAllText(Path.Combine(output, needles[5][..10], needles[5][10..]), "");

        // A large file, hashed in parallel pieces (powers of two up to 1 MiB here) and then read on in 1 MiB steps:
        // needles at both ends, and needles only across a piece boundary, and across the last piece and the rest.
        var big = new byte[(9 << 20) + 4109];
        Array.Fill(big, (byte)'.');
        Encoding.ASCII.GetBytes(needles[6]).CopyTo(big, 0);
        Encoding.ASCII.GetBytes(needles[7]).CopyTo(big, big.Length - 32);
        Encoding.ASCII.GetBytes(needles[8]).CopyTo(big, (1 << 20) - 16);
        Encoding.ASCII.GetBytes(needles[9]).CopyTo(big, (4 << 20) - 31);
        File.WriteAllBytes(Path.Combine(output, "big"), big);
        Encoding.ASCII.GetBytes(needles[10]).CopyTo(big, (9 << 20) - 1);
        File.WriteAllBytes(Path.Combine(output, "big2"), big);

        var (import, nar, walk) = await ScanAllWays(output, needles);
        Assert.Equal([0, 1, 2, 3, 6, 7, 8, 9, 10], import);
        Assert.Equal(nar, import);
        Assert.Equal(nar, walk);
    }

    [Fact]
    public async Task ASymlinkOutputIsScannedByItsTargetAndAFileOutputByItsContents()
    {
        var needles = new[] { Needle(0), Needle(1), Needle(2) };
        string link = Path.Combine(_dir, $"{needles[2]}-link");
        File.CreateSymbolicLink(link, $"../{needles[0]}");
        var (import, nar, _) = await ScanAllWays(link, needles);
        Assert.Equal([0], import);
        Assert.Equal(nar, import);

        string file = Path.Combine(_dir, $"{needles[2]}-file");
        File.WriteAllText(file, needles[1]);
        (import, nar, _) = await ScanAllWays(file, needles);
        Assert.Equal([1], import);
        Assert.Equal(nar, import);
    }
}
