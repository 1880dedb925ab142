namespace TvixFuseBuild.MSBuild;

/// <summary>The MSBuild error codes of <see cref="TvixBuild"/>: one per kind of failure, stable across versions.</summary>
internal static class TvixBuildError
{
    /// <summary>The task's parameters do not make a valid request (an output name, an environment entry, the timeout, ...).</summary>
    public const string InvalidRequest = "TVB0001";

    /// <summary>An input does not exist or cannot be imported, or an input object is missing from the store.</summary>
    public const string InputMissing = "TVB0002";

    /// <summary>The command exited with a non-zero status or was killed by a signal.</summary>
    public const string CommandFailed = "TVB0003";

    /// <summary>The command ran past <see cref="TvixBuild.Timeout"/> and was killed.</summary>
    public const string TimedOut = "TVB0004";

    /// <summary>The command succeeded but did not produce one of the outputs.</summary>
    public const string OutputMissing = "TVB0005";

    /// <summary>This host cannot sandbox the build (no user namespaces, the sandbox init missing, ...) or refuses its constraints.</summary>
    public const string SandboxUnavailable = "TVB0006";

    /// <summary>The store cannot be opened, read or written, or another I/O operation of the build failed.</summary>
    public const string StoreError = "TVB0007";

    /// <summary>The outputs were built but could not be materialized in <see cref="TvixBuild.OutputDirectory"/>.</summary>
    public const string MaterializeFailed = "TVB0008";

    /// <summary>The remote builder (<see cref="TvixBuild.Builder"/>) cannot be reached, refused the call, or replied with nonsense.</summary>
    public const string BuilderFailed = "TVB0009";

    /// <summary>The process running the build got SIGTERM: the step was stopped and cleaned up before it exited.</summary>
    public const string Terminated = "TVB0010";
}

/// <summary>A failure already classified and worded for the MSBuild log, and where in a project it points (null: the task's place).</summary>
internal sealed class TvixBuildException(string code, string message, ErrorLocation? at = null) : Exception(message)
{
    public string Code { get; } = code;

    public ErrorLocation? At { get; } = at;
}

/// <summary>A place in a project file, which MSBuild prints as <c>FILE(LINE,COLUMN)</c>; line 0 for the file alone.</summary>
internal readonly record struct ErrorLocation(string File, int Line, int Column);

internal static class TvixBuildErrorLogging
{
    /// <summary>Logs the error at <paramref name="at"/>, or (null) at the task's own element, as MSBuild does for errors without a place.</summary>
    public static void LogTvixError(this Microsoft.Build.Utilities.TaskLoggingHelper log, string code, string message, ErrorLocation? at) =>
        log.LogError(null, code, null, at?.File, at?.Line ?? 0, at?.Column ?? 0, 0, 0, "{0}", message);
}
