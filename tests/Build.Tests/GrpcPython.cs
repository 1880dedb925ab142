using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Grpc.Core;
using TvixFuseBuild.Castore.Grpc;

namespace TvixFuseBuild.Build.Tests.Grpc;

/// <summary>
/// Runs the Python (grpcio) interop scripts in tests/interop with Debian's python3. A missing python3-grpcio or
/// python3-grpc-tools fails the test with a clear message; nothing is skipped.
/// </summary>
internal static class GrpcPython
{
    private const string Interpreter = "/usr/bin/python3";
    private static readonly Lazy<string> RepoRoot = new(FindRepoRoot);
    private static readonly Lazy<string?> Missing = new(CheckModules);

    public static string InteropDirectory => Path.Combine(RepoRoot.Value, "tests", "interop");

    public static ProcessStartInfo StartInfo(string script, IEnumerable<string> arguments)
    {
        Assert.True(Missing.Value is null, Missing.Value);
        var psi = new ProcessStartInfo(Interpreter)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = InteropDirectory,
        };
        psi.ArgumentList.Add(Path.Combine(InteropDirectory, script));
        foreach (string a in arguments)
        {
            psi.ArgumentList.Add(a);
        }

        psi.Environment["PYTHONDONTWRITEBYTECODE"] = "1";
        psi.Environment["TFB_PROTO_ROOT"] = Path.Combine(RepoRoot.Value, "proto");
        foreach (string proxy in new[] { "http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY" })
        {
            psi.Environment.Remove(proxy);
        }

        return psi;
    }

    /// <summary>Runs castore_client.py with a list of operations against <paramref name="target"/>; returns one result per operation.</summary>
    public static async Task<JsonArray> RunClientAsync(string target, string package, JsonArray operations)
    {
        using var temp = new GrpcTempDirectory();
        string file = temp.File("operations.json");
        await File.WriteAllTextAsync(file, operations.ToJsonString());
        using var process = Process.Start(StartInfo("castore_client.py", ["--target", target, "--package", package, file]))!;
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"castore_client.py did not finish: {await stderr}");
        }

        Assert.True(process.ExitCode == 0, $"castore_client.py exited {process.ExitCode}: {await stderr}");
        var results = JsonNode.Parse(await stdout)!.AsArray();
        Assert.Equal(operations.Count, results.Count);
        return results;
    }

    private static string? CheckModules()
    {
        if (!File.Exists(Interpreter))
        {
            return $"{Interpreter} is missing: the interop tests need Debian's python3 with python3-grpcio and python3-grpc-tools (run scripts/setup)";
        }

        var psi = new ProcessStartInfo(Interpreter, ["-c", "import grpc, grpc_tools.protoc"])
        {
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        using var process = Process.Start(psi)!;
        string error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        return process.ExitCode == 0
            ? null
            : $"python3-grpcio / python3-grpc-tools are missing ({error.Trim().Split('\n')[^1]}): run scripts/setup";
    }

    private static string FindRepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "TvixFuseBuild.sln")))
        {
            dir = dir.Parent;
        }

        Assert.True(dir is not null, $"cannot find the repository (TvixFuseBuild.sln) above {AppContext.BaseDirectory}");
        return dir.FullName;
    }
}

/// <summary>tests/interop/castore_server.py running with a fixture; stopped (and its files removed) on dispose.</summary>
internal sealed class PythonCastoreServer : IAsyncDisposable
{
    private static readonly Marshaller<byte[]> Raw = Marshallers.Create(static b => b, static b => b);
    private static readonly Method<byte[], byte[]> StatsMethod = new(MethodType.Unary, "interop.Control", "Stats", Raw, Raw);

    private readonly Process _process;
    private readonly GrpcTempDirectory _temp;
    private readonly StringBuilder _stderr;

    private PythonCastoreServer(Process process, GrpcTempDirectory temp, StringBuilder stderr, string target)
    {
        _process = process;
        _temp = temp;
        _stderr = stderr;
        Target = target;
    }

    /// <summary><c>127.0.0.1:PORT</c> or <c>unix:/path</c>.</summary>
    public string Target { get; }

    public string StoreAddress(string query = "") =>
        (Target.StartsWith("unix:", StringComparison.Ordinal) ? "grpc+unix://" + Target["unix:".Length..] : "grpc+http://" + Target) + query;

    public GrpcEndpoint Endpoint => Target.StartsWith("unix:", StringComparison.Ordinal)
        ? GrpcEndpoint.UnixSocket(Target["unix:".Length..])
        : GrpcEndpoint.Tcp("127.0.0.1", int.Parse(Target.Split(':')[1]));

    /// <summary>Starts the server; <paramref name="listen"/> defaults to a free loopback port.</summary>
    public static async Task<PythonCastoreServer> StartAsync(JsonObject fixture, string package = "tvix", string? listen = null, params string[] options)
    {
        var temp = new GrpcTempDirectory();
        string fixtureFile = temp.File("fixture.json");
        await File.WriteAllTextAsync(fixtureFile, fixture.ToJsonString());
        var psi = GrpcPython.StartInfo("castore_server.py", ["--listen", listen ?? "127.0.0.1:0", "--package", package, "--fixture", fixtureFile, .. options]);
        var process = Process.Start(psi)!;
        var stderr = new StringBuilder();
        process.ErrorDataReceived += (_, e) =>
        {
            lock (stderr)
            {
                stderr.AppendLine(e.Data);
            }
        };
        process.BeginErrorReadLine();
        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            string? line = await process.StandardOutput.ReadLineAsync(timeout.Token);
            if (line is null || !line.StartsWith("LISTENING ", StringComparison.Ordinal))
            {
                await process.WaitForExitAsync(timeout.Token);
                throw new InvalidOperationException($"castore_server.py did not start (exit {process.ExitCode}): {stderr}");
            }

            string where = line["LISTENING ".Length..];
            return new PythonCastoreServer(process, temp, stderr, where.StartsWith("unix:", StringComparison.Ordinal) ? where : $"127.0.0.1:{where}");
        }
        catch
        {
            process.Kill(entireProcessTree: true);
            process.Dispose();
            temp.Dispose();
            throw;
        }
    }

    /// <summary>How many requests of <paramref name="method"/> (stat, read, get) the server saw, per digest (hex).</summary>
    /// <remarks><paramref name="endpoint"/>: how to reach a TLS server (with its CA); the stats need no token.</remarks>
    public async Task<Dictionary<string, int>> CountsAsync(string method, GrpcEndpoint? endpoint = null)
    {
        using var channel = GrpcChannels.Create(endpoint ?? Endpoint);
        byte[] json = await channel.CreateCallInvoker().AsyncUnaryCall(
            StatsMethod, null, new CallOptions(deadline: DateTime.UtcNow.AddSeconds(30)), []);
        var stats = JsonNode.Parse(json)!.AsObject();
        return stats[method] is JsonObject counts
            ? counts.ToDictionary(p => p.Key, p => p.Value!.GetValue<int>())
            : [];
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            _process.StandardInput.Close();
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await _process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
        finally
        {
            _process.Dispose();
            _temp.Dispose();
        }
    }

    public override string ToString()
    {
        lock (_stderr)
        {
            return $"python castore server at {Target}; stderr: {_stderr}";
        }
    }
}
