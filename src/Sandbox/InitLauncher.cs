using System.Diagnostics;
using TvixFuseBuild.Native;
using SandboxEntry = TvixFuseBuild.Sandbox.Init.SandboxEntry;

namespace TvixFuseBuild.Sandbox;

/// <summary>
/// How the init is started: <c>tvix-sandbox-init enter</c>, the init's code (Init/) compiled ahead of time by
/// src/Sandbox.Init and shipped next to this assembly, enters the namespaces itself (<see cref="SandboxEntry"/>):
/// as root it first drops to the build user, so a build never runs as host root. The same code as this assembly's
/// managed <c>Main</c>, run by <c>dotnet exec</c>, is kept for the bench only (<see cref="GetManaged"/>): it costs two
/// .NET runtime starts per build (the entry re-execs it).
/// </summary>
internal sealed class InitLauncher
{
    /// <summary>The NativeAOT init's file name, next to TvixFuseBuild.Sandbox.dll.</summary>
    public const string NativeInitName = "tvix-sandbox-init";

    private static readonly Lazy<InitLauncher> s_native = new(() => Locate(managed: false));
    private static readonly Lazy<InitLauncher> s_managed = new(() => Locate(managed: true));

    private InitLauncher(IReadOnlyList<string> init)
    {
        Init = init;
    }

    /// <summary>The init's command line before its arguments: the native init, or dotnet exec of the managed one.</summary>
    public IReadOnlyList<string> Init { get; }

    /// <summary>The launcher, or a <see cref="SandboxException"/> naming what this host lacks. Never a fallback.</summary>
    public static InitLauncher Get() => Rethrown(s_native);

    /// <summary>The managed init started by <c>dotnet exec</c>, for the bench's comparison with the native one.</summary>
    internal static InitLauncher GetManaged() => Rethrown(s_managed);

    private static InitLauncher Rethrown(Lazy<InitLauncher> launcher)
    {
        try
        {
            return launcher.Value;
        }
        catch (SandboxException e)
        {
            throw new SandboxException(e.Message);
        }
    }

    private static InitLauncher Locate(bool managed)
    {
        if (!OperatingSystem.IsLinux())
        {
            throw new SandboxException("the sandbox needs Linux namespaces; this is not Linux");
        }

        if (HostChecks.NamespaceBlocker() is { } blocker)
        {
            throw new SandboxException($"cannot sandbox builds: {blocker}");
        }

        string? initAssembly = SandboxAssemblyFile();
        if (managed)
        {
            return new InitLauncher(LocateManaged(initAssembly ??
                throw new SandboxException("cannot sandbox builds with the managed init: TvixFuseBuild.Sandbox.dll is not a file on disk (a NativeAOT tool has none)")));
        }

        // In the NativeAOT tool there are no assembly files: the init ships next to the executable.
        return new InitLauncher(LocateNative(initAssembly is null ? AppContext.BaseDirectory : Path.GetDirectoryName(initAssembly)!));
    }

    /// <summary>TvixFuseBuild.Sandbox.dll's path, or null when it is not a file (the NativeAOT tool).</summary>
    [System.Diagnostics.CodeAnalysis.UnconditionalSuppressMessage("SingleFile", "IL3000",
        Justification = "Location is empty in a NativeAOT or single-file app; that case is handled (null), and the caller then looks next to the executable.")]
    private static string? SandboxAssemblyFile()
    {
        string location = typeof(InitLauncher).Assembly.Location;
        return location.Length > 0 && File.Exists(location) ? location : null;
    }

    private static string[] LocateNative(string directory)
    {
        string init = Path.Combine(directory, NativeInitName);
        if (!File.Exists(init))
        {
            throw new SandboxException(
                $"cannot sandbox builds: the sandbox init {init} is missing (it ships next to TvixFuseBuild.Sandbox.dll, or next to the NativeAOT tvix-fuse-build; reinstall the tool or the package)");
        }

        if (!IsElfFor(init, System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture))
        {
            throw new SandboxException(
                $"cannot sandbox builds: the sandbox init {init} is not a Linux executable for {System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture} (the package was built for another architecture)");
        }

        // Whoever runs the init must be able to execute it: the build user as root, the caller otherwise. A package's
        // files may have lost their modes (NuGet extracts without them), and a global tool lives in root's 0700 home.
        if (BuildUser.IsRoot ? !ReachableByOthers(init, execute: true) : Libc.access(init, Libc.X_OK) != 0)
        {
            init = Path.Combine(StageInit([init]), NativeInitName);
        }

        return [init];
    }

    [System.Diagnostics.CodeAnalysis.UnconditionalSuppressMessage("SingleFile", "IL3000",
        Justification = "Only reached with TvixFuseBuild.Sandbox.dll on disk (checked by the caller), so the runtime's own assemblies are files too.")]
    private static string[] LocateManaged(string initAssembly)
    {
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

        if (BuildUser.IsRoot)
        {
            // As root the init runs as the build user, who must be able to run dotnet and read the init.
            if (!ReachableByOthers(dotnet, execute: false))
            {
                throw new SandboxException(
                    $"cannot sandbox builds as root: {dotnet} is not readable by the unprivileged build users (uids from {BuildUser.FirstUid} on); install .NET where all users can run it");
            }

            if (!ReachableByOthers(initAssembly, execute: false) || !ReachableByOthers(runtimeConfig, execute: false))
            {
                string staged = StageInit([initAssembly, runtimeConfig]);
                (initAssembly, runtimeConfig) = (Path.Combine(staged, Path.GetFileName(initAssembly)), Path.Combine(staged, Path.GetFileName(runtimeConfig)));
            }
        }

        return [dotnet, "exec", "--runtimeconfig", runtimeConfig, initAssembly];
    }

