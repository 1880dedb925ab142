using System.Text.Json;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Stores.Memory;
using TvixFuseBuild.Server;

namespace TvixFuseBuild.Build.Tests.Grpc;

/// <summary>Loads the shared test vectors copied next to the test assembly; a missing file fails the test.</summary>
internal static class GrpcVectors
{
    public static JsonElement Load(string name)
    {
        string path = Path.Combine(AppContext.BaseDirectory, "vectors", name);
        Assert.True(File.Exists(path), $"test vector file {path} is missing");
        using var stream = File.OpenRead(path);
        return JsonDocument.Parse(stream).RootElement.Clone();
    }
}

/// <summary>A temporary directory removed with everything in it on dispose.</summary>
internal sealed class GrpcTempDirectory : IDisposable
{
    // Unix socket paths are limited to 108 bytes: keep the directory short.
    public string Path { get; } = Directory.CreateTempSubdirectory("tfb-grpc-").FullName;

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }
}

/// <summary>Our gRPC server with the castore services over memory stores, on a free TCP port or a unix socket.</summary>
internal sealed class GrpcCastoreTestServer : IAsyncDisposable
{
    private readonly GrpcTempDirectory? _temp;

    private GrpcCastoreTestServer(GrpcServer server, IBlobService blobs, IDirectoryService directories, GrpcTempDirectory? temp)
    {
        Server = server;
        Blobs = blobs;
        Directories = directories;
        _temp = temp;
    }

    public GrpcServer Server { get; }

    public IBlobService Blobs { get; }

    public IDirectoryService Directories { get; }

    /// <summary><c>127.0.0.1:PORT</c> or <c>unix:/path</c>.</summary>
    public string ListenAddress => Server.BoundAddresses.Single();

    /// <summary>The address a castore client uses, e.g. <c>grpc+http://127.0.0.1:PORT</c>.</summary>
    public string StoreAddress(string query = "") =>
        (ListenAddress.StartsWith("unix:", StringComparison.Ordinal)
            ? "grpc+unix://" + ListenAddress["unix:".Length..]
            : "grpc+http://" + ListenAddress) + query;

    public static async Task<GrpcCastoreTestServer> StartAsync(
        bool unixSocket = false,
        GrpcServerOptions? options = null,
        IBlobService? blobs = null,
        IDirectoryService? directories = null,
        int chunkSize = 64 << 10,
        Func<GrpcServer, GrpcServer>? configure = null)
    {
        blobs ??= new MemoryBlobService();
        directories ??= new MemoryDirectoryService();
        var temp = unixSocket ? new GrpcTempDirectory() : null;
        var server = new GrpcServer(options)
            .Listen(unixSocket ? "unix:" + temp!.File("castore.sock") : "127.0.0.1:0")
            .AddCastore(new BlobGrpcService(blobs, new BlobChunkIndex(chunkSize)), new DirectoryGrpcService(directories));
        server = configure?.Invoke(server) ?? server;

        try
        {
            await server.StartAsync();
        }
        catch
        {
            temp?.Dispose();
            throw;
        }

        return new GrpcCastoreTestServer(server, blobs, directories, temp);
    }

    public async ValueTask DisposeAsync()
    {
        await Server.StopAsync();
        _temp?.Dispose();
    }
}
