using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using TvixFuseBuild.Castore;

namespace TvixFuseBuild.Tool;

/// <summary>
/// How every command runs and ends: usage checked first (exit 2), the action run until it ends or a signal stops it
/// (exit 128 + the signal), and every error reported the same way, as one line
/// <c>tvix-fuse-build: error: …</c> (exit 1), never a stack trace, a resource key or a .NET type name.
/// </summary>
internal static class ToolConsole
{
    public const int Ok = 0;
    public const int Failed = 1;
    public const int Usage = 2;

    public const string Name = "tvix-fuse-build";

    /// <summary>How every error line starts.</summary>
    public const string ErrorPrefix = Name + ": error: ";

    /// <summary>After a signal, how long a command may take to tear down before the process exits anyway.</summary>
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(30);

    private static readonly HashSet<Command> SelfStoppingCommands = [];
    private static readonly HashSet<Command> InlineCommands = [];

    private static Termination? s_termination;
    private static string s_commandPath = Name;
    private static RootCommand? s_root;

    /// <summary>Cancelled by the first SIGINT, SIGTERM or SIGHUP: work that may block (reading stdin, a FIFO, a remote store) watches it.</summary>
    public static CancellationToken Stopping => s_termination?.Token ?? CancellationToken.None;

    /// <summary>
    /// Marks <paramref name="command"/> as ending on its own after a signal, however long that takes (a server's
    /// grace period): it is not cut off after <see cref="StopTimeout"/>.
    /// </summary>
    public static Command SelfStopping(Command command)
    {
        SelfStoppingCommands.Add(command);
        return command;
    }

    /// <summary>
    /// Marks <paramref name="command"/> as starting on the calling thread: its action runs there until it first waits
    /// for something, so work that ends before that (a build answered from the result cache) starts no pool thread.
    /// Only for actions that do nothing before their first wait that a signal must be able to interrupt, except through
    /// <see cref="Stopping"/> (a read of stdin or a FIFO, a remote store's connect).
    /// </summary>
    public static Command StartsInline(Command command)
    {
        InlineCommands.Add(command);
        return command;
    }

    public static int Invoke(RootCommand root, string[] args)
    {
        s_root = root;
        ParseResult parse;
        try
        {
            // No response files: an argument starting with '@' is a path like any other.
            parse = root.Parse(args, new ParserConfiguration { ResponseFileTokenReplacer = null });
            s_commandPath = UsageErrors.CommandPath(parse);
            if (parse.Action is not { ClearsParseErrors: true } && UsageErrors.Find(parse) is { } usage)
            {
                WriteUsageError(usage);
                return Usage;
            }
        }
        catch (Exception e)
        {
            return Report(e);
        }

        // Help, --version and the completion directive print and return: no signal handling, no pool thread to start.
        if (parse.Action is { } action && !ReferenceEquals(action, parse.CommandResult.Command.Action))
        {
            try
            {
                return parse.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
            }
            catch (Exception e)
            {
                return Report(e);
            }
        }

        try
        {
            // The front NativeAOT executable hands what it was built without to the full one, before anything happens.
            FullTool.HandOverIfNeeded(parse, Commands.StoreSelection.UsesRemoteStore);

            // TVIX_FUSE_BUILD_SIMD_KERNELS, where set, is honoured or refused before any work.
            SimdKernelLibrary.CheckSetting();
        }
        catch (Exception e)
        {
            return Report(e);
        }

        using var termination = new Termination();
        s_termination = termination;
        var configuration = new InvocationConfiguration { EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null };

        // On a pool thread, so that an action blocked in a system call (a read of a terminal) cannot hold up the exit;
        // an inline command blocks only where it watches Stopping, and continues on the pool once it waits.
        Task<int> invocation;
        if (InlineCommands.Contains(parse.CommandResult.Command))
        {
            // What it does before its first wait is out of this thread's reach (a read of a regular file on a hung
            // network filesystem): after a signal the process still ends within StopTimeout, as for one on the pool.
            // Such reads block the signals on this thread (Termination.ElsewhereDuring), or the kernel would hand them
            // to it and no handler would ever run.
            var returned = new TaskCompletionSource();
            _ = ExitIfStuckAsync(termination, returned.Task);
            invocation = StartInline(parse, configuration, termination.Token);
            returned.SetResult();
        }
        else
        {
            invocation = Task.Run(() => parse.InvokeAsync(configuration, termination.Token));
        }

        if (!invocation.IsCompleted)
        {
            Task.WaitAny(invocation, termination.Signalled);
        }

        if (!invocation.IsCompleted && !SelfStoppingCommands.Contains(parse.CommandResult.Command) &&
            Task.WhenAny(invocation, Task.Delay(StopTimeout)).GetAwaiter().GetResult() != invocation)
        {
            WriteError($"did not stop within {StopTimeout.TotalSeconds:0} s of {termination.SignalName}; exiting");
            return termination.ExitCode;
        }

        int code;
        try
        {
            code = invocation.GetAwaiter().GetResult();
        }
        catch (Exception e) when (termination.SignalName is { } signal && IsCancellation(e))
        {
            WriteError($"interrupted by {signal}");
            return termination.ExitCode;
        }
        catch (Exception e)
        {
            code = Report(e);
        }

        return termination.SignalName is null ? code : termination.ExitCode;
    }

