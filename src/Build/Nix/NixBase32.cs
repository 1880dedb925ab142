namespace TvixFuseBuild.Build.Nix;

/// <summary>Nix's base-32: alphabet <c>0123456789abcdfghijklmnpqrsvwxyz</c>, least significant 5-bit group last.</summary>
public static class NixBase32
{
    public const string Alphabet = "0123456789abcdfghijklmnpqrsvwxyz";

    public static int EncodedLength(int byteCount) => ((byteCount * 8) - 1) / 5 + 1;

    public static string Encode(ReadOnlySpan<byte> bytes)
    {
        if (bytes.IsEmpty)
        {
            return string.Empty;
        }

        int length = EncodedLength(bytes.Length);
        var chars = new char[length];
        for (int n = length - 1, k = 0; n >= 0; n--, k++)
        {
            int bit = n * 5;
            int i = bit / 8;
            int j = bit % 8;
            int c = (bytes[i] >> j) | (i >= bytes.Length - 1 ? 0 : bytes[i + 1] << (8 - j));
            chars[k] = Alphabet[c & 0x1f];
        }

        return new string(chars);
    }

    /// <summary>Decodes <paramref name="text"/> into <paramref name="byteCount"/> bytes; false when it is not such an encoding.</summary>
    public static bool TryDecode(string text, int byteCount, out byte[] bytes)
    {
        bytes = new byte[byteCount];
        if (text.Length != EncodedLength(byteCount))
        {
            return false;
        }

        for (int k = 0; k < text.Length; k++)
        {
            int digit = Alphabet.IndexOf(text[k], StringComparison.Ordinal);
            if (digit < 0)
            {
                return false;
            }

            int n = text.Length - 1 - k;
            int bit = n * 5;
            int i = bit / 8;
            int j = bit % 8;
            bytes[i] |= (byte)(digit << j);
            int carry = digit >> (8 - j);
            if (i + 1 < byteCount)
            {
                bytes[i + 1] |= (byte)carry;
            }
            else if (carry != 0)
            {
                return false;
            }
        }

        return true;
    }
}
