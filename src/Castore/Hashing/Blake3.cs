using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Text;

namespace TvixFuseBuild.Castore.Hashing;

/// <summary>
/// One-shot BLAKE3 entry points. See <see cref="Blake3Hasher"/> for incremental hashing. Inputs are hashed with the
/// widest SIMD this machine has; <see cref="HashParallel"/> and <see cref="HashFile(string)"/> also use all cores.
/// </summary>
[SkipLocalsInit]
public static unsafe partial class Blake3
{
    public const int OutLength = 32;
    public const int KeyLength = 32;
    internal const int BlockLength = 64;
    internal const int ChunkLength = 1024;

    internal const uint FlagChunkStart = 1 << 0;
    internal const uint FlagChunkEnd = 1 << 1;
    internal const uint FlagParent = 1 << 2;
    internal const uint FlagRoot = 1 << 3;
    internal const uint FlagKeyedHash = 1 << 4;
    internal const uint FlagDeriveKeyContext = 1 << 5;
    internal const uint FlagDeriveKeyMaterial = 1 << 6;

    internal static ReadOnlySpan<uint> IV =>
    [
        0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
    ];

    internal static ref readonly CvWords IVWords => ref Unsafe.As<uint, CvWords>(ref Unsafe.AsRef(in IV[0]));

    /// <summary>The BLAKE3-256 digest of <paramref name="data"/>.</summary>
    public static B3Digest Hash(ReadOnlySpan<byte> data)
    {
        Span<byte> output = stackalloc byte[OutLength];
        Hash(data, output);
        return new B3Digest(output);
    }

    /// <summary>Extended output: fills <paramref name="output"/> with the BLAKE3 XOF stream of <paramref name="data"/>.</summary>
    public static void Hash(ReadOnlySpan<byte> data, Span<byte> output) =>
        HashCore(data, in IVWords, 0, output, Blake3Backend.Best, parallelism: 1);

    public static void KeyedHash(ReadOnlySpan<byte> key, ReadOnlySpan<byte> data, Span<byte> output) =>
        KeyedHash(key, data, output, Blake3Backend.Best);

    public static void DeriveKey(string context, ReadOnlySpan<byte> keyMaterial, Span<byte> output) =>
        DeriveKey(context, keyMaterial, output, Blake3Backend.Best);

    /// <summary>
    /// The BLAKE3-256 digest of <paramref name="data"/>, hashed on up to <paramref name="maxDegreeOfParallelism"/>
    /// threads (-1: all cores). Small inputs are hashed on the calling thread.
    /// </summary>
    public static B3Digest HashParallel(ReadOnlySpan<byte> data, int maxDegreeOfParallelism = -1)
    {
        Span<byte> output = stackalloc byte[OutLength];
        HashCore(data, in IVWords, 0, output, Blake3Backend.Best, Parallelism(maxDegreeOfParallelism));
        return new B3Digest(output);
    }

    // ---- The forms below take the implementation level, so tests can run each one. ----

    internal static void Hash(ReadOnlySpan<byte> data, Span<byte> output, Blake3Level level, int parallelism = 1) =>
        HashCore(data, in IVWords, 0, output, Blake3Backend.Validate(level), parallelism);

    internal static void KeyedHash(ReadOnlySpan<byte> key, ReadOnlySpan<byte> data, Span<byte> output, Blake3Level level)
    {
        LoadKey(key, out CvWords words);
        HashCore(data, in words, FlagKeyedHash, output, Blake3Backend.Validate(level), parallelism: 1);
    }

    internal static void DeriveKey(string context, ReadOnlySpan<byte> keyMaterial, Span<byte> output, Blake3Level level)
    {
        ContextKey(context, out CvWords key, Blake3Backend.Validate(level));
        HashCore(keyMaterial, in key, FlagDeriveKeyMaterial, output, level, parallelism: 1);
    }

    internal static void HashCore(ReadOnlySpan<byte> data, ref readonly CvWords key, uint flags, Span<byte> output, Blake3Level level, int parallelism)
    {
        fixed (byte* input = data)
        {
            HashCore(input, (nuint)data.Length, in key, flags, output, level, parallelism);
        }
    }

    /// <summary>Hashes pinned memory: on the calling thread, or cut into pieces for the thread pool.</summary>
    internal static void HashCore(byte* input, nuint length, ref readonly CvWords key, uint flags, Span<byte> output, Blake3Level level, int parallelism)
    {
        if (Blake3Parallel.IsWorthwhile((long)length, parallelism))
        {
            var state = new Blake3State(in key, flags, level);
            long done = new Blake3Parallel.Memory(input, (long)length, in key, flags, level, parallelism).HashPieces(ref state);
            state.Update(input + done, length - (nuint)done);
            state.Finalize(output);
        }
        else
        {
            Blake3Tree.HashAll(input, length, in key, flags, level).RootOutputBytes(output, level);
        }
    }

    internal static int Parallelism(int maxDegreeOfParallelism)
    {
        if (maxDegreeOfParallelism == 0 || maxDegreeOfParallelism < -1)
        {
            throw new ArgumentOutOfRangeException(nameof(maxDegreeOfParallelism), maxDegreeOfParallelism, "must be -1 (all cores) or positive");
        }

        return maxDegreeOfParallelism == -1 ? Environment.ProcessorCount : maxDegreeOfParallelism;
    }

    internal static void LoadKey(ReadOnlySpan<byte> key, out CvWords words)
    {
        if (key.Length != KeyLength)
        {
            throw new ArgumentException($"a BLAKE3 key has {KeyLength} bytes, not {key.Length}", nameof(key));
        }

        Unsafe.SkipInit(out words);
        for (int i = 0; i < 8; i++)
        {
            words[i] = BinaryPrimitives.ReadUInt32LittleEndian(key[(4 * i)..]);
        }
    }

    /// <summary>derive_key's first stage: the context string, hashed in its own mode, becomes the key.</summary>
    internal static void ContextKey(string context, out CvWords key, Blake3Level level)
    {
        ArgumentNullException.ThrowIfNull(context);
        int length = Encoding.UTF8.GetByteCount(context);
        byte[]? rented = length > 256 ? ArrayPool<byte>.Shared.Rent(length) : null;
        Span<byte> bytes = rented is null ? stackalloc byte[256] : rented;
        bytes = bytes[..Encoding.UTF8.GetBytes(context, bytes)];

        Span<byte> contextKey = stackalloc byte[KeyLength];
        HashCore(bytes, in IVWords, FlagDeriveKeyContext, contextKey, level, parallelism: 1);
        LoadKey(contextKey, out key);
        if (rented is not null)
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }
}
