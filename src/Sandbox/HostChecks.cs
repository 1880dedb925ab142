using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;

namespace TvixFuseBuild.Sandbox;

/// <summary>What this host can run, checked before anything starts.</summary>
internal static class HostChecks
{
    private static readonly Lazy<string[]> s_systems = new(DetectSystems);

    /// <summary>The Nix system names this host runs: its own, plus i686-linux where the kernel runs 32-bit x86.</summary>
    public static IReadOnlyList<string> Systems => s_systems.Value;

    /// <summary>The first of <see cref="Systems"/>: for a known architecture, without the IA32 probe.</summary>
    public static string HostSystem => OwnSystem ?? Systems[0];

    public static void CheckConstraints(SandboxSpec spec) => CheckConstraints(spec.System, spec.MinMemory);

    public static void CheckConstraints(string? system, long minMemory)
    {
        // The host's own system needs no probe (the IA32 one starts a process: milliseconds on every build).
        if (system is not null && system != OwnSystem && !Systems.Contains(system, StringComparer.Ordinal))
        {
            throw new SandboxRefusedException(
                $"this host cannot build for system '{system}'; it runs {string.Join(", ", Systems)}");
        }

        if (minMemory > 0)
        {
            long available = MemAvailable();
            if (minMemory > available)
            {
                throw new SandboxRefusedException(
                    $"the build needs {Mib(minMemory)} of memory but this host has {Mib(available)} available");
            }
        }
    }

    public static long MemAvailable()
    {
        foreach (var line in File.ReadLines("/proc/meminfo"))
        {
            if (line.StartsWith("MemAvailable:", StringComparison.Ordinal))
            {
                var kib = line["MemAvailable:".Length..].Trim().Split(' ')[0];
                return long.Parse(kib, CultureInfo.InvariantCulture) * 1024;
            }
        }

        throw new SandboxException("cannot read MemAvailable from /proc/meminfo");
    }

    private static string Mib(long bytes) => $"{bytes / (1024.0 * 1024):0} MiB";

    private static string? OwnSystem => RuntimeInformation.OSArchitecture switch
    {
        Architecture.X64 => "x86_64-linux",
        Architecture.Arm64 => "aarch64-linux",
        Architecture.X86 => "i686-linux",
        _ => null,
    };

    private static string[] DetectSystems()
    {
        switch (RuntimeInformation.OSArchitecture)
        {
            case Architecture.X64:
                return Runs32BitX86() ? ["x86_64-linux", "i686-linux"] : ["x86_64-linux"];
            case Architecture.Arm64:
                return ["aarch64-linux"];
            case Architecture.X86:
                return ["i686-linux"];
            default:
                return [RuntimeInformation.OSArchitecture.ToString().ToLowerInvariant() + "-linux"];
        }
    }

    /// <summary>Runs a 93-byte i386 ELF that exits 0: the only reliable test for IA32 emulation in the kernel.</summary>
    private static bool Runs32BitX86()
    {
        byte[] elf = Convert.FromHexString(
            "7f454c46010101000000000000000000020003000100000054800408340000000000000000000000340020000100000000000000" +
            "010000000000000000800408008004085d0000005d0000000500000000100000b80100000031dbcd80");
        if (!OperatingSystem.IsLinux())
        {
            return false;
        }

        string path = Path.Combine(Path.GetTempPath(), $"tvix-fuse-build-ia32-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            File.WriteAllBytes(path, elf);
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserExecute);
            using var p = Process.Start(new ProcessStartInfo(path) { UseShellExecute = false });
            if (p is null)
            {
                return false;
            }

            p.WaitForExit();
            return p.ExitCode == 0;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.ComponentModel.Win32Exception)
        {
            return false;
        }
        finally
        {
            try
            {
                File.Delete(path);
            }
            catch (IOException)
            {
            }
        }
    }

    /// <summary>Why namespaces cannot be used here, or null when nothing visible forbids them.</summary>
    public static string? NamespaceBlocker()
    {
        if (ReadInt("/proc/sys/user/max_user_namespaces") == 0)
        {
            return "user namespaces are disabled on this host (/proc/sys/user/max_user_namespaces is 0)";
        }

        if (ReadInt("/proc/sys/kernel/unprivileged_userns_clone") == 0)
        {
            return "unprivileged user namespaces are disabled on this host (kernel.unprivileged_userns_clone = 0); " +
                   "the sandbox needs them even as root, since builds never run as host root";
        }

        if (ReadInt("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == 1)
        {
            return "AppArmor restricts unprivileged user namespaces on this host " +
                   "(kernel.apparmor_restrict_unprivileged_userns = 1)";
        }

        return null;
    }

    private static int? ReadInt(string path)
    {
        try
        {
            return int.Parse(File.ReadAllText(path).Trim(), CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            return null;
        }
    }
}
