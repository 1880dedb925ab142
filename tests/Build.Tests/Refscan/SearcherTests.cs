using System.Text;
using TvixFuseBuild.Build.Refscan;
using static TvixFuseBuild.Build.Tests.Refscan.RefscanTestData;

namespace TvixFuseBuild.Build.Tests.Refscan;

public sealed class SearcherTests
{
    public static IEnumerable<object[]> VectorNames() => VectorCases().Select(c => new object[] { c.Name });

    [Theory]
    [MemberData(nameof(VectorNames))]
    public void VectorsPassWithEveryEngine(string name)
    {
        var c = VectorCases().Single(v => v.Name == name);
        int engines = 0;
        foreach (var needles in Engines(c.Needles))
        {
            engines++;
            var scanner = new ReferenceScanner(needles);
            Assert.Equal(c.Found, scanner.Scan(c.Haystack).ToArray());
        }

        // The sparse Aho–Corasick form too (used when the dense table would be too big).
        var sparse = AhoCorasickSearcher.Create(c.Needles, forceSparse: true);
        Assert.False(sparse.IsDense);
        var hits = new NeedleHits(c.Needles.Length);
        sparse.Search(c.Haystack, hits);
        Assert.Equal(c.Found, hits.ToImmutableArray().ToArray());

        bool nix = c.Needles.Length > 0 && c.Needles.All(n => NeedleSet.IsNixHash(n));
        Assert.Equal(nix ? 2 : 1, engines);
    }

    [Theory]
    [MemberData(nameof(VectorNames))]
    public void VectorsPassAcrossEveryStreamBoundary(string name)
    {
        var c = VectorCases().Single(v => v.Name == name);
        foreach (var needles in Engines(c.Needles))
        {
            var scanner = new ReferenceScanner(needles);

            // Two pieces, split at every position.
            for (int split = 0; split <= c.Haystack.Length; split++)
            {
                var hits = needles.CreateHits();
                var stream = scanner.CreateStream(hits);
                stream.Write(c.Haystack.AsSpan(0, split));
                stream.Write(c.Haystack.AsSpan(split));
                Assert.Equal(c.Found, hits.ToImmutableArray().ToArray());
            }

            // One byte at a time, and in pieces of every size.
            for (int piece = 1; piece <= c.Haystack.Length; piece++)
            {
                var hits = needles.CreateHits();
                var stream = scanner.CreateStream(hits);
                for (int at = 0; at < c.Haystack.Length; at += piece)
                {
                    stream.Write(c.Haystack.AsSpan(at, Math.Min(piece, c.Haystack.Length - at)));
                }

                Assert.Equal(c.Found, hits.ToImmutableArray().ToArray());
            }
        }
    }

    [Fact]
    public void TheNixEngineIsChosenOnlyForNixHashes()
    {
        var random = new Random(1);
        Assert.Equal(RefscanEngine.NixHash, NeedleSet.Create([RandomNixHash(random), RandomNixHash(random)]).Engine);
        Assert.Equal(RefscanEngine.General, NeedleSet.Create([RandomNixHash(random), "short"u8.ToArray()]).Engine);
        Assert.Equal(RefscanEngine.General, NeedleSet.Create([]).Engine);
        Assert.Equal(RefscanEngine.General, NeedleSet.FromStrings(["eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"]).Engine); // 'e' is not in the alphabet
        Assert.Throws<ArgumentException>(() => NeedleSet.FromStrings(["abc"], RefscanEngine.NixHash));
    }

    [Fact]
    public void EmptyNeedlesAreFoundInEveryObjectEvenAnEmptyOne()
    {
        var scanner = new ReferenceScanner(NeedleSet.FromStrings(["", "a", ""]));
        Assert.Equal([0, 2], scanner.Scan([]).ToArray());
        Assert.Equal([0, 1, 2], scanner.Scan("xax"u8).ToArray());
        var hits = scanner.Needles.CreateHits();
        scanner.CreateStream(hits);
        Assert.Equal([0, 2], hits.ToImmutableArray().ToArray());
    }

    [Fact]
    public void NeedlesLongerThanTheHaystackAndNeedlesInsideNeedles()
    {
        var scanner = new ReferenceScanner(NeedleSet.FromStrings(["abcd", "bc", "c", "abcdefgh", "cd", "x"]));
        Assert.Equal([0, 1, 2, 4], scanner.Scan("abcd"u8).ToArray());
        Assert.Equal([2], scanner.Scan("c"u8).ToArray());
        Assert.Empty(scanner.Scan("abc"u8[..0]));
    }

    [Fact]
    public void EveryByteValueWorksInTheGeneralEngine()
    {
        // 256 distinct bytes in the needles: the byte-class table has no spare class.
        byte[][] needles = [.. Enumerable.Range(0, 256).Select(b => new byte[] { (byte)b, (byte)(255 - b) })];
        var scanner = new ReferenceScanner(NeedleSet.Create(needles));
        byte[] haystack = [0, 255, 7, 248, 128, 128, 127];
        Assert.Equal(Naive(needles, haystack), scanner.Scan(haystack).ToArray());
    }

