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
}
