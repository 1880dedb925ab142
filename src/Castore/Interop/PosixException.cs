using System.Runtime.InteropServices;

namespace TvixFuseBuild.Castore.Interop;

/// <summary>A failed system call: the operation, the path it concerned, and errno.</summary>
public sealed class PosixException : IOException
{
    public PosixException(string operation, string? path, int errno)
        : base(FormatMessage(operation, path, errno), errno)
    {
        Operation = operation;
        PathName = path;
        Errno = errno;
    }

    public string Operation { get; }

    public string? PathName { get; }

    public int Errno { get; }

    internal static PosixException FromLastError(string operation, string? path) =>
        new(operation, path, Marshal.GetLastPInvokeError());

    private static string FormatMessage(string operation, string? path, int errno) =>
        path is null ? $"{operation}: {Libc.ErrorText(errno)}" : $"{operation} {path}: {Libc.ErrorText(errno)}";
}
