namespace TvixFuseBuild.Build.Refscan;

/// <summary>
/// Scans one object that arrives in pieces. Keeps the last (longest needle − 1) bytes, and searches them joined to
/// the head of each new piece before the piece itself, so a match across any number of pieces is found.
/// </summary>
public sealed class ReferenceScanStream
{
    private readonly NeedleSet _needles;
    private readonly NeedleHits _hits;
    private readonly byte[] _carry;
    private readonly byte[] _junction;
    private int _carryLength;

    internal ReferenceScanStream(NeedleSet needles, NeedleHits hits)
    {
        _needles = needles;
        _hits = hits;
        int keep = Math.Max(0, needles.MaxLength - 1);
        _carry = new byte[keep];
        _junction = new byte[2 * keep];
    }

    public NeedleHits Hits => _hits;

    public void Write(ReadOnlySpan<byte> data)
    {
        int keep = _carry.Length;
        if (keep > 0 && _carryLength > 0)
        {
            // Matches that start in the carried bytes end within the first `keep` bytes of the new data.
            int head = Math.Min(data.Length, keep);
            _carry.AsSpan(0, _carryLength).CopyTo(_junction);
            data[..head].CopyTo(_junction.AsSpan(_carryLength));
            _needles.Searcher.Search(_junction.AsSpan(0, _carryLength + head), _hits);
        }

        _needles.Searcher.Search(data, _hits);

        if (keep == 0)
        {
            return;
        }

        if (data.Length >= keep)
        {
            data[^keep..].CopyTo(_carry);
            _carryLength = keep;
        }
        else
        {
            int fromCarry = Math.Min(_carryLength, keep - data.Length);
            _carry.AsSpan(_carryLength - fromCarry, fromCarry).CopyTo(_carry);
            data.CopyTo(_carry.AsSpan(fromCarry));
            _carryLength = fromCarry + data.Length;
        }
    }
}
