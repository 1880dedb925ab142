using System.Runtime.Intrinsics.X86;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Hashing;

namespace TvixFuseBuild.Kernels.Tests;

/// <summary>
/// The NativeAOT kernels libraries (src/Kernels), loaded into this (JIT) process the way the NativeAOT tool loads them,
/// against this process's own kernels: the managed BLAKE3 hash_many at this CPU's width (which Castore.Tests check
/// against the official vectors) and a byte-by-byte nixbase32 classifier. This machine must have at least x86-64-v3:
/// the libraries cannot run anywhere else, and a test that cannot run them fails rather than pass unseen.
/// </summary>
public sealed unsafe class SimdKernelLibraryTests
{
    private static readonly string Directory = Path.Combine(AppContext.BaseDirectory, "kernels");

    private static int MachineLevel()
    {
        int level = SimdKernelLibrary.X86Level();
        Assert.True(level >= 3, $"this machine is x86-64-v{level}: the kernels libraries need x86-64-v3 at least, so they cannot be tested here");
        return level;
    }

    private static IEnumerable<int> Levels() => Enumerable.Range(3, MachineLevel() - 2);

    private static SimdKernelLibrary.Loaded Load(int level) =>
        SimdKernelLibrary.Load(Path.Combine(Directory, SimdKernelLibrary.FileName(level)), level);

    [Fact]
    public void TheMachinesLevelIsTheRuntimesOwnView()
    {
        // The JIT's answers come from the runtime's CPUID and XGETBV checks: the library's runtime makes the same ones.
        bool v3 = Avx2.IsSupported && Bmi1.IsSupported && Bmi2.IsSupported && Fma.IsSupported && Lzcnt.IsSupported;
        bool v4 = v3 && Avx512F.IsSupported && Avx512BW.IsSupported && Avx512CD.IsSupported && Avx512DQ.IsSupported;
        int expected = v4 ? 4 : v3 ? 3 : 2;
        Assert.Equal(expected, Math.Max(2, SimdKernelLibrary.X86Level()));
    }

    [Fact]
    public void BothLibrariesAreBuilt()
    {
        foreach (int level in new[] { 3, 4 })
        {
            string path = Path.Combine(Directory, SimdKernelLibrary.FileName(level));
            Assert.True(File.Exists(path), $"{path} was not built");
        }
    }

    [Fact]
    public void HashManyIsTheManagedKernels()
    {
        var random = new Random(1603);
        foreach (int level in Levels())
        {
            var library = Load(level);
            foreach (int blocks in new[] { 1, 16 })
            {
                for (int count = 2; count <= 40; count++)
                {
                    var input = new byte[count * blocks * Blake3.BlockLength];
                    random.NextBytes(input);
                    var key = new uint[8];
                    for (int i = 0; i < key.Length; i++)
                    {
                        key[i] = (uint)random.Next();
                    }

                    ulong counter = (ulong)random.NextInt64() >> random.Next(0, 64);
                    bool increment = blocks == 16;
                    uint flags = blocks == 16 ? 0u : 4u;
                    uint start = blocks == 16 ? 1u : 0u;
                    uint end = blocks == 16 ? 2u : 0u;

                    var expected = new byte[count * Blake3.OutLength];
                    var actual = new byte[count * Blake3.OutLength];
                    fixed (byte* i = input)
                    fixed (uint* k = key)
                    fixed (byte* e = expected)
                    fixed (byte* a = actual)
                    {
                        Blake3Backend.HashMany(i, (nuint)count, blocks, in *(CvWords*)k, counter, increment, flags, start, end, e, Blake3Backend.Own);
                        library.HashMany(i, (nuint)count, blocks, k, counter, increment ? 1 : 0, flags, start, end, a);
                    }

                    Assert.True(expected.AsSpan().SequenceEqual(actual), $"x86-64-v{level}, {count} inputs of {blocks} blocks");
                }
            }
        }
    }

