using System.Text;
using Microsoft.Build.Framework;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Transfer;

namespace TvixFuseBuild.MSBuild;

/// <summary>
/// Part of <c>TvixFuseBuild.MSBuild.targets</c>, run by <c>dotnet clean</c>: removes what the steps left in the build
/// tree, found through the step files in <see cref="OutputRoot"/> (each names its step's outputs and where they were
/// materialized), so that a step since removed from the project is cleaned too. For each: its outputs (only those
/// inside one of <see cref="CleanRoots"/>, as MSBuild's own clean touches only the build's directories), its result
/// file, its step file, its default output directory once empty, and at last <see cref="OutputRoot"/> once empty.
/// Nothing else is touched; the store and the result cache keep the outputs for the next build.
/// </summary>
public sealed class TvixBuildCleanSteps : Microsoft.Build.Utilities.Task
{
    /// <summary>Where the step files are (the targets' <c>$(TvixBuildOutputRoot)</c>).</summary>
    [Required]
    public string OutputRoot { get; set; } = string.Empty;

    /// <summary>The directories inside which outputs may be removed (the intermediate and output directories).</summary>
    public string[] CleanRoots { get; set; } = [];

    public override bool Execute()
    {
        string root = Path.TrimEndingDirectorySeparator(Path.GetFullPath(OutputRoot)) + "/";
        if (!Directory.Exists(root))
        {
            return true;
        }

        string[] cleanRoots = [root, .. CleanRoots.Where(r => r.Length > 0).Select(r => Path.TrimEndingDirectorySeparator(Path.GetFullPath(r)) + "/")];
        try
        {
            foreach (string stepFile in Directory.EnumerateFiles(root, "*.step"))
            {
                if (TvixBuildPrepareSteps.ReadStepFile(stepFile) is not { } step)
                {
                    continue;
                }

                // Only names TvixBuild accepts: nothing was materialized under any other.
                foreach (string output in step.Outputs.Where(o => PathComponent.Validate(Encoding.UTF8.GetBytes(o)) is null && !o.Contains('=')))
                {
                    string path = Path.GetFullPath(step.OutputDirectory + output);
                    if (cleanRoots.Any(r => path.StartsWith(r, StringComparison.Ordinal)) && (Path.Exists(path) || new FileInfo(path).LinkTarget is not null))
                    {
                        HostTree.Remove(path);
                        Log.LogMessage(MessageImportance.Low, "{0}", $"removed the output {path}");
                    }
                }

                File.Delete(Path.Combine(root, step.Name + ".result"));
                File.Delete(stepFile);
                RemoveIfEmpty(Path.Combine(root, step.Name));
            }

            RemoveIfEmpty(root);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.LogTvixError(TvixBuildError.StoreError, $"cannot clean the TvixBuild steps in {root}: {e.Message}", null);
            return false;
        }
    }

    private static void RemoveIfEmpty(string directory)
    {
        if (Directory.Exists(directory) && new FileInfo(directory).LinkTarget is null && !Directory.EnumerateFileSystemEntries(directory).Any())
        {
            Directory.Delete(directory);
        }
    }
}
