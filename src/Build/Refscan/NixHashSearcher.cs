using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace TvixFuseBuild.Build.Refscan;

/// <summary>
/// The Nix case: every needle is 32 nixbase32 characters. A match needs 32 consecutive alphabet bytes, and in binaries
/// and most text such runs are rare, so the haystack is classified 64 bytes at a time with vector compares into a
/// bit mask, and only windows inside runs of at least 32 alphabet bytes are looked up: first in a 64 Kibit filter, then
/// in an open-addressing table keyed by the window's first 8 bytes (needles are uniformly random, so those bytes hash
/// well), then compared in full.
/// </summary>
internal sealed unsafe class NixHashSearcher : NeedleSearcher
{
    internal static readonly SearchValues<byte> Alphabet = SearchValues.Create("0123456789abcdfghijklmnpqrsvwxyz"u8);

    private const int Length = NeedleSet.NixHashLength;
    private const int FilterBits = 16;
    private const ulong HashMultiplier = 0x9E3779B97F4A7C15;

    private readonly byte[] _needles;        // distinct needles, 32 bytes each
    private readonly int[][] _indexes;       // per distinct needle: its indexes in the NeedleSet (duplicates share one)
    private readonly ulong[] _keys;          // open-addressing table: first 8 bytes of a needle; 0 marks an empty slot
    private readonly int[] _slots;           // the distinct needle in each slot
    private readonly int _shift;
    private readonly ulong[] _filter = new ulong[(1 << FilterBits) / 64];

    public NixHashSearcher(IReadOnlyList<byte[]> needles)
    {
        var distinct = new Dictionary<string, List<int>>(StringComparer.Ordinal);
        for (int i = 0; i < needles.Count; i++)
        {
            string key = Convert.ToHexString(needles[i]);
            if (!distinct.TryGetValue(key, out var list))
            {
                distinct[key] = list = [];
            }

            list.Add(i);
        }

        _needles = new byte[distinct.Count * Length];
        _indexes = new int[distinct.Count][];
        int tableBits = Math.Max(4, BitOperations.Log2((uint)distinct.Count) + 3); // load factor at most 1/4
        _keys = new ulong[1 << tableBits];
        _slots = new int[1 << tableBits];
        _shift = 64 - tableBits;
        int d = 0;
        foreach (var list in distinct.Values)
        {
            var needle = needles[list[0]];
            needle.CopyTo(_needles, d * Length);
            _indexes[d] = [.. list];
            ulong key = MemoryMarshal.Read<ulong>(needle);
            ulong hash = key * HashMultiplier;
            int filterIndex = (int)(hash >> (64 - FilterBits));
            _filter[filterIndex >> 6] |= 1UL << filterIndex;
            int mask = _keys.Length - 1;
            int slot = (int)(hash >> _shift);
            while (_keys[slot] != 0)
            {
                slot = (slot + 1) & mask;
            }

            _keys[slot] = key;
            _slots[slot] = d;
            d++;
        }
    }

    public override void Search(ReadOnlySpan<byte> haystack, NeedleHits hits)
    {
        if (haystack.Length < Length)
        {
            return;
        }

        // Pinned once, so that the classifiers load with the x86 intrinsics' pointer forms: crossgen2 precompiles no
        // call that hands a CoreLib vector type to a helper such as Vector512.LoadUnsafe (see docs/benchmarks.md).
        fixed (byte* start = haystack)
        {
            if (Avx512BW.IsSupported)
            {
                Search(haystack, start, hits, default(Avx512Classifier));
            }
            else if (Avx2.IsSupported)
            {
                Search(haystack, start, hits, default(Avx2Classifier));
            }
            else
            {
                Search(haystack, start, hits, default(PortableClassifier));
            }
        }
    }

