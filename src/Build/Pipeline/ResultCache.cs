using Google.Protobuf;
using Microsoft.Win32.SafeHandles;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Stores.Local;
using TvixFuseBuild.Castore.Transfer;
using TvixFuseBuild.Native;
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
        cancellationToken.ThrowIfCancellationRequested();
        byte[] bytes;
        try
        {
            // A small local file: read at once, on the caller's thread (asynchronous file I/O would start the pool).
            bytes = File.ReadAllBytes(PathOf(request));
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
        byte[] bytes = result.ToTvixBuild(spec).ToByteArray();
        string path = PathOf(request);

        // A rebuild with the same outputs (--rebuild of a deterministic build): the entry already says this, and was
        // made durable when it was written; writing it again costs a new file, an fsync and a rename.
        if (Holds(path, bytes))
        {
            return Task.CompletedTask;
        }

        System.IO.Directory.CreateDirectory(Directory);
        HostFile.WriteAllBytes(path, bytes);
        return Task.CompletedTask;
    }

    /// <summary>True when <paramref name="path"/> is a regular file (not through a symlink) holding exactly <paramref name="bytes"/>.</summary>
    private static bool Holds(string path, byte[] bytes)
    {
        int fd = Libc.open(path, Libc.O_RDONLY | Libc.O_NOFOLLOW | Libc.O_NONBLOCK | Libc.O_CLOEXEC, 0);
        if (fd < 0)
        {
            return false;
        }

        using var handle = new SafeFileHandle(fd, ownsHandle: true);
        if (Libc.fstat(fd, out var status) != 0 || !status.IsRegularFile || status.Size != bytes.Length)
        {
            return false;
        }

        byte[] existing = new byte[bytes.Length];
        try
        {
            return RandomAccess.Read(handle, existing, 0) == existing.Length && existing.AsSpan().SequenceEqual(bytes);
        }
        catch (IOException)
        {
            return false;
        }
    }

    /// <summary>How many entries the cache holds.</summary>
    public int Count() => Entries().Count();

    /// <summary>
    /// The cache as garbage-collection roots of a local store: every entry's outputs are kept with their closures.
    /// With <paramref name="removeStale"/>, entries whose outputs are no longer all in the store are removed after the
    /// collection (only right for the store the cache belongs to: another store does not have them).
    /// </summary>
    public IExternalRoots AsGcRoots(bool removeStale) => new GcRoots(this, removeStale);

    private IEnumerable<(string Path, BuildResult? Result)> Entries()
    {
        IEnumerable<string> files;
        try
        {
            files = System.IO.Directory.EnumerateFiles(Directory).ToList();
        }
        catch (DirectoryNotFoundException)
        {
            yield break;
        }

        foreach (string file in files)
        {
            // Entries are named by the request's hex digest; anything else (a write in progress) is not an entry.
            string name = System.IO.Path.GetFileName(file);
            if (name.Length != 64 || !B3Digest.TryParse(name, out var digest) || digest.ToHex() != name)
            {
                continue;
            }

            BuildResult? result;
            try
            {
                result = BuildResult.FromTvixBuild(TvixBuild.Build.Parser.ParseFrom(File.ReadAllBytes(file)));
            }
            catch (Exception e) when (e is InvalidProtocolBufferException or FormatException or CastoreException)
            {
                result = null;
            }
            catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
            {
                continue;
            }

            yield return (file, result);
        }
    }

    private static IEnumerable<B3Digest> Digests(BuildResult result) =>
        result.Outputs.Select(o => o.Node).SelectMany(n => n switch
        {
            DirectoryNode d => [d.Digest],
            FileNode f => [f.Digest],
            _ => Array.Empty<B3Digest>(),
        });

    private sealed class GcRoots(ResultCache cache, bool removeStale) : IExternalRoots
    {
        public IEnumerable<B3Digest> Read() => cache.Entries().Where(e => e.Result is not null).SelectMany(e => Digests(e.Result!));

        public int RemoveStale(Func<B3Digest, bool> isPresent, bool dryRun)
        {
            if (!removeStale)
            {
                return 0;
            }

            int removed = 0;
            foreach (var (path, result) in cache.Entries())
            {
                if (result is not null && Digests(result).All(isPresent))
                {
                    continue;
                }

                removed++;
                if (!dryRun)
                {
                    try
                    {
                        File.Delete(path);
                    }
                    catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                    {
                        removed--;
                    }
                }
            }

            return removed;
        }
    }

    private static async ValueTask<bool> ExistsAsync(Node node, CastoreStore store, CancellationToken cancellationToken) => node switch
    {
        DirectoryNode d => await store.Directories.GetAsync(d.Digest, cancellationToken).ConfigureAwait(false) is not null,
        FileNode f => await store.Blobs.HasAsync(f.Digest, cancellationToken).ConfigureAwait(false),
        _ => true,
    };
}
