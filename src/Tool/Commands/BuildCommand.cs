using System.CommandLine;
using TvixFuseBuild.Build.Grpc;
using TvixFuseBuild.Build.Pipeline;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Build.Service;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Transfer;
using TvixFuseBuild.Sandbox;

namespace TvixFuseBuild.Tool.Commands;

/// <summary><c>tvix-fuse-build build [REQUEST]</c>: a BuildRequest in, a Build (or snix BuildResponse) out.</summary>
internal static class BuildCommand
{
    public static Command Create()
    {
        var request = new Argument<string?>("REQUEST")
        {
            Description = "The BuildRequest: a file, or '-' for stdin; without it, stdin unless that is a terminal. Protobuf JSON or binary, detected unless --format says.",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var protocol = new Option<string>("--protocol")
        {
            Description = "tvix (tvix.build.v1: reply Build) or snix (snix.build.v1: reply BuildResponse).",
            DefaultValueFactory = _ => "tvix",
        };
        protocol.AcceptOnlyFromAmong("tvix", "snix");
        var format = new Option<string?>("--format")
        {
            Description = "json or binary: the request's format, and the reply's (default: detected from the request; on a terminal, " +
                          "without --format or --out, a readable summary in place of the reply).",
        };
        format.AcceptOnlyFromAmong("json", "binary");
        var output = new Option<string?>("--out", "-o")
        {
            Description = "Write the reply to FILE instead of stdout: a regular file there is replaced atomically, a character device or FIFO " +
                          "written through; a symlink (never followed), directory or other file there is refused.",
            HelpName = "FILE",
        };
        var common = new BuildOptions();
        var command = new Command("build", "Run a tvix/snix BuildRequest: inputs mounted lazily from the store, the command in a namespace sandbox, the outputs ingested and scanned for the needles. The build's log goes to stderr as it is written; the reply to stdout (on a terminal: each output's path, kind, digest, size and references).")
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

            string? path = parse.GetValue(request);
            if (path is null && !Console.IsInputRedirected)
            {
                throw new UsageException("no request: give a REQUEST file, or '-' to type one on the terminal", showHelp: true);
            }

            path ??= ToolInput.Stdin;
            byte[] data = ToolInput.ReadAllBytes(path, "request");
            var detected = requestFormat ?? BuildMessages.DetectFormat(data);
            var spec = BuildMessages.ParseRequest(data, buildProtocol, detected, ToolInput.Display(path));
            await using var store = StoreSelection.Open(parse);
            var run = await common.RunAsync(parse, store, spec, buildProtocol, cancellationToken);
            string? outFile = parse.GetValue(output);
            bool terminal = !Console.IsOutputRedirected && outFile is null or BuildMessages.StdioName;
            bool reply = !terminal || requestFormat is not null;
            bool summary = !Console.IsOutputRedirected && (!terminal || requestFormat is null);
            if (summary || (reply && HostFile.MayWaitForReader(outFile is null or BuildMessages.StdioName ? null : outFile)))
            {
                // A write that may wait for a reader (a FIFO, a pipe, a terminal) is not done on the calling thread (a
                // cache hit is still on it): that thread must stay free to act on a signal.
                await Task.CompletedTask.ConfigureAwait(ConfigureAwaitOptions.ForceYielding);
            }

            if (reply)
            {
                // A regular file may still be on a filesystem that hangs; the signal must then reach another thread.
                byte[] replyBytes = BuildMessages.FormatReply(spec, run.Result, buildProtocol, detected);
                Termination.ElsewhereDuring(() => BuildMessages.WriteOutput(outFile, replyBytes));
            }

            if (summary)
            {
                WriteSummary(Console.Out, spec, run);
            }

            return ToolConsole.Ok;
        });

        // Up to the result cache, the action waits only where it watches ToolConsole.Stopping (stdin or a FIFO, a
        // remote store); the build runners go on on the pool after a miss.
        return ToolConsole.StartsInline(command);
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

        public Option<bool> Rebuild => _rebuild;

