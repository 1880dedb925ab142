using System.Diagnostics.CodeAnalysis;
using System.Text;
using TvixFuseBuild.Castore;

namespace TvixFuseBuild.Build.Requests;

/// <summary>A reason a request is refused: the kind, and the one-line message.</summary>
public sealed record BuildRequestError(BuildRequestErrorKind Kind, string Message)
{
    public BuildRequestValidationException ToException() => new(Kind, Message);
}

/// <summary>
/// The checks a request passes before anything runs. <see cref="Validate(BuildSpec, BuildProtocol)"/> is exactly
/// tvix's (snix's) validation, in its order, with its messages; <see cref="CheckRunnable"/> is ours on top of it.
/// </summary>
public static class BuildRequestValidator
{
    /// <summary>
    /// The protocol's validation, first failure wins: inputs (each valid and named, then strictly ascending),
    /// working_dir, scratch_paths, inputs_dir, outputs, environment_vars (snix also forbids NUL in key and value),
    /// constraints, additional_files. Paths must be clean and relative (<see cref="CleanPath"/>); lists are compared
    /// bytewise on UTF-8. Returns null when the request is valid.
    /// </summary>
    public static BuildRequestError? Validate(BuildSpec spec, BuildProtocol protocol)
    {
        ArgumentNullException.ThrowIfNull(spec);
        return CheckInputs(spec) ?? ValidateAfterInputs(spec, protocol);
    }

    /// <summary>Throws <see cref="BuildRequestValidationException"/> when <see cref="Validate(BuildSpec, BuildProtocol)"/> fails.</summary>
    public static void ThrowIfInvalid(BuildSpec spec, BuildProtocol protocol)
    {
        if (Validate(spec, protocol) is { } error)
        {
            throw error.ToException();
        }
    }

    /// <summary>
    /// Beyond the protocol: refuses a valid request that cannot possibly run, with a clear message. Assumes
    /// <see cref="Validate(BuildSpec, BuildProtocol)"/> passed. Refused:
    /// <list type="bullet">
    /// <item>an empty <c>command_args</c>, or an empty program name;</item>
    /// <item>a NUL byte in a command argument, an environment key or value, or any path (the kernel cannot take it;
    /// tvix itself forbids NUL in the environment only under snix);</item>
    /// <item>an output that is the build root itself, that lies under no scratch path (only scratch paths are
    /// writable; an output that IS a scratch path is fine), or that lies inside an input that is a file or a symlink
    /// (it cannot exist there, or would lead outside the build root);</item>
    /// <item>an additional file that is the build root itself; that is, or contains, a directory the build needs (a
    /// scratch path, <c>inputs_dir</c>, <c>working_dir</c>, another additional file's parent); that is, or lies
    /// inside, an input; or that lies inside <c>inputs_dir</c> but under no scratch path (the inputs are read-only).</item>
    /// </list>
    /// Everything else tvix accepts is accepted. Returns null when the request can run.
    /// </summary>
    public static BuildRequestError? CheckRunnable(BuildSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        return CheckCommand(spec) ?? CheckNulBytes(spec) ?? CheckOutputs(spec) ?? CheckAdditionalFiles(spec);
    }

    /// <summary>Throws <see cref="BuildRequestValidationException"/> when <see cref="CheckRunnable"/> fails.</summary>
    public static void ThrowIfNotRunnable(BuildSpec spec)
    {
        if (CheckRunnable(spec) is { } error)
        {
            throw error.ToException();
        }
    }

