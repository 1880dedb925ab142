using System.Collections.Immutable;
using System.Text;

namespace TvixFuseBuild.Build.Refscan;

/// <summary>The search algorithm a <see cref="NeedleSet"/> uses.</summary>
public enum RefscanEngine
{
    /// <summary>
    /// Every needle is 32 characters of the nixbase32 alphabet (a Nix store path hash): vectorized skipping over
    /// everything that cannot be inside a run of 32 alphabet bytes, and a hash table for the candidate windows.
    /// </summary>
    NixHash,

    /// <summary>Any byte strings: an Aho–Corasick automaton.</summary>
    General,
}

/// <summary>
/// Needles compiled for searching: arbitrary byte strings, duplicates allowed (each index reports on its own).
/// Immutable and safe to share between threads. An empty needle occurs in every byte string, so it is found in every
/// object scanned.
/// </summary>
public sealed class NeedleSet
{
    /// <summary>The nixbase32 alphabet (Nix's base-32, which leaves out e, o, t and u).</summary>
    public const string NixBase32Alphabet = "0123456789abcdfghijklmnpqrsvwxyz";

    /// <summary>The length of a Nix store path hash in nixbase32.</summary>
    public const int NixHashLength = 32;

    private readonly ImmutableArray<byte[]> _needles;

    private NeedleSet(ImmutableArray<byte[]> needles, RefscanEngine? engine)
    {
        _needles = needles;
        MaxLength = needles.IsEmpty ? 0 : needles.Max(n => n.Length);
        EmptyNeedles = [.. Enumerable.Range(0, needles.Length).Where(i => needles[i].Length == 0)];
        bool nix = !needles.IsEmpty && needles.All(static n => IsNixHash(n));
        Engine = engine ?? (nix ? RefscanEngine.NixHash : RefscanEngine.General);
        if (Engine == RefscanEngine.NixHash && !nix)
        {
            throw new ArgumentException($"the {nameof(RefscanEngine.NixHash)} engine needs needles of {NixHashLength} nixbase32 characters", nameof(engine));
        }

        Searcher = Engine == RefscanEngine.NixHash ? new NixHashSearcher(needles) : AhoCorasickSearcher.Create(needles);
    }

    /// <summary>Compiles byte-string needles. <paramref name="engine"/> null picks <see cref="RefscanEngine.NixHash"/> when it applies.</summary>
    public static NeedleSet Create(IEnumerable<byte[]> needles, RefscanEngine? engine = null)
    {
        ArgumentNullException.ThrowIfNull(needles);
        return new NeedleSet([.. needles.Select(n => (byte[])(n ?? throw new ArgumentException("a needle is null", nameof(needles))).Clone())], engine);
    }

    /// <summary>Compiles string needles (searched for as their UTF-8 bytes), such as a request's <c>refscan_needles</c>.</summary>
    public static NeedleSet FromStrings(IEnumerable<string> needles, RefscanEngine? engine = null)
    {
        ArgumentNullException.ThrowIfNull(needles);
        return new NeedleSet([.. needles.Select(Encoding.UTF8.GetBytes)], engine);
    }

    public int Count => _needles.Length;

    /// <summary>The length of the longest needle: windows read from a file overlap by one less than this.</summary>
    public int MaxLength { get; }

    public RefscanEngine Engine { get; }

    /// <summary>The bytes of needle <paramref name="index"/>.</summary>
    public ReadOnlySpan<byte> this[int index] => _needles[index];

    /// <summary>Indexes of empty needles (found in every object scanned).</summary>
    internal ImmutableArray<int> EmptyNeedles { get; }

    internal NeedleSearcher Searcher { get; }

    /// <summary>A fresh, empty set of hits for these needles.</summary>
    public NeedleHits CreateHits() => new(Count);

    public static bool IsNixHash(ReadOnlySpan<byte> needle) =>
        needle.Length == NixHashLength && !needle.ContainsAnyExcept(NixHashSearcher.Alphabet);
}

/// <summary>One search algorithm over a fixed set of needles (empty needles excluded: the scanner reports those).</summary>
internal abstract class NeedleSearcher
{
    /// <summary>Adds to <paramref name="hits"/> every needle that occurs in <paramref name="haystack"/>.</summary>
    public abstract void Search(ReadOnlySpan<byte> haystack, NeedleHits hits);
}
