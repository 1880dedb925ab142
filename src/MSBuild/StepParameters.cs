using System.Text;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Transfer;

namespace TvixFuseBuild.MSBuild;

/// <summary>A host path to import as an input, and the name it gets (its last component when not given).</summary>
internal sealed record StepInput(string Path, string Name);

/// <summary>
/// What one <see cref="TvixBuild"/> invocation asks for, checked, with paths resolved against the current directory
/// (which MSBuild may change while the task yields, so nothing later reads it).
/// </summary>
internal sealed record StepParameters
{
    public const string DefaultName = "build";

    public required string Name { get; init; }

    /// <summary>argv: the program (a sandbox path, a name on PATH, or the name of a file input) and its arguments.</summary>
    public required IReadOnlyList<string> Command { get; init; }

    public required IReadOnlyList<StepInput> Inputs { get; init; }

    public required IReadOnlyList<string> OutputNames { get; init; }

    /// <summary>Absolute; each output is materialized at <c>OutputDirectory/NAME</c>.</summary>
    public required string OutputDirectory { get; init; }

    public required IReadOnlyDictionary<string, string> Environment { get; init; }

    public bool Network { get; init; }

    /// <summary>Bind Debian's static busybox at /bin/sh (the request's <c>constraints.provide_bin_sh</c>), with <c>/bin</c> on PATH.</summary>
    public bool ProvideBinSh { get; init; }

    /// <summary>Byte strings to look for in the outputs besides the inputs' and outputs' own hash parts.</summary>
    public IReadOnlyList<string> ExtraNeedles { get; init; } = [];

    /// <summary>A store address, or null for the default (the local store, or BLOB_SERVICE_ADDR / DIRECTORY_SERVICE_ADDR).</summary>
    public string? Store { get; init; }

    /// <summary>A remote BuildService that runs the build instead of this host (see <see cref="Build.Grpc.BuilderAddress"/>), or null.</summary>
    public string? Builder { get; init; }

    public TimeSpan? Timeout { get; init; }

    public bool Rebuild { get; init; }

    /// <summary>Processes, memory and /tmp and /dev/shm sizes of the build (a local build; a remote builder has its own).</summary>
    public TvixFuseBuild.Sandbox.SandboxLimits Limits { get; init; } = TvixFuseBuild.Sandbox.SandboxLimits.Default;

    /// <summary>Where build directories are created (resolved from TMPDIR before the task yields).</summary>
    public required string WorkRoot { get; init; }

    /// <summary>Checks the raw parameters; throws <see cref="TvixBuildException"/> (<see cref="TvixBuildError.InvalidRequest"/>) naming what is wrong.</summary>
    public static StepParameters Create(
        string? name,
        string? command,
        IReadOnlyList<string> arguments,
        IReadOnlyList<(string Path, string? Name)> inputs,
        IReadOnlyList<string> outputNames,
        string? outputDirectory,
        IReadOnlyList<string> environment,
        bool network,
        IReadOnlyList<string> extraNeedles,
        string? store,
        string? builder,
        int timeoutMilliseconds,
        bool rebuild,
        string? maxProcesses = null,
        string? maxMemory = null,
        string? tmpSize = null)
    {
        name = string.IsNullOrEmpty(name) ? DefaultName : name;
        CheckName(name, "Name");
        if (string.IsNullOrEmpty(command))
        {
            throw Invalid("Command is empty: there is no program to run");
        }

        if (string.IsNullOrEmpty(outputDirectory))
        {
            throw Invalid("OutputDirectory is not set: the outputs need a place to be materialized");
        }

        var outputs = outputNames.Count == 0 ? ["out"] : outputNames.ToArray();
        foreach (string output in outputs)
        {
            CheckName(output, "an output name");
            if (output.Contains('='))
            {
                throw Invalid($"'{output}' is not a valid output name: it contains '='");
            }
        }

        // Loops, not GroupBy: framework generics are JIT-compiled at the task's first call in each MSBuild process.
        var outputSet = new HashSet<string>(StringComparer.Ordinal);
        foreach (string output in outputs)
        {
            if (!outputSet.Add(output))
            {
                throw Invalid($"the output '{output}' is named twice");
            }
        }

        var resolvedInputs = new List<StepInput>(inputs.Count);
        foreach (var (path, inputName) in inputs)
        {
            if (string.IsNullOrEmpty(path))
            {
                throw Invalid("an input has an empty path");
            }

            string full = Path.GetFullPath(path);
            string resolvedName;
            if (string.IsNullOrEmpty(inputName))
            {
                try
                {
                    resolvedName = HostImporter.DefaultName(full).ToString();
                }
                catch (CastoreException e)
                {
                    throw Invalid($"input {path}: {e.Message}; give it a Name");
                }
            }
            else
            {
                resolvedName = inputName;
            }

            CheckName(resolvedName, $"the name of input {path}");
            if (resolvedName.Contains('='))
            {
                throw Invalid($"input {path}: the name '{resolvedName}' contains '=', so it cannot name its environment variable");
            }

            resolvedInputs.Add(new StepInput(full, resolvedName));
        }

        var inputNames = new HashSet<string>(StringComparer.Ordinal);
        foreach (var input in resolvedInputs)
        {
            if (!inputNames.Add(input.Name))
            {
                // The first name given twice, with every path that has it.
                var paths = new List<string>();
                foreach (var other in resolvedInputs)
                {
                    if (other.Name == input.Name)
                    {
                        paths.Add(other.Path);
                    }
                }

                throw Invalid($"two inputs are named '{input.Name}' ({string.Join(", ", paths)}); give one of them another Name");
            }
        }

        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string entry in environment)
        {
            int eq = entry.IndexOf('=');
            if (eq <= 0)
            {
                throw Invalid($"the environment entry '{entry}' is not KEY=VALUE");
            }

            env[entry[..eq]] = entry[(eq + 1)..];
        }

