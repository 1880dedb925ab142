using System.Globalization;

namespace TvixFuseBuild.Sandbox;

/// <summary>
/// What one build may use. The defaults keep two concurrent builds from exhausting a host: 4096 processes, half of
/// the host's memory, and an eighth of it for each of /tmp and /dev/shm. Where each limit is enforced (and where it
/// cannot be) is in <see cref="SandboxResult.LimitsHit"/> and the README.
/// </summary>
public sealed record SandboxLimits
{
    public const int DefaultMaxProcesses = 4096;

    /// <summary>The smallest memory limit: the sandbox's own init must fit in it too.</summary>
    public const long MinMemory = 32L << 20;

    /// <summary>The smallest /tmp and /dev/shm.</summary>
    public const long MinTmpSize = 1L << 20;

    private static readonly Lazy<long> s_memTotal = new(ReadMemTotal);

    /// <summary>The defaults, computed from this host's MemTotal.</summary>
    public static SandboxLimits Default { get; } = new();

    /// <summary>Processes and threads the build may have at once (RLIMIT_NPROC, and the pids cgroup controller where usable).</summary>
    public int MaxProcesses { get; init; } = DefaultMaxProcesses;

    /// <summary>Bytes of memory (tmpfs pages included) for the whole build, where a memory cgroup can be used; null for no limit.</summary>
    public long? MaxMemory { get; init; } = MemTotal / 2;

    /// <summary>The size of each of the build's tmpfs mounts, /tmp and /dev/shm.</summary>
    public long TmpSize { get; init; } = RoundToMib(MemTotal / 8);

    /// <summary>The host's memory, from /proc/meminfo.</summary>
    public static long MemTotal => s_memTotal.Value;

    /// <summary>Checks the values; throws <see cref="SandboxRefusedException"/> naming the one that is out of range.</summary>
    public void Validate()
    {
        if (MaxProcesses is < 1 or > 4_194_304)
        {
            throw new SandboxRefusedException($"the process limit must be between 1 and 4194304, not {MaxProcesses}");
        }

        if (MaxMemory is { } memory && memory < MinMemory)
        {
            throw new SandboxRefusedException($"the memory limit must be at least {FormatSize(MinMemory)}, not {FormatSize(memory)}");
        }

        if (TmpSize < MinTmpSize)
        {
            throw new SandboxRefusedException($"the size of /tmp and /dev/shm must be at least {FormatSize(MinTmpSize)}, not {FormatSize(TmpSize)}");
        }
    }

    /// <summary>
    /// Parses a size: a number of bytes, optionally with a K, M, G or T suffix (powers of 1024, an optional trailing
    /// "B" or "iB" accepted: 64M, 64MiB, 1g). Throws <see cref="FormatException"/> with a message naming
    /// <paramref name="what"/> when it is not one.
    /// </summary>
    public static long ParseSize(string text, string what)
    {
        var match = System.Text.RegularExpressions.Regex.Match(text ?? "", @"^\s*([0-9]{1,19})\s*(?:([KMGTkmgt])(?:i?[Bb])?|[Bb])?\s*$");
        int shift = match.Groups[2].Success ? char.ToUpperInvariant(match.Groups[2].Value[0]) switch { 'K' => 10, 'M' => 20, 'G' => 30, _ => 40 } : 0;
        if (!match.Success ||
            !long.TryParse(match.Groups[1].Value, NumberStyles.None, CultureInfo.InvariantCulture, out long value) ||
            value > (long.MaxValue >> shift))
        {
            throw new FormatException($"{what}: '{text}' is not a size (a number of bytes, or with a K, M, G or T suffix: 512M, 2G)");
        }

        return value << shift;
    }

    /// <summary>Bytes as people read them: 64 MiB, 1.5 GiB, 100 bytes.</summary>
    public static string FormatSize(long bytes)
    {
        string[] units = ["KiB", "MiB", "GiB", "TiB"];
        if (bytes < 1024)
        {
            return $"{bytes} bytes";
        }

        double value = bytes;
        int unit = -1;
        while (value >= 1024 && unit < units.Length - 1)
        {
            value /= 1024;
            unit++;
        }

        return value.ToString(value == Math.Floor(value) ? "0" : "0.#", CultureInfo.InvariantCulture) + " " + units[unit];
    }

    private static long RoundToMib(long bytes) => Math.Max(MinTmpSize, bytes >> 20 << 20);

    private static long ReadMemTotal()
    {
        foreach (var line in File.ReadLines("/proc/meminfo"))
        {
            if (line.StartsWith("MemTotal:", StringComparison.Ordinal))
            {
                return long.Parse(line["MemTotal:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
            }
        }

        throw new SandboxException("cannot read MemTotal from /proc/meminfo");
    }
}

/// <summary>A limit a build reached, as far as this host can tell (see <see cref="SandboxResult.LimitsHit"/>).</summary>
public enum SandboxLimit
{
    /// <summary>A fork or clone failed at <see cref="SandboxLimits.MaxProcesses"/> (seen by the pids cgroup).</summary>
    Processes,

    /// <summary>The kernel killed a process of the build at <see cref="SandboxLimits.MaxMemory"/> (seen by the memory cgroup).</summary>
    Memory,

    /// <summary>/tmp was full when the command ended.</summary>
    Tmp,

    /// <summary>/dev/shm was full when the command ended.</summary>
    DevShm,
}
