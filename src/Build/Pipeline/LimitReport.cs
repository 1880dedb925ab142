using TvixFuseBuild.Sandbox;

namespace TvixFuseBuild.Build.Pipeline;

/// <summary>How a front end names the limits (its options or properties), so that a failure says what to change.</summary>
/// <param name="MaxProcesses">The name of the process limit's setting, e.g. <c>--max-processes</c>.</param>
/// <param name="MaxMemory">The name of the memory limit's setting.</param>
/// <param name="TmpSize">The name of the /tmp and /dev/shm size's setting.</param>
public sealed record LimitNames(string MaxProcesses, string MaxMemory, string TmpSize)
{
    /// <summary>The command-line tool's options (<c>build</c>, <c>run</c> and <c>serve</c>).</summary>
    public static LimitNames CommandLine { get; } = new("--max-processes", "--max-memory", "--tmp-size");
}

/// <summary>The part of a failure that says which limit the build reached.</summary>
internal static class LimitReport
{
    /// <summary>": it reached the process limit of 64 (--max-processes)", or "" when no limit was reached.</summary>
    public static string For(SandboxResult result, LimitNames names)
    {
        var limits = result.Limits;
        var clauses = new List<string>();
        foreach (var hit in result.LimitsHit)
        {
            clauses.Add(hit switch
            {
                SandboxLimit.Processes => $"it reached the process limit of {limits.MaxProcesses} ({names.MaxProcesses})",
                SandboxLimit.Memory => $"it reached the memory limit of {SandboxLimits.FormatSize(limits.MaxMemory ?? 0)} ({names.MaxMemory})",
                SandboxLimit.Tmp => $"/tmp reached its size limit of {SandboxLimits.FormatSize(limits.TmpSize)} ({names.TmpSize})",
                _ => $"/dev/shm reached its size limit of {SandboxLimits.FormatSize(limits.TmpSize)} ({names.TmpSize})",
            });
        }

        // Without a pids cgroup the kernel's refusal leaves no trace outside the build; its log may show one.
        if (!result.LimitsWatched.Contains(SandboxLimit.Processes) &&
            result.LogTail.Contains("Resource temporarily unavailable", StringComparison.Ordinal))
        {
            clauses.Add(
                $"its log shows 'Resource temporarily unavailable', which is what a fork gets at the process limit of {limits.MaxProcesses} " +
                $"({names.MaxProcesses}); without a pids cgroup this host cannot tell whether that was the cause");
        }

        return clauses.Count == 0 ? "" : ": " + string.Join("; ", clauses);
    }
}
