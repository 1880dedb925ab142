using System.Buffers;
using System.Diagnostics;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Grpc;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Stores.Local;
using TvixFuseBuild.Server;
using ReadBlobRequest = Tvix.Castore.V1.ReadBlobRequest;

namespace TvixFuseBuild.Bench.Scenarios;

/// <summary>
/// Remote stores: a large blob read over loopback h2c through our client from our server (which serves a local
/// store), against reading it from that local store directly; and a directory tree fetched with one recursive Get
/// against a Get per directory (what a lazy filesystem does). Everything runs in this process: server, client, store.
/// </summary>
internal sealed partial class RemoteBench : IBenchScenario
{
    private const int ReadSize = 128 << 10; // what a FUSE read asks for

    public string Name => "remote";

    public string Description => "a large blob over loopback gRPC (h2c) vs the local store, in process and as serve + cat; recursive vs per-level directory fetches; a build from a served store (cold, warm, --builder); export of a large tree from a served store; each against the --baseline build when given";

    public async Task<IReadOnlyList<BenchResult>> RunAsync(BenchContext context, CancellationToken cancellationToken)
    {
        long size = context.Quick ? 64L << 20 : 1L << 30;
        var local = LocalStore.Open(Path.Combine(context.WorkDir, "store"));
        Console.WriteLine($"   writing a {size >> 20} MiB blob into the local store");
        var digest = await WriteBlobAsync(local.Blobs, size, cancellationToken);

        // Two servers over the same store: one lists 1 MiB chunks for large blobs, one never does (blobs are read whole).
        await using var chunking = await StartAsync(new BlobGrpcService(local.Blobs), local.Directories);
        await using var whole = await StartAsync(new BlobGrpcService(local.Blobs, new BlobChunkIndex(int.MaxValue)), local.Directories);
        var options = new GrpcStoreOptions();
        await using var chunkedClient = await GrpcBlobService.OpenAsync($"grpc+http://{chunking.BoundAddresses[0]}?cache=none", options, cancellationToken);
        await using var wholeClient = await GrpcBlobService.OpenAsync($"grpc+http://{whole.BoundAddresses[0]}?cache=none", options, cancellationToken);
        using var channel = GrpcChannels.Create(GrpcEndpoint.Tcp("127.0.0.1", int.Parse(chunking.BoundAddresses[0].Split(':')[1])));

        // Warm up: the local store verifies the blob once per process; the server computes the chunk list once.
        await ReadThroughAsync(local.Blobs, digest, cancellationToken);
        await chunkedClient.StatAsync(digest, withChunks: true, cancellationToken);

        var fromLocal = new Samples();
        var stream = new Samples();
        var chunked = new Samples();
        var wholeRead = new Samples();
        for (int i = 0; i < context.Repetitions; i++)
        {
            await fromLocal.AddAsync(() => ReadThroughAsync(local.Blobs, digest, cancellationToken));
            await stream.AddAsync(() => StreamReadAsync(channel, digest, size, cancellationToken));
            await chunked.AddAsync(() => ReadThroughAsync(chunkedClient, digest, cancellationToken));
            await wholeRead.AddAsync(() => ReadThroughAsync(wholeClient, digest, cancellationToken));
            Console.WriteLine(
                $"   rep {i + 1}: local {Rate(size, fromLocal.Wall[^1])}, stream {Rate(size, stream.Wall[^1])}, " +
                $"chunked {Rate(size, chunked.Wall[^1])}, whole {Rate(size, wholeRead.Wall[^1])}");
        }

        string blob = $"{size >> 20} MiB blob";
        var results = new List<BenchResult>
        {
            Row($"gRPC Read stream over h2c, bytes only ({blob})", size, stream, fromLocal,
                "transport alone: 256 KiB messages, no hashing"),
            Row($"client read, 1 MiB chunks each verified ({blob}, {ReadSize >> 10} KiB reads)", size, chunked, fromLocal,
                "every chunk hashed, and the whole blob once in order"),
            Row($"client read, no chunk list: downloaded whole and verified first ({blob})", size, wholeRead, fromLocal,
                "spilled to an unlinked temp file, then read"),
        };

        results.AddRange(await DirectoryFetchAsync(context, chunking, local, cancellationToken));
        results.AddRange(CatOverProcesses(context, digest, size, cancellationToken));
        results.AddRange(BuildOverRemote(context, cancellationToken));
        results.AddRange(ExportOverRemote(context, cancellationToken));
        return results;
    }

    /// <summary>One recursive Get of a closure against a Get per directory, breadth first, as a lazy mount would ask.</summary>
    private static async Task<IEnumerable<BenchResult>> DirectoryFetchAsync(
        BenchContext context, GrpcServer server, LocalStore local, CancellationToken cancellationToken)
    {
        int fanout = 10;
        int depth = context.Quick ? 2 : 3;
        var root = await WriteTreeAsync(local.Directories, fanout, depth, cancellationToken);
        int count = Enumerable.Range(0, depth + 1).Sum(d => (int)Math.Pow(fanout, d));
        await using var client = await GrpcDirectoryService.OpenAsync($"grpc+http://{server.BoundAddresses[0]}?cache=none", cancellationToken: cancellationToken);

        var recursive = new List<double>();
        var perLevel = new List<double>();
        for (int i = 0; i < Math.Max(3, context.Repetitions); i++)
        {
            recursive.Add(await TimeAsync(async () =>
            {
                int n = 0;
                await foreach (var _ in client.GetRecursiveAsync(root, cancellationToken))
                {
                    n++;
                }

                Check(n == count, $"recursive get returned {n} directories, expected {count}");
            }));
            perLevel.Add(await TimeAsync(async () =>
            {
                var queue = new Queue<B3Digest>([root]);
                int n = 0;
                while (queue.TryDequeue(out var digest))
                {
                    var directory = await client.GetAsync(digest, cancellationToken) ?? throw new InvalidOperationException("missing");
                    n++;
                    foreach (var child in directory.Directories)
                    {
                        queue.Enqueue(child.Digest);
                    }
                }

                Check(n == count, $"per-level gets returned {n} directories, expected {count}");
            }));
        }

        double r = BenchData.Median(recursive);
        double p = BenchData.Median(perLevel);
        return
        [
            new BenchResult(
                $"{count} directories over h2c: one recursive Get", Measure.Time(r), Measure.Time(p), "a Get per directory", p / r, null, null,
                $"{p / count * 1e6:0} µs per Get round trip on loopback"),
        ];
    }

