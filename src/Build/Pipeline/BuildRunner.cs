using System.Collections.Immutable;
using System.Diagnostics;
using System.Text;
using TvixFuseBuild.Build.Refscan;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Stores.Local;
using TvixFuseBuild.Castore.Transfer;
using TvixFuseBuild.Fuse;
using TvixFuseBuild.Sandbox;

namespace TvixFuseBuild.Build.Pipeline;

/// <summary>What a build produced, and how.</summary>
/// <param name="Result">The outputs (named by their path's last component) and the needles found in each.</param>
/// <param name="Cached">True when the result cache answered and nothing ran.</param>
/// <param name="Sandbox">The command's run, when it ran.</param>
public sealed record BuildRun(BuildResult Result, bool Cached, SandboxResult? Sandbox);

/// <summary>
/// The build pipeline: validate the request, check that its inputs are in the store, mount them lazily with FUSE,
/// run the command in the namespace sandbox, check and ingest the outputs while scanning them for the needles, and
/// tear everything down. Thread-safe: one runner serves many builds at once.
/// </summary>
public sealed class BuildRunner(CastoreStore store, BuildRunnerOptions? options = null)
{
    private readonly BuildRunnerOptions _options = options ?? new BuildRunnerOptions();
    private int _swept;

    public CastoreStore Store => store;

    /// <summary>
    /// Runs <paramref name="spec"/>; the command's output goes to <paramref name="output"/> as it is written.
    /// </summary>
    /// <exception cref="BuildRequestValidationException">The request is invalid (tvix's message) or cannot possibly run.</exception>
    /// <exception cref="ObjectNotFoundException">An input is not in the store.</exception>
    /// <exception cref="SandboxRefusedException">The host does not meet the request's constraints; nothing ran.</exception>
    /// <exception cref="BuildFailedException">The command failed, timed out, or did not produce an output.</exception>
    public async Task<BuildRun> RunAsync(
        BuildSpec spec, BuildProtocol protocol, SandboxOutput? output = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(spec);
        BuildRequestValidator.ThrowIfInvalid(spec, protocol);
        BuildRequestValidator.ThrowIfNotRunnable(spec);
        if (spec.Constraints is { } constraints)
        {
            SandboxRunner.CheckConstraints(constraints.System, (long)Math.Min(constraints.MinMemory, long.MaxValue));
        }

        CheckReadOnlyPaths(spec);

        // Before the result cache is asked: a build killed after writing it left its directory, and every later run of
        // its request is answered from the cache.
        if (Interlocked.Exchange(ref _swept, 1) == 0)
        {
            RemoveStaleBuilds();
        }

        var requestDigest = spec.ComputeDigest();
        if (!_options.Rebuild && _options.ResultCache is { } cache &&
            await cache.TryGetAsync(requestDigest, store, cancellationToken).ConfigureAwait(false) is { } cached)
        {
            if (_options.Log is not null)
            {
                Log($"request {requestDigest} was built before and its outputs are in the store: not running it again");
            }

            return new BuildRun(cached, Cached: true, Sandbox: null);
        }

        // The rest on the pool: a caller that started this on its own thread (the tool answers a cache hit without
        // starting a thread) gets it back to watch for signals while this claims a build user, mounts and runs.
        await Task.CompletedTask.ConfigureAwait(ConfigureAwaitOptions.ForceYielding);

        // Inputs are in use for the whole build, outputs from their ingestion until the result cache names them: a
        // garbage collection of the store meanwhile keeps both.
        using var tempRoots = store.CreateTempRoots();
        await tempRoots.AddAsync(spec.Inputs, cancellationToken).ConfigureAwait(false);
        await CheckInputsAsync(spec, cancellationToken).ConfigureAwait(false);
        SandboxRunner.EnsureAvailable();

        // Released after the build directory is gone, and so after every process of the build.
        using var user = BuildUser.Claim();
        KillPoint.Reach(KillPoint.AfterUidClaimed);
        var directory = BuildDirectory.Create(_options.WorkRoot, spec, user);
        KillPoint.Reach(KillPoint.AfterBuildDirCreated);
        bool keep = false;
        try
        {
            var sandbox = await RunCommandAsync(spec, directory, user, output, cancellationToken).ConfigureAwait(false);
            if (sandbox.Outcome == SandboxOutcome.Cancelled)
            {
                throw new OperationCanceledException("the build was cancelled", cancellationToken);
            }

            if (!sandbox.Succeeded)
            {
                keep = _options.KeepFailed;
                throw new BuildFailedException(
                    $"the command {Describe(sandbox)}{LimitReport.For(sandbox, _options.LimitNames)}", sandbox, keep ? directory.Root : null);
            }

            foreach (string path in spec.Outputs)
            {
                if (!Exists(directory.HostPath(path)))
                {
                    keep = _options.KeepFailed;
                    throw new BuildFailedException(
                        $"the command succeeded but did not produce the output {path}{LimitReport.For(sandbox, _options.LimitNames)}", sandbox, keep ? directory.Root : null);
                }
            }

            var result = await IngestOutputsAsync(spec, directory, tempRoots, cancellationToken).ConfigureAwait(false);
            if (_options.ResultCache is { } resultCache)
            {
                await resultCache.StoreAsync(requestDigest, spec, result, cancellationToken).ConfigureAwait(false);
                KillPoint.Reach(KillPoint.AfterResultCacheWritten);
            }

            return new BuildRun(result, Cached: false, sandbox);
        }
        finally
        {
            if (keep)
            {
                directory.Keep();
            }
            else
            {
                KillPoint.Reach(KillPoint.DuringTeardown);
                directory.Remove(Log);
            }
        }
    }

