using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using TvixFuseBuild.Castore;

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
            // The AVX-512 classifier lives in TvixFuseBuild.Avx512, touched only where the CPU has AVX-512 (Avx512Cpu).
            if (Avx512Cpu.Present && NixBase32Avx512.IsSupported)
            {
                Search(haystack, start, hits, default(Avx512Classifier));
            }
            else if (Avx2.IsSupported)
            {
                Search(haystack, start, hits, default(Avx2Classifier));
            }
            else if (SimdKernelLibrary.NixBase32Classify((nuint)haystack.Length) is var library && library != null)
            {
                // The NativeAOT tool on an AVX2 or AVX-512 machine: its own code has neither (SimdKernelLibrary).
                Search(haystack, start, hits, new LibraryClassifier(library));
            }
            else
            {
                Search(haystack, start, hits, default(PortableClassifier));
            }
        }
    }

    // Generic over the classifier so that one loop is compiled per instruction set. No AggressiveOptimization here or
    // below: it keeps a method out of the ReadyToRun image.
    private void Search<TClassifier>(ReadOnlySpan<byte> haystack, byte* start, NeedleHits hits, TClassifier classifier)
        where TClassifier : struct, IClassifier
    {
        int n = haystack.Length;
        int run = 0; // alphabet bytes ending at the previous block's end (capped at 64)
        int blocks = n / 64;

        // The classifier fills masks for a batch of blocks (4 KiB of haystack, 512 bytes of masks: both stay in L1), so
        // that the AVX-512 one, in another assembly, is called once per batch rather than per block.
        const int Batch = 64;
        ulong* masks = stackalloc ulong[Batch];
        for (int first = 0; first < blocks; first += Batch)
        {
            int count = Math.Min(Batch, blocks - first);
            classifier.Classify(start + ((nint)first * 64), count, masks);

            // Two blocks per step, with one well-predicted branch. A window of 32 alphabet bytes either lies inside a
            // block (which then holds at least 32 alphabet bytes: a popcount tells) or crosses into it from the run
            // carried in (its leading alphabet bytes tell). Only then are the blocks looked at closely.
            int k = 0;
            for (; k + 1 < count; k += 2)
            {
                ulong m1 = masks[k];
                ulong m2 = masks[k + 1];
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

                int at = (first + k) * 64;
                run = Block(haystack, at, m1, run, hits);
                run = Block(haystack, at + 64, m2, run, hits);
            }

            if (k < count)
            {
                run = Block(haystack, (first + k) * 64, masks[k], run, hits);
            }
        }

        int i = blocks * 64;
        if (i < n)
        {
            // The last partial block, zero padded (zero is not in the alphabet).
            byte* tail = stackalloc byte[64];
            var tailSpan = new Span<byte>(tail, 64);
            tailSpan.Clear();
            haystack[i..].CopyTo(tailSpan);
            classifier.Classify(tail, 1, masks);
            Block(haystack, i, masks[0], run, hits);
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

    /// <summary>Classifies <c>blocks</c> 64-byte blocks: bit j of <c>masks[k]</c> is set when byte 64k + j is in the nixbase32 alphabet.</summary>
    internal interface IClassifier
    {
        void Classify(byte* p, int blocks, ulong* masks);
    }

    internal readonly struct Avx512Classifier : IClassifier
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Classify(byte* p, int blocks, ulong* masks) => NixBase32Avx512.Classify(p, blocks, masks);
    }

    internal readonly struct Avx2Classifier : IClassifier
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Classify(byte* p, int blocks, ulong* masks) => NixBase32Avx2.Classify(p, blocks, masks);
    }

    internal readonly struct LibraryClassifier(delegate* unmanaged<byte*, int, ulong*, void> classify) : IClassifier
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Classify(byte* p, int blocks, ulong* masks) => classify(p, blocks, masks);
    }

    /// <summary>
    /// Range compares on 128-bit vectors (Arm64, x64 without AVX2), or bytewise. (Wider vectors imply AVX2 or
    /// AVX-512BW on x64, which have their own classifiers.)
    /// </summary>
    internal readonly struct PortableClassifier : IClassifier
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void Classify(byte* p, int blocks, ulong* masks)
        {
            for (int k = 0; k < blocks; k++)
            {
                masks[k] = Classify64(p + (64 * k));
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static ulong Classify64(byte* p)
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