        foreach (string needle in extraNeedles)
        {
            if (needle.Length == 0)
            {
                throw Invalid("RefscanNeedles holds an empty needle");
            }
        }

        TimeSpan? timeout = timeoutMilliseconds switch
        {
            System.Threading.Timeout.Infinite => null,
            > 0 => TimeSpan.FromMilliseconds(timeoutMilliseconds),
            _ => throw Invalid($"Timeout must be a positive number of milliseconds (or -1 for none), not {timeoutMilliseconds}"),
        };

        if (!string.IsNullOrEmpty(builder))
        {
            // Checked now, so that a mistyped address is an invalid request and not a failed build.
            try
            {
                _ = Build.Grpc.BuilderAddress.Parse(builder);
            }
            catch (StoreAddressException e)
            {
                throw new TvixBuildException(TvixBuildError.InvalidRequest, $"Builder: {e.Message}");
            }
        }

        var limits = ParseLimits(maxProcesses, maxMemory, tmpSize);
        return new StepParameters
        {
            Name = name,
            Command = [command, .. arguments],
            Inputs = resolvedInputs,
            OutputNames = outputs,
            OutputDirectory = Path.GetFullPath(outputDirectory),
            Environment = env,
            Network = network,
            ExtraNeedles = extraNeedles.ToArray(),
            Store = string.IsNullOrEmpty(store) ? null : store,
            Builder = string.IsNullOrEmpty(builder) ? null : builder,
            Timeout = timeout,
            Rebuild = rebuild,
            WorkRoot = Path.GetTempPath(),
            Limits = limits,
        };
    }

    /// <summary>Empty values keep the defaults; a size takes a K, M or G suffix; MaxMemory may be <c>none</c>.</summary>
    private static TvixFuseBuild.Sandbox.SandboxLimits ParseLimits(string? maxProcesses, string? maxMemory, string? tmpSize)
    {
        var limits = TvixFuseBuild.Sandbox.SandboxLimits.Default;
        try
        {
            if (!string.IsNullOrWhiteSpace(maxProcesses))
            {
                if (!int.TryParse(maxProcesses.Trim(), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int n))
                {
                    throw Invalid($"MaxProcesses (TvixBuildMaxProcesses) must be a positive number, not '{maxProcesses}'");
                }

                limits = limits with { MaxProcesses = n };
            }

            if (!string.IsNullOrWhiteSpace(maxMemory))
            {
                limits = limits with
                {
                    MaxMemory = maxMemory.Trim() == "none" ? null : TvixFuseBuild.Sandbox.SandboxLimits.ParseSize(maxMemory, "MaxMemory (TvixBuildMaxMemory)"),
                };
            }

            if (!string.IsNullOrWhiteSpace(tmpSize))
            {
                limits = limits with { TmpSize = TvixFuseBuild.Sandbox.SandboxLimits.ParseSize(tmpSize, "TmpSize (TvixBuildTmpSize)") };
            }

            limits.Validate();
        }
        catch (FormatException e)
        {
            throw Invalid(e.Message);
        }
        catch (TvixFuseBuild.Sandbox.SandboxRefusedException e)
        {
            throw Invalid(e.Message);
        }

        return limits;
    }

    private static void CheckName(string name, string what)
    {
        if (PathComponent.Validate(Encoding.UTF8.GetBytes(name)) is { } error)
        {
            throw Invalid($"'{name}' is not valid as {what}: {error}");
        }
    }

    private static TvixBuildException Invalid(string message) => new(TvixBuildError.InvalidRequest, message);
}
