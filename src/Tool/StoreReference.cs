using System.Text;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Tool;

/// <summary>
/// A command-line reference into the store: <c>DIGEST</c> or <c>DIGEST/PATH/INSIDE</c>, where DIGEST is
/// <c>blake3-…</c> (51 characters, may itself contain '/') or 64 hex characters, naming a directory or a blob.
/// </summary>
internal sealed record StoreReference(B3Digest Digest, string[] Path, string Text)
{
    private const int TextDigestLength = 51;

    public static StoreReference Parse(string text)
    {
        int digestLength = text.StartsWith(B3Digest.Prefix, StringComparison.Ordinal) ? TextDigestLength : 64;
        if (text.Length < digestLength || (text.Length > digestLength && text[digestLength] != '/'))
        {
            throw new UsageException($"'{text}' is not DIGEST or DIGEST/PATH (DIGEST: blake3-<base64> or 64 hex characters)");
        }

        if (!B3Digest.TryParse(text[..digestLength], out var digest, out var error))
        {
            throw new UsageException(error);
        }

        string[] path = text.Length > digestLength
            ? text[(digestLength + 1)..].Split('/', StringSplitOptions.RemoveEmptyEntries)
            : [];
        return new StoreReference(digest, path, text);
    }

    /// <summary>Finds what the reference names; a blob at the root is an anonymous file node.</summary>
    public async Task<Node> ResolveAsync(CastoreStore store, CancellationToken cancellationToken)
    {
        Node node;
        var directory = await store.Directories.GetAsync(Digest, cancellationToken);
        if (directory is not null)
        {
            node = new DirectoryNode(PathComponent.Empty, Digest, directory.Size);
        }
        else if (await store.Blobs.StatAsync(Digest, withChunks: false, cancellationToken) is { } blob)
        {
            long size = blob.Size ?? await BlobLengthAsync(store, cancellationToken);
            node = new FileNode(PathComponent.Empty, Digest, (ulong)size, Executable: false);
        }
        else
        {
            throw new ObjectNotFoundException($"{Digest} is neither a directory nor a blob in {store.Address}");
        }

        string walked = Digest.ToString();
        foreach (string component in Path)
        {
            if (node is not DirectoryNode dirNode)
            {
                throw new ObjectNotFoundException($"{walked} is a {node.KindDisplay}, not a directory");
            }

            var dir = await store.Directories.GetAsync(dirNode.Digest, cancellationToken)
                ?? throw new ObjectNotFoundException($"directory {dirNode.Digest} ({walked}) not found in {store.Address}");
            walked += "/" + component;
            node = dir.Find(Encoding.UTF8.GetBytes(component))
                ?? throw new ObjectNotFoundException($"{walked}: no such file or directory");
        }

        return node;
    }

    private async Task<long> BlobLengthAsync(CastoreStore store, CancellationToken cancellationToken)
    {
        using var reader = await store.Blobs.OpenReadAsync(Digest, cancellationToken)
            ?? throw new ObjectNotFoundException($"blob {Digest} not found in {store.Address}");
        return reader.Length;
    }
}