    /// <summary>
    /// Removes the build directories (and their mounts) that processes now gone left in this runner's work root, as
    /// after a SIGKILL. The first build of a runner does this by itself. Returns how many were removed.
    /// </summary>
    public int RemoveStaleBuilds() => BuildDirectory.RemoveStale(_options.WorkRoot, Log);

    /// <summary>
    /// Refuses (with <see cref="SandboxRefusedException"/>, naming it) a read-only path that
    /// <see cref="BuildRunnerOptions.AllowedReadOnlyPaths"/> does not allow.
    /// </summary>
    public void CheckReadOnlyPaths(BuildSpec spec)
    {
        if (_options.AllowedReadOnlyPaths is not { } allowed || spec.Constraints?.AvailableReadOnlyPaths is not { Length: > 0 } paths)
        {
            return;
        }

        foreach (string path in paths)
        {
            var parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
            string normalized = "/" + string.Join('/', parts);
            if (!path.StartsWith('/') || parts.Any(p => p is "." or "..") ||
                !allowed.Any(prefix => IsSameOrUnder(normalized, Path.TrimEndingDirectorySeparator(prefix))))
            {
                throw new SandboxRefusedException(allowed.Count == 0
                    ? $"read-only path {path} is not allowed: this server allows no read-only paths"
                    : $"read-only path {path} is not allowed: this server allows only paths under {string.Join(", ", allowed)}");
            }
        }
    }

    private static bool IsSameOrUnder(string path, string dir) =>
        path == dir || dir == "/" || (path.Length > dir.Length && path.StartsWith(dir, StringComparison.Ordinal) && path[dir.Length] == '/');

