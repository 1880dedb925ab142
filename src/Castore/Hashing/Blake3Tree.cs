using System.Numerics;
using System.Runtime.CompilerServices;

namespace TvixFuseBuild.Castore.Hashing;

/// <summary>The chunk being filled: up to 16 blocks, the last of which is kept back for CHUNK_END (and maybe ROOT).</summary>
internal unsafe struct Blake3ChunkState
{
    public CvWords Cv;
    public ulong ChunkCounter;
    private BlockBytes _buffer; // Zero beyond _bufferLength, so it is always a correctly padded final block.
    private int _bufferLength;
    private int _blocksCompressed;
    private uint _flags;

    public Blake3ChunkState(ref readonly CvWords key, ulong chunkCounter, uint flags)
    {
        Cv = key;
        ChunkCounter = chunkCounter;
        _buffer = default;
        _bufferLength = 0;
        _blocksCompressed = 0;
        _flags = flags;
    }

    public readonly int Length => (Blake3.BlockLength * _blocksCompressed) + _bufferLength;

    private readonly uint StartFlag => _blocksCompressed == 0 ? Blake3.FlagChunkStart : 0;

    public void Reset(ref readonly CvWords key, ulong chunkCounter)
    {
        Cv = key;
        ChunkCounter = chunkCounter;
        ((Span<byte>)_buffer).Clear();
        _bufferLength = 0;
        _blocksCompressed = 0;
    }

    /// <summary>Adds input; the chunk must have room for it (at most <see cref="Blake3.ChunkLength"/> in all).</summary>
    public void Update(byte* input, nuint length, Blake3Level level)
    {
        if (_bufferLength > 0)
        {
            nuint take = Math.Min((nuint)(Blake3.BlockLength - _bufferLength), length);
            FillBuffer(input, take);
            input += take;
            length -= take;
            if (length == 0)
            {
                return;
            }

            // The buffered block is full and more input follows, so it is not the chunk's last block.
            CompressBuffer(level);
        }

        for (; length > Blake3.BlockLength; length -= Blake3.BlockLength, input += Blake3.BlockLength)
        {
            Blake3Backend.CompressInPlace(ref Cv, input, Blake3.BlockLength, ChunkCounter, _flags | StartFlag, level);
            _blocksCompressed++;
        }

        FillBuffer(input, length);
    }

    private void FillBuffer(byte* input, nuint length)
    {
        new ReadOnlySpan<byte>(input, (int)length).CopyTo(((Span<byte>)_buffer)[_bufferLength..]);
        _bufferLength += (int)length;
    }

    private void CompressBuffer(Blake3Level level)
    {
        fixed (byte* block = &_buffer[0])
        {
            Blake3Backend.CompressInPlace(ref Cv, block, Blake3.BlockLength, ChunkCounter, _flags | StartFlag, level);
        }

        ((Span<byte>)_buffer).Clear();
        _bufferLength = 0;
        _blocksCompressed++;
    }

    public readonly Blake3Output Output() =>
        new(in Cv, _buffer, (uint)_bufferLength, ChunkCounter, _flags | StartFlag | Blake3.FlagChunkEnd);
}

/// <summary>A node's last compression, not yet run: either its chaining value or, at the root, the output stream.</summary>
internal unsafe struct Blake3Output
{
    private CvWords _inputCv;
    private BlockBytes _block;
    private readonly uint _blockLength;
    private readonly ulong _counter;
    private readonly uint _flags;

    public Blake3Output(ref readonly CvWords inputCv, ReadOnlySpan<byte> block, uint blockLength, ulong counter, uint flags)
    {
        _inputCv = inputCv;
        block.CopyTo(_block);
        _blockLength = blockLength;
        _counter = counter;
        _flags = flags;
    }

    public static Blake3Output Parent(byte* leftAndRight, ref readonly CvWords key, uint flags) =>
        new(in key, new ReadOnlySpan<byte>(leftAndRight, Blake3.BlockLength), Blake3.BlockLength, 0, flags | Blake3.FlagParent);

    public void ChainingValue(byte* output, Blake3Level level)
    {
        CvWords cv = _inputCv;
        fixed (byte* block = &_block[0])
        {
            Blake3Backend.CompressInPlace(ref cv, block, _blockLength, _counter, _flags, level);
        }

        Blake3Backend.StoreCv(in cv, output);
    }

    /// <summary>The root's extended output, from byte 0: output block i is the root compressed with counter i.</summary>
    public void RootOutputBytes(Span<byte> output, Blake3Level level)
    {
        byte* bytes = stackalloc byte[Blake3.BlockLength];
        fixed (byte* block = &_block[0])
        {
            for (ulong counter = 0; !output.IsEmpty; counter++)
            {
                Blake3Backend.CompressXof(in _inputCv, block, _blockLength, counter, _flags | Blake3.FlagRoot, bytes, level);
                int n = Math.Min(output.Length, Blake3.BlockLength);
                new ReadOnlySpan<byte>(bytes, n).CopyTo(output);
                output = output[n..];
            }
        }
    }
}

/// <summary>
/// Hashing whole subtrees of the BLAKE3 tree with SIMD: leaves <see cref="Blake3Backend.Degree"/> chunks at a
/// time, then each layer of parents many at a time.
/// </summary>
[SkipLocalsInit]
internal static unsafe class Blake3Tree
{
    // Room for the chaining values of one layer; at least 2 for the scalar level.
    private const int MaxDegreeOr2 = Blake3Backend.MaxDegree;

