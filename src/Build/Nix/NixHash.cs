using System.Security.Cryptography;

namespace TvixFuseBuild.Build.Nix;

/// <summary>A hash as Nix names it: an algorithm (md5, sha1, sha256, sha512) and its digest.</summary>
public sealed record NixHash(string Algorithm, byte[] Digest)
{
    public static int DigestLength(string algorithm) => algorithm switch
    {
        "md5" => 16,
        "sha1" => 20,
        "sha256" => 32,
        "sha512" => 64,
        _ => throw new FormatException($"unknown hash algorithm '{algorithm}'"),
    };

    /// <summary>
    /// Parses <paramref name="text"/> as a hash of <paramref name="algorithm"/>: hex, nixbase32, base64 (by length),
    /// SRI (<c>ALGO-BASE64</c>) or <c>ALGO:…</c>.
    /// </summary>
    /// <exception cref="FormatException">It is none of these, or of another algorithm.</exception>
    public static NixHash Parse(string text, string algorithm)
    {
        string rest = text;
        foreach (char separator in new[] { '-', ':' })
        {
            int at = text.IndexOf(separator, StringComparison.Ordinal);
            if (at > 0 && text[..at] is "md5" or "sha1" or "sha256" or "sha512")
            {
                if (text[..at] != algorithm)
                {
                    throw new FormatException($"hash '{text}' should have type '{algorithm}'");
                }

                rest = text[(at + 1)..];
                if (separator == '-')
                {
                    return FromBase64(rest, algorithm, text);
                }

                break;
            }
        }

        int length = DigestLength(algorithm);
        if (rest.Length == length * 2 && rest.All(Uri.IsHexDigit))
        {
            return new NixHash(algorithm, Convert.FromHexString(rest));
        }

        if (rest.Length == NixBase32.EncodedLength(length))
        {
            return NixBase32.TryDecode(rest, length, out byte[] bytes)
                ? new NixHash(algorithm, bytes)
                : throw new FormatException($"invalid base-32 hash '{text}'");
        }

        if (rest.Length == (length + 2) / 3 * 4)
        {
            return FromBase64(rest, algorithm, text);
        }

        throw new FormatException($"hash '{text}' has wrong length for hash type '{algorithm}'");
    }

    private static NixHash FromBase64(string base64, string algorithm, string text)
    {
        byte[] bytes;
        try
        {
            bytes = Convert.FromBase64String(base64);
        }
        catch (FormatException)
        {
            throw new FormatException($"invalid base-64 hash '{text}'");
        }

        return bytes.Length == DigestLength(algorithm) ? new NixHash(algorithm, bytes) : throw new FormatException($"hash '{text}' has wrong length for hash type '{algorithm}'");
    }

    /// <summary>An incremental hasher for <paramref name="algorithm"/>.</summary>
    public static IncrementalHash CreateHasher(string algorithm) => algorithm switch
    {
        "md5" => IncrementalHash.CreateHash(HashAlgorithmName.MD5),
        "sha1" => IncrementalHash.CreateHash(HashAlgorithmName.SHA1),
        "sha256" => IncrementalHash.CreateHash(HashAlgorithmName.SHA256),
        "sha512" => IncrementalHash.CreateHash(HashAlgorithmName.SHA512),
        _ => throw new FormatException($"unknown hash algorithm '{algorithm}'"),
    };

    public static NixHash Sha256(ReadOnlySpan<byte> data) => new("sha256", SHA256.HashData(data));

    /// <summary>Nix's SRI form, <c>ALGO-BASE64</c>, as Nix prints hashes in its messages.</summary>
    public string ToSri() => $"{Algorithm}-{Convert.ToBase64String(Digest)}";

    /// <summary><c>ALGO:NIXBASE32</c>, as <c>nix-store -q --hash</c> prints NAR hashes.</summary>
    public string ToNixBase32Prefixed() => $"{Algorithm}:{NixBase32.Encode(Digest)}";

    public bool Matches(NixHash other) => Algorithm == other.Algorithm && Digest.AsSpan().SequenceEqual(other.Digest);
}
