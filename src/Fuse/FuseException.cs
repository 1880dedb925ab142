
namespace TvixFuseBuild.Fuse;

/// <summary>A FUSE operation failed: mounting, unmounting, talking to /dev/fuse. The message is one line for the user.</summary>
public sealed class FuseException : IOException
{
    public FuseException(string message, int errno = 0, Exception? inner = null)
        : base(message, inner)
    {
        Errno = errno;
    }

    /// <summary>The errno behind the failure, 0 when it did not come from a system call.</summary>
    public int Errno { get; }

    /// <summary>Builds the exception for a failed system call from the thread's last errno.</summary>
    internal static FuseException FromErrno(string operation) => FromErrno(operation, Native.Errno.Last);

    internal static FuseException FromErrno(string operation, int errno) =>
        new($"{Native.Errno.Describe(operation, null, errno)} (errno {errno})", errno);
}
