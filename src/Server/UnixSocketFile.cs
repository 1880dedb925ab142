using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace TvixFuseBuild.Server;

/// <summary>Tells a unix socket file from other files (.NET's file APIs do not expose the file type).</summary>
internal static partial class UnixSocketFile
{
    private const int AtFdCwd = -100;
    private const int AtSymlinkNoFollow = 0x100;
    private const uint StatxType = 0x1;
    private const int ModeOffset = 28; // struct statx: mask, blksize (u32), attributes (u64), nlink, uid, gid (u32), mode (u16)
    private const int SocketType = 0xC000; // S_IFSOCK
    private const int TypeMask = 0xF000; // S_IFMT

    public static unsafe bool IsSocket(string path)
    {
        byte* buffer = stackalloc byte[256];
        return statx(AtFdCwd, path, AtSymlinkNoFollow, StatxType, buffer) == 0 &&
               (*(ushort*)(buffer + ModeOffset) & TypeMask) == SocketType;
    }

    /// <summary>A socket file nobody listens on any more (a crashed server) is removed; anything else is left alone and reported.</summary>
    public static void RemoveStale(string path)
    {
        // bind() would say ENOENT, which .NET reports as "Cannot assign requested address".
        if (Path.GetDirectoryName(path) is { } directory && !Directory.Exists(directory))
        {
            throw new IOException($"cannot listen on unix:{path}: the directory {directory} does not exist");
        }

        if (!Path.Exists(path))
        {
            return;
        }

        if (!IsSocket(path))
        {
            throw new IOException($"cannot listen on unix:{path}: the path exists and is not a socket");
        }

        using var probe = new Socket(AddressFamily.Unix, System.Net.Sockets.SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
        {
            File.Delete(path);
            return;
        }

        throw new IOException($"cannot listen on unix:{path}: another server is listening there");
    }

    [LibraryImport("libc", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static unsafe partial int statx(int dirfd, string path, int flags, uint mask, byte* buffer);
}
