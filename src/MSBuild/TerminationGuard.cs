using System.Runtime.InteropServices;

namespace TvixFuseBuild.MSBuild;

/// <summary>
/// While steps run, SIGTERM cancels every one of them and holds the process until each has killed its sandbox, removed
/// its FUSE mount and build directory and logged why it failed; then the process exits with 143 (128 + SIGTERM), as it
/// would have without us. MSBuild cancels on Ctrl-C itself (through
/// <see cref="Microsoft.Build.Framework.ICancelableTask.Cancel"/>), but a SIGTERM would otherwise end the node in the
/// middle of the build and leave mounts behind. With no step running, SIGTERM keeps its usual meaning.
/// </summary>
internal static class TerminationGuard
{
    private const int TerminatedExitCode = 128 + 15;

    /// <summary>How long a signal may hold the process for the steps to clean up.</summary>
    private static readonly TimeSpan CleanupLimit = TimeSpan.FromSeconds(30);

    private static readonly object s_gate = new();
    private static readonly HashSet<Registration> s_active = [];
    private static PosixSignalRegistration? s_signal;
    private static bool s_terminating;

    /// <summary>Registers a step until the registration is disposed (after the step's outcome is logged).</summary>
    public static Registration Enter(CancellationTokenSource cancel)
    {
        var registration = new Registration(cancel);
        lock (s_gate)
        {
            s_signal ??= PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
            s_active.Add(registration);
            if (s_terminating)
            {
                registration.Terminate();
            }
        }

        return registration;
    }

    private static void OnSignal(PosixSignalContext context)
    {
        lock (s_gate)
        {
            if (s_active.Count == 0)
            {
                return;
            }

            s_terminating = true;
            foreach (var registration in s_active)
            {
                registration.Terminate();
            }

            var deadline = DateTime.UtcNow + CleanupLimit;
            while (s_active.Count > 0 && DateTime.UtcNow < deadline)
            {
                Monitor.Wait(s_gate, deadline - DateTime.UtcNow);
            }
        }

        // The runtime's own handling would exit with Environment.ExitCode, which MSBuild leaves at 0.
        context.Cancel = true;
        Environment.Exit(TerminatedExitCode);
    }

    internal sealed class Registration(CancellationTokenSource cancel) : IDisposable
    {
        private volatile bool _terminated;

        /// <summary>True when SIGTERM, not MSBuild, cancelled the step.</summary>
        public bool Terminated => _terminated;

        internal void Terminate()
        {
            _terminated = true;
            cancel.Cancel();
        }

        public void Dispose()
        {
            lock (s_gate)
            {
                s_active.Remove(this);
                Monitor.PulseAll(s_gate);
            }
        }
    }
}
