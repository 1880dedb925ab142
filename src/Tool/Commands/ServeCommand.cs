using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using TvixFuseBuild.Build.Pipeline;
using TvixFuseBuild.Build.Service;
using TvixFuseBuild.Castore.Stores.Local;
using TvixFuseBuild.Server;

namespace TvixFuseBuild.Tool.Commands;

/// <summary>
/// <c>serve --listen ADDR... [--max-builds N] [--tls-cert FILE --tls-key FILE [--client-ca FILE]] [--token-file FILE]</c>:
/// the castore BlobService and DirectoryService over the store, and the BuildService, over gRPC (tvix and snix
/// packages), with the standard health service and server reflection, until SIGTERM or Ctrl-C; then a graceful
/// shutdown (health NOT_SERVING, running builds get the grace period).
/// </summary>
internal static class ServeCommand
{
    public const string ReadyPrefix = "listening on ";

    public static Command Create()
    {
        var listen = new Option<string[]>("--listen", "-l")
        {
            Description = "Where to listen, as tvix writes it: [::1]:8000, 127.0.0.1:8000, localhost:8000 or unix:/ABSOLUTE/PATH; " +
                          "port 0 picks a free port. Repeat for several. Without --token-file or --client-ca anyone who can connect can run builds: " +
                          "keep to loopback and unix sockets (the default examples) unless the network is yours.",
            HelpName = "ADDR",
            Arity = ArgumentArity.OneOrMore,
            Required = true,
        };
        var maxBuilds = new Option<int?>("--max-builds", "-j")
        {
            Description = "Builds run at once; more wait their turn (default: the number of cores).",
            HelpName = "N",
        };
        var grace = new Option<double>("--grace-period")
        {
            Description = "On SIGTERM or Ctrl-C, how long running builds may go on before they are cancelled (a second signal cancels them at once).",
            HelpName = "SECONDS",
            DefaultValueFactory = _ => 10,
        };
        var timeout = new Option<double?>("--timeout") { Description = "Kill a build after SECONDS.", HelpName = "SECONDS" };
        var silenceTimeout = new Option<double?>("--max-silent-time") { Description = "Kill a build that prints nothing for SECONDS.", HelpName = "SECONDS" };
        var logLimit = new Option<long?>("--max-log-size") { Description = "Kill a build whose log exceeds BYTES.", HelpName = "BYTES" };
        var rebuild = new Option<bool>("--rebuild") { Description = "Run every request, even one whose outputs are already recorded in the result cache." };
        var verbose = new Option<bool>("--verbose", "-v") { Description = "Print a line to stderr when a build is accepted, waits, ends or is refused." };
        var buildLogs = new Option<bool>("--build-logs") { Description = "Copy every build's log to stderr, each line prefixed with [build N]." };
        var allowReadOnly = new Option<string[]>("--allow-ro-path")
        {
            Description = "Let requests name read-only host paths (available_ro_paths) at or under PREFIX, an absolute path; repeat for several. " +
                          "None by default: a request naming any other is refused (FAILED_PRECONDITION). Symlinks, build directories, the store, /proc and /sys are refused even here.",
            HelpName = "PREFIX",
            Arity = ArgumentArity.ZeroOrMore,
        };

        var tlsCert = new Option<string?>("--tls-cert")
        {
            Description = "Serve TLS (HTTP/2 with ALPN) instead of cleartext h2c, with this certificate (PEM; intermediates may follow it). Needs --tls-key.",
            HelpName = "FILE",
        };
        var tlsKey = new Option<string?>("--tls-key") { Description = "The private key of --tls-cert (PEM).", HelpName = "FILE" };
        var clientCa = new Option<string?>("--client-ca")
        {
            Description = "Require a client certificate issued by this CA (PEM bundle); calls without one, or with another, get UNAUTHENTICATED saying why. Needs TLS.",
            HelpName = "FILE",
        };
        var tokenFile = new Option<string?>("--token-file")
        {
            Description = "Require 'authorization: Bearer TOKEN' on every call, TOKEN being this file's content (surrounding whitespace ignored; compared in constant time); " +
                          "calls without it or with another get UNAUTHENTICATED. The health service (grpc.health.v1.Health) answers without it, so that orchestrators can probe.",
            HelpName = "FILE",
        };

        var limits = new LimitOptions();
        var command = new Command(
            "serve",
            "Serve the store (castore BlobService, DirectoryService) and run builds for remote clients (BuildService.DoBuild), " +
            "under the tvix.*.v1 and snix.*.v1 packages, over HTTP/2 on TCP or unix sockets (cleartext, or TLS with --tls-cert), " +
            "with the standard health service (grpc.health.v1.Health) and server reflection. Prints " +
            $"'{ReadyPrefix}ADDR...' once listening; runs until SIGTERM or Ctrl-C, then drains: health says NOT_SERVING, new builds " +
            "are refused (UNAVAILABLE), running ones get the grace period, and the store is served until they end. A failed " +
            "build's reason and log tail go to its client; the server itself stays quiet unless told otherwise.")
        {
            listen,
            maxBuilds,
            grace,
            timeout,
            silenceTimeout,
            logLimit,
            rebuild,
            verbose,
            buildLogs,
            allowReadOnly,
            tlsCert,
            tlsKey,
            clientCa,
            tokenFile,
        };
        limits.AddTo(command);

        // Synchronous on purpose: System.CommandLine ends an async action two seconds after SIGTERM, which would cut the
        // grace period short and could leave builds behind. This command handles its signals itself.
        command.SetAction(parse =>
        {
            var settings = new Settings(
                [.. (parse.GetValue(listen) ?? []).Select(ParseAddress)],
                parse.GetValue(maxBuilds) switch
                {
                    null => Environment.ProcessorCount,
                    < 1 or > 1024 => throw new UsageException("--max-builds must be between 1 and 1024"),
                    var n => n.Value,
                },
                parse.GetValue(grace) is var g and >= 0 and <= 86_400 ? TimeSpan.FromSeconds(g) : throw new UsageException("--grace-period must be between 0 and 86400 seconds"),
                Seconds(parse.GetValue(timeout), "--timeout"),
                Seconds(parse.GetValue(silenceTimeout), "--max-silent-time"),
                parse.GetValue(logLimit) is { } limit and <= 0 ? throw new UsageException("--max-log-size must be positive") : parse.GetValue(logLimit),
                parse.GetValue(rebuild),
                parse.GetValue(verbose),
                parse.GetValue(buildLogs),
                [.. (parse.GetValue(allowReadOnly) ?? []).Select(AllowedPrefix)],
                limits.Parse(parse),
                parse.GetValue(tlsCert),
                parse.GetValue(tlsKey),
                parse.GetValue(clientCa),
                parse.GetValue(tokenFile));
            if ((settings.TlsCert is null) != (settings.TlsKey is null))
            {
                throw new UsageException(settings.TlsCert is null ? "--tls-key needs --tls-cert" : "--tls-cert needs --tls-key");
            }

            if (settings.ClientCa is not null && settings.TlsCert is null)
            {
                throw new UsageException("--client-ca needs TLS: give --tls-cert and --tls-key too");
            }

            return FullTool.HasServer ? ServeAsync(parse, settings).GetAwaiter().GetResult() : throw FullTool.Missing("serve");
        });

        // It stops on its own after a signal: running builds get the grace period.
        return FullTool.Server(ToolConsole.SelfStopping(command));
    }

