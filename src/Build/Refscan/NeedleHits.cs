using System.Collections.Immutable;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace TvixFuseBuild.Build.Refscan;

/// <summary>
/// The needles found so far, as a set of indexes. Safe to add to from several threads at once (the scanner shares
/// one instance between its workers).
/// </summary>
public sealed class NeedleHits
{
    private readonly ulong[] _bits;
    private int _count;

    public NeedleHits(int needleCount)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(needleCount);
        NeedleCount = needleCount;
        _bits = new ulong[(needleCount + 63) / 64];
    }

    /// <summary>How many needles there are (the size of the index space).</summary>
    public int NeedleCount { get; }

    /// <summary>How many distinct needles were found.</summary>
    public int Count => Volatile.Read(ref _count);

    /// <summary>True when every needle was found (scanning more cannot change anything).</summary>
    public bool AllFound => Count == NeedleCount;

    public bool Contains(int index) => (uint)index < (uint)NeedleCount && (Volatile.Read(ref _bits[index >> 6]) & (1UL << index)) != 0;

    /// <summary>Records needle <paramref name="index"/>; returns true when it was not recorded before.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Add(int index)
    {
        ulong bit = 1UL << index;
        ref ulong word = ref _bits[index >> 6];
        if ((Volatile.Read(ref word) & bit) != 0)
        {
            return false;
        }

        return AddSlow(ref word, bit);
    }

    public void UnionWith(NeedleHits other)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (other.NeedleCount != NeedleCount)
        {
            throw new ArgumentException($"cannot merge hits over {other.NeedleCount} needles into hits over {NeedleCount}", nameof(other));
        }

        for (int w = 0; w < _bits.Length; w++)
        {
            ulong add = Volatile.Read(ref other._bits[w]);
            while (add != 0)
            {
                int bit = BitOperations.TrailingZeroCount(add);
                Add((w << 6) | bit);
                add &= add - 1;
            }
        }
    }

    /// <summary>The indexes found, ascending.</summary>
    public ImmutableArray<int> ToImmutableArray()
    {
        var result = ImmutableArray.CreateBuilder<int>(Count);
        for (int w = 0; w < _bits.Length; w++)
        {
            ulong bits = Volatile.Read(ref _bits[w]);
            while (bits != 0)
            {
                result.Add((w << 6) | BitOperations.TrailingZeroCount(bits));
                bits &= bits - 1;
            }
        }

        return result.DrainToImmutable();
    }

    public override string ToString() => $"[{string.Join(", ", ToImmutableArray())}]";

    private bool AddSlow(ref ulong word, ulong bit)
    {
        if ((Interlocked.Or(ref word, bit) & bit) != 0)
        {
            return false;
        }

        Interlocked.Increment(ref _count);
        return true;
    }
}
