using TvixFuseBuild.Castore.Transfer;

namespace TvixFuseBuild.Tool;

/// <summary>
/// Files a command reads whole (a request, a nodes file, needles), or stdin for <c>-</c>. A regular file is read on
/// the caller's thread; anything else on a thread of its own, and the caller waits for it or a signal, whichever comes
/// first: a FIFO or a terminal may never send EOF, and a blocked read(2) cannot be cancelled.
/// </summary>
internal static class ToolInput
{
    public const string Stdin = "-";

    /// <summary>Every byte of <paramref name="path"/>; <paramref name="what"/> names it in errors ("request", "needles file").</summary>
    public static byte[] ReadAllBytes(string path, string what) =>
        ReadIfRegular(path, what) ?? Wait(() => ReadCore(path, what), what);

    public static string ReadAllText(string path, string what) =>
        ReadIfRegular(path, what) is { } bytes
            ? System.Text.Encoding.UTF8.GetString(bytes)
            : Wait(() => System.Text.Encoding.UTF8.GetString(ReadCore(path, what)), what);

    /// <summary>The name of <paramref name="path"/> in messages.</summary>
    public static string Display(string path) => path == Stdin ? "stdin" : ToolText.Elide(path);

    private static T Wait<T>(Func<T> read, string what)
    {
        var reading = Task.Factory.StartNew(read, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        try
        {
            return reading.WaitAsync(ToolConsole.Stopping).GetAwaiter().GetResult();
        }
        catch (OperationCanceledException) when (!reading.IsCompleted)
        {
            throw new OperationCanceledException($"reading the {what} was interrupted");
        }
    }

    /// <summary>
    /// A regular file, read on this thread; null for stdin and anything else. Its read can hang only on a hung
    /// filesystem (a FUSE or NFS server that never answers), and then a signal still reaches the tool.
    /// </summary>
    private static byte[]? ReadIfRegular(string path, string what)
    {
        if (path == Stdin)
        {
            return null;
        }

        try
        {
            return Termination.ElsewhereDuring(() => HostFile.TryReadRegularFile(path));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw Failure(path, what, e);
        }
    }

    private static byte[] ReadCore(string path, string what)
    {
        try
        {
            if (path == Stdin)
            {
                using var stdin = Console.OpenStandardInput();
                using var buffer = new MemoryStream();
                stdin.CopyTo(buffer);
                return buffer.ToArray();
            }

            if (Directory.Exists(path))
            {
                throw new IOException($"cannot read {what} {Display(path)}: is a directory");
            }

            return File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException && !e.Message.StartsWith("cannot read ", StringComparison.Ordinal))
        {
            throw Failure(path, what, e);
        }
    }

    private static IOException Failure(string path, string what, Exception e)
    {
        string reason = e is FileNotFoundException or DirectoryNotFoundException ? "no such file" : ToolConsole.IOReason(e);
        return new IOException($"cannot read {what} {Display(path)}: {reason}", e);
    }
}
