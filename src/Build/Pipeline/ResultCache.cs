using Google.Protobuf;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Stores.Local;
using TvixFuseBuild.Castore.Transfer;
using TvixBuild = Tvix.Build.V1;

namespace TvixFuseBuild.Build.Pipeline;

/// <summary>
/// Remembers the result of each request by its digest (<see cref="BuildSpec.ComputeDigest"/>), as the tvix <c>Build</c>
/// message in one file per request. A remembered result is only used while every output it names is still in the
/// store being used, so the cache can be shared by stores and never hands out outputs that are gone.
/// </summary>
public sealed class ResultCache(string directory)
{
    public string Directory { get; } = directory;

    /// <summary><c>$XDG_DATA_HOME/tvix-fuse-build/results</c> (next to the default local store).</summary>
    public static ResultCache Default => new(Path.Combine(Path.GetDirectoryName(LocalStore.DefaultRoot)!, "results"));

    private string PathOf(B3Digest request) => Path.Combine(Directory, request.ToHex());

    public async Task<BuildResult?> TryGetAsync(B3Digest request, CastoreStore store, CancellationToken cancellationToken)
    {
        byte[] bytes;
        try
        {
            bytes = await File.ReadAllBytesAsync(PathOf(request), cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return null;
        }

        BuildResult result;
        try
        {
            result = BuildResult.FromTvixBuild(TvixBuild.Build.Parser.ParseFrom(bytes));
        }
        catch (Exception e) when (e is InvalidProtocolBufferException or FormatException or CastoreException)
        {
            // A damaged entry is as good as none; it is rewritten after the build.
            return null;
        }

        foreach (var output in result.Outputs)
        {
            if (!await ExistsAsync(output.Node, store, cancellationToken).ConfigureAwait(false))
            {
                return null;
            }
        }

        return result;
    }

    public Task StoreAsync(B3Digest request, BuildSpec spec, BuildResult result, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        System.IO.Directory.CreateDirectory(Directory);
        HostFile.WriteAllBytes(PathOf(request), result.ToTvixBuild(spec).ToByteArray());
        return Task.CompletedTask;
    }

    private static async ValueTask<bool> ExistsAsync(Node node, CastoreStore store, CancellationToken cancellationToken) => node switch
    {
        DirectoryNode d => await store.Directories.GetAsync(d.Digest, cancellationToken).ConfigureAwait(false) is not null,
        FileNode f => await store.Blobs.HasAsync(f.Digest, cancellationToken).ConfigureAwait(false),
        _ => true,
    };
}
