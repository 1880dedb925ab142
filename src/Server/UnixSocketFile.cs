using System.Net.Sockets;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Server;

/// <summary>Tells a unix socket file from other files (.NET's file APIs do not expose the file type).</summary>
internal static class UnixSocketFile
{
    public static bool IsSocket(string path) =>
        Libc.StatPath(path, out _, out uint mode) && (mode & Libc.S_IFMT) == Libc.S_IFSOCK;

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
}