    private static async Task ExitIfStuckAsync(Termination termination, Task returned)
    {
        await termination.Signalled.ConfigureAwait(false);
        if (await Task.WhenAny(returned, Task.Delay(StopTimeout)).ConfigureAwait(false) != returned)
        {
            WriteError($"did not stop within {StopTimeout.TotalSeconds:0} s of {termination.SignalName}; exiting");
            Environment.Exit(termination.ExitCode);
        }
    }

    private static Task<int> StartInline(ParseResult parse, InvocationConfiguration configuration, CancellationToken cancellationToken)
    {
        try
        {
            return parse.InvokeAsync(configuration, cancellationToken);
        }
        catch (Exception e)
        {
            return Task.FromException<int>(e);
        }
    }

    /// <summary>Prints one error line for <paramref name="e"/> (and its details, if any) and returns the exit code it deserves.</summary>
    public static int Report(Exception e)
    {
        switch (e)
        {
            case UsageException usage:
                if (usage.ShowHelp && s_root is not null)
                {
                    s_root.Parse([.. s_commandPath.Split(' ').Skip(1), "--help"]).Invoke(new InvocationConfiguration { Output = Console.Error });
                }

                WriteUsageError(usage.Message);
                return Usage;
            case Build.Requests.BuildRequestValidationException invalid:
                WriteError($"invalid request: {invalid.Message}");
                return Failed;
            case ReportedFailureException reported:
                WriteError(reported.Message);
                foreach (string detail in reported.Details)
                {
                    Console.Error.WriteLine(ToolText.Line(detail));
                }

                return Failed;
            case OperationCanceledException:
                WriteError("cancelled");
                return Failed;
            case CastoreException or IOException or UnauthorizedAccessException or FormatException or Sandbox.SandboxException or global::Grpc.Core.RpcException or Build.Service.BuilderException:
                WriteError(e.Message);
                return Failed;
            case AggregateException aggregate when aggregate.InnerExceptions.Count == 1:
                return Report(aggregate.InnerExceptions[0]);
            default:
                bool debug = Environment.GetEnvironmentVariable("TVIX_FUSE_BUILD_DEBUG") is "1";
                WriteError($"internal error: {e.Message}{(debug ? "" : " (TVIX_FUSE_BUILD_DEBUG=1 shows where)")}");
                if (debug)
                {
                    Console.Error.WriteLine(e);
                }

                return Failed;
        }
    }

    /// <summary>Prints <c>tvix-fuse-build: error: MESSAGE</c>: one line, control characters escaped, bounded.</summary>
    public static void WriteError(string message) => Console.Error.WriteLine(ErrorPrefix + ToolText.Line(message));

    /// <summary>
    /// What went wrong with a file, for a message that names the file itself: the runtime's messages repeat the path
    /// in their own words; an errno it reports is said as strerror says it.
    /// </summary>
    public static string IOReason(Exception e) => e switch
    {
        FileNotFoundException or DirectoryNotFoundException => "no such file or directory",
        UnauthorizedAccessException => "permission denied",
        IOException { HResult: > 0 and < 4096 } io => Marshal.GetPInvokeErrorMessage(io.HResult) is { Length: > 0 } text
            ? char.ToLower(text[0], CultureInfo.InvariantCulture) + text[1..]
            : e.Message,
        _ => e.Message,
    };

    private static void WriteUsageError(string message)
    {
        WriteError(message);
        Console.Error.WriteLine($"Run '{s_commandPath} --help' for usage.");
    }

    private static bool IsCancellation(Exception e) => e switch
    {
        OperationCanceledException => true,
        AggregateException aggregate => aggregate.InnerExceptions.All(IsCancellation),
        _ => e.InnerException is { } inner && IsCancellation(inner),
    };
}

/// <summary>The command line is wrong in a way the parser cannot see (exit code 2); with <paramref name="showHelp"/>, the command's help is printed first.</summary>
internal sealed class UsageException(string message, bool showHelp = false) : Exception(message)
{
    public bool ShowHelp { get; } = showHelp;
}

/// <summary>A failure with a one-line message and lines of detail printed after it (exit code 1).</summary>
internal sealed class ReportedFailureException(string message, IReadOnlyList<string> details) : Exception(message)
{
    public IReadOnlyList<string> Details { get; } = details;
}
