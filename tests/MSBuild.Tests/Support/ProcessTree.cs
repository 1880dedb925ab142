namespace TvixFuseBuild.MSBuild.Tests.Support;

/// <summary>Processes by /proc: a process and its descendants, identified by pid and start time (pids are reused).</summary>
public static class ProcessTree
{
    public sealed record Entry(int Pid, int Parent, ulong StartTime, string Command);

    public static Entry[] Below(int root)
    {
        var all = All();
        var result = new List<Entry>();
        var frontier = new Queue<int>([root]);
        while (frontier.Count > 0)
        {
            int pid = frontier.Dequeue();
            foreach (var child in all.Where(e => e.Parent == pid))
            {
                result.Add(child);
                frontier.Enqueue(child.Pid);
            }
        }

        return [.. result];
    }

    public static bool IsAlive(Entry entry) => Read(entry.Pid) is { } now && now.StartTime == entry.StartTime;

    private static List<Entry> All()
    {
        var entries = new List<Entry>();
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            if (int.TryParse(Path.GetFileName(dir), out int pid) && Read(pid) is { } entry)
            {
                entries.Add(entry);
            }
        }

        return entries;
    }

    /// <summary>/proc/PID/stat: "pid (comm) state ppid ... starttime(22nd field) ..."; comm may hold spaces and ')'.</summary>
    private static Entry? Read(int pid)
    {
        string stat;
        try
        {
            stat = File.ReadAllText($"/proc/{pid}/stat");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        int open = stat.IndexOf('(');
        int close = stat.LastIndexOf(')');
        string[] fields = stat[(close + 2)..].Split(' ');

        // fields[0] is the state (field 3): a zombie has exited already.
        if (fields[0] == "Z" || fields[0] == "X")
        {
            return null;
        }

        return new Entry(pid, int.Parse(fields[1]), ulong.Parse(fields[19]), stat[(open + 1)..close]);
    }
}
