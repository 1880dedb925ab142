using System.Text;

namespace TvixFuseBuild.Native;

/// <summary>
/// One line of /proc/PID/mountinfo (proc(5)): <c>ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE
/// SOURCE SUPEROPTIONS</c>, with the octal escapes in the paths and the source undone.
/// </summary>
internal sealed record MountInfo(string Root, string MountPoint, string Options, string FileSystemType, string Source, string SuperOptions)
{
    public const string SelfPath = "/proc/self/mountinfo";

    /// <summary>The mounts of this process's mount namespace, in mount order; throws IOException when unreadable.</summary>
    public static List<MountInfo> ReadSelf() => Parse(File.ReadAllLines(SelfPath));

    public static List<MountInfo> Parse(IEnumerable<string> lines)
    {
        var mounts = new List<MountInfo>();
        foreach (string line in lines)
        {
            if (ParseLine(line) is { } mount)
            {
                mounts.Add(mount);
            }
        }

        return mounts;
    }

    /// <summary>The mount a line describes, or null for a line that is not one.</summary>
    public static MountInfo? ParseLine(string line)
    {
        string[] fields = line.Split(' ');
        int dash = fields.Length > 6 ? Array.IndexOf(fields, "-", 6) : -1;
        if (dash < 0 || dash + 1 >= fields.Length)
        {
            return null;
        }

        return new MountInfo(
            Unescape(fields[3]),
            Unescape(fields[4]),
            fields[5],
            fields[dash + 1],
            dash + 2 < fields.Length ? Unescape(fields[dash + 2]) : "",
            dash + 3 < fields.Length ? fields[dash + 3] : "");
    }

    /// <summary>True when the mount point is <paramref name="directory"/> or below it.</summary>
    public bool IsAtOrUnder(string directory) =>
        MountPoint == directory || directory == "/" ||
        (MountPoint.Length > directory.Length && MountPoint.StartsWith(directory, StringComparison.Ordinal) && MountPoint[directory.Length] == '/');

    /// <summary>Undoes mountinfo's octal escapes (\040 for a space, \011, \012, \134).</summary>
    public static string Unescape(string field)
    {
        if (!field.Contains('\\'))
        {
            return field;
        }

        var bytes = new List<byte>(field.Length);
        byte[] raw = Encoding.UTF8.GetBytes(field);
        for (int i = 0; i < raw.Length; i++)
        {
            if (raw[i] == (byte)'\\' && i + 3 < raw.Length && IsOctal(raw[i + 1]) && IsOctal(raw[i + 2]) && IsOctal(raw[i + 3]))
            {
                bytes.Add((byte)(((raw[i + 1] - '0') << 6) | ((raw[i + 2] - '0') << 3) | (raw[i + 3] - '0')));
                i += 3;
            }
            else
            {
                bytes.Add(raw[i]);
            }
        }

        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    private static bool IsOctal(byte b) => b is >= (byte)'0' and <= (byte)'7';
}
