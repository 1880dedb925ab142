using System.Diagnostics;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;
using TvixFuseBuild.Build.Pipeline;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Transfer;

namespace TvixFuseBuild.MSBuild;

/// <summary>
/// Runs a command hermetically: the <see cref="Inputs"/> are imported into the store by content and offered read-only
/// at <c>/nix/store/HASH-NAME</c> (path in <c>$NAME</c>) through a lazy FUSE mount, the command runs in a Linux
/// namespace sandbox that sees nothing else of the host, and each of <see cref="Outputs"/> (written at the path in
/// <c>$NAME</c>) is ingested into the store, scanned for references, and materialized at
/// <see cref="OutputDirectory"/>/NAME. A request identical to an earlier one whose outputs are still in the store is
/// answered from the result cache without running. Failures are errors <c>TVB0001</c>–<c>TVB0010</c>.
/// </summary>
public sealed class TvixBuild : Microsoft.Build.Utilities.Task, ICancelableTask
{
    private readonly CancellationTokenSource _cancel = new();

    /// <summary>The program: a path inside the sandbox, the Name of a file input (which runs that input), or a name looked up in PATH (the inputs' <c>bin/</c> directories).</summary>
    [Required]
    public string Command { get; set; } = string.Empty;

    /// <summary>The program's arguments, one per item, passed as they are (no shell is involved).</summary>
    public string[] Arguments { get; set; } = [];

    /// <summary>Files or directories, imported by content. Metadata <c>Name</c> (default: the last path component) names the input and its environment variable.</summary>
    public ITaskItem[] Inputs { get; set; } = [];

    /// <summary>The names of the outputs the command must produce (default: <c>out</c>); each one's path is in the variable of that name.</summary>
    public string[] Outputs { get; set; } = [];

    /// <summary>
    /// Where the outputs are materialized, each at <c>OutputDirectory/NAME</c>, replacing an earlier output there (a
    /// directory, regular file or symlink — never what a symlink points to); a device, FIFO or socket there is never replaced.
    /// </summary>
    [Required]
    public string OutputDirectory { get; set; } = string.Empty;

    /// <summary><c>KEY=VALUE</c> entries added to (or overriding) the build's environment.</summary>
    public string[] Environment { get; set; } = [];

    /// <summary>Give the command the host's network; by default it has only a private loopback.</summary>
    public bool NetworkAccess { get; set; }

    /// <summary>Strings to look for in the outputs, reported in <c>References</c>, besides the inputs' and outputs' own store paths.</summary>
    public string[] RefscanNeedles { get; set; } = [];

    /// <summary>The castore address (<c>local:///path</c>, <c>memory://</c>, ...); default: the local store, or BLOB_SERVICE_ADDR / DIRECTORY_SERVICE_ADDR.</summary>
    public string? Store { get; set; }

    /// <summary>
    /// A remote tvix BuildService to run the build on instead of this host (<c>grpc+unix:///PATH</c>,
    /// <c>grpc+http://HOST:PORT</c>, or as <c>tvix-fuse-build serve --listen</c> takes it: <c>unix:/PATH</c>, <c>HOST:PORT</c>).
    /// The inputs are uploaded to the castore at that address, and the outputs fetched from it into <see cref="Store"/>.
    /// The remote's log is not streamed: a failure reports what the remote said.
    /// </summary>
    public string? Builder { get; set; }

    /// <summary>Milliseconds after which the command is killed (TVB0004); -1 (the default) for no limit.</summary>
    public int Timeout { get; set; } = System.Threading.Timeout.Infinite;

    /// <summary>Processes and threads the build may have at once; empty for the default (4096). Property <c>TvixBuildMaxProcesses</c> in the targets.</summary>
    public string? MaxProcesses { get; set; }

    /// <summary>The build's memory (/tmp and /dev/shm included) with a K, M or G suffix, or <c>none</c>; empty for the default (half of the host's). Where it is enforced: the README.</summary>
    public string? MaxMemory { get; set; }

    /// <summary>The size of each of the build's /tmp and /dev/shm with a K, M or G suffix; empty for the default (an eighth of the host's memory).</summary>
    public string? TmpSize { get; set; }

    /// <summary>The build's name, part of its output paths (<c>/nix/store/HASH-NAME</c>).</summary>
    public string Name { get; set; } = StepParameters.DefaultName;

    /// <summary>Run the command even when the result cache holds an identical build's outputs.</summary>
    public bool Rebuild { get; set; }

