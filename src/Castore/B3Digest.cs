using System.Buffers.Binary;
using System.Buffers.Text;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace TvixFuseBuild.Castore;

/// <summary>
/// A BLAKE3-256 digest: exactly 32 bytes. Its text form is <c>blake3-</c> followed by standard padded base64.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public readonly struct B3Digest : IEquatable<B3Digest>, IComparable<B3Digest>
{
    public const int Length = 32;
    public const string Prefix = "blake3-";
    private const int Base64Length = 44;

    // Declared before Empty: static fields initialize in textual order.
    private static readonly System.Buffers.SearchValues<char> HexChars =
        System.Buffers.SearchValues.Create("0123456789abcdefABCDEF");

    // Stored as four little-endian words so equality and hashing are cheap.
    private readonly ulong _w0, _w1, _w2, _w3;

    public B3Digest(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != Length)
        {
            ThrowHelper.ThrowInvalidDigestLength(bytes.Length);
        }

        _w0 = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        _w1 = BinaryPrimitives.ReadUInt64LittleEndian(bytes[8..]);
        _w2 = BinaryPrimitives.ReadUInt64LittleEndian(bytes[16..]);
        _w3 = BinaryPrimitives.ReadUInt64LittleEndian(bytes[24..]);
    }

    /// <summary>The digest of the empty blob, which is also the digest of the empty directory.</summary>
    public static B3Digest Empty { get; } = ParseHex("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");

    public static bool TryCreate(ReadOnlySpan<byte> bytes, out B3Digest digest)
    {
        if (bytes.Length != Length)
        {
            digest = default;
            return false;
        }

        digest = new B3Digest(bytes);
        return true;
    }

    public void CopyTo(Span<byte> destination)
    {
        if (destination.Length < Length)
        {
            ThrowHelper.ThrowDestinationTooShort();
        }

        BinaryPrimitives.WriteUInt64LittleEndian(destination, _w0);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[8..], _w1);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[16..], _w2);
        BinaryPrimitives.WriteUInt64LittleEndian(destination[24..], _w3);
    }

    public byte[] ToArray()
    {
        var bytes = new byte[Length];
        CopyTo(bytes);
        return bytes;
    }

    /// <summary>Lowercase hexadecimal, 64 characters: the form used for file names in the local store.</summary>
    public string ToHex()
    {
        Span<byte> bytes = stackalloc byte[Length];
        CopyTo(bytes);
        return Convert.ToHexStringLower(bytes);
    }

    /// <summary>The <c>blake3-&lt;base64&gt;</c> text form.</summary>
    public override string ToString()
    {
        return string.Create(Prefix.Length + Base64Length, this, static (chars, digest) =>
        {
            Prefix.CopyTo(chars);
            Span<byte> raw = stackalloc byte[Length];
            digest.CopyTo(raw);
            Convert.TryToBase64Chars(raw, chars[Prefix.Length..], out _);
        });
    }

    /// <summary>Parses the <c>blake3-&lt;base64&gt;</c> form, or 64 hexadecimal characters.</summary>
    public static B3Digest Parse(string text)
    {
        if (!TryParse(text, out var digest, out var error))
        {
            throw new FormatException(error);
        }

        return digest;
    }

    public static bool TryParse(string? text, out B3Digest digest) => TryParse(text, out digest, out _);

    public static bool TryParse(string? text, out B3Digest digest, [NotNullWhen(false)] out string? error)
    {
        digest = default;
        if (string.IsNullOrEmpty(text))
        {
            error = "invalid digest '': expected 'blake3-' followed by 44 base64 characters";
            return false;
        }

        if (text.Length == 2 * Length && IsHex(text))
        {
            digest = ParseHex(text);
            error = null;
            return true;
        }

        if (!text.StartsWith(Prefix, StringComparison.Ordinal))
        {
            error = $"invalid digest '{Truncate(text)}': expected 'blake3-' followed by 44 base64 characters";
            return false;
        }

        ReadOnlySpan<char> b64 = text.AsSpan(Prefix.Length);
        Span<byte> bytes = stackalloc byte[48];
        if (!Convert.TryFromBase64Chars(b64, bytes, out int written))
        {
            error = $"invalid digest '{Truncate(text)}': not valid base64";
            return false;
        }

        if (written != Length)
        {
            error = $"invalid digest '{Truncate(text)}': decodes to {written} bytes, a BLAKE3 digest has {Length}";
            return false;
        }

        digest = new B3Digest(bytes[..Length]);
        error = null;
        return true;
    }

    public static B3Digest ParseHex(string hex)
    {
        if (hex.Length != 2 * Length || !IsHex(hex))
        {
            throw new FormatException($"invalid hex digest '{Truncate(hex)}': expected 64 hexadecimal characters");
        }

        return new B3Digest(Convert.FromHexString(hex));
    }

    private static bool IsHex(string text) => text.AsSpan().ContainsAnyExcept(HexChars) is false;

    private static string Truncate(string text) => text.Length <= 80 ? text : string.Concat(text.AsSpan(0, 77), "...");

    public bool Equals(B3Digest other) =>
        _w0 == other._w0 && _w1 == other._w1 && _w2 == other._w2 && _w3 == other._w3;

    public override bool Equals(object? obj) => obj is B3Digest other && Equals(other);

    // The digest is uniformly distributed, so any 32 bits of it make a good hash code.
    public override int GetHashCode() => unchecked((int)_w0);

    public int CompareTo(B3Digest other)
    {
        Span<byte> a = stackalloc byte[Length];
        Span<byte> b = stackalloc byte[Length];
        CopyTo(a);
        other.CopyTo(b);
        return a.SequenceCompareTo(b);
    }

    public static bool operator ==(B3Digest left, B3Digest right) => left.Equals(right);

    public static bool operator !=(B3Digest left, B3Digest right) => !left.Equals(right);

    /// <summary>Reinterprets 32 bytes as a digest without copying through a span (hot paths).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static B3Digest FromWords(ReadOnlySpan<uint> words)
    {
        Span<byte> bytes = stackalloc byte[Length];
        for (int i = 0; i < 8; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(bytes[(4 * i)..], words[i]);
        }

        return new B3Digest(bytes);
    }
}
