using System.Runtime.InteropServices;

namespace TvixFuseBuild.MSBuild;

/// <summary>
/// While a step runs, SIGTERM cancels it and holds the process until the sandbox is killed, the FUSE mount is gone and
/// the build directory is removed; then the runtime's default handling (exit) goes on. MSBuild cancels on Ctrl-C
/// itself (through <see cref="Microsoft.Build.Framework.ICancelableTask.Cancel"/>), but a SIGTERM would otherwise end
/// the node in the middle of the build and leave its mount behind.
/// </summary>
internal sealed class TerminationGuard : IDisposable
{
    /// <summary>How long a signal may hold the process for the step to clean up.</summary>
    private static readonly TimeSpan CleanupLimit = TimeSpan.FromSeconds(30);

    private readonly CancellationTokenSource _cancel;
    private readonly ManualResetEventSlim _finished = new();
    private readonly PosixSignalRegistration _registration;

    private TerminationGuard(CancellationTokenSource cancel)
    {
        _cancel = cancel;
        _registration = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
    }

    public static TerminationGuard Register(CancellationTokenSource cancel) => new(cancel);

    private void OnSignal(PosixSignalContext context)
    {
        _cancel.Cancel();
        _finished.Wait(CleanupLimit);
    }

    public void Dispose()
    {
        _finished.Set();
        _registration.Dispose();
    }
}
