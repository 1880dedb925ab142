using System.Text;

namespace TvixFuseBuild.Native;

/// <summary>NUL-terminated path bytes for libc calls.</summary>
internal static class NativePath
{
    public static byte[] FromString(string path)
    {
        var bytes = new byte[Encoding.UTF8.GetByteCount(path) + 1];
        Encoding.UTF8.GetBytes(path, bytes);
        return bytes;
    }

    public static byte[] FromBytes(ReadOnlySpan<byte> name)
    {
        var bytes = new byte[name.Length + 1];
        name.CopyTo(bytes);
        return bytes;
    }

    /// <summary><paramref name="directory"/> + "/" + <paramref name="name"/> for messages; lossless for UTF-8 names.</summary>
    public static string Join(string directory, ReadOnlySpan<byte> name) =>
        directory.EndsWith('/') ? directory + Encoding.UTF8.GetString(name) : directory + "/" + Encoding.UTF8.GetString(name);
}
