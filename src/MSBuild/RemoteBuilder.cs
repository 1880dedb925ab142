using System.Buffers;
using Grpc.Core;
using TvixFuseBuild.Build.Grpc;
using TvixFuseBuild.Build.Pipeline;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Grpc;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.MSBuild;

/// <summary>
/// Runs a step's request on a remote tvix BuildService (<c>tvix-fuse-build serve</c>, or tvix's own) instead of here:
/// the inputs go up to the BlobService and DirectoryService at the same address (what the remote already has is not
/// sent again), <c>DoBuild</c> runs the request there, and the outputs come back into the local store, from which the
/// step materializes them as for a local build. The local result cache is consulted first and filled afterwards: a
/// result is content-addressed, whoever built it.
/// </summary>
internal static class RemoteBuilder
{
    private const int CopyBufferSize = 256 * 1024;

    /// <summary>
    /// The castore address of a builder given as a gRPC store address (<c>grpc+unix:///PATH</c>,
    /// <c>grpc+http://HOST:PORT</c>, ...) or as <c>serve --listen</c> takes it (<c>unix:/PATH</c>, <c>HOST:PORT</c>).
    /// </summary>
    public static string ToStoreAddress(string builder)
    {
        string address = builder switch
        {
            _ when GrpcStoreAddress.IsGrpcAddress(builder) => builder,
            _ when builder.StartsWith("unix:", StringComparison.Ordinal) => "grpc+unix://" + builder["unix:".Length..],
            _ => "grpc+http://" + builder,
        };

        try
        {
            if (GrpcStoreAddress.Parse(address) is { Protocol: not CastoreProtocol.Tvix })
            {
                throw new TvixBuildException(TvixBuildError.InvalidRequest, $"Builder '{builder}': only the tvix protocol is supported for remote builds");
            }
        }
        catch (StoreAddressException e)
        {
            throw new TvixBuildException(
                TvixBuildError.InvalidRequest, $"Builder '{builder}' is not a builder address ({GrpcStoreAddress.Usage}, or unix:/PATH, HOST:PORT): {e.Message}");
        }

        return address;
    }

    public static async Task<BuildRun> RunAsync(
        string builder, BuildSpec spec, CastoreStore local, ResultCache? cache, bool rebuild, TimeSpan? timeout, IStepLog log,
        CancellationToken cancellationToken)
    {
        string address = ToStoreAddress(builder);
        var requestDigest = spec.ComputeDigest();
        if (!rebuild && cache is not null && await cache.TryGetAsync(requestDigest, local, cancellationToken).ConfigureAwait(false) is { } cached)
        {
            return new BuildRun(cached, Cached: true, Sandbox: null);
        }

        var parsed = GrpcStoreAddress.Parse(address);
        try
        {
            await using var blobs = await GrpcBlobService.OpenAsync(address, cancellationToken: cancellationToken).ConfigureAwait(false);
            await using var directories = await GrpcDirectoryService.OpenAsync(address, cancellationToken: cancellationToken).ConfigureAwait(false);
            var remote = new CastoreStore(blobs, directories, address);
            foreach (var input in spec.Inputs)
            {
                await CopyAsync(input, local, remote, cancellationToken).ConfigureAwait(false);
            }

            log.Detail($"inputs are at {builder}; building there");
            Tvix.Build.V1.Build reply;
            using (var channel = GrpcChannels.Create(parsed.Endpoint))
            {
                reply = await new Tvix.Build.V1.BuildService.BuildServiceClient(channel).DoBuildAsync(
                    spec.ToTvix(), new CallOptions(deadline: DateTime.UtcNow + timeout, cancellationToken: cancellationToken)).ConfigureAwait(false);
            }

            BuildResult result;
            try
            {
                result = BuildResult.FromTvixBuild(reply);
                _ = result.ToTvixBuild(spec);
            }
            catch (Exception e) when (e is BuildMessageFormatException or ArgumentException or CastoreException)
            {
                throw new TvixBuildException(TvixBuildError.BuilderFailed, $"the builder {builder} sent a reply that does not fit the request: {e.Message}");
            }

            foreach (var output in result.Outputs)
            {
                await CopyAsync(output.Node, remote, local, cancellationToken).ConfigureAwait(false);
            }

            if (cache is not null)
            {
                await cache.StoreAsync(requestDigest, spec, result, cancellationToken).ConfigureAwait(false);
            }

            return new BuildRun(result, Cached: false, Sandbox: null);
        }
        catch (RpcException e) when (!cancellationToken.IsCancellationRequested)
        {
            // As tvix-fuse-build serve answers: a failed build is INTERNAL "build failed: REASON" plus the log's last
            // lines; an invalid request INVALID_ARGUMENT; a refused one (constraints, missing inputs) FAILED_PRECONDITION.
            string code = e.StatusCode switch
            {
                StatusCode.InvalidArgument => TvixBuildError.InvalidRequest,
                StatusCode.DeadlineExceeded => TvixBuildError.TimedOut,
                StatusCode.Internal or StatusCode.Unknown when e.Status.Detail.StartsWith("build failed:", StringComparison.Ordinal) => TvixBuildError.CommandFailed,
                _ => TvixBuildError.BuilderFailed,
            };
            throw new TvixBuildException(code, $"the builder {builder}: {e.StatusCode.ToWireName()}: {e.Status.Detail}");
        }
        catch (CastoreException e) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TvixBuildException(TvixBuildError.BuilderFailed, $"the builder {builder}: {e.Message}");
        }
        catch (Exception e) when (e is HttpRequestException or IOException && !cancellationToken.IsCancellationRequested)
        {
            throw new TvixBuildException(TvixBuildError.BuilderFailed, $"cannot reach the builder {builder}: {e.Message}");
        }
    }

    /// <summary>Copies <paramref name="node"/> and everything below it into <paramref name="to"/>, skipping what is there.</summary>
    public static async Task CopyAsync(Node node, CastoreStore from, CastoreStore to, CancellationToken cancellationToken)
    {
        switch (node)
        {
            case FileNode file:
                await CopyBlobAsync(file.Digest, from, to, cancellationToken).ConfigureAwait(false);
                break;
            case DirectoryNode directory when await to.Directories.GetAsync(directory.Digest, cancellationToken).ConfigureAwait(false) is null:
                // A store accepts a closure leaves to root, so its blobs first, then the directories in reverse.
                var closure = new List<CastoreDirectory>();
                await foreach (var d in from.Directories.GetRecursiveAsync(directory.Digest, cancellationToken).ConfigureAwait(false))
                {
                    closure.Add(d);
                }

                foreach (var blob in closure.SelectMany(d => d.Files).Select(f => f.Digest).Distinct())
                {
                    await CopyBlobAsync(blob, from, to, cancellationToken).ConfigureAwait(false);
                }

                await using (var putter = to.Directories.CreatePutter())
                {
                    for (int i = closure.Count - 1; i >= 0; i--)
                    {
                        await putter.PutAsync(closure[i], cancellationToken).ConfigureAwait(false);
                    }

                    await putter.CloseAsync(cancellationToken).ConfigureAwait(false);
                }

                break;
        }
    }

    private static async Task CopyBlobAsync(B3Digest digest, CastoreStore from, CastoreStore to, CancellationToken cancellationToken)
    {
        if (await to.Blobs.HasAsync(digest, cancellationToken).ConfigureAwait(false))
        {
            return;
        }

        using var reader = await from.Blobs.OpenReadAsync(digest, cancellationToken).ConfigureAwait(false)
            ?? throw new ObjectNotFoundException($"blob {digest} is not in {from.Address}");
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
