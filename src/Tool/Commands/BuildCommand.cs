using System.CommandLine;
using TvixFuseBuild.Build.Pipeline;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Sandbox;

namespace TvixFuseBuild.Tool.Commands;

/// <summary><c>tvix-fuse-build build [REQUEST]</c>: a BuildRequest in, a Build (or snix BuildResponse) out.</summary>
internal static class BuildCommand
{
    private const int FailureLogLines = 25;

    public static Command Create()
    {
        var request = new Argument<string>("REQUEST")
        {
            Description = "The BuildRequest: a file, or '-' for stdin (the default). Protobuf JSON or binary, detected unless --format says.",
            Arity = ArgumentArity.ZeroOrOne,
            DefaultValueFactory = _ => "-",
        };
        var protocol = new Option<string>("--protocol")
        {
            Description = "tvix (tvix.build.v1: reply Build) or snix (snix.build.v1: reply BuildResponse).",
            DefaultValueFactory = _ => "tvix",
        };
        protocol.AcceptOnlyFromAmong("tvix", "snix");
        var format = new Option<string?>("--format") { Description = "json or binary: the request's format, and the reply's (default: detected from the request)." };
        format.AcceptOnlyFromAmong("json", "binary");
        var output = new Option<string?>("--out", "-o")
        {
            Description = "Write the reply to FILE instead of stdout: a regular file there is replaced atomically, a character device or FIFO " +
                          "written through; a symlink (never followed), directory or other file there is refused.",
            HelpName = "FILE",
        };
        var common = new BuildOptions();
        var command = new Command("build", "Run a tvix/snix BuildRequest: inputs mounted lazily from the store, the command in a namespace sandbox, the outputs ingested and scanned for the needles. The build's log goes to stderr as it is written; the reply to stdout.")
        {
            request,
            protocol,
            format,
            output,
        };
        common.AddTo(command);
        command.SetAction(async (parse, cancellationToken) =>
        {
            var buildProtocol = parse.GetValue(protocol) == "snix" ? BuildProtocol.Snix : BuildProtocol.Tvix;
            MessageFormat? requestFormat = parse.GetValue(format) switch
            {
                "json" => MessageFormat.Json,
                "binary" => MessageFormat.Binary,
                _ => null,
            };

            var (spec, detected) = BuildMessages.ReadRequest(parse.GetValue(request)!, buildProtocol, requestFormat);
            await using var store = StoreSelection.Open(parse);
            var run = await common.RunAsync(parse, store, spec, buildProtocol, cancellationToken);
            BuildMessages.WriteOutput(parse.GetValue(output), BuildMessages.FormatReply(spec, run.Result, buildProtocol, detected));
            return ToolConsole.Ok;
        });
        return command;
    }

    /// <summary>The options <c>build</c> and <c>run</c> share, and the way both run a build and report its failure.</summary>
    internal sealed class BuildOptions
    {
        private readonly Option<bool> _keepFailed = new("--keep-failed", "-K") { Description = "Keep the build directory of a failed build and print its path." };
        private readonly Option<string?> _logFile = new("--log-file")
        {
            Description = "Also write the build's whole log to FILE: a regular file there is replaced (by a new file, at once), a character " +
                          "device or FIFO written through; a symlink (never followed), directory or other file there is refused.",
            HelpName = "FILE",
        };
        private readonly Option<bool> _rebuild = new("--rebuild") { Description = "Run even when an identical request's outputs are already recorded in the store." };
        private readonly Option<double?> _timeout = new("--timeout") { Description = "Kill the build after SECONDS.", HelpName = "SECONDS" };
        private readonly Option<double?> _silenceTimeout = new("--max-silent-time") { Description = "Kill the build when it prints nothing for SECONDS.", HelpName = "SECONDS" };
        private readonly Option<long?> _logLimit = new("--max-log-size") { Description = "Kill the build when its log exceeds BYTES.", HelpName = "BYTES" };
        private readonly Option<bool> _quiet = new("--quiet", "-q") { Description = "Do not copy the build's log to stderr (it is still shown when the build fails)." };
        private readonly LimitOptions _limits = new();

        public void AddTo(Command command)
        {
            command.Options.Add(_keepFailed);
            command.Options.Add(_logFile);
            command.Options.Add(_rebuild);
            command.Options.Add(_timeout);
            command.Options.Add(_silenceTimeout);
            command.Options.Add(_logLimit);
            command.Options.Add(_quiet);
            _limits.AddTo(command);
        }

        public async Task<BuildRun> RunAsync(
            ParseResult parse, Castore.Stores.CastoreStore store, BuildSpec spec, BuildProtocol protocol, CancellationToken cancellationToken)
        {
            var runner = new BuildRunner(store, new BuildRunnerOptions
            {
                KeepFailed = parse.GetValue(_keepFailed),
                LogFile = parse.GetValue(_logFile),
                Rebuild = parse.GetValue(_rebuild),
                ResultCache = ResultCache.Default,
                Timeout = Seconds(parse.GetValue(_timeout), "--timeout"),
                SilenceTimeout = Seconds(parse.GetValue(_silenceTimeout), "--max-silent-time"),
                LogLimit = parse.GetValue(_logLimit) is { } limit and <= 0 ? throw new UsageException("--max-log-size must be positive") : parse.GetValue(_logLimit),
                Log = line => Console.Error.WriteLine($"{ToolConsole.Name}: {line}"),
                Limits = _limits.Parse(parse),
            });

            using var stderr = Console.OpenStandardError();
            SandboxOutput? output = parse.GetValue(_quiet)
                ? null
                : async (chunk, ct) =>
                {
                    await stderr.WriteAsync(chunk, ct);
                    await stderr.FlushAsync(ct);
                };
            try
            {
                return await runner.RunAsync(spec, protocol, output, cancellationToken);
            }
            catch (BuildFailedException failure)
            {
                throw new ReportedFailureException(Describe(failure));
            }
        }

        private static TimeSpan? Seconds(double? value, string option) => value switch
        {
            null => null,
            <= 0 => throw new UsageException($"{option} must be positive"),
            _ => TimeSpan.FromSeconds(value.Value),
        };

        private static string Describe(BuildFailedException failure)
        {
            var lines = new List<string> { $"{ToolConsole.Name}: build failed: {failure.Message}" };
            var tail = failure.LastLogLines(FailureLogLines);
            if (tail.Count > 0)
            {
                lines.Add($"{ToolConsole.Name}: last {tail.Count} lines of the log:");
                lines.AddRange(tail.Select(l => "  " + l));
            }

            if (failure.KeptDirectory is { } kept)
            {
                lines.Add($"{ToolConsole.Name}: the build directory is kept at {kept}");
            }

            return string.Join('\n', lines);
        }
    }
}
