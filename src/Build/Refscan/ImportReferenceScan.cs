using System.Collections.Immutable;
using TvixFuseBuild.Castore.Transfer;

namespace TvixFuseBuild.Build.Refscan;

/// <summary>
/// Scans what an import reads, in the same pass: every entry name, every symlink target and every file's bytes —
/// together what Nix scans when it searches an output's NAR serialization (whose framing puts non-hash bytes around
/// each name, target and file, so no match can span two of them). A file's pieces may arrive from several threads in
/// any order; matches across their boundaries are found when the file is complete.
/// </summary>
public sealed class ImportReferenceScan : IImportObserver
{
    private readonly NeedleSet _needles;
    private readonly NeedleHits _hits;

    public ImportReferenceScan(ReferenceScanner scanner)
    {
        ArgumentNullException.ThrowIfNull(scanner);
        _needles = scanner.Needles;
        _hits = scanner.Needles.CreateHits();
        scanner.MarkEmptyNeedles(_hits);
    }

    /// <summary>The needles found so far, ascending.</summary>
    public ImmutableArray<int> Found => _hits.ToImmutableArray();

    public void OnName(ReadOnlySpan<byte> name) => _needles.Searcher.Search(name, _hits);

    public void OnSymlinkTarget(ReadOnlySpan<byte> target) => _needles.Searcher.Search(target, _hits);

    public IFileObserver OnFile(long length) => new FileScan(_needles, _hits);

    private sealed class FileScan(NeedleSet needles, NeedleHits hits) : IFileObserver
    {
        private readonly int _keep = Math.Max(0, needles.MaxLength - 1);
        private readonly List<Piece> _pieces = [];

        public void OnRead(long offset, ReadOnlySpan<byte> data)
        {
            needles.Searcher.Search(data, hits);
            if (_keep == 0 || data.IsEmpty)
            {
                return;
            }

            // Only the edges matter for matches across pieces: a short piece whole, a long one's first and last bytes.
            var piece = data.Length <= 2 * _keep
                ? new Piece(offset, data.Length, data.ToArray(), null)
                : new Piece(offset, data.Length, data[.._keep].ToArray(), data[^_keep..].ToArray());
            lock (_pieces)
            {
                _pieces.Add(piece);
            }
        }

        public void Complete()
        {
            if (_pieces.Count < 2)
            {
                return;
            }

            _pieces.Sort((a, b) => a.Offset.CompareTo(b.Offset));
            var window = new byte[2 * _keep];
            for (int boundary = 1; boundary < _pieces.Count; boundary++)
            {
                // The bytes within _keep of the boundary on either side hold every match that crosses it.
                int before = 0;
                var tail = new Stack<byte[]>();
                for (int i = boundary - 1; i >= 0 && before < _keep; i--)
                {
                    byte[] edge = _pieces[i].Tail;
                    int take = Math.Min(edge.Length, _keep - before);
                    tail.Push(edge[^take..]);
                    before += take;
                }

                int length = 0;
                foreach (byte[] part in tail)
                {
                    part.CopyTo(window, length);
                    length += part.Length;
                }

                int after = 0;
                for (int i = boundary; i < _pieces.Count && after < _keep; i++)
                {
                    byte[] edge = _pieces[i].Head;
                    int take = Math.Min(edge.Length, _keep - after);
                    edge.AsSpan(0, take).CopyTo(window.AsSpan(length));
                    length += take;
                    after += take;
                }

                needles.Searcher.Search(window.AsSpan(0, length), hits);
            }
        }

        /// <param name="Head">The first bytes (or the whole piece, when short).</param>
        /// <param name="TailBytes">The last bytes; null when <paramref name="Head"/> is the whole piece.</param>
        private sealed record Piece(long Offset, int Length, byte[] Head, byte[]? TailBytes)
        {
            public byte[] Tail => TailBytes ?? Head;
        }
    }
}