    /// <summary>Steps 2 to 8, for callers that already checked the inputs while converting them.</summary>
    internal static BuildRequestError? ValidateAfterInputs(BuildSpec spec, BuildProtocol protocol)
    {
        if (!CleanPath.IsCleanRelative(spec.WorkingDir))
        {
            return new(BuildRequestErrorKind.InvalidWorkingDir, "invalid working_dir");
        }

        if (FirstUnclean(spec.ScratchPaths) is int badScratch)
        {
            return new(BuildRequestErrorKind.InvalidScratchPath, $"invalid scratch path at position {badScratch}");
        }

        if (!IsSorted(spec.ScratchPaths, static p => p))
        {
            return new(BuildRequestErrorKind.ScratchPathsNotSorted, "scratch_paths not sorted");
        }

        if (!CleanPath.IsCleanRelative(spec.InputsDir))
        {
            return new(BuildRequestErrorKind.InvalidInputsDir, "invalid inputs_dir");
        }

        if (FirstUnclean(spec.Outputs) is int badOutput)
        {
            return new(BuildRequestErrorKind.InvalidOutputPath, $"invalid output path at position {badOutput}");
        }

        if (!IsSorted(spec.Outputs, static p => p))
        {
            return new(BuildRequestErrorKind.OutputsNotSorted, "outputs not sorted");
        }

        for (int i = 0; i < spec.EnvironmentVars.Length; i++)
        {
            var env = spec.EnvironmentVars[i];
            bool valid = env.Key.Length > 0 && !env.Key.Contains('=') &&
                (protocol == BuildProtocol.Tvix || (!env.Key.Contains('\0') && !env.Value.Span.Contains((byte)0)));
            if (!valid)
            {
                return new(BuildRequestErrorKind.InvalidEnvVar, $"invalid environment variable at position {i}");
            }
        }

        if (!IsSorted(spec.EnvironmentVars, static e => e.Key))
        {
            return new(BuildRequestErrorKind.EnvVarNotSorted, "EnvVar not sorted by their keys");
        }

        if (spec.Constraints is { } constraints)
        {
            if (constraints.System.Length == 0)
            {
                return new(BuildRequestErrorKind.InvalidBuildConstraints, "invalid build constraints: invalid system");
            }

            for (int i = 0; i < constraints.AvailableReadOnlyPaths.Length; i++)
            {
                if (!CleanPath.IsCleanAbsolute(constraints.AvailableReadOnlyPaths[i]))
                {
                    return new(BuildRequestErrorKind.InvalidBuildConstraints, $"invalid build constraints: invalid available_ro_paths at position {i}");
                }
            }

            if (!IsSorted(constraints.AvailableReadOnlyPaths, static p => p))
            {
                return new(BuildRequestErrorKind.InvalidBuildConstraints, "invalid build constraints: available_ro_paths not sorted");
            }
        }

        for (int i = 0; i < spec.AdditionalFiles.Length; i++)
        {
            if (!CleanPath.IsCleanRelative(spec.AdditionalFiles[i].Path))
            {
                return new(BuildRequestErrorKind.InvalidAdditionalFilePath, $"invalid additional file path at position: {i}");
            }
        }

        if (!IsSorted(spec.AdditionalFiles, static f => f.Path))
        {
            return new(BuildRequestErrorKind.AdditionalFilesNotSorted, "additional_files not sorted");
        }

        return null;
    }

    /// <summary>Step 1 on model nodes: each named, names strictly ascending.</summary>
    private static BuildRequestError? CheckInputs(BuildSpec spec)
    {
        var inputs = spec.Inputs;
        for (int i = 0; i < inputs.Length; i++)
        {
            if (inputs[i] is null)
            {
                return InvalidInputNode(i, "no node set");
            }

            if (inputs[i].Name.IsEmpty)
            {
                return InvalidInputNode(i, "invalid name \"\": empty");
            }

            if (i > 0 && inputs[i].Name <= inputs[i - 1].Name)
            {
                return InputsNotSorted;
            }
        }

        return null;
    }

    internal static BuildRequestError InvalidInputNode(int position, string reason) =>
        new(BuildRequestErrorKind.InvalidInputNode, $"invalid input node at position {position}: {reason}");

    internal static BuildRequestError InputsNotSorted { get; } =
        new(BuildRequestErrorKind.InputNodesNotSorted, "input nodes are not sorted by name");

