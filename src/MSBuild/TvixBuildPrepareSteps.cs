using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Transfer;

namespace TvixFuseBuild.MSBuild;

/// <summary>
/// Part of <c>TvixFuseBuild.MSBuild.targets</c>: turns the <c>TvixBuildStep</c> and <c>TvixBuildInput</c> items into
/// what the <c>TvixBuildSteps</c> target needs to skip an unchanged step. For each step it writes a step file
/// describing everything but file contents (the parameters, the inputs, and every file, directory and symlink below
/// them), rewritten only when that description changes, so that the target's Inputs (the step file and every input
/// file) and Outputs (the materialized outputs) catch a changed parameter, an added, removed or renamed file, and a
/// changed file alike.
/// </summary>
public sealed class TvixBuildPrepareSteps : Microsoft.Build.Utilities.Task
{
    private const string StepFileHeader = "tvix-fuse-build step 2";

    /// <summary>The step metadata passed on to <c>TvixBuild</c> (and written to the step file).</summary>
    private static readonly string[] StepMetadata =
    [
        "Command", "Arguments", "Outputs", "Environment", "NetworkAccess", "RefscanNeedles", "Store", "Builder", "Timeout",
        "Rebuild", "OutputImportance", "Compile", "ProvideBinSh", "MaxProcesses", "MaxMemory", "TmpSize",
    ];

    /// <summary>The <c>TvixBuildStep</c> items; the item's identity is the step's name.</summary>
    [Required]
    public ITaskItem[] Steps { get; set; } = [];

    /// <summary>The <c>TvixBuildInput</c> items: metadata <c>Step</c> (required) and <c>Name</c>.</summary>
    public ITaskItem[] StepInputs { get; set; } = [];

    /// <summary>Where step files go, and each step's default OutputDirectory (<c>OutputRoot/NAME/</c>).</summary>
    [Required]
    public string OutputRoot { get; set; } = string.Empty;

    /// <summary>
    /// One per step: the step file, with metadata <c>Step</c>, <c>OutputDirectory</c> (absolute, with a trailing slash),
    /// the step's own metadata, and where the step is declared: <c>DeclarationFile</c>, <c>DeclarationLine</c> and
    /// <c>DeclarationColumn</c> (the line 0 when not found), for the errors of its build.
    /// </summary>
    [Output]
    public ITaskItem[] StepFiles { get; private set; } = [];

    /// <summary>The inputs as <c>TvixBuild</c> takes them: absolute paths with <c>Step</c> and <c>Name</c>.</summary>
    [Output]
    public ITaskItem[] InputRoots { get; private set; } = [];

    /// <summary>Every regular file of every input (symlinks are not followed), with <c>Step</c>.</summary>
    [Output]
    public ITaskItem[] InputFiles { get; private set; } = [];

    /// <summary>Where each output will be: <c>OutputDirectory/NAME</c>, with <c>Step</c> and <c>Compile</c>.</summary>
    [Output]
    public ITaskItem[] OutputPaths { get; private set; } = [];

    /// <summary>
    /// One per step, with <c>Step</c>: the file the targets write after each successful run (the outputs' names,
    /// kinds, digests and store paths), the Outputs of the step's batch. Removed here when one of the step's outputs is
    /// missing, so that the step runs again.
    /// </summary>
    [Output]
    public ITaskItem[] ResultFiles { get; private set; } = [];

    public override bool Execute()
    {
        try
        {
            Prepare();
            return !Log.HasLoggedErrors;
        }
        catch (TvixBuildException e)
        {
            Log.LogTvixError(e.Code, e.Message, e.At);
            return false;
        }
    }