    private sealed record Settings(
        GrpcListenAddress[] Listen,
        int MaxBuilds,
        TimeSpan Grace,
        TimeSpan? Timeout,
        TimeSpan? SilenceTimeout,
        long? LogLimit,
        bool Rebuild,
        bool Verbose,
        bool BuildLogs,
        string[] AllowedReadOnlyPaths,
        Sandbox.SandboxLimits Limits,
        string? TlsCert,
        string? TlsKey,
        string? ClientCa,
        string? TokenFile);

    private static async Task<int> ServeAsync(ParseResult parse, Settings settings)
    {
        // Credentials first: a bad file is reported before the store is opened or anything listens.
        var tls = settings.TlsCert is null ? null : ServerTls.Load(settings.TlsCert, settings.TlsKey!, settings.ClientCa);
        byte[]? token = settings.TokenFile is null ? null : ReadToken(settings.TokenFile);

        // Before anything listens: a signal right after the ready line must already mean a graceful stop.
        using var signals = new ShutdownSignals();
        await using var store = StoreSelection.Open(parse);

        // A blob a client was told about (or sent) stays for an hour, even through 'gc --older-than 0s'.
        using var inUse = new ExpiringTempRoots(store.CreateTempRoots, GcOptions.DefaultOlderThan);
        var runner = new BuildRunner(store, new BuildRunnerOptions
        {
            Rebuild = settings.Rebuild,
            ResultCache = ResultCache.Default,
            Timeout = settings.Timeout,
            SilenceTimeout = settings.SilenceTimeout,
            LogLimit = settings.LogLimit,
            Log = settings.Verbose ? Note : null,
            AllowedReadOnlyPaths = settings.AllowedReadOnlyPaths,

            Limits = settings.Limits,
        });

        // What builds of earlier servers (or CLI runs) killed mid-build left behind.
        runner.RemoveStaleBuilds();
        var builds = new BuildGrpcService(new LocalBuildService(runner), new BuildGrpcServiceOptions
        {
            MaxConcurrentBuilds = settings.MaxBuilds,
            Events = settings.Verbose ? Note : null,
            BuildOutput = settings.BuildLogs ? line => Console.Error.WriteLine(line) : null,
        });
        // Calls still open this long after the drain (the builds have ended by then) are cut off.
        var server = new GrpcServer(new GrpcServerOptions
            {
                ShutdownTimeout = TimeSpan.FromSeconds(10),
                ErrorLog = Note,
                Tls = tls,
                BearerToken = token,
            })
            .AddCastore(new BlobGrpcService(store.Blobs, inUse: inUse), new DirectoryGrpcService(store.Directories))
            .AddBuildService(builds);
        foreach (var address in settings.Listen)
        {
            server.Listen(address);
        }

        await server.StartAsync();
        try
        {
            Console.Out.WriteLine(ReadyPrefix + string.Join(' ', server.BoundAddresses));
            Console.Out.Flush();
            var signal = await signals.First;
            var deadline = DateTime.UtcNow + settings.Grace;
            Note($"{signal}: stopping; {Plural(builds.RunningBuilds, "build")} running, {builds.WaitingBuilds} waiting " +
                 $"(grace period {settings.Grace.TotalSeconds.ToString("0.#", CultureInfo.InvariantCulture)} s)");
            server.BeginDrain();
            builds.BeginShutdown();

            // Draining: health says NOT_SERVING and new builds are refused, while the running builds get the grace
            // period (their clients can still fetch the outputs); then they are cancelled so that their clients hear
            // UNAVAILABLE, and the server stops.
            var drained = builds.WaitForCallsAsync();
            var ended = await Task.WhenAny(drained, Task.Delay(Max(deadline - DateTime.UtcNow, TimeSpan.Zero)), signals.Second);
            if (ended != drained)
            {
                Note(ended == signals.Second
                    ? $"{await signals.Second}: cancelling the running builds"
                    : "the grace period is over: cancelling the running builds");
                await builds.CancelAndWaitAsync();
            }

            await server.StopAsync();
        }
        finally
        {
            // Stops listening and removes the socket files when anything above failed (a no-op after a clean stop).
            await server.StopAsync();
            await builds.CancelAndWaitAsync();
        }

        return ToolConsole.Ok;
    }

    /// <summary>The token in <paramref name="file"/>, without surrounding whitespace (a trailing newline is usual).</summary>
    private static byte[] ReadToken(string file)
    {
        string text;
        try
        {
            text = File.ReadAllText(file);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"--token-file {file}: {e.Message}", e);
        }

        string token = text.Trim();
        return token.Length > 0 ? Encoding.UTF8.GetBytes(token) : throw new UsageException($"--token-file {file} is empty");
    }

