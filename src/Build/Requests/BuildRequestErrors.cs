namespace TvixFuseBuild.Build.Requests;

/// <summary>
/// Why a BuildRequest is refused. The first group is tvix's ValidateBuildRequestError (names match the
/// <c>error</c> field of <c>vectors/buildrequest.json</c>); the second group is our own runnability check, which
/// refuses requests tvix accepts but that cannot possibly run.
/// </summary>
public enum BuildRequestErrorKind
{
    InvalidInputNode,
    InputNodesNotSorted,
    InvalidWorkingDir,
    InvalidScratchPath,
    ScratchPathsNotSorted,
    InvalidInputsDir,
    InvalidOutputPath,
    OutputsNotSorted,
    InvalidEnvVar,
    EnvVarNotSorted,
    InvalidBuildConstraints,
    InvalidAdditionalFilePath,
    AdditionalFilesNotSorted,

    /// <summary>Beyond tvix: <c>command_args</c> is empty or names an empty program.</summary>
    EmptyCommand,

    /// <summary>Beyond tvix: a NUL byte where the kernel cannot take one (paths, arguments, environment).</summary>
    NulByte,

    /// <summary>Beyond tvix: an output that no build step could produce (the root itself, outside every scratch path, inside a file or symlink input).</summary>
    UnproducibleOutput,

    /// <summary>Beyond tvix: an additional file that cannot be written (the root, a directory the build needs, inside an input or the read-only inputs_dir).</summary>
    UnwritableAdditionalFile,

    /// <summary>Beyond tvix: an environment value or input name that is not UTF-8, which this builder cannot hand to a process.</summary>
    NotUtf8,

    /// <summary>A remote builder refused the request as invalid (INVALID_ARGUMENT) for a reason this side's checks do not know.</summary>
    RefusedByBuilder,
}

/// <summary>A BuildRequest is refused. <see cref="Exception.Message"/> is the one-line text to show (tvix's exact text for tvix's kinds).</summary>
public sealed class BuildRequestValidationException(BuildRequestErrorKind kind, string message) : FormatException(message)
{
    public BuildRequestErrorKind Kind { get; } = kind;

    /// <summary>True for the kinds tvix itself checks; false for our runnability check.</summary>
    public bool IsProtocolError => Kind <= BuildRequestErrorKind.AdditionalFilesNotSorted;
}

/// <summary>
/// The bytes given as a request or reply are not a well-formed message of the expected type (bad JSON, bad protobuf,
/// wrong field type, invalid UTF-8 in a string field). The message names the source, the field and the position.
/// </summary>
public sealed class BuildMessageFormatException(string message, Exception? inner = null) : FormatException(message, inner);