    private void Prepare()
    {
        string root = Path.GetFullPath(OutputRoot);
        var locator = new ItemLocator();
        var steps = new Dictionary<string, ITaskItem>(StringComparer.Ordinal);
        foreach (var step in Steps)
        {
            string name = step.ItemSpec;
            string? error = PathComponent.Validate(Encoding.UTF8.GetBytes(name)) ?? (name.Contains('=') ? "it contains '='" : null);
            if (error is not null)
            {
                throw Invalid($"TvixBuildStep '{name}': a step's name must be a valid file name without '=' ({error})", locator.Find(step, "TvixBuildStep"));
            }

            if (!steps.TryAdd(name, step))
            {
                throw Invalid($"TvixBuildStep '{name}' is declared twice", locator.Find(step, "TvixBuildStep", occurrence: 1));
            }
        }

        var inputsByStep = steps.Keys.ToDictionary(s => s, _ => new List<ITaskItem>(), StringComparer.Ordinal);
        foreach (var input in StepInputs)
        {
            string step = input.GetMetadata("Step");
            if (step.Length == 0)
            {
                throw Invalid($"TvixBuildInput '{input.ItemSpec}' has no Step metadata naming the TvixBuildStep it belongs to", locator.Find(input, "TvixBuildInput"));
            }

            if (!inputsByStep.TryGetValue(step, out var list))
            {
                throw Invalid(
                    $"TvixBuildInput '{input.ItemSpec}' belongs to the step '{step}', but there is no TvixBuildStep of that name", locator.Find(input, "TvixBuildInput"));
            }

            list.Add(input);
        }

        var stepFiles = new List<ITaskItem>();
        var roots = new List<ITaskItem>();
        var files = new List<ITaskItem>();
        var outputs = new List<ITaskItem>();
        var results = new List<ITaskItem>();
        foreach (var (name, step) in steps)
        {
            string outputDirectory = step.GetMetadata("OutputDirectory") is { Length: > 0 } given
                ? Path.GetFullPath(given)
                : Path.Combine(root, name);
            outputDirectory = Path.TrimEndingDirectorySeparator(outputDirectory) + "/";

            string[] outputNames = step.GetMetadata("Outputs").Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (outputNames.Length == 0)
            {
                outputNames = ["out"];
            }

            // The first lines are what TvixBuildCleanSteps reads back (ReadStepFile).
            var description = new StringBuilder(StepFileHeader).Append('\n');
            description.Append("name=").Append(name).Append('\n');
            description.Append("OutputDirectory=").Append(outputDirectory).Append('\n');
            description.Append("outputs=").AppendJoin(';', outputNames).Append('\n');
            var stepFile = new TaskItem(MSBuildEscaping.Escape(Path.Combine(root, name + ".step")));
            stepFile.SetMetadata("Step", MSBuildEscaping.Escape(name));
            stepFile.SetMetadata("OutputDirectory", MSBuildEscaping.Escape(outputDirectory));
            if (locator.Find(step, "TvixBuildStep") is { } declaration)
            {
                stepFile.SetMetadata("DeclarationFile", MSBuildEscaping.Escape(declaration.File));
                stepFile.SetMetadata("DeclarationLine", declaration.Line.ToString(System.Globalization.CultureInfo.InvariantCulture));
                stepFile.SetMetadata("DeclarationColumn", declaration.Column.ToString(System.Globalization.CultureInfo.InvariantCulture));
            }

            foreach (string metadata in StepMetadata)
            {
                // Escaped as given, so that an escaped ';' inside one argument stays inside it.
                string value = ((ITaskItem2)step).GetMetadataValueEscaped(metadata);
                stepFile.SetMetadata(metadata, value);
                description.Append(metadata).Append('=').Append(value).Append('\n');
            }

            foreach (var input in inputsByStep[name])
            {
                string path = input.GetMetadata("FullPath");
                var rootItem = new TaskItem(MSBuildEscaping.Escape(path));
                rootItem.SetMetadata("Step", MSBuildEscaping.Escape(name));
                rootItem.SetMetadata("Name", ((ITaskItem2)input).GetMetadataValueEscaped("Name"));
                roots.Add(rootItem);
                description.Append("input ").Append(input.GetMetadata("Name")).Append('=').Append(path).Append('\n');
                try
                {
                    Describe(path, name, description, files);
                }
                catch (TvixBuildException e) when (e.At is null)
                {
                    throw new TvixBuildException(e.Code, e.Message, locator.Find(input, "TvixBuildInput"));
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    throw new TvixBuildException(
                        TvixBuildError.InputMissing, $"cannot read the input {path} of the step '{name}': {e.Message}", locator.Find(input, "TvixBuildInput"));
                }
            }

            string compile = step.GetMetadata("Compile");
            bool outputsPresent = true;
            foreach (string output in outputNames)
            {
                string path = outputDirectory + output;
                outputsPresent &= Path.Exists(path) || new FileInfo(path).LinkTarget is not null;
                var item = new TaskItem(MSBuildEscaping.Escape(path));
                item.SetMetadata("Step", MSBuildEscaping.Escape(name));
                item.SetMetadata("Compile", MSBuildEscaping.Escape(compile));
                outputs.Add(item);
            }

            WriteIfChanged(stepFile.ItemSpec, description.ToString());
            stepFiles.Add(stepFile);

            string resultFile = Path.Combine(root, name + ".result");
            if (!outputsPresent)
            {
                File.Delete(resultFile);
            }

            var result = new TaskItem(MSBuildEscaping.Escape(resultFile));
            result.SetMetadata("Step", MSBuildEscaping.Escape(name));
            results.Add(result);
        }

        StepFiles = [.. stepFiles];
        InputRoots = [.. roots];
        InputFiles = [.. files];
        OutputPaths = [.. outputs];
        ResultFiles = [.. results];
    }