    /// <summary>
    /// Bind Debian's static busybox at <c>/bin/sh</c> (the request's <c>constraints.provide_bin_sh</c>) and put
    /// <c>/bin</c> last on PATH: <c>sh</c> runs, and its scripts have every busybox applet (<c>mkdir</c>, <c>sed</c>,
    /// <c>awk</c>, ...) without a toolchain input.
    /// </summary>
    public bool ProvideBinSh { get; set; }

    /// <summary>
    /// The project file that errors point at, with <see cref="ErrorLine"/> and <see cref="ErrorColumn"/> (default: where
    /// the task is called). The <c>TvixBuildSteps</c> target passes the place of the <c>TvixBuildStep</c> item.
    /// </summary>
    public string? ErrorFile { get; set; }

    /// <summary>The line of <see cref="ErrorFile"/> that errors point at (0: the file alone).</summary>
    public int ErrorLine { get; set; }

    /// <summary>The column of <see cref="ErrorLine"/> that errors point at.</summary>
    public int ErrorColumn { get; set; }

    /// <summary>The importance of the command's output in the log: <c>high</c>, <c>normal</c> (the default) or <c>low</c>.</summary>
    public string OutputImportance { get; set; } = "normal";

    /// <summary>
    /// A file to write after a successful run, one line per output: <c>NAME KIND DIGEST STOREPATH</c>. Written as the
    /// tool writes every file (<see cref="HostFile"/>): renamed over a regular file or into an empty place, never
    /// through a symlink.
    /// </summary>
    public string ResultFile { get; set; } = string.Empty;

    /// <summary>
    /// The materialized outputs, in the order of <see cref="Outputs"/>. Metadata: <c>OutputName</c>, <c>Kind</c>
    /// (directory, file, executable or symlink), <c>Digest</c> (BLAKE3, empty for a symlink), <c>StorePath</c> (its
    /// path inside the sandbox), <c>References</c> (the inputs, outputs and needles found in it).
    /// </summary>
    [Output]
    public ITaskItem[] MaterializedOutputs { get; private set; } = [];

    /// <summary>True when the result cache answered and the command did not run.</summary>
    [Output]
    public bool Cached { get; private set; }

    public void Cancel() => _cancel.Cancel();

    public override bool Execute()
    {
        // Disposed only after the outcome is logged: a SIGTERM waits for that before the process exits.
        using var termination = TerminationGuard.Enter(_cancel);
        try
        {
            var clock = Stopwatch.StartNew();
            var importance = ParseImportance(OutputImportance);
            var inputs = new (string Path, string? Name)[Inputs.Length];
            for (int i = 0; i < inputs.Length; i++)
            {
                inputs[i] = (Inputs[i].GetMetadata("FullPath"), Inputs[i].GetMetadata("Name"));
            }

            var step = StepParameters.Create(
                Name, Command, Arguments, inputs,
                Outputs, OutputDirectory, Environment, NetworkAccess, RefscanNeedles, Store, Builder, Timeout, Rebuild,
                MaxProcesses, MaxMemory, TmpSize) with
            {
                ProvideBinSh = ProvideBinSh,
            };
            var result = Run(step, importance);
            MaterializedOutputs = [.. result.Outputs.Select(ToItem)];
            Cached = result.Cached;
            WriteResultFile();

            // The one line a step leaves in the console log at its default, minimal verbosity (the targets add "up to date").
            Log.LogMessage(
                MessageImportance.High, "{0}",
                result.Cached
                    ? $"TvixBuild {step.Name}: from the cache (an identical build ran before; the command did not run)"
                    : $"TvixBuild {step.Name}: ran in {clock.ElapsedMilliseconds} ms{(step.Builder is { } builder ? $" on {builder}" : "")}");
            return !Log.HasLoggedErrors;
        }
        catch (TvixBuildException e)
        {
            Log.LogTvixError(e.Code, e.Message, e.At ?? Location);
            return false;
        }
        catch (OperationCanceledException) when (termination.Terminated)
        {
            Log.LogTvixError(TvixBuildError.Terminated, $"{Name}: terminated (SIGTERM); the sandbox and its mount are gone", Location);
            return false;
        }
        catch (OperationCanceledException) when (_cancel.IsCancellationRequested)
        {
            // MSBuild cancelled the build and reports that itself; no error of ours.
            Log.LogMessage(MessageImportance.High, "{0}", $"{Name}: cancelled; the sandbox and its mount are gone");
            return false;
        }
    }

    private ErrorLocation? Location => string.IsNullOrEmpty(ErrorFile) ? null : new ErrorLocation(ErrorFile, ErrorLine, ErrorColumn);

