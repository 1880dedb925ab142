using System.Diagnostics;
using System.Runtime.InteropServices;

namespace TvixFuseBuild.Castore.Tests;

/// <summary>Real device nodes, FIFOs and sockets for the tests that point writes at them (shared with Tool.Tests).</summary>
internal static partial class SpecialFiles
{
    private const int O_WRONLY = 1;
    private const int O_NONBLOCK = 0x800;

    /// <summary>What `stat` says of a null device made by <see cref="MakeNullDevice"/> (type, major:minor in hex).</summary>
    public const string NullDevice = "character special file 1:3";

    public static void RequireRoot() =>
        Assert.True(Environment.IsPrivilegedProcess, "this test makes device nodes with mknod and must run as root (it never skips)");

    /// <summary>A character device 1:3 — a null device, safe to write to — at <paramref name="path"/>.</summary>
    public static void MakeNullDevice(string path) => Run("mknod", "-m", "666", path, "c", "1", "3");

    /// <summary>A block device (the loop device 7:0) at <paramref name="path"/>; nothing may ever open it for writing.</summary>
    public static void MakeBlockDevice(string path) => Run("mknod", "-m", "600", path, "b", "7", "0");

    public static void MakeFifo(string path) => Run("mkfifo", "-m", "600", path);

    /// <summary>`stat -c '%F %t:%T'` of the path itself (not following a symlink): its type, and major:minor for devices.</summary>
    public static string Describe(string path) => Run("stat", "-c", "%F %t:%T", path).Trim();

    private static string Run(string program, params string[] arguments)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in arguments)
        {
            psi.ArgumentList.Add(a);
        }

        using var process = Process.Start(psi) ?? throw new InvalidOperationException($"cannot start {program}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        string stderr = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"{program} {string.Join(' ', arguments)}: {stderr}");
        return stdout.Result;
    }

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);

    /// <summary>Reads everything written into a FIFO by one writer, on a thread of its own.</summary>
    public sealed class FifoReader(string path)
    {
        private readonly Task<byte[]> _read = Task.Run(() => File.ReadAllBytes(path));

        /// <summary>
        /// What was read. When nobody wrote (the command under test failed before opening the FIFO), a writer is
        /// opened and closed here so the reader sees the end instead of waiting forever; it then returns nothing.
        /// </summary>
        public byte[] Finish()
        {
            while (!_read.Wait(TimeSpan.FromMilliseconds(100)))
            {
                // O_NONBLOCK: fails (ENXIO) rather than waits when the reader has not opened yet or is already done.
                int fd = Open(path, O_WRONLY | O_NONBLOCK);
                if (fd >= 0)
                {
                    Close(fd);
                }
            }

            return _read.Result;
        }
    }
}
