using TvixFuseBuild.Castore.Stores.Local;
using TvixFuseBuild.Castore.Stores.Memory;

namespace TvixFuseBuild.Castore.Stores;

/// <summary>Which store to use, the tvix way: one address for both services, or one for each.</summary>
public sealed record StoreOptions(string? Store = null, string? BlobServiceAddress = null, string? DirectoryServiceAddress = null)
{
    public const string BlobServiceAddressVariable = "BLOB_SERVICE_ADDR";
    public const string DirectoryServiceAddressVariable = "DIRECTORY_SERVICE_ADDR";

    /// <summary>Reach remote stores when opening them and fail there if they cannot be reached (unless an address says <c>offline=1</c>).</summary>
    public bool ConnectAtOpen { get; init; }

    /// <summary>The bearer token's file for gRPC stores whose address has no <c>token-file=</c>.</summary>
    public string? TokenFile { get; init; }
}

/// <summary>A blob service and a directory service used together, opened from store addresses.</summary>
public sealed class CastoreStore : IAsyncDisposable
{
    private readonly IAsyncDisposable[] _owned;

    public CastoreStore(IBlobService blobs, IDirectoryService directories, string address, params IAsyncDisposable[] owned)
    {
        Blobs = blobs;
        Directories = directories;
        Address = address;
        _owned = owned;
    }

    public IBlobService Blobs { get; }

    public IDirectoryService Directories { get; }

    /// <summary>The address as given (or the default local store's), for messages.</summary>
    public string Address { get; }

    /// <summary>The local store behind both services, when there is one: it has garbage collection and temp roots.</summary>
    public LocalStore? Local { get; init; }

    /// <summary>
    /// A new set of temp roots (see <see cref="Stores.Local.TempRoots"/>): what this process relies on until the set is disposed.
    /// Stores without garbage collection (memory, gRPC) register nothing.
    /// </summary>
    public TempRoots CreateTempRoots() => Local?.CreateTempRoots() ?? TempRoots.None;

    /// <summary>
    /// Opens a store. Precedence: explicit blob/directory addresses, then <see cref="StoreOptions.Store"/>, then the
    /// <c>BLOB_SERVICE_ADDR</c> / <c>DIRECTORY_SERVICE_ADDR</c> environment variables, then the default local store.
    /// A blob or directory address given without the other falls back to the same chain for the other.
    /// </summary>
    public static CastoreStore Open(StoreOptions options)
    {
        string? fallback = options.Store;
        string? blobs = options.BlobServiceAddress ?? fallback ?? Env(StoreOptions.BlobServiceAddressVariable);
        string? directories = options.DirectoryServiceAddress ?? fallback ?? Env(StoreOptions.DirectoryServiceAddressVariable);
        blobs ??= directories;
        directories ??= blobs;
        if (blobs is null || directories is null)
        {
            return Open(StoreAddress.DefaultLocal);
        }

        var grpc = new Grpc.GrpcStoreOptions { ConnectAtOpen = options.ConnectAtOpen, TokenFile = options.TokenFile };
        return blobs == directories ? Open(blobs, grpc) : Open(blobs, directories, grpc);
    }

    /// <summary>Opens one address serving both blobs and directories; a remote one is reached first with <paramref name="connectAtOpen"/>.</summary>
    public static CastoreStore Open(string address, bool connectAtOpen = false) =>
        Open(address, connectAtOpen ? new Grpc.GrpcStoreOptions { ConnectAtOpen = true } : null);

    /// <summary>Opens blobs from one address and directories from another.</summary>
    public static CastoreStore Open(string blobAddress, string directoryAddress, bool connectAtOpen = false) =>
        Open(blobAddress, directoryAddress, connectAtOpen ? new Grpc.GrpcStoreOptions { ConnectAtOpen = true } : null);

    private static CastoreStore Open(string address, Grpc.GrpcStoreOptions? grpc)
    {
        var parsed = StoreAddress.Parse(address);
        switch (parsed.Kind)
        {
            case StoreKind.Memory:
                var memoryBlobs = new MemoryBlobService();
                var memoryDirectories = new MemoryDirectoryService();
                return new CastoreStore(memoryBlobs, memoryDirectories, address, memoryBlobs, memoryDirectories);
            case StoreKind.Local:
                var local = LocalStore.Open(parsed.Path!);
                return new CastoreStore(local.Blobs, local.Directories, parsed.Display) { Local = local };
            default:
                return Grpc.GrpcClientFeature.IsSupported ? Grpc.GrpcCastore.Open(address, grpc) : throw Grpc.GrpcClientFeature.Missing($"the store {parsed.Display}");
        }
    }

    private static CastoreStore Open(string blobAddress, string directoryAddress, Grpc.GrpcStoreOptions? grpc)
    {
        var blobStore = Open(blobAddress, grpc);
        CastoreStore directoryStore;
        try
        {
            directoryStore = Open(directoryAddress, grpc);
        }
        catch
        {
            blobStore.DisposeAsync().AsTask().GetAwaiter().GetResult();
            throw;
        }

        return new CastoreStore(
            blobStore.Blobs, directoryStore.Directories, $"blobs {blobStore.Address}, directories {directoryStore.Address}", blobStore, directoryStore)
        {
            Local = blobStore.Local is { } local && directoryStore.Local?.Root == local.Root ? local : null,
        };
    }

    private static string? Env(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } value ? value : null;

    public async ValueTask DisposeAsync()
    {
        foreach (var owned in _owned)
        {
            await owned.DisposeAsync().ConfigureAwait(false);
        }
    }
}
