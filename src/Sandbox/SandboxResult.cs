namespace TvixFuseBuild.Sandbox;

/// <summary>How a sandboxed command ended.</summary>
public enum SandboxOutcome
{
    /// <summary>The command exited by itself; see <see cref="SandboxResult.ExitCode"/>.</summary>
    Exited,

    /// <summary>The command was killed by a signal it did not get from us; see <see cref="SandboxResult.Signal"/>.</summary>
    Signaled,

    /// <summary>Killed after <see cref="SandboxSpec.Timeout"/>.</summary>
    TimedOut,

    /// <summary>Killed after <see cref="SandboxSpec.SilenceTimeout"/> without output.</summary>
    SilenceTimedOut,

    /// <summary>Killed when its output passed <see cref="SandboxSpec.LogLimit"/>.</summary>
    LogLimitExceeded,

    /// <summary>Killed because the caller's cancellation token fired.</summary>
    Cancelled,
}

/// <summary>The end of a sandboxed run. Every process of the build is gone by the time this exists.</summary>
public sealed class SandboxResult
{
    public required SandboxOutcome Outcome { get; init; }

    /// <summary>The exit code when <see cref="Outcome"/> is <see cref="SandboxOutcome.Exited"/>.</summary>
    public int? ExitCode { get; init; }

    /// <summary>The signal number when <see cref="Outcome"/> is <see cref="SandboxOutcome.Signaled"/>.</summary>
    public int? Signal { get; init; }

    /// <summary>The last lines of the output (at most 64 KiB of it, decoded as UTF-8).</summary>
    public required string LogTail { get; init; }

    /// <summary>Bytes of output the command wrote (counted up to the kill when the log limit was hit).</summary>
    public long LogBytes { get; init; }

    /// <summary>From the call to the moment the command started (namespaces, runtime start of the init, mounts).</summary>
    public TimeSpan SetupTime { get; init; }

    /// <summary>From the command's start until everything was gone.</summary>
    public TimeSpan RunTime { get; init; }

    public bool Succeeded => Outcome == SandboxOutcome.Exited && ExitCode == 0;

    /// <summary>The limits the build ran under.</summary>
    public SandboxLimits Limits { get; init; } = SandboxLimits.Default;

    /// <summary>The limits the build reached, among <see cref="LimitsWatched"/>.</summary>
    public IReadOnlyList<SandboxLimit> LimitsHit { get; init; } = [];

    /// <summary>
    /// The limits whose reaching this run could see: /tmp and /dev/shm always; processes and memory only where a
    /// cgroup enforced them (without one, RLIMIT_NPROC still bounds the processes, silently, and memory is unbounded).
    /// </summary>
    public IReadOnlyList<SandboxLimit> LimitsWatched { get; init; } = [];

    public override string ToString() => Outcome switch
    {
        SandboxOutcome.Exited => $"exited with code {ExitCode}",
        SandboxOutcome.Signaled => $"killed by signal {Signal}",
        SandboxOutcome.TimedOut => "timed out",
        SandboxOutcome.SilenceTimedOut => "killed after a silence timeout",
        SandboxOutcome.LogLimitExceeded => "killed: output exceeded the log limit",
        _ => "cancelled",
    };
}

/// <summary>The sandbox could not be set up (nothing of the build ran), or this host cannot sandbox at all.</summary>
public class SandboxException(string message) : Exception(message);

/// <summary>The spec asks for something this host does not meet (<see cref="SandboxSpec.System"/>, <see cref="SandboxSpec.MinMemory"/>) or is malformed; refused before anything started.</summary>
public sealed class SandboxRefusedException(string message) : SandboxException(message);

/// <summary>Receives the build's output (stdout and stderr interleaved) as it is written; called from one task at a time.</summary>
public delegate ValueTask SandboxOutput(ReadOnlyMemory<byte> chunk, CancellationToken cancellationToken);
