using TvixFuseBuild.Native;

namespace TvixFuseBuild.Sandbox;

/// <summary>A step of setting up the sandbox failed; carries errno when a syscall did.</summary>
internal sealed class SandboxSetupException(string message, int errno = 0) : Exception(message)
{
    public int Errno { get; } = errno;

    /// <summary>"OPERATION: text (errno N)" for a failed call.</summary>
    public static SandboxSetupException FromErrno(string operation, int errno) =>
        new($"{Native.Errno.Describe(operation, null, errno)} (errno {errno})", errno);

    /// <summary><paramref name="rc"/>, or the exception for the call's errno when it is negative.</summary>
    public static int Check(int rc, string operation) => rc < 0 ? throw FromErrno(operation, Native.Errno.Last) : rc;
}
