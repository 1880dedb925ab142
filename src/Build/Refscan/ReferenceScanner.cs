using System.Collections.Immutable;

namespace TvixFuseBuild.Build.Refscan;

/// <summary>How <see cref="ReferenceScanner"/> reads a tree.</summary>
public sealed record ReferenceScanOptions
{
    /// <summary>The default <see cref="ChunkSize"/>: 64 MiB.</summary>
    public const long DefaultChunkSize = 64L << 20;

    /// <summary>
    /// Also search the names of the entries inside scanned directories (as a NAR-based scan, like Nix's, sees them).
    /// The name of the scanned path itself is not part of its contents and is never searched.
    /// </summary>
    public bool IncludeNames { get; init; }

    /// <summary>How many threads read files at once; 1 scans on the calling thread only.</summary>
    public int MaxDegreeOfParallelism { get; init; } = Environment.ProcessorCount;

    /// <summary>
    /// Files are mapped (and scanned, possibly in parallel) in pieces of this many bytes, each mapping reaching one
    /// byte less than the longest needle into the next piece, so matches across pieces are found. A multiple of the
    /// page size; files over 2 GiB are always mapped in pieces, since a span holds at most 2 GiB.
    /// </summary>
    public long ChunkSize { get; init; } = DefaultChunkSize;

    /// <summary>
    /// Files smaller than this are read with pread through a reused 1 MiB buffer, larger ones are mapped (with
    /// MAP_POPULATE). By default every file is read: on this project's machines the page faults and unmaps of a
    /// mapping cost more than the copy (docs/benchmarks.md, Reference scanning). 0 maps every non-empty file.
    /// </summary>
    public long ReadBelow { get; init; } = long.MaxValue;

    internal void Validate()
    {
        if (MaxDegreeOfParallelism < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxDegreeOfParallelism), MaxDegreeOfParallelism, "must be at least 1");
        }

        if (ChunkSize < Environment.SystemPageSize || ChunkSize % Environment.SystemPageSize != 0 || ChunkSize > (1L << 30))
        {
            throw new ArgumentOutOfRangeException(nameof(ChunkSize), ChunkSize, $"must be a multiple of the page size ({Environment.SystemPageSize}) up to 1 GiB");
        }

        if (ReadBelow < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(ReadBelow), ReadBelow, "must not be negative");
        }
    }
}

/// <summary>
/// Finds which needles occur in build outputs: in file contents and symlink targets (and entry names with
/// <see cref="ReferenceScanOptions.IncludeNames"/>). Matches may overlap and may span any read or mapping boundary.
/// Files are read with pread through a per-thread buffer, or mapped (see <see cref="ReferenceScanOptions.ReadBelow"/>).
/// Thread-safe: one scanner can serve many scans at once.
/// </summary>
/// <remarks>
/// A tree is walked by file descriptor (<c>openat</c> with <c>O_NOFOLLOW</c>, names as raw bytes), so no symlink is
/// ever followed and names that are not UTF-8 are fine. Entries other than regular files, directories and symlinks
/// (devices, FIFOs, sockets) have no contents and are skipped. A file that another process truncates while it is
/// scanned is scanned as far as it goes; were it mapped (a lower <see cref="ReferenceScanOptions.ReadBelow"/>), that
/// raises SIGBUS, as for any reader that maps files (ripgrep documents the same): scan outputs after the build has
/// stopped.
/// </remarks>
public sealed partial class ReferenceScanner
{
    public ReferenceScanner(NeedleSet needles, ReferenceScanOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(needles);
        Needles = needles;
        Options = options ?? new ReferenceScanOptions();
        Options.Validate();
        if (Options.ChunkSize + needles.MaxLength > int.MaxValue)
        {
            throw new ArgumentException($"a needle of {needles.MaxLength} bytes is too long to scan in pieces of {Options.ChunkSize} bytes", nameof(needles));
        }
    }

    /// <summary>A scanner for a request's <c>refscan_needles</c> (their UTF-8 bytes).</summary>
    public static ReferenceScanner ForNeedles(IEnumerable<string> needles, ReferenceScanOptions? options = null) =>
        new(NeedleSet.FromStrings(needles), options);

    public NeedleSet Needles { get; }

    public ReferenceScanOptions Options { get; }

    /// <summary>The needles found in <paramref name="data"/>, ascending.</summary>
    public ImmutableArray<int> Scan(ReadOnlySpan<byte> data)
    {
        var hits = Needles.CreateHits();
        Scan(data, hits);
        return hits.ToImmutableArray();
    }

    /// <summary>Adds the needles found in <paramref name="data"/> (one object: a file's whole contents, a target, a name) to <paramref name="hits"/>.</summary>
    public void Scan(ReadOnlySpan<byte> data, NeedleHits hits)
    {
        CheckHits(hits);
        MarkEmptyNeedles(hits);
        Needles.Searcher.Search(data, hits);
    }

    /// <summary>
    /// A scanner for one object that arrives in pieces (e.g. while it is copied into the store): matches across
    /// the pieces are found.
    /// </summary>
    public ReferenceScanStream CreateStream(NeedleHits hits)
    {
        CheckHits(hits);
        MarkEmptyNeedles(hits);
        return new ReferenceScanStream(Needles, hits);
    }

    /// <summary>
    /// The needles found at the host path <paramref name="path"/>, ascending: a regular file's contents, a symlink's
    /// target (the symlink itself, not what it points to), or everything below a directory.
    /// Throws <see cref="IOException"/> naming the path when something cannot be read.
    /// </summary>
    public ImmutableArray<int> ScanPath(string path, CancellationToken cancellationToken = default)
    {
        var hits = Needles.CreateHits();
        ScanPath(path, hits, cancellationToken);
        return hits.ToImmutableArray();
    }

    /// <summary>Adds the needles found at <paramref name="path"/> to <paramref name="hits"/>.</summary>
    public void ScanPath(string path, NeedleHits hits, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        CheckHits(hits);
        cancellationToken.ThrowIfCancellationRequested();
        ScanHostPath(path, hits, cancellationToken);
    }

    internal void MarkEmptyNeedles(NeedleHits hits)
    {
        foreach (int index in Needles.EmptyNeedles)
        {
            hits.Add(index);
        }
    }

    private void CheckHits(NeedleHits hits)
    {
        ArgumentNullException.ThrowIfNull(hits);
        if (hits.NeedleCount != Needles.Count)
        {
            throw new ArgumentException($"the hits are for {hits.NeedleCount} needles, the scanner has {Needles.Count}", nameof(hits));
        }
    }
}