    [Fact]
    public void RandomHaystacksAgreeWithBruteForce()
    {
        var random = new Random(20240611);
        for (int round = 0; round < 300; round++)
        {
            bool nix = round % 2 == 0;
            int count = random.Next(0, 40);
            var needles = new byte[count][];
            for (int i = 0; i < count; i++)
            {
                needles[i] = nix ? RandomNixHash(random) : RandomBytes(random, random.Next(0, 12), alphabetSize: 4);
            }

            if (count > 1 && random.Next(4) == 0)
            {
                needles[^1] = needles[0]; // a duplicate
            }

            // Alphabet-heavy haystacks, so long runs of candidates occur, with needles planted at random offsets.
            var haystack = nix
                ? RandomFrom(random, random.Next(0, 700), Encoding.ASCII.GetBytes(NeedleSet.NixBase32Alphabet + "e-/\0"))
                : RandomBytes(random, random.Next(0, 700), alphabetSize: 4);
            for (int plant = random.Next(0, 6); plant > 0 && count > 0; plant--)
            {
                var needle = needles[random.Next(count)];
                if (needle.Length <= haystack.Length)
                {
                    needle.CopyTo(haystack, random.Next(0, haystack.Length - needle.Length + 1));
                }
            }

            int[] expected = Naive(needles, haystack);
            foreach (var set in Engines(needles))
            {
                Assert.Equal(expected, new ReferenceScanner(set).Scan(haystack).ToArray());
                int split = random.Next(0, haystack.Length + 1);
                var hits = set.CreateHits();
                var stream = new ReferenceScanner(set).CreateStream(hits);
                stream.Write(haystack.AsSpan(0, split));
                stream.Write(haystack.AsSpan(split));
                Assert.Equal(expected, hits.ToImmutableArray().ToArray());
            }

            var sparse = AhoCorasickSearcher.Create(needles, forceSparse: true);
            var sparseHits = new NeedleHits(count);
            sparse.Search(haystack, sparseHits);
            Assert.Equal(expected.Where(i => needles[i].Length > 0), sparseHits.ToImmutableArray());
        }
    }

    [Fact]
    public void TheNixEngineFindsHashesAtEveryOffsetOfALongRun()
    {
        // One long run of alphabet bytes with needles at every offset modulo 64 (the block size) and both ends.
        var random = new Random(7);
        var needles = Enumerable.Range(0, 70).Select(_ => RandomNixHash(random)).ToArray();
        var haystack = new byte[64 * 40 + 17];
        for (int i = 0; i < haystack.Length; i++)
        {
            haystack[i] = (byte)'0';
        }

        int at = 0;
        var planted = new List<int>();
        for (int i = 0; i < 66 && at + 32 <= haystack.Length; i++, at += 33)
        {
            needles[i].CopyTo(haystack, at);
            planted.Add(i);
        }

        needles[69].CopyTo(haystack, haystack.Length - 32);
        planted.Add(69);
        int[] expected = Naive(needles, haystack);
        Assert.Equal(planted.Order(), expected.Where(i => planted.Contains(i)));
        foreach (var set in Engines(needles))
        {
            Assert.Equal(RefscanEngine.NixHash, NeedleSet.Create(needles).Engine);
            Assert.Equal(expected, new ReferenceScanner(set).Scan(haystack).ToArray());
        }
    }

    [Fact]
    public void TheNixEngineFindsHashesAcrossTheClassifiersBatches()
    {
        // The haystack is classified 4 KiB (64 blocks) at a time: needles across those boundaries, in runs that start
        // a batch earlier, an odd number of blocks in the last batch, and a partial block at the end.
        var random = new Random(11);
        var needles = Enumerable.Range(0, 12).Select(_ => RandomNixHash(random)).ToArray();
        var haystack = RandomFrom(random, (64 * 131) + 5, Encoding.ASCII.GetBytes(NeedleSet.NixBase32Alphabet + "e-/\0"));
        int[] offsets = [4096 - 96, 4096 - 31, 4096 + 44, 8192 - 16, 8192 + 48, (64 * 130) - 20, haystack.Length - 32];
        for (int i = 0; i < offsets.Length; i++)
        {
            needles[i].CopyTo(haystack, offsets[i]);
        }

        int[] expected = Naive(needles, haystack);
        Assert.Equal(Enumerable.Range(0, offsets.Length), expected);
        foreach (var set in Engines(needles))
        {
            Assert.Equal(expected, new ReferenceScanner(set).Scan(haystack).ToArray());
        }
    }

