using System.Collections;
using System.CommandLine;
using System.Diagnostics.CodeAnalysis;
using System.Text;
using TvixFuseBuild.Castore.Grpc;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Tool;

/// <summary>
/// The NativeAOT tool is two executables from the same sources: <c>tvix-fuse-build</c>, the front users run, built
/// without the gRPC server (<c>serve</c>) and client (remote stores, <c>--builder</c>) so that it starts with half the
/// runtime data to relocate, and <see cref="ExecutableName"/> next to it with everything. A command line that needs
/// what the front lacks is handed over, once parsed and before anything else happens, by <c>execve</c>: same process,
/// arguments, environment, stdin and terminal, so signals and the exit code are those of the full tool. The
/// framework-dependent tool and <c>dotnet run</c> have everything and hand nothing over.
/// </summary>
internal static class FullTool
{
    public const string ExecutableName = "tvix-fuse-build-full";

    public const string ServerSwitch = "TvixFuseBuild.Server.IsSupported";

    private static readonly HashSet<Command> ServerCommands = [];
    private static readonly List<(Command Command, Func<ParseResult, bool> Needs)> ClientUses = [];

    /// <summary>Whether this executable has the gRPC server (<c>serve</c>); off in the front (Tool.csproj).</summary>
    [FeatureSwitchDefinition(ServerSwitch)]
    public static bool HasServer => !AppContext.TryGetSwitch(ServerSwitch, out bool on) || on;

    /// <summary>Whether this executable has the gRPC client; off in the front (Tool.csproj).</summary>
    public static bool HasGrpcClient => GrpcClientFeature.IsSupported;

    /// <summary>Marks <paramref name="command"/> as the server: the front hands every run of it over.</summary>
    public static Command Server(Command command)
    {
        ServerCommands.Add(command);
        return command;
    }

    /// <summary>Marks <paramref name="command"/> as using the gRPC client when <paramref name="needs"/> says so (besides a remote store).</summary>
    public static void UsesGrpcClientWhen(Command command, Func<ParseResult, bool> needs) => ClientUses.Add((command, needs));

    /// <summary>What an executable built without <paramref name="what"/> says when it reaches it all the same (a bug: it should have handed over).</summary>
    public static InvalidOperationException Missing(string what) =>
        new($"{what} is not in this executable ({ExecutableName} has it, and should have been run instead)");

    /// <summary>
    /// In the front: replaces this process with the full executable when <paramref name="parse"/>'s command needs the
    /// server or the gRPC client; returns when it does not (or this executable has both). Throws when the full
    /// executable cannot be run.
    /// </summary>
    public static void HandOverIfNeeded(ParseResult parse, Func<ParseResult, bool> usesRemoteStore)
    {
        if (HasServer && HasGrpcClient)
        {
            return;
        }

        var command = parse.CommandResult.Command;
        string? need = !HasServer && ServerCommands.Contains(command) ? command.Name
            : !HasGrpcClient && usesRemoteStore(parse) ? "a remote store"
            : !HasGrpcClient && ClientUses.Any(u => u.Command == command && u.Needs(parse)) ? "a remote builder"
            : null;
        if (need is null)
        {
            return;
        }

        string path = Path.Combine(AppContext.BaseDirectory, ExecutableName);
        int errno = Exec(path);
        throw new IOException(errno == Errno.ENOENT
            ? $"{need} needs {path}, which is missing: reinstall the tool (dotnet tool update --global TvixFuseBuild.Tool)"
            : $"{need} needs {path}, which cannot be run: {char.ToLowerInvariant(Errno.Text(errno)[0])}{Errno.Text(errno)[1..]}");
    }

    /// <summary><c>execve</c> of <paramref name="path"/> with this process's own arguments and environment, as it was started with; returns errno if that fails.</summary>
    private static unsafe int Exec(string path)
    {
        // As the process received them, byte for byte (the environment untouched by .NET's own copy of it).
        var argv = Strings("/proc/self/cmdline") ?? [.. Environment.GetCommandLineArgs().Select(Encoding.UTF8.GetBytes)];
        var envp = Strings("/proc/self/environ") ??
                   [.. Environment.GetEnvironmentVariables().Cast<DictionaryEntry>().Select(e => Encoding.UTF8.GetBytes($"{e.Key}={e.Value}"))];
        using var strings = new NativeStrings();
        // What the exec keeps of this process's state is what the full tool's runtime sets up anyway (SIGPIPE
        // ignored); handlers are reset and no signal is blocked on this thread.
        Libc.execve(strings.Add(path), strings.AddArray(argv), strings.AddArray(envp));
        return Errno.Last;
    }

    /// <summary>A NUL-separated /proc file's strings as bytes (exactly, whatever their encoding), or null if it cannot be read.</summary>
    private static List<byte[]>? Strings(string procFile)
    {
        byte[] data;
        try
        {
            data = File.ReadAllBytes(procFile);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        var strings = new List<byte[]>();
        int start = 0;
        for (int i = 0; i < data.Length; i++)
        {
            if (data[i] == 0)
            {
                strings.Add(data[start..i]);
                start = i + 1;
            }
        }

        return strings;
    }
}
