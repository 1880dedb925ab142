using System.Diagnostics;

namespace TvixFuseBuild.Sandbox;

/// <summary>
/// How the init is started: util-linux <c>unshare</c> (a single-threaded program, so it can create the user
/// namespace) enters every namespace and execs this assembly's <c>Main</c> on the same .NET runtime as the caller.
/// As root, <c>setpriv</c> first drops to the build user, so a build never runs as host root.
/// </summary>
internal sealed class InitLauncher
{
    private static readonly Lazy<InitLauncher> s_instance = new(Locate);

    private InitLauncher(string unshare, string? setpriv, string dotnet, string initAssembly, string runtimeConfig)
    {
        Unshare = unshare;
        Setpriv = setpriv;
        Dotnet = dotnet;
        InitAssembly = initAssembly;
        RuntimeConfig = runtimeConfig;
    }

    public string Unshare { get; }

    public string? Setpriv { get; }

    public string Dotnet { get; }

    public string InitAssembly { get; }

    public string RuntimeConfig { get; }

    public static bool IsRoot { get; } = Interop.Libc.geteuid() == 0;

    /// <summary>The launcher, or a <see cref="SandboxException"/> naming what this host lacks. Never a fallback.</summary>
    public static InitLauncher Get()
    {
        try
        {
            return s_instance.Value;
        }
        catch (SandboxException e)
        {
            throw new SandboxException(e.Message);
        }
    }

    private static InitLauncher Locate()
    {
        if (!OperatingSystem.IsLinux())
        {
            throw new SandboxException("the sandbox needs Linux namespaces; this is not Linux");
        }

        if (HostChecks.NamespaceBlocker() is { } blocker)
        {
            throw new SandboxException($"cannot sandbox builds: {blocker}");
        }

        string unshare = FindTool("unshare") ??
            throw new SandboxException("cannot sandbox builds: util-linux 'unshare' was not found (install util-linux)");
        string? setpriv = null;
        if (IsRoot)
        {
            setpriv = FindTool("setpriv") ??
                throw new SandboxException("cannot sandbox builds as root: util-linux 'setpriv' was not found (install util-linux)");
        }

        string initAssembly = typeof(InitLauncher).Assembly.Location;
        if (string.IsNullOrEmpty(initAssembly) || !File.Exists(initAssembly))
        {
            throw new SandboxException("cannot sandbox builds: TvixFuseBuild.Sandbox.dll is not a file on disk (single-file publishing is not supported)");
        }

        string runtimeConfig = Path.ChangeExtension(initAssembly, ".runtimeconfig.json");
        if (!File.Exists(runtimeConfig))
        {
            throw new SandboxException($"cannot sandbox builds: {runtimeConfig} is missing (it ships next to TvixFuseBuild.Sandbox.dll)");
        }

        // The caller's own runtime: .../shared/Microsoft.NETCore.App/<version>/System.Private.CoreLib.dll.
        string runtimeDir = Path.GetDirectoryName(typeof(object).Assembly.Location)!;
        string dotnet = Path.GetFullPath(Path.Combine(runtimeDir, "..", "..", "..", "dotnet"));
        if (!File.Exists(dotnet))
        {
            throw new SandboxException($"cannot sandbox builds: the dotnet host was not found at {dotnet}");
        }

        if (IsRoot)
        {
            // As root the init runs as the build user, who must be able to run dotnet and read the init.
            if (!ReachableByOthers(dotnet))
            {
                throw new SandboxException(
                    $"cannot sandbox builds as root: {dotnet} is not readable by the unprivileged build users (uids from {BuildUser.FirstUid} on); install .NET where all users can run it");
            }

            if (!ReachableByOthers(initAssembly) || !ReachableByOthers(runtimeConfig))
            {
                (initAssembly, runtimeConfig) = StageForBuildUser(initAssembly, runtimeConfig);
            }
        }

        return new InitLauncher(unshare, setpriv, dotnet, initAssembly, runtimeConfig);
    }

