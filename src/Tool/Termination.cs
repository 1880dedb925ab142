using System.Runtime.InteropServices;
using TvixFuseBuild.Native;

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

    /// <summary>
    /// Runs <paramref name="call"/> with SIGINT, SIGTERM and SIGHUP blocked on the calling thread. For system calls
    /// that may wait in the kernel for good (a read from a FUSE or NFS server that never answers): the kernel hands a
    /// process's signal to its main thread first, and a thread that never returns to user space never runs the
    /// handler, so the signal would reach no one. Blocked here, it goes to another thread (the runtime's signal
    /// thread), and the tool's stop timeout applies. <paramref name="call"/> must start no thread and no process:
    /// they would inherit the mask.
    /// </summary>
    public static unsafe T ElsewhereDuring<T>(Func<T> call)
    {
        // glibc's sigset_t is 128 bytes.
        byte* signals = stackalloc byte[128];
        byte* previous = stackalloc byte[128];
        Libc.sigemptyset(signals);
        Libc.sigaddset(signals, Libc.SIGINT);
        Libc.sigaddset(signals, Libc.SIGTERM);
        Libc.sigaddset(signals, Libc.SIGHUP);
        int blocked = Libc.pthread_sigmask(Libc.SIG_BLOCK, signals, previous);
        try
        {
            return call();
        }
        finally
        {
            if (blocked == 0)
            {
                Libc.pthread_sigmask(Libc.SIG_SETMASK, previous, null);
            }
        }
    }

    /// <inheritdoc cref="ElsewhereDuring{T}(Func{T})"/>
    public static void ElsewhereDuring(Action call) =>
        ElsewhereDuring(() =>
        {
            call();
            return 0;
        });

    public void Dispose()
    {
        // The token source is not disposed: work abandoned after a signal may still look at the token.
        foreach (var registration in _registrations)
        {
            registration.Dispose();
        }
    }
}