    // Generic over the classifier so that one loop is compiled per instruction set, with the lookup tables loaded into
    // registers once per call. No AggressiveOptimization here or below: it keeps a method out of the ReadyToRun image.
    private void Search<TClassifier>(ReadOnlySpan<byte> haystack, byte* start, NeedleHits hits, TClassifier classifier)
        where TClassifier : struct, IClassifier
    {
        int n = haystack.Length;
        int run = 0; // alphabet bytes ending at the previous block's end (capped at 64)
        int i = 0;

        // Two blocks per step, with one well-predicted branch. A window of 32 alphabet bytes either lies inside a
        // block (which then holds at least 32 alphabet bytes: a popcount tells) or crosses into it from the run
        // carried in (its leading alphabet bytes tell). Only then are the blocks looked at closely.
        for (; i <= n - 128; i += 128)
        {
            ulong m1 = classifier.Classify64(start + i);
            ulong m2 = classifier.Classify64(start + i + 64);
            int lead1 = BitOperations.TrailingZeroCount(~m1);
            int lead2 = BitOperations.TrailingZeroCount(~m2);
            int tail1 = BitOperations.LeadingZeroCount(~m1);
            bool quiet = (BitOperations.PopCount(m1) < Length) & (BitOperations.PopCount(m2) < Length) &
                (run + lead1 < Length) & (tail1 + lead2 < Length);
            if (quiet)
            {
                // Neither block is all alphabet (that would be a run of 32), so the carry is block 2's tail.
                run = BitOperations.LeadingZeroCount(~m2);
                continue;
            }

            run = Block(haystack, i, m1, run, hits);
            run = Block(haystack, i + 64, m2, run, hits);
        }

        for (; i <= n - 64; i += 64)
        {
            run = Block(haystack, i, classifier.Classify64(start + i), run, hits);
        }

        if (i < n)
        {
            // The last partial block, zero padded (zero is not in the alphabet).
            byte* tail = stackalloc byte[64];
            var tailSpan = new Span<byte>(tail, 64);
            tailSpan.Clear();
            haystack[i..].CopyTo(tailSpan);
            Block(haystack, i, classifier.Classify64(tail), run, hits);
        }
    }

    /// <summary>Bit s is set when bits s..s+31 of <paramref name="mask"/> all are: a window of 32 alphabet bytes starts at s.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Runs32(ulong mask)
    {
        mask &= mask >> 1;
        mask &= mask >> 2;
        mask &= mask >> 4;
        mask &= mask >> 8;
        return mask & (mask >> 16);
    }

    /// <summary>Looks up the candidate windows that end in the block at <paramref name="blockStart"/>; returns the run carried out of it.</summary>
    private int Block(ReadOnlySpan<byte> haystack, int blockStart, ulong mask, int run, NeedleHits hits)
    {
        int lead = BitOperations.TrailingZeroCount(~mask);
        if (run + lead >= Length || Runs32(mask) != 0)
        {
            Candidates(haystack, blockStart, mask, run, lead, hits);
        }

        return mask == ulong.MaxValue ? Math.Min(run + 64, 64) : BitOperations.LeadingZeroCount(~mask);
    }

