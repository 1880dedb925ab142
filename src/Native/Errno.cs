using System.Runtime.InteropServices;

namespace TvixFuseBuild.Native;

/// <summary>errno: the values the tool reacts to or replies with, the last one, and the one way it is put into words.</summary>
internal static class Errno
{
    public const int EPERM = 1;
    public const int ENOENT = 2;
    public const int ESRCH = 3;
    public const int EINTR = 4;
    public const int EIO = 5;
    public const int ENXIO = 6;
    public const int EBADF = 9;
    public const int ECHILD = 10;
    public const int EAGAIN = 11;
    public const int EACCES = 13;
    public const int EEXIST = 17;
    public const int EXDEV = 18;
    public const int ENODEV = 19;
    public const int ENOTDIR = 20;
    public const int EISDIR = 21;
    public const int EINVAL = 22;
    public const int ENOSPC = 28;
    public const int EROFS = 30;
    public const int ERANGE = 34;
    public const int ENOSYS = 38;
    public const int ENOTEMPTY = 39;
    public const int ELOOP = 40;
    public const int ENODATA = 61;
    public const int EPROTO = 71;
    public const int ECONNABORTED = 103;
    public const int ENOTCONN = 107;

    /// <summary>errno of the last <see cref="Libc"/> call on this thread.</summary>
    public static int Last => Marshal.GetLastPInvokeError();

    /// <summary>strerror's text, e.g. "No such file or directory".</summary>
    public static string Text(int errno) => Marshal.GetPInvokeErrorMessage(errno);

    /// <summary>"OPERATION PATH: text" (without the path when null): every message for a failed call is worded so.</summary>
    public static string Describe(string operation, string? path, int errno) =>
        path is null ? $"{operation}: {Text(errno)}" : $"{operation} {path}: {Text(errno)}";
}
