using System.CommandLine;
using TvixFuseBuild.Castore;

namespace TvixFuseBuild.Tool;

/// <summary>Exit codes and error reporting shared by every command: one clear line per error, never a stack trace.</summary>
internal static class ToolConsole
{
    public const int Ok = 0;
    public const int Failed = 1;
    public const int Usage = 2;

    public const string Name = "tvix-fuse-build";

    public static int Invoke(RootCommand root, string[] args)
    {
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var error in parse.Errors)
            {
                Console.Error.WriteLine($"{Name}: {error.Message}");
            }

            Console.Error.WriteLine($"Run '{Name} --help' for usage.");
            return Usage;
        }

        try
        {
            // Ctrl-C and SIGTERM cancel the command's token; it then has this long to tear down (kill a sandbox, unmount)
            // before System.CommandLine gives up on it. Its 2 s default is too short on a busy machine.
            return parse.Invoke(new InvocationConfiguration
            {
                EnableDefaultExceptionHandler = false,
                ProcessTerminationTimeout = TimeSpan.FromSeconds(30),
            });
        }
        catch (Exception e)
        {
            return Report(e);
        }
    }

    /// <summary>Prints one line for <paramref name="e"/> and returns the exit code it deserves.</summary>
    public static int Report(Exception e)
    {
        switch (e)
        {
            case UsageException usage:
                Console.Error.WriteLine($"{Name}: {usage.Message}");
                return Usage;
            case Build.Requests.BuildRequestValidationException invalid:
                Console.Error.WriteLine($"{Name}: invalid request: {invalid.Message}");
                return Failed;
            case ReportedFailureException reported:
                Console.Error.WriteLine(reported.Message);
                return Failed;
            case OperationCanceledException:
                Console.Error.WriteLine($"{Name}: cancelled");
                return Failed;
            case CastoreException or IOException or UnauthorizedAccessException or FormatException or Sandbox.SandboxException:
                Console.Error.WriteLine($"{Name}: error: {e.Message}");
                return Failed;
            case AggregateException aggregate when aggregate.InnerExceptions.Count == 1:
                return Report(aggregate.InnerExceptions[0]);
            default:
                Console.Error.WriteLine($"{Name}: internal error: {e.GetType().Name}: {e.Message}");
                if (Environment.GetEnvironmentVariable("TVIX_FUSE_BUILD_DEBUG") is "1")
                {
                    Console.Error.WriteLine(e);
                }

                return Failed;
        }
    }
}

/// <summary>The command line is wrong in a way the parser cannot see (exit code 2).</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>A failure whose message is already the complete text to print, possibly several lines (exit code 1).</summary>
internal sealed class ReportedFailureException(string message) : Exception(message);
