using System.Buffers;
using System.Text;

namespace TvixFuseBuild.Build.Requests;

internal static class Utf8Text
{
    /// <summary>The offset of the first byte that does not start a valid UTF-8 sequence (the length when all are valid).</summary>
    public static int FirstInvalid(ReadOnlySpan<byte> bytes)
    {
        int i = 0;
        while (i < bytes.Length && Rune.DecodeFromUtf8(bytes[i..], out _, out int consumed) == OperationStatus.Done)
        {
            i += consumed;
        }

        return i;
    }
}
