namespace TvixFuseBuild.Native;

/// <summary>
/// A failed system call: the operation, the path it concerned, and errno (also the <see cref="Exception.HResult"/>, as
/// the runtime's own IOExceptions carry it, so one handler puts either into words).
/// </summary>
internal sealed class PosixException : IOException
{
    public PosixException(string operation, string? path, int errno)
        : base(global::TvixFuseBuild.Native.Errno.Describe(operation, path, errno), errno)
    {
        Operation = operation;
        PathName = path;
        Errno = errno;
    }

    public string Operation { get; }

    public string? PathName { get; }

    public int Errno { get; }

    /// <summary>The exception for the last failed <see cref="Libc"/> call on this thread.</summary>
    public static PosixException FromLastError(string operation, string? path) => new(operation, path, global::TvixFuseBuild.Native.Errno.Last);
}