    [Fact]
    public void HashManyFromManyThreadsAtOnce()
    {
        // Each thread is attached to the library's own runtime at its first call.
        foreach (int level in Levels())
        {
            var library = Load(level);
            var input = new byte[64 * 1024];
            new Random(7).NextBytes(input);
            var expected = new byte[64 * Blake3.OutLength];
            fixed (byte* i = input)
            fixed (byte* e = expected)
            {
                Blake3Backend.HashMany(i, 64, 16, in Blake3.IVWords, 0, true, 0, 1, 2, e, Blake3Backend.Own);
            }

            int mismatches = 0;
            Parallel.For(0, 64, new ParallelOptions { MaxDegreeOfParallelism = 8 }, _ =>
            {
                var actual = new byte[64 * Blake3.OutLength];
                CvWords iv = Blake3.IVWords;
                fixed (byte* i = input)
                fixed (byte* a = actual)
                {
                    library.HashMany(i, 64, 16, (uint*)&iv, 0, 1, 0, 1, 2, a);
                }

                if (!expected.AsSpan().SequenceEqual(actual))
                {
                    Interlocked.Increment(ref mismatches);
                }
            });
            Assert.Equal(0, mismatches);
        }
    }

    [Fact]
    public void ClassifyMarksTheNixBase32Alphabet()
    {
        var random = new Random(32);
        const string Alphabet = "0123456789abcdfghijklmnpqrsvwxyz";
        foreach (int level in Levels())
        {
            var library = Load(level);
            for (int round = 0; round < 50; round++)
            {
                int blocks = random.Next(1, 70);
                var data = new byte[blocks * 64];
                for (int i = 0; i < data.Length; i++)
                {
                    // Half alphabet (long runs are the interesting case), half any byte.
                    data[i] = random.Next(2) == 0 ? (byte)Alphabet[random.Next(Alphabet.Length)] : (byte)random.Next(256);
                }

                var masks = new ulong[blocks];
                fixed (byte* d = data)
                fixed (ulong* m = masks)
                {
                    library.Classify(d, blocks, m);
                }

                for (int i = 0; i < data.Length; i++)
                {
                    bool expected = Alphabet.Contains((char)data[i]);
                    bool actual = (masks[i / 64] >> (i % 64) & 1) != 0;
                    Assert.True(expected == actual, $"x86-64-v{level}: byte {i} (0x{data[i]:x2})");
                }
            }
        }
    }

    [Fact]
    public void EveryByteValueIsClassified()
    {
        var data = new byte[256];
        for (int i = 0; i < data.Length; i++)
        {
            data[i] = (byte)i;
        }

        foreach (int level in Levels())
        {
            var masks = new ulong[4];
            fixed (byte* d = data)
            fixed (ulong* m = masks)
            {
                Load(level).Classify(d, 4, m);
            }

            string found = new(Enumerable.Range(0, 256).Where(i => (masks[i / 64] >> (i % 64) & 1) != 0).Select(i => (char)i).ToArray());
            Assert.Equal("0123456789abcdfghijklmnpqrsvwxyz", found);
        }
    }

    [Fact]
    public void ThisProcesssOwnFaultsStillBecomeExceptionsOnceALibraryRuns()
    {
        // The library's runtime installs its own SIGSEGV handler; for a fault outside its code it must hand over to
        // the one before it, which turns a null dereference here into a NullReferenceException.
        foreach (int level in Levels())
        {
            var masks = new ulong[1];
            var block = new byte[64];
            fixed (byte* b = block)
            fixed (ulong* m = masks)
            {
                Load(level).Classify(b, 1, m);
            }

            Assert.Throws<NullReferenceException>(() => Dereference(null));
        }

        static int Dereference(int[]? array) => array![0];
    }

    [Fact]
    public void ALibraryThatIsNotWhatItsNameSaysIsRefused()
    {
        MachineLevel();
        string v3 = Path.Combine(Directory, SimdKernelLibrary.FileName(3));
        var wrong = Assert.Throws<SimdKernelLibraryException>(() => SimdKernelLibrary.Load(v3, 4));
        Assert.Contains("not compiled for x86-64-v4", wrong.Message);

        string missing = Path.Combine(Directory, "no-such-kernels.so");
        var absent = Assert.Throws<SimdKernelLibraryException>(() => SimdKernelLibrary.Load(missing, 3));
        Assert.Contains(missing, absent.Message);

        // Any shared library without the entry points: libc.
        var foreign = Assert.Throws<SimdKernelLibraryException>(() => SimdKernelLibrary.Load("libc.so.6", 3));
        Assert.Contains("no entry point tvix_kernels_abi_version", foreign.Message);
    }
}