    private static string AllowedPrefix(string text)
    {
        var parts = text.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (!text.StartsWith('/') || parts.Any(p => p is "." or ".."))
        {
            throw new UsageException($"--allow-ro-path {text}: expected an absolute path without '.' or '..'");
        }

        return "/" + string.Join('/', parts);
    }

    private static GrpcListenAddress ParseAddress(string text)
    {
        try
        {
            return GrpcListenAddress.Parse(text);
        }
        catch (FormatException e)
        {
            throw new UsageException($"--listen: {e.Message}");
        }
    }

    private static TimeSpan? Seconds(double? value, string option) => value switch
    {
        null => null,
        <= 0 => throw new UsageException($"{option} must be positive"),
        _ => TimeSpan.FromSeconds(value.Value),
    };

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    private static string Plural(int n, string noun) => n == 1 ? $"1 {noun}" : $"{n} {noun}s";

    private static void Note(string line) => Console.Error.WriteLine($"{ToolConsole.Name}: {line}");

    /// <summary>SIGTERM, SIGINT (Ctrl-C) and SIGHUP, taken over from the runtime: the first starts the shutdown, the second hurries it.</summary>
    private sealed class ShutdownSignals : IDisposable
    {
        private readonly TaskCompletionSource<string> _first = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource<string> _second = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly PosixSignalRegistration[] _registrations;
        private int _count;

        public ShutdownSignals() =>
            _registrations = [.. new[] { PosixSignal.SIGTERM, PosixSignal.SIGINT, PosixSignal.SIGHUP }.Select(s => PosixSignalRegistration.Create(s, Handle))];

        public Task<string> First => _first.Task;

        public Task<string> Second => _second.Task;

        private void Handle(PosixSignalContext context)
        {
            context.Cancel = true;
            string name = context.Signal switch
            {
                PosixSignal.SIGTERM => "SIGTERM",
                PosixSignal.SIGINT => "SIGINT",
                _ => "SIGHUP",
            };
            (Interlocked.Increment(ref _count) == 1 ? _first : _second).TrySetResult(name);
        }

        public void Dispose()
        {
            foreach (var registration in _registrations)
            {
                registration.Dispose();
            }
        }
    }
}
