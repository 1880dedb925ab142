using System.Text;
using TvixFuseBuild.Castore.Hashing;

namespace TvixFuseBuild.Build.Nix;

/// <summary>Store path names the Nix way: <c>HASH-NAME</c>, HASH being 32 nixbase32 characters (160 bits).</summary>
public static class NixStorePaths
{
    public const string StoreDir = "/nix/store";
    public const int HashLength = 32;

    /// <summary>A hash part derived from <paramref name="fingerprint"/> (any stable description of what the path holds).</summary>
    public static string HashPart(string fingerprint)
    {
        Span<byte> digest = stackalloc byte[20];
        Blake3.Hash(Encoding.UTF8.GetBytes(fingerprint), digest);
        return NixBase32.Encode(digest);
    }

    /// <summary><c>HASH-NAME</c> for <paramref name="fingerprint"/>.</summary>
    public static string BaseName(string fingerprint, string name) => $"{HashPart(fingerprint)}-{name}";

    /// <summary>
    /// The <c>HASH-NAME</c> of a path directly under <see cref="StoreDir"/>: a 32-character nixbase32 hash, a dash and a name.
    /// </summary>
    public static bool TryBaseName(string path, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out string? baseName)
    {
        baseName = null;
        if (!path.StartsWith(StoreDir + "/", StringComparison.Ordinal))
        {
            return false;
        }

        string rest = path[(StoreDir.Length + 1)..];
        if (rest.Length < HashLength + 2 || rest[HashLength] != '-' || rest.Contains('/') ||
            rest[..HashLength].Any(c => !NixBase32.Alphabet.Contains(c)))
        {
            return false;
        }

        baseName = rest;
        return true;
    }
}