    /// <summary>
    /// Looks up every window that ends in the block at <paramref name="blockStart"/> and is made of alphabet bytes
    /// only: those starting in earlier blocks (the carried run), then those starting in this block.
    /// </summary>
    private void Candidates(ReadOnlySpan<byte> haystack, int blockStart, ulong mask, int run, int lead, NeedleHits hits)
    {
        // A window ending at block offset e (e < 31, so it starts in an earlier block) is all alphabet when the carried
        // run and the block's first e + 1 bytes make 32.
        if (run > 0)
        {
            int last = Math.Min(lead, Length - 1);
            for (int e = Math.Max(0, Length - 1 - run); e < last; e++)
            {
                Lookup(haystack, blockStart + e - (Length - 1), hits);
            }
        }

        // Windows inside the block.
        for (ulong starts = Runs32(mask); starts != 0; starts &= starts - 1)
        {
            Lookup(haystack, blockStart + BitOperations.TrailingZeroCount(starts), hits);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Lookup(ReadOnlySpan<byte> haystack, int at, NeedleHits hits)
    {
        ref byte window = ref Unsafe.Add(ref MemoryMarshal.GetReference(haystack), at);
        ulong key = Unsafe.ReadUnaligned<ulong>(ref window);
        ulong hash = key * HashMultiplier;
        int filterIndex = (int)(hash >> (64 - FilterBits));
        if ((_filter[filterIndex >> 6] & (1UL << filterIndex)) == 0)
        {
            return;
        }

        int tableMask = _keys.Length - 1;
        for (int slot = (int)(hash >> _shift); _keys[slot] != 0; slot = (slot + 1) & tableMask)
        {
            if (_keys[slot] == key && haystack.Slice(at, Length).SequenceEqual(_needles.AsSpan(_slots[slot] * Length, Length)))
            {
                foreach (int index in _indexes[_slots[slot]])
                {
                    hits.Add(index);
                }

                return;
            }
        }
    }

    /// <summary>Classifies 64 bytes: bit j is set when byte j is in the nixbase32 alphabet.</summary>
    internal interface IClassifier
    {
        ulong Classify64(byte* p);
    }

    // A byte is in the alphabet when the classes of its low nibble and of its high nibble share a bit (one pshufb
    // lookup each): bit 1 = '0'..'9' (high nibble 3), bit 2 = 'a'..'n' except 'e' (high nibble 6), bit 4 = 'p'..'z'
    // except 't' and 'u' (high nibble 7). The 16-entry tables as two little-endian words, low nibble:
    // 5 7 7 7 3 1 7 7 7 7 6 2 2 2 2 0, high nibble: 0 0 0 1 0 0 2 4 0 0 0 0 0 0 0 0. Built from scalars, not with
    // Vector512.Create(Vector128): crossgen2 precompiles no method calling a CoreLib helper with a vector argument.
    private const ulong LowNibbleClasses0 = 0x0707010307070705;
    private const ulong LowNibbleClasses1 = 0x0002020202060707;
    private const ulong HighNibbleClasses0 = 0x0402000001000000;
    private const ulong HighNibbleClasses1 = 0;

    // The classifiers hold no vector fields and their tables are constants: crossgen2 precompiles nothing that passes
    // or holds a struct with CoreLib vector fields, and the constant tables are loaded once per loop anyway.
    internal readonly struct Avx512Classifier : IClassifier
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public ulong Classify64(byte* p)
        {
            var v = Avx512BW.LoadVector512(p);
            var nibble = Vector512.Create((byte)0x0f);
            var low = Vector512.Create(
                LowNibbleClasses0, LowNibbleClasses1, LowNibbleClasses0, LowNibbleClasses1, LowNibbleClasses0, LowNibbleClasses1, LowNibbleClasses0, LowNibbleClasses1).AsByte();
            var high = Vector512.Create(
                HighNibbleClasses0, HighNibbleClasses1, HighNibbleClasses0, HighNibbleClasses1, HighNibbleClasses0, HighNibbleClasses1, HighNibbleClasses0, HighNibbleClasses1).AsByte();
            var lo = Avx512BW.Shuffle(low, v & nibble);
            var hi = Avx512BW.Shuffle(high, Avx512BW.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & nibble);
            return ~Vector512.Equals(lo & hi, Vector512<byte>.Zero).ExtractMostSignificantBits();
        }
    }

    internal readonly struct Avx2Classifier : IClassifier
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public ulong Classify64(byte* p) => Classify32(Avx.LoadVector256(p)) | ((ulong)Classify32(Avx.LoadVector256(p + 32)) << 32);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static uint Classify32(Vector256<byte> v)
        {
            var nibble = Vector256.Create((byte)0x0f);
            var low = Vector256.Create(LowNibbleClasses0, LowNibbleClasses1, LowNibbleClasses0, LowNibbleClasses1).AsByte();
            var high = Vector256.Create(HighNibbleClasses0, HighNibbleClasses1, HighNibbleClasses0, HighNibbleClasses1).AsByte();
            var lo = Avx2.Shuffle(low, v & nibble);
            var hi = Avx2.Shuffle(high, Avx2.ShiftRightLogical(v.AsUInt16(), 4).AsByte() & nibble);
            return ~Vector256.Equals(lo & hi, Vector256<byte>.Zero).ExtractMostSignificantBits();
        }
    }

    /// <summary>
    /// Range compares on 128-bit vectors (Arm64, x64 without AVX2), or bytewise. (Wider vectors imply AVX2 or
    /// AVX-512BW on x64, which have their own classifiers.)
    /// </summary>
    internal readonly struct PortableClassifier : IClassifier
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public ulong Classify64(byte* p)
        {
            if (Vector128.IsHardwareAccelerated)
            {
                ulong result = 0;
                for (int k = 0; k < 4; k++)
                {
                    result |= (ulong)InAlphabet(Vector128.Load(p + (16 * k))).ExtractMostSignificantBits() << (16 * k);
                }

                return result;
            }

            ulong bits = 0;
            for (int k = 0; k < 64; k++)
            {
                if (Alphabet.Contains(p[k]))
                {
                    bits |= 1UL << k;
                }
            }

            return bits;
        }
    }

    // '0'..'9', or 'a'..'z' except 'e', 'o', 't' and 'u'. Byte compares are unsigned, so x - lo < count is a range test.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector128<byte> InAlphabet(Vector128<byte> v)
    {
        var digit = Vector128.LessThan(v - Vector128.Create((byte)'0'), Vector128.Create((byte)10));
        var lower = Vector128.LessThan(v - Vector128.Create((byte)'a'), Vector128.Create((byte)26));
        var excluded = Vector128.Equals(v, Vector128.Create((byte)'e')) | Vector128.Equals(v, Vector128.Create((byte)'o')) |
            Vector128.LessThan(v - Vector128.Create((byte)'t'), Vector128.Create((byte)2));
        return digit | Vector128.AndNot(lower, excluded);
    }
}
