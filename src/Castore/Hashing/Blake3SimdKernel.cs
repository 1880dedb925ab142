using System.Runtime.CompilerServices;

namespace TvixFuseBuild.Castore.Hashing;

/// <summary>
/// One SIMD width for <see cref="Blake3SimdKernel"/>: lane i of every vector belongs to input i, so the rounds are
/// plain lane-wise arithmetic and only loading the message and storing the chaining values need shuffles.
/// Shaped for ReadyToRun: crossgen2 (.NET 10) precompiles no generic instantiation over a CoreLib vector type
/// (<c>Vector128&lt;uint&gt;</c> and wider: their ABI may change between runtime versions) and no constrained call to a
/// static virtual method, so <typeparamref name="TVec"/> is a struct of ours wrapping the vector and the members are
/// instance members called on <c>default(TLanes)</c>. Otherwise every kernel instantiation waits for the JIT at first use.
/// </summary>
internal unsafe interface IBlake3Lanes<TVec>
    where TVec : unmanaged
{
    /// <summary>How many inputs one vector holds.</summary>
    int Degree { get; }

    TVec Splat(uint value);

    TVec Xor(TVec a, TVec b);

    /// <summary>
    /// The G function on four state vectors and two message vectors. It is written out per width with the
    /// intrinsics inline: the JIT's inlining budget does not stretch to nested helper calls 56 times over.
    /// </summary>
    void G(ref TVec a, ref TVec b, ref TVec c, ref TVec d, TVec x, TVec y);

    /// <summary>The counter lanes: lane i is counter + i when incrementing (chunks), else counter (parents).</summary>
    void Counters(ulong counter, bool increment, out TVec low, out TVec high);

    /// <summary>
    /// Loads one 64-byte block from each input (input i at <paramref name="block"/> + <paramref name="offsets"/>[i])
    /// and transposes them: <paramref name="message"/>[w] receives word w of every input. Also prefetches the line
    /// at <paramref name="prefetch"/> + <paramref name="offsets"/>[i] for each input.
    /// </summary>
    void LoadTransposed(byte* block, nuint* offsets, byte* prefetch, TVec* message);

    /// <summary>The inverse for the result: <paramref name="cv"/>[w] holds word w of every input's chaining value;
    /// writes input i's 32 bytes to <paramref name="output"/> + 32 * i.</summary>
    void StoreTransposed(TVec* cv, byte* output);
}

/// <summary>
/// The many-inputs compression ("hash_many"), written once for every SIMD width. This file is compiled into Castore
/// (128 and 256 bits) and into TvixFuseBuild.Avx512 (512 bits): crossgen2 precompiles a generic instantiation only in
/// the assembly that defines the method, and each assembly is precompiled for its own instruction set.
/// </summary>
[SkipLocalsInit]
internal static unsafe class Blake3SimdKernel
{
    private const int PrefetchBlocks = 4;