    private StepResult Run(StepParameters step, MessageImportance importance)
    {
        // The store and the result cache are found through the environment, which MSBuild may switch to another
        // project's while this task yields: both are settled first.
        CastoreStore store;
        try
        {
            // As the command line does: an unreachable remote store fails the step unless its address says offline=1.
            store = CastoreStore.Open(new StoreOptions(step.Store) { ConnectAtOpen = true });
        }
        catch (Exception e) when (e is CastoreException or IOException or UnauthorizedAccessException)
        {
            throw new TvixBuildException(TvixBuildError.StoreError, $"cannot open the store {step.Store ?? StoreAddress.DefaultLocal}: {e.Message}");
        }

        var cache = ResultCache.Default;
        var log = new TaskStepLog(Log, importance);
        var engine = BuildEngine as IBuildEngine3;
        bool yielded = false;
        try
        {
            // On this thread until something has to wait (a cache hit never does): no hop to the thread pool, whose
            // first use in an MSBuild process starts its threads. The node is given back to MSBuild (Yield) only then,
            // while the step imports, builds or waits for a remote builder: a cache hit does not pay for it.
            try
            {
                // Started as a task of the default scheduler, run inline: MSBuild runs tasks under its own
                // TaskScheduler, which Parallel.ForEachAsync and the like would otherwise queue their work to.
                var start = new System.Threading.Tasks.Task<System.Threading.Tasks.Task<StepResult>>(
                    () => StepRunner.RunAsync(step, store, cache, log, _cancel.Token));
                start.RunSynchronously(System.Threading.Tasks.TaskScheduler.Default);
                var run = start.Result;
                if (!run.IsCompleted && engine is not null)
                {
                    engine.Yield();
                    yielded = true;
                }

                return run.GetAwaiter().GetResult();
            }
            finally
            {
                store.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
        }
        finally
        {
            log.Close();
            if (yielded)
            {
                engine!.Reacquire();
            }
        }
    }

    private static MessageImportance ParseImportance(string? text) => text?.ToLowerInvariant() switch
    {
        null or "" or "normal" => MessageImportance.Normal,
        "high" => MessageImportance.High,
        "low" => MessageImportance.Low,
        _ => throw new TvixBuildException(TvixBuildError.InvalidRequest, $"OutputImportance must be high, normal or low, not '{text}'"),
    };

    private void WriteResultFile()
    {
        if (string.IsNullOrEmpty(ResultFile))
        {
            return;
        }

        string lines = string.Concat(MaterializedOutputs.Select(
            i => $"{i.GetMetadata("OutputName")} {i.GetMetadata("Kind")} {i.GetMetadata("Digest")} {i.GetMetadata("StorePath")}\n"));
        try
        {
            HostFile.WriteAllBytes(ResultFile, System.Text.Encoding.UTF8.GetBytes(lines));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new TvixBuildException(TvixBuildError.MaterializeFailed, $"{Name}: cannot write the result file {ResultFile}: {e.Message}");
        }
    }

    private static TaskItem ToItem(MaterializedOutput output)
    {
        var item = new TaskItem(MSBuildEscaping.Escape(output.Path));
        item.SetMetadata("OutputName", MSBuildEscaping.Escape(output.Name));
        item.SetMetadata("Kind", output.Node switch
        {
            DirectoryNode => "directory",
            FileNode { Executable: true } => "executable",
            FileNode => "file",
            _ => "symlink",
        });
        item.SetMetadata("Digest", output.Node switch
        {
            DirectoryNode d => d.Digest.ToString(),
            FileNode f => f.Digest.ToString(),
            _ => string.Empty,
        });
        item.SetMetadata("StorePath", MSBuildEscaping.Escape(output.StorePath));
        item.SetMetadata("References", string.Join(';', output.References.Select(MSBuildEscaping.Escape)));
        return item;
    }

    /// <summary>The step's reports as MSBuild messages, until the task returns (MSBuild refuses messages after that).</summary>
    private sealed class TaskStepLog(TaskLoggingHelper log, MessageImportance outputImportance) : IStepLog
    {
        private volatile bool _closed;

        // Asked once: with a quiet console and no binary log, MSBuild drops low-importance messages.
        public bool DetailEnabled { get; } = log.LogsMessagesOfImportance(MessageImportance.Low);

        public void Output(string line)
        {
            if (!_closed)
            {
                log.LogMessage(outputImportance, "{0}", line);
            }
        }

        public void Detail(string message)
        {
            if (!_closed)
            {
                log.LogMessage(MessageImportance.Low, "{0}", message);
            }
        }

        public void Close() => _closed = true;
    }
}
