namespace TvixFuseBuild.Build.Pipeline;

/// <summary>How <see cref="BuildRunner"/> runs builds. The defaults suit the command-line tool.</summary>
public sealed record BuildRunnerOptions
{
    /// <summary>Where per-build directories are created; default: the system temp directory.</summary>
    public string? WorkRoot { get; init; }

    /// <summary>Keep the build directory of a failed build (its path is in the failure).</summary>
    public bool KeepFailed { get; init; }

    /// <summary>
    /// A host file that receives the build's whole log as well, written with <see cref="Castore.Transfer.HostFile"/>:
    /// a new file in place of nothing or a regular file, a character device or FIFO written through, anything else refused.
    /// </summary>
    public string? LogFile { get; init; }

    /// <summary>Run even when the result cache has this request's outputs.</summary>
    public bool Rebuild { get; init; }

    /// <summary>Where results are remembered by request digest; null: no result cache.</summary>
    public ResultCache? ResultCache { get; init; }

    /// <summary>Wall-clock limit of the command; null for none.</summary>
    public TimeSpan? Timeout { get; init; }

    /// <summary>Kill the command when it prints nothing for this long; null for none.</summary>
    public TimeSpan? SilenceTimeout { get; init; }

    /// <summary>Kill the command when its log grows beyond this many bytes; null for none.</summary>
    public long? LogLimit { get; init; }

    /// <summary>
    /// Prefixes every read-only host path of a request (<c>available_ro_paths</c>) must be or lie under; anything
    /// else is refused (<see cref="Sandbox.SandboxRefusedException"/>). Null: any path the sandbox accepts.
    /// </summary>
    public IReadOnlyList<string>? AllowedReadOnlyPaths { get; init; }

    /// <summary>Processes, memory and /tmp and /dev/shm sizes of each build; null: <see cref="Sandbox.SandboxLimits.Default"/>.</summary>
    public Sandbox.SandboxLimits? Limits { get; init; }

    /// <summary>How failures name the limits (the front end's options or properties).</summary>
    public LimitNames LimitNames { get; init; } = LimitNames.CommandLine;

    /// <summary>Receives one line per notable event that is not the build's own output (FUSE problems, cache hits).</summary>
    public Action<string>? Log { get; init; }
}