    private static int? FirstUnclean(IReadOnlyList<string> paths)
    {
        for (int i = 0; i < paths.Count; i++)
        {
            if (!CleanPath.IsCleanRelative(paths[i]))
            {
                return i;
            }
        }

        return null;
    }

    /// <summary>Ascending, equal neighbours allowed, comparing UTF-8 bytes (not UTF-16 code units: they order surrogates differently).</summary>
    private static bool IsSorted<T>(IReadOnlyList<T> items, Func<T, string> key)
    {
        for (int i = 1; i < items.Count; i++)
        {
            if (CompareUtf8(key(items[i - 1]), key(items[i])) > 0)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Compares two strings by their UTF-8 bytes.</summary>
    public static int CompareUtf8(string a, string b)
    {
        // UTF-8 byte order equals code point order; ordinal UTF-16 order differs only around surrogates.
        int n = Math.Min(a.Length, b.Length);
        int i = a.AsSpan(0, n).CommonPrefixLength(b.AsSpan(0, n));
        if (i == n)
        {
            return a.Length.CompareTo(b.Length);
        }

        Rune.DecodeFromUtf16(a.AsSpan(i), out var ra, out _);
        Rune.DecodeFromUtf16(b.AsSpan(i), out var rb, out _);
        return ra.Value.CompareTo(rb.Value);
    }

    private static BuildRequestError? CheckCommand(BuildSpec spec)
    {
        if (spec.CommandArgs.IsEmpty)
        {
            return new(BuildRequestErrorKind.EmptyCommand, "command_args is empty: there is no program to run");
        }

        if (spec.CommandArgs[0].Length == 0)
        {
            return new(BuildRequestErrorKind.EmptyCommand, "command_args[0] is empty: there is no program to run");
        }

        return null;
    }

    private static BuildRequestError? CheckNulBytes(BuildSpec spec)
    {
        if (IndexOfNul(spec.CommandArgs) is int arg)
        {
            return Nul($"command_args[{arg}] contains a NUL byte, which cannot be passed to a program");
        }

        for (int i = 0; i < spec.EnvironmentVars.Length; i++)
        {
            var env = spec.EnvironmentVars[i];
            if (env.Key.Contains('\0') || env.Value.Span.Contains((byte)0))
            {
                return Nul($"environment variable at position {i} contains a NUL byte, which cannot be passed to a program");
            }
        }

        if (spec.WorkingDir.Contains('\0'))
        {
            return Nul("working_dir contains a NUL byte");
        }

        if (spec.InputsDir.Contains('\0'))
        {
            return Nul("inputs_dir contains a NUL byte");
        }

        if (IndexOfNul(spec.ScratchPaths) is int scratch)
        {
            return Nul($"scratch path at position {scratch} contains a NUL byte");
        }

        if (IndexOfNul(spec.Outputs) is int output)
        {
            return Nul($"output path at position {output} contains a NUL byte");
        }

        for (int i = 0; i < spec.AdditionalFiles.Length; i++)
        {
            if (spec.AdditionalFiles[i].Path.Contains('\0'))
            {
                return Nul($"additional file path at position {i} contains a NUL byte");
            }
        }

        if (spec.Constraints is { } c && IndexOfNul(c.AvailableReadOnlyPaths) is int ro)
        {
            return Nul($"available_ro_paths at position {ro} contains a NUL byte");
        }

        return null;

        static BuildRequestError Nul(string message) => new(BuildRequestErrorKind.NulByte, message);
    }

    private static int? IndexOfNul(IReadOnlyList<string> values)
    {
        for (int i = 0; i < values.Count; i++)
        {
            if (values[i].Contains('\0'))
            {
                return i;
            }
        }

        return null;
    }

    private static BuildRequestError? CheckOutputs(BuildSpec spec)
    {
        for (int i = 0; i < spec.Outputs.Length; i++)
        {
            string output = spec.Outputs[i];
            if (output.Length == 0)
            {
                return Unproducible($"output path at position {i} is the build root itself, not something the build produces");
            }

            if (!spec.ScratchPaths.Any(s => CleanPath.IsAtOrUnder(output, s)))
            {
                return Unproducible(
                    $"output path at position {i} ({Quote(output)}) lies under no scratch path, so the build cannot write it " +
                    $"(scratch paths: {string.Join(", ", spec.ScratchPaths.Select(Quote))})");
            }

            if (FindEnclosingInput(spec, output, out bool inside) is { } input && inside && input.Kind != NodeKind.Directory)
            {
                return Unproducible($"output path at position {i} ({Quote(output)}) lies inside input {input.Name.ToQuotedString()}, which is a {input.KindDisplay}");
            }
        }

        return null;

        static BuildRequestError Unproducible(string message) => new(BuildRequestErrorKind.UnproducibleOutput, message);
    }

    private static BuildRequestError? CheckAdditionalFiles(BuildSpec spec)
    {
        var files = spec.AdditionalFiles;
        for (int i = 0; i < files.Length; i++)
        {
            string path = files[i].Path;
            string what = $"additional file at position {i} ({Quote(path)})";
            if (path.Length == 0)
            {
                return Unwritable($"additional file at position {i} has an empty path: the build root is a directory");
            }

            if (DirectoryConflict(path, spec.ScratchPaths, "scratch path", out var conflict) ||
                DirectoryConflict(path, [spec.InputsDir], "inputs_dir", out conflict) ||
                DirectoryConflict(path, [spec.WorkingDir], "working_dir", out conflict))
            {
                return Unwritable($"{what} {conflict}");
            }

            // Sorted by path, so a file that is the parent of another is followed by it (possibly after siblings).
            for (int j = i + 1; j < files.Length && files[j].Path.StartsWith(path, StringComparison.Ordinal); j++)
            {
                if (CleanPath.IsStrictlyUnder(files[j].Path, path))
                {
                    return Unwritable($"{what} would have to be a directory to hold additional file at position {j} ({Quote(files[j].Path)})");
                }
            }

            if (FindEnclosingInput(spec, path, out _) is { } input)
            {
                return Unwritable($"{what} collides with input {input.Name.ToQuotedString()}, which is read-only");
            }

            if (CleanPath.IsStrictlyUnder(path, spec.InputsDir) && !spec.ScratchPaths.Any(s => CleanPath.IsAtOrUnder(path, s)))
            {
                return Unwritable($"{what} lies inside inputs_dir ({Quote(spec.InputsDir)}), which is read-only, and under no scratch path");
            }
        }

        return null;

        static BuildRequestError Unwritable(string message) => new(BuildRequestErrorKind.UnwritableAdditionalFile, message);
    }

    /// <summary>A file at <paramref name="path"/> cannot coexist with a directory at or below it.</summary>
    private static bool DirectoryConflict(string path, IEnumerable<string> directories, string what, [NotNullWhen(true)] out string? conflict)
    {
        foreach (string directory in directories)
        {
            if (CleanPath.IsAtOrUnder(directory, path))
            {
                conflict = directory == path
                    ? $"is the {what}, which is a directory"
                    : $"would have to be a directory to hold the {what} {Quote(directory)}";
                return true;
            }
        }

        conflict = null;
        return false;
    }

    /// <summary>
    /// The input whose place (<c>inputs_dir/name</c>) is <paramref name="path"/> or one of its ancestors;
    /// <paramref name="inside"/> tells whether <paramref name="path"/> lies strictly inside it.
    /// </summary>
    private static Node? FindEnclosingInput(BuildSpec spec, string path, out bool inside)
    {
        inside = false;
        if (!CleanPath.IsStrictlyUnder(path, spec.InputsDir))
        {
            return null;
        }

        string rest = spec.InputsDir.Length == 0 ? path : path[(spec.InputsDir.Length + 1)..];
        int slash = rest.IndexOf('/');
        inside = slash >= 0;
        return spec.FindInput(Encoding.UTF8.GetBytes(inside ? rest[..slash] : rest));
    }

    private static string Quote(string text) => "\"" + text.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\"";
}
