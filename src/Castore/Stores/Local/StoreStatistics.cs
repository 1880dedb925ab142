namespace TvixFuseBuild.Castore.Stores.Local;

/// <summary>What a local store holds. Sizes are file sizes in bytes.</summary>
public sealed record StoreStatistics(
    int Blobs, long BlobBytes, int Directories, long DirectoryBytes, int Quarantined, long QuarantinedBytes, int Roots,
    int TempRootProcesses, int TempRoots)
{
    public int Objects => Blobs + Directories;

    public long ObjectBytes => BlobBytes + DirectoryBytes;

    public static StoreStatistics Of(LocalStore store)
    {
        var (blobs, blobBytes) = Count(store.BlobsDirectory, recurse: true);
        var (directories, directoryBytes) = Count(store.DirectoriesDirectory, recurse: true);
        var (quarantined, quarantinedBytes) = Count(store.QuarantineDirectory, recurse: false);
        var (digests, live, _) = GarbageCollector.ReadTempRoots(store, dryRun: true);
        return new StoreStatistics(
            blobs, blobBytes, directories, directoryBytes, quarantined, quarantinedBytes, store.Roots.List().Count, live, digests.Distinct().Count());
    }

    private static (int Count, long Bytes) Count(string directory, bool recurse)
    {
        if (!Directory.Exists(directory))
        {
            return (0, 0);
        }

        int count = 0;
        long bytes = 0;
        var options = new EnumerationOptions { RecurseSubdirectories = recurse, MaxRecursionDepth = 1, AttributesToSkip = 0, IgnoreInaccessible = true };
        foreach (var file in new DirectoryInfo(directory).EnumerateFiles("*", options))
        {
            try
            {
                if (file.LinkTarget is null)
                {
                    bytes += file.Length;
                    count++;
                }
            }
            catch (IOException)
            {
                // Removed while counted.
            }
        }

        return (count, bytes);
    }
}
