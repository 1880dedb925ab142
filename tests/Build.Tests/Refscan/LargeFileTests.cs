using TvixFuseBuild.Build.Refscan;
using static TvixFuseBuild.Build.Tests.Refscan.RefscanTestData;

namespace TvixFuseBuild.Build.Tests.Refscan;

/// <summary>Files over 2 GiB cannot be one span: they are mapped in pieces. A sparse file keeps this cheap on disk.</summary>
public sealed class LargeFileTests : IDisposable
{
    private readonly string _dir = TempDir();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void ASparseFileOver2GiBWithNeedlesAcrossThe2GiBLineAndAtTheVeryEnd()
    {
        const long TwoGiB = 1L << 31;
        var random = new Random(5);
        byte[][] nix = [RandomNixHash(random), RandomNixHash(random), RandomNixHash(random)];
        byte[] marker = "\0at the very end, before the last hash\0"u8.ToArray();
        string file = Path.Combine(_dir, "sparse");
        long size = TwoGiB + (5L << 20) + 12345;
        using (var stream = new FileStream(file, FileMode.CreateNew, FileAccess.Write))
        {
            stream.SetLength(size);
            stream.Position = TwoGiB - 16;
            stream.Write(nix[0]);
            stream.Position = size - 32 - marker.Length;
            stream.Write(marker);
            stream.Write(nix[1]);
        }

        Assert.Equal(size, new FileInfo(file).Length);
        Assert.Equal([0, 1], new ReferenceScanner(NeedleSet.Create(nix, RefscanEngine.NixHash)).ScanPath(file).ToArray());
        Assert.Equal([0, 1, 3], new ReferenceScanner(NeedleSet.Create([.. nix, marker], RefscanEngine.General)).ScanPath(file).ToArray());

        // One thread, pieces of 1 GiB (the largest), so the 2 GiB line is a piece boundary.
        var single = new ReferenceScanner(NeedleSet.Create(nix), new ReferenceScanOptions { MaxDegreeOfParallelism = 1, ChunkSize = 1L << 30 });
        Assert.Equal([0, 1], single.ScanPath(file).ToArray());
    }

    [Fact]
    public void ReadFilesFindNeedlesAcrossEveryReadAndPieceBoundary()
    {
        // Read rather than mapped, through the 1 MiB per-thread buffer: needles across each 1 MiB read (carried to the
        // next read), across the 3 MiB pieces, and at both ends.
        var random = new Random(9);
        byte[][] nix = [.. Enumerable.Range(0, 12).Select(_ => RandomNixHash(random))];
        var content = new byte[(7 << 20) + 777];
        random.NextBytes(content);
        // With pieces of 3 MiB + 31 bytes read 1 MiB at a time, reads end at 1 MiB, 2 MiB - 31, 3 MiB + 31 ...
        long[] at = [0, (1 << 20) + 100, (1 << 20) - 31, (2 << 20) - 40, (3 << 20) - 20, (3 << 20) + 40, (4 << 20) - 8, (6 << 20) - 30, content.Length - 32];
        for (int i = 0; i < at.Length; i++)
        {
            nix[i].CopyTo(content, at[i]);
        }

        string file = Path.Combine(_dir, "read");
        File.WriteAllBytes(file, content);
        int[] expected = Naive(nix, content);
        Assert.Equal(Enumerable.Range(0, at.Length), expected);
        foreach (var needles in Engines(nix))
        {
            foreach (int threads in new[] { 1, 2 })
            {
                var options = new ReferenceScanOptions { MaxDegreeOfParallelism = threads, ChunkSize = 3 << 20, ReadBelow = int.MaxValue };
                Assert.Equal(expected, new ReferenceScanner(needles, options).ScanPath(file).ToArray());
            }
        }
    }
}