    /// <summary>
    /// The step's name, output directory and output names from a step file this task wrote, or null for a file that is
    /// not one (another format, or not named after its step).
    /// </summary>
    internal static (string Name, string OutputDirectory, string[] Outputs)? ReadStepFile(string path)
    {
        string[] lines;
        using (var reader = new StreamReader(path, Encoding.UTF8))
        {
            lines = [.. Enumerable.Range(0, 4).Select(_ => reader.ReadLine() ?? "")];
        }

        if (lines[0] != StepFileHeader || !lines[1].StartsWith("name=", StringComparison.Ordinal) ||
            !lines[2].StartsWith("OutputDirectory=/", StringComparison.Ordinal) || !lines[3].StartsWith("outputs=", StringComparison.Ordinal))
        {
            return null;
        }

        string name = lines[1]["name=".Length..];
        if (name != Path.GetFileNameWithoutExtension(path))
        {
            return null;
        }

        return (name, lines[2]["OutputDirectory=".Length..], lines[3]["outputs=".Length..].Split(';', StringSplitOptions.RemoveEmptyEntries));
    }

    /// <summary>Adds the tree at <paramref name="path"/> to the description, and its regular files to <paramref name="files"/>.</summary>
    private static void Describe(string path, string step, StringBuilder description, List<ITaskItem> files)
    {
        var info = new FileInfo(path);
        if (info.LinkTarget is { } target)
        {
            description.Append("  symlink -> ").Append(target).Append('\n');
            return;
        }

        if (info.Exists)
        {
            files.Add(FileItem(path, step));
            return;
        }

        if (!Directory.Exists(path))
        {
            throw new TvixBuildException(TvixBuildError.InputMissing, $"the input {path} of the step '{step}' does not exist");
        }

        var options = new EnumerationOptions
        {
            RecurseSubdirectories = true,
            AttributesToSkip = 0,
            IgnoreInaccessible = false,
            ReturnSpecialDirectories = false,
        };
        var entries = new DirectoryInfo(path).EnumerateFileSystemInfos("*", options)
            .Select(e => (Relative: Path.GetRelativePath(path, e.FullName), Entry: e))
            .OrderBy(e => e.Relative, StringComparer.Ordinal);
        foreach (var (relative, entry) in entries)
        {
            if (entry.LinkTarget is { } linkTarget)
            {
                description.Append("  symlink ").Append(relative).Append(" -> ").Append(linkTarget).Append('\n');
            }
            else if (entry is DirectoryInfo)
            {
                description.Append("  directory ").Append(relative).Append('\n');
            }
            else
            {
                description.Append("  file ").Append(relative).Append('\n');
                files.Add(FileItem(entry.FullName, step));
            }
        }
    }

    private static TaskItem FileItem(string path, string step)
    {
        var item = new TaskItem(MSBuildEscaping.Escape(path));
        item.SetMetadata("Step", MSBuildEscaping.Escape(step));
        return item;
    }

    private static void WriteIfChanged(string path, string contents)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(contents);
        try
        {
            if (File.Exists(path) && File.ReadAllBytes(path).AsSpan().SequenceEqual(bytes))
            {
                return;
            }

            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            HostFile.WriteAllBytes(path, bytes);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new TvixBuildException(TvixBuildError.StoreError, $"cannot write the step file {path}: {e.Message}");
        }
    }

    private static TvixBuildException Invalid(string message, ErrorLocation? at) => new(TvixBuildError.InvalidRequest, message, at);
}
