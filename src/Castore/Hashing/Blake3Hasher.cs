using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Text;

namespace TvixFuseBuild.Castore.Hashing;

/// <summary>
/// Incremental BLAKE3: <see cref="Update"/> any number of times, then <see cref="Finalize()"/>.
/// Finalizing does not change the state, so more input may follow.
/// </summary>
public sealed class Blake3Hasher
{
    // Enough for 2^54 chunks, far beyond any input length representable here.
    private const int MaxDepth = 54;

    [InlineArray(8)]
    internal struct CvWords
    {
        private uint _element;
    }

    [InlineArray(Blake3.BlockLength)]
    private struct BlockBuffer
    {
        private byte _element;
    }

    [InlineArray(MaxDepth * 8)]
    private struct CvStack
    {
        private uint _element;
    }

    private CvWords _key;
    private readonly uint _flags;

    // The chunk being filled.
    private CvWords _chunkCv;
    private ulong _chunkCounter;
    private BlockBuffer _block;
    private int _blockLength;
    private int _blocksCompressed;

    private CvStack _cvStack;
    private int _cvStackLength;

    public Blake3Hasher()
        : this(Blake3.IV, 0)
    {
    }

    private Blake3Hasher(ReadOnlySpan<uint> key, uint flags)
    {
        key.CopyTo(_key);
        _flags = flags;
        Reset();
    }

    public static Blake3Hasher CreateKeyed(ReadOnlySpan<byte> key)
    {
        if (key.Length != Blake3.KeyLength)
        {
            throw new ArgumentException($"a BLAKE3 key has {Blake3.KeyLength} bytes, not {key.Length}", nameof(key));
        }

        Span<uint> words = stackalloc uint[8];
        Blake3.LoadKeyWords(key, words);
        return new Blake3Hasher(words, Blake3.FlagKeyedHash);
    }

    public static Blake3Hasher CreateDeriveKey(string context)
    {
        var contextHasher = new Blake3Hasher(Blake3.IV, Blake3.FlagDeriveKeyContext);
        contextHasher.Update(Encoding.UTF8.GetBytes(context));
        Span<byte> contextKey = stackalloc byte[Blake3.KeyLength];
        contextHasher.Finalize(contextKey);
        Span<uint> words = stackalloc uint[8];
        Blake3.LoadKeyWords(contextKey, words);
        return new Blake3Hasher(words, Blake3.FlagDeriveKeyMaterial);
    }

    /// <summary>Forgets all input, keeping the mode and key.</summary>
    public void Reset()
    {
        ((ReadOnlySpan<uint>)_key).CopyTo(_chunkCv);
        _chunkCounter = 0;
        _blockLength = 0;
        _blocksCompressed = 0;
        _cvStackLength = 0;
    }

    public void Update(ReadOnlySpan<byte> input)
    {
        Span<uint> cv = stackalloc uint[8];
        while (!input.IsEmpty)
        {
            if (ChunkLength == Blake3.ChunkLength)
            {
                ChunkChainingValue(cv);
                PushChunkCv(cv, _chunkCounter + 1);
                StartChunk(_chunkCounter + 1);
            }

            int take = Math.Min(Blake3.ChunkLength - ChunkLength, input.Length);
            UpdateChunk(input[..take]);
            input = input[take..];
        }
    }

    public B3Digest Finalize()
    {
        Span<byte> output = stackalloc byte[Blake3.OutLength];
        Finalize(output);
        return new B3Digest(output);
    }

