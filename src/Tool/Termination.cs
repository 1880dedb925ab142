using System.Runtime.InteropServices;

namespace TvixFuseBuild.Tool;

/// <summary>
/// SIGINT, SIGTERM and SIGHUP, taken over from the runtime for the whole run of a command: the first one cancels
/// <see cref="Token"/> (the command then tears down what it made: sandbox, mount, temporary files) and decides the exit
/// status, 128 + the signal's number (130, 143, 129), whatever the command returns afterwards.
/// </summary>
internal sealed class Termination : IDisposable
{
    private readonly CancellationTokenSource _cancel = new();
    private readonly TaskCompletionSource<PosixSignal> _first = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly PosixSignalRegistration[] _registrations;
    private int _signal;

    public Termination() =>
        _registrations = [.. new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM, PosixSignal.SIGHUP }.Select(s => PosixSignalRegistration.Create(s, Handle))];

    public CancellationToken Token => _cancel.Token;

    /// <summary>Completes with the first signal.</summary>
    public Task<PosixSignal> Signalled => _first.Task;

    /// <summary>The first signal's name, or null while none came.</summary>
    public string? SignalName => Volatile.Read(ref _signal) switch
    {
        0 => null,
        2 => "SIGINT",
        15 => "SIGTERM",
        _ => "SIGHUP",
    };

    /// <summary>128 + the first signal's number.</summary>
    public int ExitCode => 128 + Volatile.Read(ref _signal);

    private void Handle(PosixSignalContext context)
    {
        context.Cancel = true;
        int number = context.Signal switch
        {
            PosixSignal.SIGINT => 2,
            PosixSignal.SIGTERM => 15,
            _ => 1,
        };
        if (Interlocked.CompareExchange(ref _signal, number, 0) == 0)
        {
            _first.TrySetResult(context.Signal);
            _cancel.Cancel();
        }
    }

    public void Dispose()
    {
        // The token source is not disposed: work abandoned after a signal may still look at the token.
        foreach (var registration in _registrations)
        {
            registration.Dispose();
        }
    }
}
