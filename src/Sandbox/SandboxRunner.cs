namespace TvixFuseBuild.Sandbox;

/// <summary>
/// Runs a command in a Linux namespace sandbox. Callable concurrently from any thread; each call is independent and
/// depends on nothing but its spec. When a call returns or throws, every process of the build is gone.
/// </summary>
public static class SandboxRunner
{
    /// <summary>
    /// Checks the spec and the host, sets up the sandbox, runs the command and streams its output to
    /// <paramref name="output"/> (and <see cref="SandboxSpec.LogFile"/>). Cancellation kills the build and returns
    /// a <see cref="SandboxOutcome.Cancelled"/> result (an <see cref="OperationCanceledException"/> only when
    /// nothing was started yet).
    /// </summary>
    /// <exception cref="SandboxRefusedException">The spec is malformed or asks for what this host cannot give; nothing started.</exception>
    /// <exception cref="SandboxException">The host cannot sandbox, or setting up failed; the command did not run.</exception>
    public static Task<SandboxResult> RunAsync(SandboxSpec spec, SandboxOutput? output = null, CancellationToken cancellationToken = default) =>
        RunAsync(spec, launcher: null, output, cancellationToken);

    /// <summary>As above, with the init of <paramref name="launcher"/> (the bench compares the managed one).</summary>
    internal static async Task<SandboxResult> RunAsync(SandboxSpec spec, InitLauncher? launcher, SandboxOutput? output, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(spec);
        cancellationToken.ThrowIfCancellationRequested();
        var plan = SpecValidator.ToPlan(spec);
        spec.Limits.Validate();
        plan.Seccomp = Init.SeccompFilter.Program;
        plan.MaxProcesses = spec.Limits.MaxProcesses;
        plan.TmpSize = spec.Limits.TmpSize;
        HostChecks.CheckConstraints(spec);
        var run = new SandboxRun(spec, plan, launcher ?? InitLauncher.Get(), output);
        return await run.ExecuteAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Throws a <see cref="SandboxException"/> naming what is missing when this host cannot sandbox builds.</summary>
    public static void EnsureAvailable()
    {
        InitLauncher.Get();
        _ = Init.SeccompFilter.Program;
    }

    /// <summary>
    /// Refuses (with <see cref="SandboxRefusedException"/>) a system this host cannot run or more memory than it has
    /// available, so that callers can check before preparing anything else.
    /// </summary>
    public static void CheckConstraints(string? system, long minMemory) => HostChecks.CheckConstraints(system, minMemory);

    /// <summary>The Nix system names this host can build for (<see cref="SandboxSpec.System"/>).</summary>
    public static IReadOnlyList<string> SupportedSystems => HostChecks.Systems;

    /// <summary>This host's own Nix system, the first of <see cref="SupportedSystems"/>, known without their probe (which starts a process).</summary>
    public static string HostSystem => HostChecks.HostSystem;
}
