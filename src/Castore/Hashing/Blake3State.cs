using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace TvixFuseBuild.Castore.Hashing;

/// <summary>
/// The incremental hashing state behind <see cref="Blake3Hasher"/>, as a struct so one-shot callers can keep it on
/// the stack. Completed subtrees wait on a stack of chaining values and are merged lazily: a value is merged only
/// once more input proves it is not the root's child on the right edge.
/// </summary>
[SkipLocalsInit]
internal unsafe struct Blake3State
{
    // 2^54 chunks is far more than any input; lazy merging can leave one extra entry.
    private const int MaxDepth = 54;

    [InlineArray((MaxDepth + 1) * Blake3.OutLength)]
    private struct CvStack
    {
        private byte _element;
    }

    private CvWords _key;
    private Blake3ChunkState _chunk;
    private CvStack _cvStack;
    private int _cvStackLength;
    private readonly uint _flags;
    private readonly Blake3Level _level;

    public Blake3State(ref readonly CvWords key, uint flags, Blake3Level level)
    {
        _key = key;
        _flags = flags;
        _level = level;
        _chunk = new Blake3ChunkState(in key, 0, flags);
        _cvStackLength = 0;
    }

    public void Reset()
    {
        _chunk.Reset(in _key, 0);
        _cvStackLength = 0;
    }

    public void Update(byte* input, nuint length)
    {
        byte* cv = stackalloc byte[2 * Blake3.OutLength];

        // Finish a partial chunk first. Once full, it is finalized only when more input follows: if the input ends
        // here it may be the root, which needs the ROOT flag. That is why the last chunk is always held back.
        if (_chunk.Length > 0)
        {
            nuint take = Math.Min((nuint)(Blake3.ChunkLength - _chunk.Length), length);
            _chunk.Update(input, take, _level);
            input += take;
            length -= take;
            if (length == 0)
            {
                return;
            }

            _chunk.Output().ChainingValue(cv, _level);
            PushCv(cv, _chunk.ChunkCounter);
            _chunk.Reset(in _key, _chunk.ChunkCounter + 1);
        }

        // With more than one chunk left, hash the largest subtree we can at once. It must be a power-of-two number
        // of chunks that divides the count so far (a subtree of the tree of the whole input), and it yields its two
        // children rather than its own value, so even when it turns out to be all the input, the root is still ours
        // to finalize.
        while (length > Blake3.ChunkLength)
        {
            nuint subtreeLength = (nuint)1 << BitOperations.Log2(length);
            ulong countSoFar = _chunk.ChunkCounter * Blake3.ChunkLength;
            while (((ulong)(subtreeLength - 1) & countSoFar) != 0)
            {
                subtreeLength /= 2;
            }

            ulong subtreeChunks = subtreeLength / Blake3.ChunkLength;
            if (subtreeLength <= Blake3.ChunkLength)
            {
                var chunk = new Blake3ChunkState(in _key, _chunk.ChunkCounter, _flags);
                chunk.Update(input, subtreeLength, _level);
                chunk.Output().ChainingValue(cv, _level);
                PushCv(cv, chunk.ChunkCounter);
            }
            else
            {
                Blake3Tree.CompressSubtreeToParentNode(input, subtreeLength, in _key, _chunk.ChunkCounter, _flags, cv, _level);

                PushCv(cv, _chunk.ChunkCounter);
                PushCv(cv + Blake3.OutLength, _chunk.ChunkCounter + (subtreeChunks / 2));
            }

            _chunk.ChunkCounter += subtreeChunks;
            input += subtreeLength;
            length -= subtreeLength;
        }

        // At most one chunk is left. It follows everything on the stack, so the merges it proves can happen now;
        // finalizing then only has to merge the right edge.
        if (length > 0)
        {
            _chunk.Update(input, length, _level);
            MergeCvStack(_chunk.ChunkCounter);
        }
    }

    /// <summary>
    /// Appends a subtree hashed elsewhere (on another thread): its chaining value, and its size, a power of two
    /// number of chunks that divides the chunks so far. The subtree must not be all of the input; there is no partial
    /// chunk pending.
    /// </summary>
    public void PushSubtree(byte* cv, ulong chunks)
    {
        Debug.Assert(_chunk.Length == 0 && BitOperations.IsPow2(chunks) && _chunk.ChunkCounter % chunks == 0);
        PushCv(cv, _chunk.ChunkCounter);
        _chunk.ChunkCounter += chunks;
    }

    public readonly void Finalize(Span<byte> output)
    {
        if (_cvStackLength == 0)
        {
            _chunk.Output().RootOutputBytes(output, _level);
            return;
        }

        // With bytes in the chunk, it is the rightmost leaf; otherwise the top two subtrees on the stack are the
        // root's last children (their merge was deferred for exactly this).
        byte* block = stackalloc byte[Blake3.BlockLength];
        int remaining = _cvStackLength;
        Blake3Output node;
        if (_chunk.Length > 0)
        {
            node = _chunk.Output();
        }
        else
        {
            remaining -= 2;
            CopyCv(remaining, block);
            CopyCv(remaining + 1, block + Blake3.OutLength);
            node = Blake3Output.Parent(block, in _key, _flags);
        }

        while (remaining > 0)
        {
            remaining--;
            CopyCv(remaining, block);
            node.ChainingValue(block + Blake3.OutLength, _level);
            node = Blake3Output.Parent(block, in _key, _flags);
        }

        node.RootOutputBytes(output, _level);
    }

    private readonly void CopyCv(int index, byte* destination) =>
        ((ReadOnlySpan<byte>)_cvStack).Slice(index * Blake3.OutLength, Blake3.OutLength).CopyTo(new Span<byte>(destination, Blake3.OutLength));

    /// <summary>Merges the completed subtrees: after totalChunks chunks, one value per set bit remains.</summary>
    private void MergeCvStack(ulong totalChunks)
    {
        int keep = BitOperations.PopCount(totalChunks);
        if (_cvStackLength <= keep)
        {
            return;
        }

        fixed (byte* stack = &_cvStack[0])
        {
            while (_cvStackLength > keep)
            {
                byte* pair = stack + ((_cvStackLength - 2) * Blake3.OutLength);
                Blake3Output.Parent(pair, in _key, _flags).ChainingValue(pair, _level);
                _cvStackLength--;
            }
        }
    }

    private void PushCv(byte* cv, ulong chunkCounter)
    {
        MergeCvStack(chunkCounter);
        new ReadOnlySpan<byte>(cv, Blake3.OutLength).CopyTo(((Span<byte>)_cvStack)[(_cvStackLength * Blake3.OutLength)..]);
        _cvStackLength++;
    }
}
