using System.Runtime.InteropServices;

namespace TvixFuseBuild.Build.Grpc;

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

    [LibraryImport("libc", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static unsafe partial int statx(int dirfd, string path, int flags, uint mask, byte* buffer);
}