    private static BenchResult Row(string name, long size, Samples ours, Samples local, string note)
    {
        double seconds = BenchData.Median(ours.Wall);
        double localSeconds = BenchData.Median(local.Wall);
        double gib = size / (double)(1L << 30);
        return new(name, Rate(size, seconds), Rate(size, localSeconds), "local store read", localSeconds / seconds, null, null,
            $"{note}; CPU per GiB, both ends: {BenchData.Median(ours.Cpu) / gib:0.00} s vs {BenchData.Median(local.Cpu) / gib:0.00} s");
    }

    /// <summary>Wall and CPU (this process: client and server) seconds of repeated runs.</summary>
    private sealed class Samples
    {
        public List<double> Wall { get; } = [];

        public List<double> Cpu { get; } = [];

        public async Task AddAsync(Func<Task> action)
        {
            var cpu = Process.GetCurrentProcess().TotalProcessorTime;
            var stopwatch = Stopwatch.StartNew();
            await action();
            Wall.Add(stopwatch.Elapsed.TotalSeconds);
            Cpu.Add((Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds);
        }
    }

    private static string Rate(long bytes, double seconds) => $"{bytes / seconds / 1e6:0} MB/s";

    private static void Check(bool condition, string message)
    {
        if (!condition)
        {
            throw new InvalidOperationException(message);
        }
    }

    private static async Task<double> TimeAsync(Func<Task> action)
    {
        var stopwatch = Stopwatch.StartNew();
        await action();
        return stopwatch.Elapsed.TotalSeconds;
    }

    private static async Task<GrpcServer> StartAsync(BlobGrpcService blobs, IDirectoryService directories)
    {
        var server = new GrpcServer().Listen("127.0.0.1:0").AddCastore(blobs, new DirectoryGrpcService(directories));
        await server.StartAsync();
        return server;
    }

    /// <summary>Reads a blob front to back in FUSE-sized reads through a store's reader.</summary>
    private static async Task ReadThroughAsync(IBlobService blobs, B3Digest digest, CancellationToken cancellationToken)
    {
        using var reader = await blobs.OpenReadAsync(digest, cancellationToken) ?? throw new InvalidOperationException($"{digest} is missing");
        byte[] buffer = ArrayPool<byte>.Shared.Rent(ReadSize);
        try
        {
            long offset = 0;
            int n;
            while ((n = await reader.ReadAtAsync(offset, buffer.AsMemory(0, ReadSize), cancellationToken)) > 0)
            {
                offset += n;
            }

            Check(offset == reader.Length, $"read {offset} of {reader.Length} bytes");
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>The Read RPC alone: every message received and counted, nothing verified.</summary>
    private static async Task StreamReadAsync(global::Grpc.Net.Client.GrpcChannel channel, B3Digest digest, long size, CancellationToken cancellationToken)
    {
        using var call = new Tvix.Castore.V1.BlobService.BlobServiceClient(channel).Read(
            new ReadBlobRequest { Digest = digest.ToByteString() }, cancellationToken: cancellationToken);
        long received = 0;
        while (await call.ResponseStream.MoveNext(cancellationToken))
        {
            received += call.ResponseStream.Current.Data.Length;
        }

        Check(received == size, $"streamed {received} of {size} bytes");
    }

    private static async Task<B3Digest> WriteBlobAsync(IBlobService blobs, long size, CancellationToken cancellationToken)
    {
        await using var writer = blobs.OpenWrite();
        byte[] buffer = new byte[4 << 20];
        var random = new Random(42);
        for (long written = 0; written < size; written += buffer.Length)
        {
            random.NextBytes(buffer);
            await writer.WriteAsync(buffer.AsMemory(0, (int)Math.Min(buffer.Length, size - written)), cancellationToken);
        }

        return await writer.CompleteAsync(cancellationToken);
    }

    /// <summary>A tree of directories <paramref name="fanout"/> wide and <paramref name="depth"/> deep, each with a few files.</summary>
    private static async Task<B3Digest> WriteTreeAsync(IDirectoryService directories, int fanout, int depth, CancellationToken cancellationToken)
    {
        async Task<CastoreDirectory> Level(int remaining, int id)
        {
            var nodes = new List<Node>();
            for (int f = 0; f < 5; f++)
            {
                nodes.Add(new FileNode(PathComponent.Create($"file-{f}"), Castore.Hashing.Blake3.Hash(BitConverter.GetBytes((id * 10) + f)), 100, false));
            }

            if (remaining > 0)
            {
                for (int c = 0; c < fanout; c++)
                {
                    var child = await Level(remaining - 1, (id * fanout) + c + 1);
                    nodes.Add(new DirectoryNode(PathComponent.Create($"dir-{c}"), child.Digest, child.Size));
                }
            }

            var directory = CastoreDirectory.FromNodes(nodes);
            await directories.PutAsync(directory, cancellationToken);
            return directory;
        }

        return (await Level(depth, 0)).Digest;
    }
}
