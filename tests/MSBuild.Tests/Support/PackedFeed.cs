using System.IO.Compression;
using System.Text;

namespace TvixFuseBuild.MSBuild.Tests.Support;

/// <summary>
/// One temporary world for every <c>dotnet build</c> test of a run: TvixFuseBuild.MSBuild packed once (from the
/// already built src/MSBuild, under a version no earlier run used) into a local feed, a NuGet package folder, store,
/// result cache and TMPDIR of its own, and a nuget.config plus empty Directory.Build.* at the root so that the test
/// projects see nothing of the repository or of the machine's package cache. Removed at the end of the run.
/// </summary>
public sealed class PackedFeed : IDisposable
{
    public const string PackageId = "TvixFuseBuild.MSBuild";

    public PackedFeed()
    {
        RepoRoot = FindRepoRoot();

        // tests/MSBuild.Tests/bin/<Configuration>/net10.0/: the src projects were built in the same configuration.
        Configuration = new DirectoryInfo(AppContext.BaseDirectory).Parent!.Name;
        Root = Directory.CreateTempSubdirectory("tvix-msbuild-tests-").FullName;
        try
        {
            // The sandbox runs builds as an unprivileged user when we are root: it must reach TMPDIR.
            File.SetUnixFileMode(Root, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute |
                                       UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
            Feed = Directory.CreateDirectory(Path.Combine(Root, "feed")).FullName;
            Packages = Directory.CreateDirectory(Path.Combine(Root, "packages")).FullName;
            DataHome = Directory.CreateDirectory(Path.Combine(Root, "data")).FullName;
            TempDir = Directory.CreateDirectory(Path.Combine(Root, "tmp")).FullName;

            // A toolchain input for the steps: bin/busybox and bin/sh -> busybox (busybox picks its applet by argv[0],
            // so it cannot run as /nix/store/HASH-busybox itself).
            Toolchain = Directory.CreateDirectory(Path.Combine(Root, "toolchain")).FullName;
            Directory.CreateDirectory(Path.Combine(Toolchain, "bin"));
            File.Copy("/bin/busybox", Path.Combine(Toolchain, "bin", "busybox"));
            File.CreateSymbolicLink(Path.Combine(Toolchain, "bin", "sh"), "busybox");
            Version = $"0.1.0-test.{DateTime.UtcNow:yyyyMMddHHmmss}.{Environment.ProcessId}";

            File.WriteAllText(Path.Combine(Root, "nuget.config"), $"""
                <?xml version="1.0" encoding="utf-8"?>
                <configuration>
                  <packageSources>
                    <clear />
                    <add key="tests" value="{Feed}" />
                  </packageSources>
                </configuration>
                """);
            File.WriteAllText(Path.Combine(Root, "Directory.Build.props"), "<Project />");
            File.WriteAllText(Path.Combine(Root, "Directory.Build.targets"), "<Project />");
            File.WriteAllText(Path.Combine(Root, "Directory.Packages.props"), "<Project />");

            var pack = Dotnet.Run(
                RepoRoot, BuildEnvironment,
                ["pack", Path.Combine(RepoRoot, "src", "MSBuild", "MSBuild.csproj"), "--no-build", "-c", Configuration,
                 "-o", Feed, $"-p:PackageVersion={Version}", "-nodeReuse:false", "-nologo"],
                TimeSpan.FromMinutes(3));
            if (pack.ExitCode != 0)
            {
                throw new InvalidOperationException($"dotnet pack of src/MSBuild failed:\n{pack.Output}");
            }

            Package = Path.Combine(Feed, $"{PackageId}.{Version}.nupkg");
            if (!File.Exists(Package))
            {
                throw new InvalidOperationException($"dotnet pack did not write {Package}:\n{pack.Output}");
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public string RepoRoot { get; }

    public string Configuration { get; }

    /// <summary>Everything of this run; the test projects are created below it.</summary>
    public string Root { get; }

    public string Feed { get; } = string.Empty;

    public string Package { get; } = string.Empty;

    public string Version { get; } = string.Empty;

    /// <summary>NUGET_PACKAGES: the package is extracted here, never in the machine's cache.</summary>
    public string Packages { get; } = string.Empty;

    /// <summary>XDG_DATA_HOME: the default local store and the result cache.</summary>
    public string DataHome { get; } = string.Empty;

    /// <summary>A directory with bin/busybox and bin/sh, to give a step as an input (its bin/ is then on PATH).</summary>
    public string Toolchain { get; } = string.Empty;

    /// <summary>TMPDIR: where the task creates build directories.</summary>
    public string TempDir { get; } = string.Empty;

    /// <summary>The environment every dotnet process of the tests gets on top of ours (null: removed).</summary>
    public IReadOnlyDictionary<string, string?> BuildEnvironment => new Dictionary<string, string?>
    {
        ["NUGET_PACKAGES"] = Packages,
        ["XDG_DATA_HOME"] = DataHome,
        ["TMPDIR"] = TempDir,
        ["DOTNET_CLI_USE_MSBUILD_SERVER"] = "0",
        ["MSBUILDDISABLENODEREUSE"] = "1",
        ["UseSharedCompilation"] = "false",
        ["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1",
        ["DOTNET_NOLOGO"] = "1",
        ["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] = "1",
        ["BLOB_SERVICE_ADDR"] = null,
        ["DIRECTORY_SERVICE_ADDR"] = null,
    };

    /// <summary>A new directory for a test project that references this run's package (its name must be unique in the run).</summary>
    public TestProject CreateProject(string name, string projectBody, params (string Path, string Contents)[] files) =>
        CreateProject(name, projectBody, referencePackage: true, files);

    /// <summary>A new test project; without <paramref name="referencePackage"/>, <paramref name="projectBody"/> says where the package comes from.</summary>
    public TestProject CreateProject(string name, string projectBody, bool referencePackage, params (string Path, string Contents)[] files)
    {
        string directory = Path.Combine(Root, name);
        Directory.CreateDirectory(directory);
        string reference = referencePackage
            ? $"""
                <ItemGroup>
                  <PackageReference Include="{PackageId}" Version="{Version}" PrivateAssets="all" />
                </ItemGroup>
              """
            : "";
        File.WriteAllText(Path.Combine(directory, $"{name}.csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <Nullable>enable</Nullable>
                <ImplicitUsings>enable</ImplicitUsings>
              </PropertyGroup>
            {reference}
            {projectBody}
            </Project>
            """);
        foreach (var (path, contents) in files)
        {
            string full = Path.Combine(directory, path);
            Directory.CreateDirectory(Path.GetDirectoryName(full)!);
            File.WriteAllText(full, contents);
        }

        return new TestProject(this, name, directory);
    }

    /// <summary>Build directories of the task still in TMPDIR (there must be none once a build has ended).</summary>
    public string[] LeftoverBuildDirectories() =>
        [.. Directory.EnumerateFileSystemEntries(TempDir, "tvix-fuse-build-*"),
         .. Directory.EnumerateDirectories(TempDir, "tvix-fuse-builds-*").SelectMany(Directory.EnumerateFileSystemEntries)];

    /// <summary>Mounts below this run's root (there must be none once a build has ended).</summary>
    public string[] LeftoverMounts() =>
        [.. File.ReadAllLines("/proc/self/mountinfo").Where(l => l.Contains(Root, StringComparison.Ordinal))];

    public ZipArchive OpenPackage() => ZipFile.OpenRead(Package);

    public void Dispose()
    {
        if (LeftoverMounts() is { Length: > 0 } mounts)
        {
            // Not expected (the tests check it); the directory cannot be removed under a mount.
            throw new InvalidOperationException($"mounts left below {Root}:\n{string.Join('\n', mounts)}");
        }

        Directory.Delete(Root, recursive: true);
    }

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "TvixFuseBuild.sln")))
            {
                return dir.FullName;
            }
        }

        throw new InvalidOperationException($"TvixFuseBuild.sln not found above {AppContext.BaseDirectory}");
    }
}

/// <summary>A consumer project made by <see cref="PackedFeed.CreateProject"/>.</summary>
public sealed class TestProject(PackedFeed feed, string name, string directory)
{
    public string Name { get; } = name;

    public string Directory { get; } = directory;

    public string PathOf(string relative) => Path.Combine(Directory, relative);

    /// <summary><c>dotnet build</c> at normal verbosity, no node reuse, no build servers, classic console logger.</summary>
    public DotnetResult Build(params string[] extra) => Build(null, extra);

    public DotnetResult Build(Action<string>? onLine, params string[] extra) =>
        Support.Dotnet.Run(Directory, feed.BuildEnvironment, BuildArguments(extra), TimeSpan.FromMinutes(3), onLine);

    public string[] BuildArguments(params string[] extra) =>
        ["build", "-nodeReuse:false", "--disable-build-servers", "-tl:off", "-v:n", "-nologo", "-p:UseSharedCompilation=false", .. extra];

    /// <summary>Any dotnet command in the project's directory, with the tests' environment.</summary>
    public DotnetResult Dotnet(params string[] arguments) =>
        Support.Dotnet.Run(Directory, feed.BuildEnvironment, arguments, TimeSpan.FromMinutes(3));

    /// <summary>Runs the built program.</summary>
    public DotnetResult RunProgram() =>
        Support.Dotnet.Run(Directory, feed.BuildEnvironment, [Path.Combine(Directory, "bin", "Debug", "net10.0", $"{Name}.dll")], TimeSpan.FromMinutes(1));

    /// <summary>What <c>dotnet clean</c> and more: bin/ and obj/ gone, so only the result cache can spare the step.</summary>
    public void DeleteBuildOutputs()
    {
        foreach (string dir in new[] { "bin", "obj" })
        {
            string path = PathOf(dir);
            if (System.IO.Directory.Exists(path))
            {
                System.IO.Directory.Delete(path, recursive: true);
            }
        }
    }
}

public sealed record DotnetResult(int ExitCode, string Output)
{
    public override string ToString() => $"exit code {ExitCode}\n{Output}";
}

/// <summary>Runs the <c>dotnet</c> that runs the tests, with the environment of the tests.</summary>
public static class Dotnet
{
    public static string Host { get; } = FindHost();

    public static DotnetResult Run(
        string workingDirectory, IReadOnlyDictionary<string, string?> environment, IReadOnlyList<string> arguments, TimeSpan timeout,
        Action<string>? onLine = null, Action<System.Diagnostics.Process>? started = null, string? program = null)
    {
        using var process = Start(workingDirectory, environment, arguments, program);
        var output = new StringBuilder();
        void Line(string? line)
        {
            if (line is null)
            {
                return;
            }

            lock (output)
            {
                output.AppendLine(line);
            }

            onLine?.Invoke(line);
        }

        started?.Invoke(process);
        process.OutputDataReceived += (_, e) => Line(e.Data);
        process.ErrorDataReceived += (_, e) => Line(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            throw new TimeoutException($"dotnet {string.Join(' ', arguments)} did not finish within {timeout}:\n{output}");
        }

        process.WaitForExit();
        lock (output)
        {
            return new DotnetResult(process.ExitCode, output.ToString());
        }
    }

    /// <param name="program">Another program to run the same way (a script that runs dotnet itself); default: dotnet.</param>
    public static System.Diagnostics.Process Start(
        string workingDirectory, IReadOnlyDictionary<string, string?> environment, IReadOnlyList<string> arguments, string? program = null)
    {
        var info = new System.Diagnostics.ProcessStartInfo(program ?? Host)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (string argument in arguments)
        {
            info.ArgumentList.Add(argument);
        }

        // The test host runs under MSBuild/VSTest: none of their settings may leak into the builds under test.
        foreach (string key in info.Environment.Keys.ToArray())
        {
            if (key.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase) || key.StartsWith("VSTEST", StringComparison.OrdinalIgnoreCase) ||
                key.StartsWith("NUGET_", StringComparison.OrdinalIgnoreCase))
            {
                info.Environment.Remove(key);
            }
        }

        foreach (var (key, value) in environment)
        {
            if (value is null)
            {
                info.Environment.Remove(key);
            }
            else
            {
                info.Environment[key] = value;
            }
        }

        return System.Diagnostics.Process.Start(info) ?? throw new InvalidOperationException("dotnet did not start");
    }

    private static string FindHost()
    {
        // The test host runs on .../dotnet/shared/Microsoft.NETCore.App/<version>/.
        string runtimeDir = Path.GetDirectoryName(typeof(object).Assembly.Location)!;
        string host = Path.GetFullPath(Path.Combine(runtimeDir, "..", "..", "..", "dotnet"));
        return File.Exists(host) ? host : "dotnet";
    }
}