    /// <summary>Hashes all of <paramref name="input"/> at once; the result is the root, ready for output.</summary>
    public static Blake3Output HashAll(byte* input, nuint length, ref readonly CvWords key, uint flags, Blake3Level level)
    {
        if (length <= Blake3.ChunkLength)
        {
            var chunk = new Blake3ChunkState(in key, 0, flags);
            chunk.Update(input, length, level);
            return chunk.Output();
        }

        byte* children = stackalloc byte[Blake3.BlockLength];
        CompressSubtreeToParentNode(input, length, in key, 0, flags, children, level);
        return Blake3Output.Parent(children, in key, flags);
    }

    /// <summary>
    /// Hashes a subtree of more than one chunk down to its two children's chaining values (64 bytes): the subtree's
    /// own node is left to the caller, who knows whether it is the root.
    /// </summary>
    public static void CompressSubtreeToParentNode(
        byte* input, nuint length, ref readonly CvWords key, ulong chunkCounter, uint flags, byte* output, Blake3Level level)
    {
        byte* cvs = stackalloc byte[MaxDegreeOr2 * Blake3.OutLength];
        byte* parents = stackalloc byte[MaxDegreeOr2 / 2 * Blake3.OutLength];
        nuint count = CompressSubtreeWide(input, length, in key, chunkCounter, flags, cvs, level);
        while (count > 2)
        {
            count = CompressParents(cvs, count, in key, flags, parents, level);
            Unsafe.CopyBlockUnaligned(cvs, parents, (uint)count * Blake3.OutLength);
        }

        Unsafe.CopyBlockUnaligned(output, cvs, 2 * Blake3.OutLength);
    }

    /// <summary>
    /// Hashes a subtree into the chaining values of its top layer that still fits one SIMD pass (up to
    /// max(degree, 2) of them, at least 2 when there is more than one chunk); returns how many.
    /// </summary>
    private static nuint CompressSubtreeWide(
        byte* input, nuint length, ref readonly CvWords key, ulong chunkCounter, uint flags, byte* output, Blake3Level level)
    {
        int degree = Blake3Backend.Degree(level);
        if (length <= (nuint)degree * Blake3.ChunkLength)
        {
            return CompressChunks(input, length, in key, chunkCounter, flags, output, level);
        }

        // The left subtree is the largest power-of-two number of whole chunks that leaves at least one byte.
        nuint leftLength = LeftLength(length);
        byte* cvs = stackalloc byte[2 * MaxDegreeOr2 * Blake3.OutLength];

        // The left side yields exactly max(degree, 2) values, or 1 when it is a single chunk (scalar level).
        nuint leftCount = CompressSubtreeWide(input, leftLength, in key, chunkCounter, flags, cvs, level);
        int leftDegree = leftLength == Blake3.ChunkLength ? 1 : Math.Max(degree, 2);
        nuint rightCount = CompressSubtreeWide(
            input + leftLength, length - leftLength, in key, chunkCounter + (leftLength / Blake3.ChunkLength), flags,
            cvs + (leftDegree * Blake3.OutLength), level);

        if (leftCount == 1)
        {
            // Scalar level at the leaves: return both chunks' values rather than merging, so there are always two.
            Unsafe.CopyBlockUnaligned(output, cvs, 2 * Blake3.OutLength);
            return 2;
        }

        return CompressParents(cvs, leftCount + rightCount, in key, flags, output, level);
    }

    /// <summary>Hashes up to degree chunks (the last one may be partial) into one chaining value each.</summary>
    private static nuint CompressChunks(
        byte* input, nuint length, ref readonly CvWords key, ulong chunkCounter, uint flags, byte* output, Blake3Level level)
    {
        nuint whole = length / Blake3.ChunkLength;
        Blake3Backend.HashMany(
            input, whole, Blake3.ChunkLength / Blake3.BlockLength, in key, chunkCounter, incrementCounter: true,
            flags, Blake3.FlagChunkStart, Blake3.FlagChunkEnd, output, level);

        nuint rest = length % Blake3.ChunkLength;
        if (rest == 0)
        {
            return whole;
        }

        var chunk = new Blake3ChunkState(in key, chunkCounter + whole, flags);
        chunk.Update(input + (whole * Blake3.ChunkLength), rest, level);
        chunk.Output().ChainingValue(output + (whole * Blake3.OutLength), level);
        return whole + 1;
    }

    /// <summary>Merges pairs of adjacent chaining values into parents; an odd last value passes through.</summary>
    public static nuint CompressParents(byte* cvs, nuint count, ref readonly CvWords key, uint flags, byte* output, Blake3Level level)
    {
        nuint pairs = count / 2;
        Blake3Backend.HashMany(cvs, pairs, 1, in key, 0, incrementCounter: false, flags | Blake3.FlagParent, 0, 0, output, level);
        if ((count & 1) == 0)
        {
            return pairs;
        }

        Unsafe.CopyBlockUnaligned(output + (pairs * Blake3.OutLength), cvs + (2 * pairs * Blake3.OutLength), Blake3.OutLength);
        return pairs + 1;
    }

    private static nuint LeftLength(nuint length)
    {
        nuint fullChunks = (length - 1) / Blake3.ChunkLength;
        return ((nuint)1 << BitOperations.Log2(fullChunks)) * Blake3.ChunkLength;
    }
}
