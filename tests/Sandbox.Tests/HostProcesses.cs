using System.Diagnostics;

namespace TvixFuseBuild.Sandbox.Tests;

/// <summary>The host's process table, read from /proc, for checking that nothing of a sandbox survives.</summary>
internal static class HostProcesses
{
    /// <summary>Host pids whose command line contains <paramref name="marker"/>.</summary>
    public static List<int> WithArgument(string marker)
    {
        var found = new List<int>();
        foreach (var dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid) || pid == Environment.ProcessId)
            {
                continue;
            }

            try
            {
                string cmdline = File.ReadAllText(Path.Combine(dir, "cmdline")).Replace('\0', ' ');
                if (cmdline.Contains(marker, StringComparison.Ordinal) && !IsZombie(pid))
                {
                    found.Add(pid);
                }
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }

        return found;
    }

    /// <summary>Waits up to <paramref name="within"/> for every process with the marker to be gone; returns the survivors.</summary>
    public static async Task<List<int>> GoneWithin(string marker, TimeSpan within)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            var left = WithArgument(marker);
            if (left.Count == 0 || sw.Elapsed > within)
            {
                return left;
            }

            await Task.Delay(50);
        }
    }

    /// <summary>Waits up to <paramref name="within"/> for <paramref name="count"/> processes with the marker.</summary>
    public static async Task<List<int>> AppearWithin(string marker, int count, TimeSpan within)
    {
        var sw = Stopwatch.StartNew();
        while (true)
        {
            var found = WithArgument(marker);
            if (found.Count >= count || sw.Elapsed > within)
            {
                return found;
            }

            await Task.Delay(20);
        }
    }

    /// <summary>A unique number to use as a sleep duration, so the process can be found on the host.</summary>
    public static string Marker() => (900000 + Random.Shared.Next(99999)).ToString(System.Globalization.CultureInfo.InvariantCulture);

    private static bool IsZombie(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat");
            return stat[(stat.LastIndexOf(')') + 2)..].StartsWith('Z');
        }
        catch (IOException)
        {
            return true;
        }
    }
}