    private async Task<SandboxResult> RunCommandAsync(
        BuildSpec spec, BuildDirectory directory, BuildUser user, SandboxOutput? output, CancellationToken cancellationToken)
    {
        // The log file is opened here, not by the sandbox, so that it is written the way every file the tool writes is
        // (HostFile: never through a symlink, never replacing a device).
        await using var log = _options.LogFile is { } logFile ? HostFile.CreateStream(logFile) : null;
        SandboxOutput? sink = log is null
            ? output
            : async (chunk, ct) =>
            {
                await log.WriteAsync(chunk, CancellationToken.None).ConfigureAwait(false);
                if (output is not null)
                {
                    await output(chunk, ct).ConfigureAwait(false);
                }
            };
        CastoreMount? mount = null;
        try
        {
            if (spec.Inputs.Length > 0)
            {
                mount = await CastoreMount.MountAsync(
                    directory.Inputs,
                    spec.Inputs,
                    store.Blobs,
                    store.Directories,
                    new CastoreMountOptions
                    {
                        // As root the sandbox runs the build as an unprivileged host user, which needs allow_other.
                        AllowOther = Environment.IsPrivilegedProcess,

                        // This mount lives and dies with this process, and so does the sandbox reading it: nobody is
                        // left to read a dead mount, so the kernel may open files without asking.
                        ZeroMessageOpen = true,
                        Log = Log,
                    },
                    cancellationToken).ConfigureAwait(false);
                KillPoint.Reach(KillPoint.AfterInputsMounted);
            }

            return await SandboxRunner.RunAsync(SandboxSpecFor(spec, directory, user), sink, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            if (mount is not null)
            {
                await mount.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    private SandboxSpec SandboxSpecFor(BuildSpec spec, BuildDirectory directory, BuildUser user)
    {
        var environment = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var variable in spec.EnvironmentVars)
        {
            environment[variable.Key] = Utf8(variable.Value.Span, $"the value of environment variable {variable.Key}");
        }

        var constraints = spec.Constraints;
        return new SandboxSpec
        {
            Command = spec.CommandArgs,
            Environment = environment,
            WorkingDirectory = "/" + spec.WorkingDir,
            ScratchPaths = directory.ScratchPaths.ToDictionary(p => "/" + p.Key, p => p.Value, StringComparer.Ordinal),
            InputsHostDirectory = directory.Inputs,
            InputsDir = "/" + spec.InputsDir,
            InputNames = [.. spec.Inputs.Select(i => Utf8(i.Name.Span, $"the name of input {i.Name.ToQuotedString()}"))],
            AdditionalFiles = spec.AdditionalFiles.ToDictionary(f => "/" + f.Path, f => f.Contents, StringComparer.Ordinal),
            ReadOnlyHostPaths = constraints?.AvailableReadOnlyPaths ?? [],
            ProtectedHostPaths = store.Local is { } local
                ? [BuildDirectory.ParentOf(_options.WorkRoot), local.Root]
                : [BuildDirectory.ParentOf(_options.WorkRoot)],
            User = user,
            BinSh = constraints?.ProvideBinSh == true ? SandboxSpec.BusyboxShell : null,
            Network = constraints?.NetworkAccess == true,
            Timeout = _options.Timeout,
            SilenceTimeout = _options.SilenceTimeout,
            LogLimit = _options.LogLimit,
            System = constraints?.System,
            MinMemory = (long)Math.Min(constraints?.MinMemory ?? 0, long.MaxValue),
            Limits = _options.Limits ?? SandboxLimits.Default,
        };
    }

    private static string Utf8(ReadOnlySpan<byte> bytes, string what)
    {
        try
        {
            return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            throw new BuildRequestValidationException(
                BuildRequestErrorKind.NotUtf8, $"{what} is not valid UTF-8, which this builder cannot pass to a process");
        }
    }

    private async Task<BuildResult> IngestOutputsAsync(
        BuildSpec spec, BuildDirectory directory, TempRoots tempRoots, CancellationToken cancellationToken)
    {
        var scanner = spec.RefscanNeedles.Length > 0 ? ReferenceScanner.ForNeedles(spec.RefscanNeedles) : null;
        var outputs = ImmutableArray.CreateBuilder<BuildOutput>(spec.Outputs.Length);
        foreach (string path in spec.Outputs)
        {
            string host = directory.HostPath(path);
            var name = PathComponent.Create(path[(path.LastIndexOf('/') + 1)..]);

            // One pass: the import hands every name, symlink target and file byte it reads to the scan, which so sees
            // what Nix sees when it scans the output's NAR.
            var scan = scanner is null ? null : new ImportReferenceScan(scanner);
            var node = await HostImporter.ImportAsync(
                    host, name, store.Blobs, store.Directories, new ImportOptions { TempRoots = tempRoots, Observer = scan },
                    cancellationToken: cancellationToken)
                .ConfigureAwait(false);
            outputs.Add(new BuildOutput(node, scan?.Found ?? []));
            if (outputs.Count < spec.Outputs.Length)
            {
                KillPoint.Reach(KillPoint.DuringIngest);
            }
        }

        return new BuildResult(outputs.MoveToImmutable());
    }

    /// <summary>Every input's root object must be in the store (only the roots: nothing is walked).</summary>
    private async Task CheckInputsAsync(BuildSpec spec, CancellationToken cancellationToken)
    {
        var checks = spec.Inputs.Select(async input =>
        {
            bool present = input switch
            {
                // Only that it is there: the mount reads an input's directory when the build looks inside it.
                DirectoryNode d => await store.Directories.HasAsync(d.Digest, cancellationToken).ConfigureAwait(false),
                FileNode f => await store.Blobs.HasAsync(f.Digest, cancellationToken).ConfigureAwait(false),
                _ => true,
            };
            if (!present)
            {
                string what = input is DirectoryNode ? "directory" : "blob";
                string digest = input is DirectoryNode dn ? dn.Digest.ToString() : ((FileNode)input).Digest.ToString();
                throw new ObjectNotFoundException($"input {input.Name.ToQuotedString()}: {what} {digest} is not in the store {store.Address}");
            }
        });
        await Task.WhenAll(checks).ConfigureAwait(false);
    }

    private static bool Exists(string path) => Path.Exists(path) || new FileInfo(path).LinkTarget is not null;

    private static string Describe(SandboxResult result) => result.Outcome switch
    {
        SandboxOutcome.Exited => $"exited with status {result.ExitCode}",
        SandboxOutcome.Signaled => $"was killed by signal {result.Signal} ({SignalName(result.Signal)})",
        SandboxOutcome.TimedOut => "timed out and was killed",
        SandboxOutcome.SilenceTimedOut => "printed nothing for too long and was killed",
        SandboxOutcome.LogLimitExceeded => "wrote more log than allowed and was killed",
        _ => "was cancelled",
    };

    private static string SignalName(int? signal) => signal switch
    {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => "signal",
    };

    private void Log(string line) => _options.Log?.Invoke(line);
}