    /// <summary>
    /// Hashes <paramref name="count"/> (1 to <c>Degree</c>) inputs of <paramref name="blocks"/> blocks each,
    /// lying back to back at <paramref name="input"/>, and writes their chaining values to <paramref name="output"/>.
    /// With fewer inputs than lanes, the spare lanes hash the last input again and their results are dropped: one
    /// pass of a wide kernel is still cheaper than narrower passes and single blocks.
    /// </summary>
    public static void Hash<TLanes, TVec>(
        byte* input, int count, int blocks, ref readonly CvWords key, ulong counter, bool incrementCounter,
        uint flags, uint flagsStart, uint flagsEnd, byte* output)
        where TLanes : struct, IBlake3Lanes<TVec>
        where TVec : unmanaged
    {
        TLanes lanes = default;
        nuint stride = (nuint)blocks * Blake3.BlockLength;
        nuint* offsets = stackalloc nuint[lanes.Degree];
        for (int lane = 0; lane < lanes.Degree; lane++)
        {
            offsets[lane] = (nuint)Math.Min(lane, count - 1) * stride;
        }

        // The message lives in an aligned stack buffer: the rounds read it as memory operands, which keeps all
        // registers for the 16 state vectors, and an aligned buffer keeps 64-byte loads within one cache line.
        byte* messageBuffer = stackalloc byte[(16 * sizeof(TVec)) + 64];
        TVec* m = (TVec*)(((nuint)messageBuffer + 63) & ~(nuint)63);

        TVec h0 = lanes.Splat(key[0]), h1 = lanes.Splat(key[1]), h2 = lanes.Splat(key[2]), h3 = lanes.Splat(key[3]);
        TVec h4 = lanes.Splat(key[4]), h5 = lanes.Splat(key[5]), h6 = lanes.Splat(key[6]), h7 = lanes.Splat(key[7]);
        lanes.Counters(counter, incrementCounter, out TVec counterLow, out TVec counterHigh);

        uint blockFlags = flags | flagsStart;
        for (int block = 0; block < blocks; block++)
        {
            if (block + 1 == blocks)
            {
                blockFlags |= flagsEnd;
            }

            // Many streams 1 KiB apart defeat the hardware prefetcher, so ask for each input's block four ahead; near
            // the end, for the start of the next group of inputs, which is usually hashed next.
            byte* current = input + ((nuint)block * Blake3.BlockLength);
            byte* prefetch = block + PrefetchBlocks < blocks
                ? current + (PrefetchBlocks * Blake3.BlockLength)
                : input + ((nuint)lanes.Degree * stride) + ((nuint)Math.Max(0, block + PrefetchBlocks - blocks) * Blake3.BlockLength);
            lanes.LoadTransposed(current, offsets, prefetch, m);

            TVec v0 = h0, v1 = h1, v2 = h2, v3 = h3, v4 = h4, v5 = h5, v6 = h6, v7 = h7;
            TVec v8 = lanes.Splat(0x6A09E667), v9 = lanes.Splat(0xBB67AE85);
            TVec v10 = lanes.Splat(0x3C6EF372), v11 = lanes.Splat(0xA54FF53A);
            TVec v12 = counterLow, v13 = counterHigh;
            TVec v14 = lanes.Splat(Blake3.BlockLength), v15 = lanes.Splat(blockFlags);

            // Round 1: message words 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15.
            lanes.G(ref v0, ref v4, ref v8, ref v12, m[0], m[1]);
            lanes.G(ref v1, ref v5, ref v9, ref v13, m[2], m[3]);
            lanes.G(ref v2, ref v6, ref v10, ref v14, m[4], m[5]);
            lanes.G(ref v3, ref v7, ref v11, ref v15, m[6], m[7]);
            lanes.G(ref v0, ref v5, ref v10, ref v15, m[8], m[9]);
            lanes.G(ref v1, ref v6, ref v11, ref v12, m[10], m[11]);
            lanes.G(ref v2, ref v7, ref v8, ref v13, m[12], m[13]);
            lanes.G(ref v3, ref v4, ref v9, ref v14, m[14], m[15]);

            // Round 2: message words 2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8.
            lanes.G(ref v0, ref v4, ref v8, ref v12, m[2], m[6]);
            lanes.G(ref v1, ref v5, ref v9, ref v13, m[3], m[10]);
            lanes.G(ref v2, ref v6, ref v10, ref v14, m[7], m[0]);
            lanes.G(ref v3, ref v7, ref v11, ref v15, m[4], m[13]);
            lanes.G(ref v0, ref v5, ref v10, ref v15, m[1], m[11]);
            lanes.G(ref v1, ref v6, ref v11, ref v12, m[12], m[5]);
            lanes.G(ref v2, ref v7, ref v8, ref v13, m[9], m[14]);
            lanes.G(ref v3, ref v4, ref v9, ref v14, m[15], m[8]);

            // Round 3: message words 3, 4, 10, 12, 13, 2, 7, 14, 6, 5, 9, 0, 11, 15, 8, 1.
            lanes.G(ref v0, ref v4, ref v8, ref v12, m[3], m[4]);
            lanes.G(ref v1, ref v5, ref v9, ref v13, m[10], m[12]);
            lanes.G(ref v2, ref v6, ref v10, ref v14, m[13], m[2]);
            lanes.G(ref v3, ref v7, ref v11, ref v15, m[7], m[14]);
            lanes.G(ref v0, ref v5, ref v10, ref v15, m[6], m[5]);
            lanes.G(ref v1, ref v6, ref v11, ref v12, m[9], m[0]);
            lanes.G(ref v2, ref v7, ref v8, ref v13, m[11], m[15]);
            lanes.G(ref v3, ref v4, ref v9, ref v14, m[8], m[1]);

            // Round 4: message words 10, 7, 12, 9, 14, 3, 13, 15, 4, 0, 11, 2, 5, 8, 1, 6.
            lanes.G(ref v0, ref v4, ref v8, ref v12, m[10], m[7]);
            lanes.G(ref v1, ref v5, ref v9, ref v13, m[12], m[9]);
            lanes.G(ref v2, ref v6, ref v10, ref v14, m[14], m[3]);
            lanes.G(ref v3, ref v7, ref v11, ref v15, m[13], m[15]);
            lanes.G(ref v0, ref v5, ref v10, ref v15, m[4], m[0]);
            lanes.G(ref v1, ref v6, ref v11, ref v12, m[11], m[2]);
            lanes.G(ref v2, ref v7, ref v8, ref v13, m[5], m[8]);
            lanes.G(ref v3, ref v4, ref v9, ref v14, m[1], m[6]);

            // Round 5: message words 12, 13, 9, 11, 15, 10, 14, 8, 7, 2, 5, 3, 0, 1, 6, 4.
            lanes.G(ref v0, ref v4, ref v8, ref v12, m[12], m[13]);
            lanes.G(ref v1, ref v5, ref v9, ref v13, m[9], m[11]);
            lanes.G(ref v2, ref v6, ref v10, ref v14, m[15], m[10]);
            lanes.G(ref v3, ref v7, ref v11, ref v15, m[14], m[8]);
            lanes.G(ref v0, ref v5, ref v10, ref v15, m[7], m[2]);
            lanes.G(ref v1, ref v6, ref v11, ref v12, m[5], m[3]);
            lanes.G(ref v2, ref v7, ref v8, ref v13, m[0], m[1]);
            lanes.G(ref v3, ref v4, ref v9, ref v14, m[6], m[4]);

            // Round 6: message words 9, 14, 11, 5, 8, 12, 15, 1, 13, 3, 0, 10, 2, 6, 4, 7.
            lanes.G(ref v0, ref v4, ref v8, ref v12, m[9], m[14]);
            lanes.G(ref v1, ref v5, ref v9, ref v13, m[11], m[5]);
            lanes.G(ref v2, ref v6, ref v10, ref v14, m[8], m[12]);
            lanes.G(ref v3, ref v7, ref v11, ref v15, m[15], m[1]);
            lanes.G(ref v0, ref v5, ref v10, ref v15, m[13], m[3]);
            lanes.G(ref v1, ref v6, ref v11, ref v12, m[0], m[10]);
            lanes.G(ref v2, ref v7, ref v8, ref v13, m[2], m[6]);
            lanes.G(ref v3, ref v4, ref v9, ref v14, m[4], m[7]);

            // Round 7: message words 11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13.
            lanes.G(ref v0, ref v4, ref v8, ref v12, m[11], m[15]);
            lanes.G(ref v1, ref v5, ref v9, ref v13, m[5], m[0]);
            lanes.G(ref v2, ref v6, ref v10, ref v14, m[1], m[9]);
            lanes.G(ref v3, ref v7, ref v11, ref v15, m[8], m[6]);
            lanes.G(ref v0, ref v5, ref v10, ref v15, m[14], m[10]);
            lanes.G(ref v1, ref v6, ref v11, ref v12, m[2], m[12]);
            lanes.G(ref v2, ref v7, ref v8, ref v13, m[3], m[4]);
            lanes.G(ref v3, ref v4, ref v9, ref v14, m[7], m[13]);

            h0 = lanes.Xor(v0, v8);
            h1 = lanes.Xor(v1, v9);
            h2 = lanes.Xor(v2, v10);
            h3 = lanes.Xor(v3, v11);
            h4 = lanes.Xor(v4, v12);
            h5 = lanes.Xor(v5, v13);
            h6 = lanes.Xor(v6, v14);
            h7 = lanes.Xor(v7, v15);
            blockFlags = flags;
        }

        // Reuse the message buffer for the transposition of the result.
        m[0] = h0;
        m[1] = h1;
        m[2] = h2;
        m[3] = h3;
        m[4] = h4;
        m[5] = h5;
        m[6] = h6;
        m[7] = h7;
        if (count == lanes.Degree)
        {
            lanes.StoreTransposed(m, output);
        }
        else
        {
            byte* all = stackalloc byte[lanes.Degree * Blake3.OutLength];
            lanes.StoreTransposed(m, all);
            Unsafe.CopyBlockUnaligned(output, all, (uint)(count * Blake3.OutLength));
        }
    }
}
