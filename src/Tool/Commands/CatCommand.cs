using System.Buffers;
using System.CommandLine;
using TvixFuseBuild.Castore;

namespace TvixFuseBuild.Tool.Commands;

internal static class CatCommand
{
    public static Command Create()
    {
        var target = new Argument<string>("DIGEST[/PATH]") { Description = "A blob digest, or a directory digest with the path of a file inside." };
        var command = new Command("cat", "Write a file's bytes from the store to stdout.") { target };
        command.SetAction(async (parse, cancellationToken) =>
        {
            await using var store = StoreSelection.Open(parse);
            var reference = StoreReference.Parse(parse.GetValue(target)!);
            var node = await reference.ResolveAsync(store, cancellationToken);
            var file = node switch
            {
                FileNode f => f,
                SymlinkNode s => throw new UsageException($"{reference.Text} is a symlink to {s.Target}; cat does not follow symlinks"),
                _ => throw new UsageException($"{reference.Text} is a directory; use 'ls'"),
            };

            using var reader = await store.Blobs.OpenReadAsync(file.Digest, cancellationToken)
                ?? throw new ObjectNotFoundException($"blob {file.Digest} not found in {store.Address}");
            await using var stdout = Console.OpenStandardOutput();
            byte[] buffer = ArrayPool<byte>.Shared.Rent(1 << 20);
            try
            {
                long offset = 0;
                int n;
                while ((n = await reader.ReadAtAsync(offset, buffer, cancellationToken)) > 0)
                {
                    await stdout.WriteAsync(buffer.AsMemory(0, n), cancellationToken);
                    offset += n;
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }

            return ToolConsole.Ok;
        });
        return command;
    }
}
