using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Stores.Local;

namespace TvixFuseBuild.Castore.Grpc;

/// <summary>Opens gRPC store addresses (<c>grpc+http://</c>, <c>grpc+https://</c>, <c>grpc+unix://</c>) as castore stores.</summary>
public static class GrpcCastore
{
    /// <summary>
    /// Opens the BlobService and DirectoryService at <paramref name="address"/> behind a local cache (the default local
    /// store, or the one named by <c>cache=</c>; none with <c>cache=none</c>). With <c>wait-connect=1</c> the store is
    /// reached first and an unreachable one fails here.
    /// </summary>
    public static CastoreStore Open(string address, GrpcStoreOptions? options = null) =>
        OpenAsync(address, options).GetAwaiter().GetResult();

    public static async Task<CastoreStore> OpenAsync(string address, GrpcStoreOptions? options = null, CancellationToken cancellationToken = default)
    {
        var parsed = GrpcStoreAddress.Parse(address);
        var blobs = await GrpcBlobService.OpenAsync(address, options, cancellationToken).ConfigureAwait(false);
        var directories = await GrpcDirectoryService.OpenAsync(
            address, options, cancellationToken, probe: false).ConfigureAwait(false);
        if (!parsed.Cache.Enabled)
        {
            return new CastoreStore(blobs, directories, address, blobs, directories);
        }

        LocalStore local;
        try
        {
            local = LocalStore.Open(parsed.Cache.Path ?? LocalStore.DefaultRoot);
        }
        catch
        {
            await blobs.DisposeAsync().ConfigureAwait(false);
            await directories.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        var cachedBlobs = new CachingBlobService(local.Blobs, blobs, ownsStores: true);
        var cachedDirectories = new CachingDirectoryService(local.Directories, directories, parsed.DirectoryFetch, ownsStores: true);
        return new CastoreStore(cachedBlobs, cachedDirectories, address, cachedBlobs, cachedDirectories);
    }
}