        private readonly Option<bool> _rebuild = new("--rebuild") { Description = "Run even when an identical request's outputs are already recorded in the store." };
        private readonly Option<double?> _timeout = new("--timeout") { Description = "Kill the build after SECONDS.", HelpName = "SECONDS" };
        private readonly Option<double?> _silenceTimeout = new("--max-silent-time") { Description = "Kill the build when it prints nothing for SECONDS.", HelpName = "SECONDS" };
        private readonly Option<long?> _logLimit = new("--max-log-size") { Description = "Kill the build when its log exceeds BYTES.", HelpName = "BYTES" };
        private readonly Option<bool> _quiet = new("--quiet", "-q") { Description = "Do not copy the build's log to stderr (it is still shown when the build fails)." };
        private readonly Option<string[]> _builders = new("--builder")
        {
            Description = "Build on the remote builder at URL (tvix-fuse-build serve, or tvix's or snix's BuildService) instead of here: " +
                          $"{BuilderAddress.Usage}. Repeat for several (also ${BuilderAddress.BuildersVariable}, space-separated); a dns:/// name " +
                          "stands for every address it resolves to. Builds are spread over them round-robin, and one whose builder becomes " +
                          "unreachable is retried on another. Only what the builders' store lacks is uploaded; the outputs come back into the " +
                          "local store, and the result cache is used as for a local build. The log is shown only when the build fails; " +
                          "--timeout is the deadline of the call; --keep-failed, --log-file, --max-silent-time, --max-log-size and the limits are " +
                          "the builder's own settings and are refused with --builder.",
            HelpName = "URL",
            Arity = ArgumentArity.ZeroOrMore,
        };
        private readonly Option<string?> _builderStore = new("--builder-store")
        {
            Description = "The castore the builders build from (a grpc+ store address), where the inputs are uploaded and the outputs fetched. " +
                          "Default with one builder: the store it serves at its own address. Required with several: the one they all use " +
                          "(e.g. their serve --store).",
            HelpName = "URL",
        };
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
            command.Options.Add(_builders);
            command.Options.Add(_builderStore);
            _limits.AddTo(command);
            FullTool.UsesGrpcClientWhen(command, parse =>
                parse.GetValue(_builders) is { Length: > 0 } ||
                !string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable(BuilderAddress.BuildersVariable)));
            MustBePositive(_timeout);
            MustBePositive(_silenceTimeout);
            MustBePositive(_logLimit);
        }

        /// <summary>A zero or negative value is refused by the parser, before anything is read or run.</summary>
        private static void MustBePositive<T>(Option<T?> option)
            where T : struct, IComparable<T> =>
            option.Validators.Add(result =>
            {
                T? value;
                try
                {
                    value = result.GetValueOrDefault<T?>();
                }
                catch (InvalidOperationException)
                {
                    return; // not a number at all: the parser says so
                }

                if (value is { } given && given.CompareTo(default) <= 0)
                {
                    result.AddError($"{option.Name} must be positive");
                }
            });

        /// <summary>
        /// Runs <paramref name="spec"/> through the build service the options select (here, or on the builders) and
        /// turns its failure into the one wording of <see cref="BuildFailureText"/>.
        /// </summary>
        public async Task<BuildRun> RunAsync(
            ParseResult parse, Castore.Stores.CastoreStore store, BuildSpec spec, BuildProtocol protocol, CancellationToken cancellationToken,
            Action<BuildFailedException>? onFailure = null)
        {
            await using var service = CreateService(parse, store);
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
                return await service.Service.DoBuildAsync(spec, protocol, new BuildCallOptions { Output = output }, cancellationToken);
            }
            catch (BuildFailedException failure)
            {
                onFailure?.Invoke(failure);
                throw new ReportedFailureException(
                    BuildFailureText.Headline(failure), [.. BuildFailureText.Details(failure).Select(l => l.StartsWith(' ') ? l : $"{ToolConsole.Name}: {l}")]);
            }
        }

        private Selected CreateService(ParseResult parse, Castore.Stores.CastoreStore store)
        {
            IReadOnlyList<BuilderAddress> builders;
            try
            {
                builders = BuilderAddress.ParseAll(parse.GetValue(_builders) ?? [], Environment.GetEnvironmentVariable(BuilderAddress.BuildersVariable));
            }
            catch (StoreAddressException e)
            {
                throw new UsageException($"--builder: {e.Message}");
            }

            var timeout = Seconds(parse.GetValue(_timeout), "--timeout");
            Action<string> log = line => Console.Error.WriteLine($"{ToolConsole.Name}: {line}");
            if (builders.Count > 0)
            {
                // What the builder decides for itself, not this side: refused rather than silently ignored.
                Option[] local = [_keepFailed, _logFile, _silenceTimeout, _logLimit, .. _limits.Options];
                if (local.FirstOrDefault(o => parse.GetResult(o) is { Implicit: false }) is { } given)
                {
                    throw new UsageException($"{given.Name} applies to local builds; with --builder the builder's own settings apply");
                }

                if (!FullTool.HasGrpcClient)
                {
                    throw FullTool.Missing("--builder");
                }

                try
                {
                    var remote = new GrpcBuildService(store, builders, new GrpcBuildServiceOptions
                    {
                        BuilderStore = parse.GetValue(_builderStore),
                        ResultCache = ResultCache.Default,
                        Rebuild = parse.GetValue(_rebuild),
                        Timeout = timeout,
                        Log = log,
                        TokenFile = StoreSelection.TokenFile(parse),
                    });
                    return new Selected(remote, remote);
                }
                catch (StoreAddressException e)
                {
                    throw new UsageException(parse.GetValue(_builderStore) is null ? $"{e.Message} (--builder-store URL)" : e.Message);
                }
            }

            if (parse.GetResult(_builderStore) is { Implicit: false })
            {
                throw new UsageException("--builder-store needs --builder");
            }

            var runner = new BuildRunner(store, new BuildRunnerOptions
            {
                KeepFailed = parse.GetValue(_keepFailed),
                LogFile = parse.GetValue(_logFile),
                Rebuild = parse.GetValue(_rebuild),
                ResultCache = ResultCache.Default,
                Timeout = timeout,
                SilenceTimeout = Seconds(parse.GetValue(_silenceTimeout), "--max-silent-time"),
                LogLimit = parse.GetValue(_logLimit) is { } limit and <= 0 ? throw new UsageException("--max-log-size must be positive") : parse.GetValue(_logLimit),
                Log = log,
                Limits = _limits.Parse(parse),
            });
            return new Selected(new LocalBuildService(runner), null);
        }

        /// <summary>The build service, and what to dispose of with it.</summary>
        private sealed record Selected(IBuildService Service, IAsyncDisposable? Owned) : IAsyncDisposable
        {
            public ValueTask DisposeAsync() => Owned?.DisposeAsync() ?? ValueTask.CompletedTask;
        }

        private static TimeSpan? Seconds(double? value, string option) => value switch
        {
            null => null,
            <= 0 => throw new UsageException($"{option} must be positive"),
            _ => TimeSpan.FromSeconds(value.Value),
        };
    }

    /// <summary>
    /// For people: each output's path, kind, digest, size, and the needles found in it, each shown as the name of the
    /// input or output it stands for when one starts with it (Nix's HASH-NAME), else as its text.
    /// </summary>
    internal static void WriteSummary(TextWriter writer, BuildSpec spec, BuildRun run)
    {
        string[] names = [.. spec.Outputs.Select(o => o.Split('/')[^1]), .. spec.Inputs.Select(i => i.Name.ToString())];
        string[] needles = [.. spec.RefscanNeedles.Select(n => names.FirstOrDefault(name => name.StartsWith(n + "-", StringComparison.Ordinal)) ?? n)];
        writer.WriteLine(run.Cached
            ? $"{Plural(run.Result.Outputs.Length, "output")}, from the result cache (--rebuild runs it again):"
            : $"built {Plural(run.Result.Outputs.Length, "output")}:");
        for (int i = 0; i < run.Result.Outputs.Length; i++)
        {
            var output = run.Result.Outputs[i];
            string references = output.Needles.Length == 0
                ? "no references"
                : "references " + string.Join(", ", output.Needles.Select(n => n < needles.Length ? ToolText.Elide(needles[n]) : $"#{n}"));
            writer.WriteLine($"  /{ToolText.Elide(spec.Outputs[i])}: {NodeText.Summary(output.Node)}; {references}");
        }
    }

    private static string Plural(int n, string noun) => n == 1 ? $"1 {noun}" : $"{n} {noun}s";
}