    [Fact]
    public void NeedleHitsAreASet()
    {
        var hits = new NeedleHits(130);
        Assert.True(hits.Add(129));
        Assert.False(hits.Add(129));
        Assert.True(hits.Add(0));
        Assert.Equal(2, hits.Count);
        Assert.True(hits.Contains(129));
        Assert.False(hits.Contains(64));
        var other = new NeedleHits(130);
        other.Add(64);
        other.Add(0);
        hits.UnionWith(other);
        Assert.Equal([0, 64, 129], hits.ToImmutableArray().ToArray());
        Assert.False(hits.AllFound);
        Assert.Throws<ArgumentException>(() => hits.UnionWith(new NeedleHits(3)));
        Assert.True(new NeedleHits(0).AllFound);
    }

    private static byte[] RandomBytes(Random random, int length, int alphabetSize)
    {
        var bytes = new byte[length];
        for (int i = 0; i < length; i++)
        {
            bytes[i] = (byte)('a' + random.Next(alphabetSize));
        }

        return bytes;
    }

    internal static byte[] RandomFrom(Random random, int length, byte[] alphabet)
    {
        var bytes = new byte[length];
        for (int i = 0; i < length; i++)
        {
            // Mostly alphabet bytes, with a few breaks.
            bytes[i] = random.Next(50) == 0 ? alphabet[^(1 + random.Next(4))] : alphabet[random.Next(32)];
        }

        return bytes;
    }
}

public sealed unsafe class ClassifierTests
{
    private static ulong Portable(byte[] block)
    {
        fixed (byte* p = block)
        {
            ulong mask;
            default(NixHashSearcher.PortableClassifier).Classify(p, 1, &mask);
            return mask;
        }
    }

    private static ulong Avx2(byte[] block)
    {
        fixed (byte* p = block)
        {
            ulong mask;
            default(NixHashSearcher.Avx2Classifier).Classify(p, 1, &mask);
            return mask;
        }
    }

    private static ulong Avx512(byte[] block)
    {
        fixed (byte* p = block)
        {
            ulong mask;
            default(NixHashSearcher.Avx512Classifier).Classify(p, 1, &mask);
            return mask;
        }
    }

    private static List<(string Name, Func<byte[], ulong[]> Classify)> ManyClassifiers()
    {
        var list = new List<(string, Func<byte[], ulong[]>)> { ("portable", Many<NixHashSearcher.PortableClassifier>) };
        if (System.Runtime.Intrinsics.X86.Avx2.IsSupported)
        {
            list.Add(("avx2", Many<NixHashSearcher.Avx2Classifier>));
        }

        if (System.Runtime.Intrinsics.X86.Avx512BW.IsSupported)
        {
            list.Add(("avx512", Many<NixHashSearcher.Avx512Classifier>));
        }

        return list;
    }

    private static ulong[] Many<T>(byte[] blocks)
        where T : struct, NixHashSearcher.IClassifier
    {
        var masks = new ulong[blocks.Length / 64];
        fixed (byte* p = blocks)
        fixed (ulong* m = masks)
        {
            default(T).Classify(p, masks.Length, m);
        }

        return masks;
    }

    [Fact]
    public void EveryClassifierAgreesWithTheAlphabetForEveryByteAtEveryPosition()
    {
        var alphabet = NeedleSet.NixBase32Alphabet.Select(c => (byte)c).ToHashSet();
        var classifiers = new List<(string Name, Func<byte[], ulong> Classify)>
        {
            ("portable", Portable),
        };
        if (System.Runtime.Intrinsics.X86.Avx2.IsSupported)
        {
            classifiers.Add(("avx2", Avx2));
        }

        if (System.Runtime.Intrinsics.X86.Avx512BW.IsSupported)
        {
            classifiers.Add(("avx512", Avx512));
        }

        var block = new byte[64];
        for (int value = 0; value < 256; value++)
        {
            for (int position = 0; position < 64; position++)
            {
                Array.Fill(block, (byte)'e');
                block[position] = (byte)value;
                ulong expected = alphabet.Contains((byte)value) ? 1UL << position : 0;
                foreach (var (name, classify) in classifiers)
                {
                    Assert.True(expected == classify(block), $"{name}: byte 0x{value:x2} at {position}");
                }
            }
        }

        // Several blocks at once, as the search loop asks: the same masks as one at a time.
        var random = new Random(3);
        var blocks = SearcherTests.RandomFrom(random, 64 * 5, Encoding.ASCII.GetBytes(NeedleSet.NixBase32Alphabet + "e-/\0"));
        var single = Enumerable.Range(0, 5).Select(k => Portable(blocks[(64 * k)..(64 * (k + 1))])).ToArray();
        foreach (var (name, classifyMany) in ManyClassifiers())
        {
            Assert.True(single.SequenceEqual(classifyMany(blocks)), name);
        }

        // And a block of alphabet bytes with one outsider.
        Array.Fill(block, (byte)'z');
        block[17] = (byte)'u';
        foreach (var (name, classify) in classifiers)
        {
            Assert.Equal(~(1UL << 17), classify(block));
        }
    }
}
