using System.Buffers;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Build.Grpc;

/// <summary>What a <see cref="StoreCopy"/> sent.</summary>
internal sealed class CopyCount
{
    public int Blobs { get; set; }

    public long BlobBytes { get; set; }

    public int Directories { get; set; }

    public bool Nothing => Blobs == 0 && Directories == 0;

    public override string ToString() =>
        Nothing ? "nothing" : $"{Blobs} blob{(Blobs == 1 ? "" : "s")} ({BlobBytes} bytes), {Directories} director{(Directories == 1 ? "y" : "ies")}";
}

/// <summary>
/// Copies nodes between stores, sending only what the target lacks: a directory whose root the target has (Get) is
/// skipped with its closure; otherwise each blob of the closure is asked for first (Stat) and the directories are put
/// leaves to root.
/// </summary>
internal static class StoreCopy
{
    private const int CopyBufferSize = 256 * 1024;

    public static async Task CopyAsync(Node node, CastoreStore from, CastoreStore to, CopyCount count, CancellationToken cancellationToken)
    {
        switch (node)
        {
            case FileNode file:
                await CopyBlobAsync(file.Digest, file.Size, from, to, count, cancellationToken).ConfigureAwait(false);
                break;
            case DirectoryNode directory when await to.Directories.GetAsync(directory.Digest, cancellationToken).ConfigureAwait(false) is null:
                var closure = new List<CastoreDirectory>();
                await foreach (var d in from.Directories.GetRecursiveAsync(directory.Digest, cancellationToken).ConfigureAwait(false))
                {
                    closure.Add(d);
                }

                if (closure.Count == 0)
                {
                    throw new ObjectNotFoundException($"directory {directory.Digest} is not in the store {from.Address}");
                }

                foreach (var file in closure.SelectMany(d => d.Files).DistinctBy(f => f.Digest))
                {
                    await CopyBlobAsync(file.Digest, file.Size, from, to, count, cancellationToken).ConfigureAwait(false);
                }

                // GetRecursive gives root to leaves; a store takes a closure leaves to root.
                await using (var putter = to.Directories.CreatePutter())
                {
                    for (int i = closure.Count - 1; i >= 0; i--)
                    {
                        await putter.PutAsync(closure[i], cancellationToken).ConfigureAwait(false);
                    }

                    await putter.CloseAsync(cancellationToken).ConfigureAwait(false);
                }

                count.Directories += closure.Count;
                break;
        }
    }

    private static async Task CopyBlobAsync(
        B3Digest digest, ulong size, CastoreStore from, CastoreStore to, CopyCount count, CancellationToken cancellationToken)
    {
        if (await to.Blobs.HasAsync(digest, cancellationToken).ConfigureAwait(false))
        {
            return;
        }

        using var reader = await from.Blobs.OpenReadAsync(digest, cancellationToken).ConfigureAwait(false)
            ?? throw new ObjectNotFoundException($"blob {digest} is not in the store {from.Address}");
        count.Blobs++;
        count.BlobBytes += (long)size;
        if (reader.BackingFile is { } file)
        {
            await to.Blobs.PutFileAsync(file, reader.Length, digest, cancellationToken).ConfigureAwait(false);
            return;
        }

        byte[] buffer = ArrayPool<byte>.Shared.Rent(CopyBufferSize);
        try
        {
            await using var writer = to.Blobs.OpenWrite();
            long offset = 0;
            int read;
            while ((read = await reader.ReadAtAsync(offset, buffer, cancellationToken).ConfigureAwait(false)) > 0)
            {
                await writer.WriteAsync(buffer.AsMemory(0, read), cancellationToken).ConfigureAwait(false);
                offset += read;
            }

            if (await writer.CompleteAsync(cancellationToken).ConfigureAwait(false) != digest)
            {
                throw new CorruptObjectException($"blob {digest} read from {from.Address} has another digest");
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }
}