    /// <summary>True when <paramref name="path"/> starts with an ELF header for this process's architecture.</summary>
    private static bool IsElfFor(string path, System.Runtime.InteropServices.Architecture architecture)
    {
        Span<byte> header = stackalloc byte[20];
        using (var file = File.OpenHandle(path))
        {
            if (RandomAccess.Read(file, header, 0) < header.Length)
            {
                return false;
            }
        }

        ushort machine = System.Buffers.Binary.BinaryPrimitives.ReadUInt16LittleEndian(header[18..]);
        return header[..4].SequenceEqual((ReadOnlySpan<byte>)[0x7f, (byte)'E', (byte)'L', (byte)'F']) && machine == architecture switch
        {
            System.Runtime.InteropServices.Architecture.X64 => 62, // EM_X86_64
            System.Runtime.InteropServices.Architecture.Arm64 => 183, // EM_AARCH64
            _ => ushort.MaxValue,
        };
    }

    /// <summary>True when every directory above <paramref name="path"/> is searchable, and the file readable (and executable), by other users.</summary>
    private static bool ReachableByOthers(string path, bool execute)
    {
        var needed = execute ? UnixFileMode.OtherRead | UnixFileMode.OtherExecute : UnixFileMode.OtherRead;
        if ((File.GetUnixFileMode(path) & needed) != needed)
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
    /// Copies the init's files where whoever runs it can read and execute them, in a directory named by their hash. As
    /// root (a global tool or a NuGet package lives under root's 0700 home): /run/tvix-fuse-build/sandbox-init/HASH,
    /// in directories only root can write, so nobody can swap the init. Otherwise (a package extracted without file
    /// modes): the same under $XDG_RUNTIME_DIR or ~/.cache, the caller's own.
    /// </summary>
    private static string StageInit(string[] files)
    {
        var contents = files.Select(File.ReadAllBytes).ToArray();
        using var sha = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        for (int i = 0; i < files.Length; i++)
        {
            sha.AppendData(System.Text.Encoding.UTF8.GetBytes(Path.GetFileName(files[i]) + "\0"));
            sha.AppendData(contents[i]);
        }

        string hash = Convert.ToHexStringLower(sha.GetHashAndReset())[..16];
        uint self = Libc.geteuid();
        string parent = BuildUser.IsRoot
            ? Directory.Exists("/run") ? "/run/tvix-fuse-build" : "/var/lib/tvix-fuse-build"
            : Path.Combine(Environment.GetEnvironmentVariable("XDG_RUNTIME_DIR") is { Length: > 0 } runtime && Directory.Exists(runtime)
                ? runtime
                : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"), "tvix-fuse-build");
        string inits = Path.Combine(parent, "sandbox-init");
        const UnixFileMode Public = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute |
                                    UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;
        var mode = BuildUser.IsRoot ? Public : UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
        foreach (string dir in new[] { parent, inits })
        {
            Directory.CreateDirectory(dir, mode);
            if (Libc.OwnerOf(dir) != self || (File.GetUnixFileMode(dir) & (UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) != 0)
            {
                throw new SandboxException($"cannot stage the sandbox init: {dir} must be owned by uid {self} and writable by it only");
            }
        }

        if (BuildUser.IsRoot)
        {
            File.SetUnixFileMode(parent, Public); // only directories just checked to be root's own
            File.SetUnixFileMode(inits, Public);
        }

        string final = Path.Combine(inits, hash);
        if (!files.All(f => File.Exists(Path.Combine(final, Path.GetFileName(f)))))
        {
            string temporary = Path.Combine(inits, $".{hash}.{Environment.ProcessId}.{Random.Shared.Next():x8}");
            Directory.CreateDirectory(temporary, mode);
            for (int i = 0; i < files.Length; i++)
            {
                string staged = Path.Combine(temporary, Path.GetFileName(files[i]));
                File.WriteAllBytes(staged, contents[i]);
                var read = UnixFileMode.UserRead | UnixFileMode.GroupRead | UnixFileMode.OtherRead;
                File.SetUnixFileMode(staged, Path.GetFileName(files[i]) == NativeInitName
                    ? read | UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute
                    : read);
            }

            try
            {
                Directory.Move(temporary, final);
            }
            catch (IOException) when (Directory.Exists(final))
            {
                Directory.Delete(temporary, recursive: true); // another process staged the same init first
            }
        }

        return final;
    }

    /// <summary>
    /// The init's start: <c>enter</c> with the build user (as root), the network choice and the build's cgroups
    /// (<see cref="SandboxEntry.Arguments"/>).
    /// </summary>
    public ProcessStartInfo CreateStartInfo(bool network, IReadOnlyCollection<int> extraGroups, BuildUser user, IBuildCgroup? cgroup, int maxProcesses)
    {
        var psi = new ProcessStartInfo(Init[0])
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        var args = psi.ArgumentList;
        foreach (string arg in Init.Skip(1).Concat(SandboxEntry.Arguments(
                     BuildUser.IsRoot ? user.Uid : null, BuildUser.IsRoot ? user.Gid : null, extraGroups, network,
                     cgroup?.Directories ?? [], cgroup?.PidsMax, maxProcesses)))
        {
            args.Add(arg);
        }

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
}
