using System.CommandLine;
using TvixFuseBuild.Sandbox;

namespace TvixFuseBuild.Tool.Commands;

/// <summary><c>--max-processes</c>, <c>--max-memory</c> and <c>--tmp-size</c>: the same on <c>build</c>, <c>run</c> and <c>serve</c>.</summary>
internal sealed class LimitOptions
{
    private readonly Option<int?> _maxProcesses = new("--max-processes")
    {
        Description = $"Processes and threads a build may have at once (default: {SandboxLimits.DefaultMaxProcesses}).",
        HelpName = "N",
    };

    private readonly Option<string?> _maxMemory = new("--max-memory")
    {
        Description = "Memory of a build, its /tmp and /dev/shm included, with a K, M or G suffix, or 'none' (default: half of this host's memory). " +
                      "Enforced where the build can have a memory cgroup (root on cgroup v1, or a usable cgroup v2 parent: TVIX_FUSE_BUILD_CGROUP); see the README.",
        HelpName = "SIZE",
    };

    private readonly Option<string?> _tmpSize = new("--tmp-size")
    {
        Description = "The size of each of a build's /tmp and /dev/shm, with a K, M or G suffix (default: an eighth of this host's memory).",
        HelpName = "SIZE",
    };

    /// <summary>The options, for a caller that refuses them where they do not apply.</summary>
    public IEnumerable<Option> Options => [_maxProcesses, _maxMemory, _tmpSize];

    public void AddTo(Command command)
    {
        command.Options.Add(_maxProcesses);
        command.Options.Add(_maxMemory);
        command.Options.Add(_tmpSize);
    }

    /// <summary>The limits asked for; a <see cref="UsageException"/> for a value that is not one or is out of range.</summary>
    public SandboxLimits Parse(ParseResult parse)
    {
        var limits = SandboxLimits.Default;
        try
        {
            if (parse.GetValue(_maxProcesses) is { } processes)
            {
                limits = limits with { MaxProcesses = processes };
            }

            if (parse.GetValue(_maxMemory) is { } memory)
            {
                limits = limits with { MaxMemory = memory.Trim() == "none" ? null : SandboxLimits.ParseSize(memory, "--max-memory") };
            }

            if (parse.GetValue(_tmpSize) is { } tmp)
            {
                limits = limits with { TmpSize = SandboxLimits.ParseSize(tmp, "--tmp-size") };
            }

            limits.Validate();
        }
        catch (FormatException e)
        {
            throw new UsageException(e.Message);
        }
        catch (SandboxRefusedException e)
        {
            throw new UsageException(e.Message switch
            {
                var m when m.StartsWith("the process limit", StringComparison.Ordinal) => "--max-processes: " + m,
                var m when m.StartsWith("the memory limit", StringComparison.Ordinal) => "--max-memory: " + m,
                var m => "--tmp-size: " + m,
            });
        }

        return limits;
    }
}