    /// <summary>True when every directory above <paramref name="path"/> is searchable, and the file readable, by other users.</summary>
    private static bool ReachableByOthers(string path)
    {
        if ((File.GetUnixFileMode(path) & UnixFileMode.OtherRead) == 0)
        {
            return false;
        }

        for (var dir = new DirectoryInfo(Path.GetDirectoryName(path)!); dir is not null; dir = dir.Parent)
        {
            if ((dir.UnixFileMode & UnixFileMode.OtherExecute) == 0)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// Copies the init where the build user can read it (a global tool or a NuGet package lives under root's 0700
    /// home): /run/tvix-fuse-build/sandbox-init/HASH, in directories only root can write, so nobody can swap the init.
    /// </summary>
    private static (string Assembly, string RuntimeConfig) StageForBuildUser(string initAssembly, string runtimeConfig)
    {
        byte[] assembly = File.ReadAllBytes(initAssembly);
        byte[] config = File.ReadAllBytes(runtimeConfig);
        string hash = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData([.. assembly, .. config]))[..16];
        string parent = Directory.Exists("/run") ? "/run/tvix-fuse-build" : "/var/lib/tvix-fuse-build";
        string inits = Path.Combine(parent, "sandbox-init");
        const UnixFileMode Public = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute |
                                    UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;
        foreach (string dir in new[] { parent, inits })
        {
            Directory.CreateDirectory(dir, Public);
            if (Interop.Libc.OwnerOf(dir) != 0 || (File.GetUnixFileMode(dir) & (UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) != 0)
            {
                throw new SandboxException($"cannot sandbox builds as root: {dir} must be owned by root and writable by root only");
            }

            File.SetUnixFileMode(dir, Public);
        }

        string final = Path.Combine(inits, hash);
        string stagedAssembly = Path.Combine(final, Path.GetFileName(initAssembly));
        string stagedConfig = Path.Combine(final, Path.GetFileName(runtimeConfig));
        if (!File.Exists(stagedConfig))
        {
            string temporary = Path.Combine(inits, $".{hash}.{Environment.ProcessId}.{Random.Shared.Next():x8}");
            Directory.CreateDirectory(temporary, Public);
            File.WriteAllBytes(Path.Combine(temporary, Path.GetFileName(initAssembly)), assembly);
            File.WriteAllBytes(Path.Combine(temporary, Path.GetFileName(runtimeConfig)), config);
            foreach (string file in Directory.EnumerateFiles(temporary))
            {
                File.SetUnixFileMode(file, UnixFileMode.UserRead | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
            }

            try
            {
                Directory.Move(temporary, final);
            }
            catch (IOException) when (File.Exists(stagedConfig))
            {
                Directory.Delete(temporary, recursive: true); // another process staged the same init first
            }
        }

        return (stagedAssembly, stagedConfig);
    }

    public ProcessStartInfo CreateStartInfo(bool network, IReadOnlyCollection<int> extraGroups, BuildUser user)
    {
        var psi = new ProcessStartInfo(Setpriv ?? Unshare)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        var args = psi.ArgumentList;
        if (Setpriv is not null)
        {
            args.Add($"--reuid={user.Uid}");
            args.Add($"--regid={user.Gid}");
            args.Add(extraGroups.Count == 0 ? "--clear-groups" : "--groups=" + string.Join(',', extraGroups));
            args.Add("--");
            args.Add(Unshare);
        }

        args.Add("--user");
        args.Add("--map-user=1000");
        args.Add("--map-group=100");
        args.Add("--keep-caps");
        args.Add("--mount");
        args.Add("--propagation=private");
        args.Add("--pid");
        args.Add("--fork");
        args.Add("--kill-child");
        args.Add("--uts");
        args.Add("--ipc");
        args.Add("--cgroup");
        if (!network)
        {
            args.Add("--net");
        }

        args.Add("--");
        args.Add(Dotnet);
        args.Add("exec");
        args.Add("--runtimeconfig");
        args.Add(RuntimeConfig);
        args.Add(InitAssembly);

        // Nothing of the caller's environment reaches the init (the build gets the spec's environment only).
        psi.Environment.Clear();
        psi.Environment["DOTNET_EnableDiagnostics"] = "0"; // no IPC socket in the host's /tmp, no extra thread
        psi.Environment["DOTNET_LTTng"] = "0";
        psi.Environment["DOTNET_TieredPGO"] = "0";
        psi.Environment["DOTNET_gcServer"] = "0";
        if (Environment.GetEnvironmentVariable("TVIX_SANDBOX_TRACE") == "1")
        {
            psi.Environment["TVIX_SANDBOX_TRACE"] = "1";
        }
        return psi;
    }

    private static string? FindTool(string name)
    {
        foreach (var dir in new[] { "/usr/bin", "/bin", "/usr/sbin", "/sbin" }.Concat(
                     (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)))
        {
            string candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }
}