    /// <summary>Writes <paramref name="output"/>.Length bytes of the extended output.</summary>
    public void Finalize(Span<byte> output)
    {
        // Build the root output: the current chunk, merged with every subtree on the stack.
        Span<uint> inputCv = stackalloc uint[8];
        Span<byte> block = stackalloc byte[Blake3.BlockLength];
        ulong counter;
        uint blockLength;
        uint flags;

        ((ReadOnlySpan<uint>)_chunkCv).CopyTo(inputCv);
        block.Clear();
        ((ReadOnlySpan<byte>)_block)[.._blockLength].CopyTo(block);
        counter = _chunkCounter;
        blockLength = (uint)_blockLength;
        flags = _flags | StartFlag | Blake3.FlagChunkEnd;

        Span<uint> words = stackalloc uint[16];
        for (int i = _cvStackLength - 1; i >= 0; i--)
        {
            Blake3Compress.Compress(inputCv, block, counter, blockLength, flags, words[..8]);
            ReadOnlySpan<uint> left = ((ReadOnlySpan<uint>)_cvStack).Slice(i * 8, 8);
            WriteWords(left, block);
            WriteWords(words[..8], block[32..]);
            ((ReadOnlySpan<uint>)_key).CopyTo(inputCv);
            counter = 0;
            blockLength = Blake3.BlockLength;
            flags = _flags | Blake3.FlagParent;
        }

        ulong outputBlock = 0;
        Span<byte> bytes = stackalloc byte[Blake3.BlockLength];
        while (!output.IsEmpty)
        {
            Blake3Compress.Compress(inputCv, block, outputBlock, blockLength, flags | Blake3.FlagRoot, words);
            int n = Math.Min(output.Length, Blake3.BlockLength);
            WriteWords(words, bytes);
            bytes[..n].CopyTo(output);
            output = output[n..];
            outputBlock++;
        }
    }

    private int ChunkLength => Blake3.BlockLength * _blocksCompressed + _blockLength;

    private uint StartFlag => _blocksCompressed == 0 ? Blake3.FlagChunkStart : 0;

    private void StartChunk(ulong counter)
    {
        ((ReadOnlySpan<uint>)_key).CopyTo(_chunkCv);
        _chunkCounter = counter;
        _blockLength = 0;
        _blocksCompressed = 0;
    }

    private void UpdateChunk(ReadOnlySpan<byte> input)
    {
        Span<byte> block = _block;
        while (!input.IsEmpty)
        {
            // The last block of a chunk is kept back: it needs CHUNK_END, and maybe ROOT.
            if (_blockLength == Blake3.BlockLength)
            {
                Blake3Compress.Compress(_chunkCv, block, _chunkCounter, Blake3.BlockLength, _flags | StartFlag, _chunkCv);
                _blocksCompressed++;
                _blockLength = 0;
            }

            int take = Math.Min(Blake3.BlockLength - _blockLength, input.Length);
            input[..take].CopyTo(block[_blockLength..]);
            _blockLength += take;
            input = input[take..];
        }
    }

    private void ChunkChainingValue(Span<uint> cv)
    {
        Span<byte> block = stackalloc byte[Blake3.BlockLength];
        block.Clear();
        ((ReadOnlySpan<byte>)_block)[.._blockLength].CopyTo(block);
        Blake3Compress.Compress(_chunkCv, block, _chunkCounter, (uint)_blockLength, _flags | StartFlag | Blake3.FlagChunkEnd, cv);
    }

    // Merges completed subtrees: after chunk number totalChunks, one merge per trailing zero bit.
    private void PushChunkCv(Span<uint> cv, ulong totalChunks)
    {
        Span<byte> block = stackalloc byte[Blake3.BlockLength];
        Span<uint> stack = _cvStack;
        while ((totalChunks & 1) == 0)
        {
            _cvStackLength--;
            WriteWords(stack.Slice(_cvStackLength * 8, 8), block);
            WriteWords(cv, block[32..]);
            Blake3Compress.Compress(_key, block, 0, Blake3.BlockLength, _flags | Blake3.FlagParent, cv);
            totalChunks >>= 1;
        }

        cv.CopyTo(stack.Slice(_cvStackLength * 8, 8));
        _cvStackLength++;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void WriteWords(ReadOnlySpan<uint> words, Span<byte> destination)
    {
        for (int i = 0; i < words.Length; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(destination[(4 * i)..], words[i]);
        }
    }
}
