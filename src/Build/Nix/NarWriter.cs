using System.Buffers;
using System.Buffers.Binary;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Build.Nix;

/// <summary>Writes a castore node as Nix's NAR serialization (entries sorted by name, strings length-prefixed and padded to 8 bytes).</summary>
public static class NarWriter
{
    public static async Task WriteAsync(Node node, CastoreStore store, Stream destination, CancellationToken cancellationToken = default)
    {
        var writer = new Writer(destination, store, cancellationToken);
        await writer.String("nix-archive-1"u8.ToArray()).ConfigureAwait(false);
        await writer.Node(node).ConfigureAwait(false);
    }

    /// <summary>The hash of <paramref name="node"/>'s NAR serialization.</summary>
    public static async Task<NixHash> HashAsync(Node node, CastoreStore store, string algorithm, CancellationToken cancellationToken = default)
    {
        using var hasher = NixHash.CreateHasher(algorithm);
        await using var sink = new HashingStream(hasher);
        await WriteAsync(node, store, sink, cancellationToken).ConfigureAwait(false);
        return new NixHash(algorithm, hasher.GetHashAndReset());
    }

    /// <summary>The hash of a file node's contents (a fixed output's flat hash).</summary>
    public static async Task<NixHash> HashFileAsync(FileNode file, CastoreStore store, string algorithm, CancellationToken cancellationToken = default)
    {
        using var hasher = NixHash.CreateHasher(algorithm);
        await using var sink = new HashingStream(hasher);
        await new Writer(sink, store, cancellationToken).Contents(file).ConfigureAwait(false);
        return new NixHash(algorithm, hasher.GetHashAndReset());
    }

    private sealed class Writer(Stream destination, CastoreStore store, CancellationToken cancellationToken)
    {
        private readonly byte[] _number = new byte[8];

        public async ValueTask Number(ulong value)
        {
            BinaryPrimitives.WriteUInt64LittleEndian(_number, value);
            await destination.WriteAsync(_number, cancellationToken).ConfigureAwait(false);
        }

        public async ValueTask String(ReadOnlyMemory<byte> bytes)
        {
            await Number((ulong)bytes.Length).ConfigureAwait(false);
            await destination.WriteAsync(bytes, cancellationToken).ConfigureAwait(false);
            await Padding((ulong)bytes.Length).ConfigureAwait(false);
        }

        private async ValueTask Padding(ulong length)
        {
            int pad = (int)((8 - (length % 8)) % 8);
            if (pad > 0)
            {
                Array.Clear(_number);
                await destination.WriteAsync(_number.AsMemory(0, pad), cancellationToken).ConfigureAwait(false);
            }
        }

        private ValueTask Token(string token) => String(System.Text.Encoding.ASCII.GetBytes(token));

        public async ValueTask Node(Node node)
        {
            await Token("(").ConfigureAwait(false);
            await Token("type").ConfigureAwait(false);
            switch (node)
            {
                case FileNode file:
                    await Token("regular").ConfigureAwait(false);
                    if (file.Executable)
                    {
                        await Token("executable").ConfigureAwait(false);
                        await Token("").ConfigureAwait(false);
                    }

                    await Token("contents").ConfigureAwait(false);
                    await Number(file.Size).ConfigureAwait(false);
                    await Contents(file).ConfigureAwait(false);
                    await Padding(file.Size).ConfigureAwait(false);
                    break;
                case SymlinkNode symlink:
                    await Token("symlink").ConfigureAwait(false);
                    await Token("target").ConfigureAwait(false);
                    await String(symlink.Target.Memory).ConfigureAwait(false);
                    break;
                case DirectoryNode directoryNode:
                    await Token("directory").ConfigureAwait(false);
                    var directory = await store.Directories.GetAsync(directoryNode.Digest, cancellationToken).ConfigureAwait(false)
                        ?? throw new ObjectNotFoundException($"directory {directoryNode.Digest} is not in the store {store.Address}");
                    var entries = directory.Entries.ToList();
                    entries.Sort((a, b) => a.Name.Span.SequenceCompareTo(b.Name.Span));
                    foreach (var entry in entries)
                    {
                        await Token("entry").ConfigureAwait(false);
                        await Token("(").ConfigureAwait(false);
                        await Token("name").ConfigureAwait(false);
                        await String(entry.Name.Memory).ConfigureAwait(false);
                        await Token("node").ConfigureAwait(false);
                        await Node(entry).ConfigureAwait(false);
                        await Token(")").ConfigureAwait(false);
                    }

                    break;
            }

            await Token(")").ConfigureAwait(false);
        }

        public async ValueTask Contents(FileNode file)
        {
            if (file.Size == 0)
            {
                return;
            }

            using var reader = await store.Blobs.OpenReadAsync(file.Digest, cancellationToken).ConfigureAwait(false)
                ?? throw new ObjectNotFoundException($"blob {file.Digest} is not in the store {store.Address}");
            byte[] buffer = ArrayPool<byte>.Shared.Rent(1 << 20);
            try
            {
                long offset = 0;
                while (offset < (long)file.Size)
                {
                    int n = await reader.ReadAtAsync(offset, buffer.AsMemory(0, (int)Math.Min(buffer.Length, (long)file.Size - offset)), cancellationToken).ConfigureAwait(false);
                    if (n == 0)
                    {
                        throw new CorruptObjectException($"blob {file.Digest} is shorter than its recorded size {file.Size}");
                    }

                    await destination.WriteAsync(buffer.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
                    offset += n;
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }

    private sealed class HashingStream(System.Security.Cryptography.IncrementalHash hasher) : Stream
    {
        public override bool CanRead => false;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Flush()
        {
        }

        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => hasher.AppendData(buffer, offset, count);

        public override void Write(ReadOnlySpan<byte> buffer) => hasher.AppendData(buffer);

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            hasher.AppendData(buffer.Span);
            return ValueTask.CompletedTask;
        }
    }
}
