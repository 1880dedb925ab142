namespace TvixFuseBuild.Castore.Hashing;

/// <summary>
/// Incremental BLAKE3: <see cref="Update"/> any number of times, then <see cref="Finalize()"/>.
/// Finalizing does not change the state, so more input may follow. Large updates are hashed many chunks at a time
/// with SIMD, exactly as the one-shot <see cref="Blake3.Hash(ReadOnlySpan{byte})"/> does.
/// </summary>
public sealed unsafe class Blake3Hasher
{
    private Blake3State _state;

    public Blake3Hasher()
        : this(in Blake3.IVWords, 0, Blake3Backend.Best)
    {
    }

    private Blake3Hasher(ref readonly CvWords key, uint flags, Blake3Level level)
    {
        _state = new Blake3State(in key, flags, level);
    }

    public static Blake3Hasher CreateKeyed(ReadOnlySpan<byte> key) => CreateKeyed(key, Blake3Backend.Best);

    public static Blake3Hasher CreateDeriveKey(string context) => CreateDeriveKey(context, Blake3Backend.Best);

    /// <summary>A hasher forced to one implementation level (tests).</summary>
    internal static Blake3Hasher Create(Blake3Level level) => new(in Blake3.IVWords, 0, Blake3Backend.Validate(level));

    internal static Blake3Hasher CreateKeyed(ReadOnlySpan<byte> key, Blake3Level level)
    {
        Blake3.LoadKey(key, out CvWords words);
        return new Blake3Hasher(in words, Blake3.FlagKeyedHash, Blake3Backend.Validate(level));
    }

    internal static Blake3Hasher CreateDeriveKey(string context, Blake3Level level)
    {
        Blake3.ContextKey(context, out CvWords key, Blake3Backend.Validate(level));
        return new Blake3Hasher(in key, Blake3.FlagDeriveKeyMaterial, level);
    }

    /// <summary>Forgets all input, keeping the mode and key.</summary>
    public void Reset() => _state.Reset();

    public void Update(ReadOnlySpan<byte> input)
    {
        fixed (byte* bytes = input)
        {
            _state.Update(bytes, (nuint)input.Length);
        }
    }

    public B3Digest Finalize()
    {
        Span<byte> output = stackalloc byte[Blake3.OutLength];
        _state.Finalize(output);
        return new B3Digest(output);
    }

    /// <summary>Writes <paramref name="output"/>.Length bytes of the extended output.</summary>
    public void Finalize(Span<byte> output) => _state.Finalize(output);
}
