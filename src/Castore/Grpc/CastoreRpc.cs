using Google.Protobuf;
using Grpc.Core;
using SnixV1 = Snix.Castore.V1;
using TvixV1 = Tvix.Castore.V1;

namespace TvixFuseBuild.Castore.Grpc;

/// <summary>
/// The castore calls over the generated <c>tvix.castore.v1</c> or <c>snix.castore.v1</c> client stubs, with their
/// messages converted to ours: chunk lists, blob bytes, <see cref="CastoreDirectory"/>.
/// </summary>
internal abstract class CastoreRpc
{
    public abstract string Package { get; }

    public abstract CastoreProtocol Protocol { get; }

    public static CastoreRpc Create(CastoreProtocol protocol, CallInvoker invoker) =>
        protocol == CastoreProtocol.Snix ? new Snix(invoker) : new Tvix(invoker);

    /// <summary>Stat: the chunks (digest bytes, size), empty when the store sent none.</summary>
    public abstract Task<IReadOnlyList<(ByteString Digest, ulong Size)>> StatAsync(B3Digest digest, bool withChunks, CallOptions options);

    /// <summary>Read: each message's bytes are valid until the next <c>MoveNextAsync</c> or <c>Dispose</c>.</summary>
    public abstract BlobRead Read(B3Digest digest, CallOptions options);

    public abstract Upload<ByteString> Put(CallOptions options);

    /// <summary>Get; each directory is validated (<see cref="DirectoryValidationException"/>) as it is converted.</summary>
    public abstract Stream<CastoreDirectory> GetDirectory(B3Digest digest, bool recursive, CallOptions options);

    public abstract Upload<CastoreDirectory> PutDirectory(CallOptions options);

    /// <summary>A server stream of converted messages; disposing before the end cancels the call.</summary>
    internal sealed class Stream<T>(IDisposable call, Func<CancellationToken, Task<bool>> moveNext, Func<T> current) : IDisposable
    {
        public T Current { get; private set; } = default!;

        public async ValueTask<bool> MoveNextAsync(CancellationToken cancellationToken)
        {
            if (!await moveNext(cancellationToken).ConfigureAwait(false))
            {
                return false;
            }

            Current = current();
            return true;
        }

        public void Dispose() => call.Dispose();
    }

    /// <summary>
    /// A Read call through <see cref="BlobChunkMarshaller"/>: each message's buffer goes back to the pool when the next
    /// one is asked for, or when the call is disposed.
    /// </summary>
    internal sealed class BlobRead(AsyncServerStreamingCall<RentedBlobChunk> call) : IDisposable
    {
        private RentedBlobChunk? _current;

        public ReadOnlyMemory<byte> Current => _current?.Memory ?? ReadOnlyMemory<byte>.Empty;

        public async ValueTask<bool> MoveNextAsync(CancellationToken cancellationToken)
        {
            _current?.Dispose();
            _current = null;
            if (!await call.ResponseStream.MoveNext(cancellationToken).ConfigureAwait(false))
            {
                return false;
            }

            _current = call.ResponseStream.Current;
            return true;
        }

        public void Dispose()
        {
            _current?.Dispose();
            _current = null;
            call.Dispose();
        }
    }

    /// <summary>A client stream of our messages converted on the way; the response is the digest the store answered.</summary>
    internal sealed class Upload<T>(IDisposable call, Func<T, Task> write, Func<Task> complete, Func<Task<ByteString>> response) : IDisposable
    {
        public Task WriteAsync(T message) => write(message);

        public async Task<ByteString> CompleteAsync()
        {
            await complete().ConfigureAwait(false);
            return await response().ConfigureAwait(false);
        }

        public void Dispose() => call.Dispose();
    }

    private sealed class Tvix(CallInvoker invoker) : CastoreRpc
    {
        // Pays: see docs/benchmarks.md, "A pooled Read marshaller" (cat of 1 GiB, whole processes, same run).
        private static readonly Method<TvixV1.ReadBlobRequest, RentedBlobChunk> ReadMethod =
            BlobChunkMarshaller.ReadMethod(TvixV1.BlobService.Descriptor.FullName, TvixV1.ReadBlobRequest.Parser);

        private readonly TvixV1.BlobService.BlobServiceClient _blobs = new(invoker);
        private readonly TvixV1.DirectoryService.DirectoryServiceClient _directories = new(invoker);

        public override string Package => "tvix.castore.v1";

        public override CastoreProtocol Protocol => CastoreProtocol.Tvix;

        public override async Task<IReadOnlyList<(ByteString Digest, ulong Size)>> StatAsync(B3Digest digest, bool withChunks, CallOptions options)
        {
            var reply = await _blobs.StatAsync(new TvixV1.StatBlobRequest { Digest = digest.ToByteString(), SendChunks = withChunks }, options).ConfigureAwait(false);
            return reply.Chunks.Select(c => (c.Digest, c.Size)).ToList();
        }

        public override BlobRead Read(B3Digest digest, CallOptions options) =>
            new(invoker.AsyncServerStreamingCall(ReadMethod, null, options, new TvixV1.ReadBlobRequest { Digest = digest.ToByteString() }));

        public override Upload<ByteString> Put(CallOptions options)
        {
            var call = _blobs.Put(options);
            return new(
                call,
                data => call.RequestStream.WriteAsync(new TvixV1.BlobChunk { Data = data }),
                call.RequestStream.CompleteAsync,
                async () => (await call.ResponseAsync.ConfigureAwait(false)).Digest);
        }

        public override Stream<CastoreDirectory> GetDirectory(B3Digest digest, bool recursive, CallOptions options)
        {
            var call = _directories.Get(new TvixV1.GetDirectoryRequest { Digest = digest.ToByteString(), Recursive = recursive }, options);
            return new(call, call.ResponseStream.MoveNext, () => call.ResponseStream.Current.ToModel());
        }

        public override Upload<CastoreDirectory> PutDirectory(CallOptions options)
        {
            var call = _directories.Put(options);
            return new(
                call,
                directory => call.RequestStream.WriteAsync(directory.ToTvixProto()),
                call.RequestStream.CompleteAsync,
                async () => (await call.ResponseAsync.ConfigureAwait(false)).RootDigest);
        }
    }

    private sealed class Snix(CallInvoker invoker) : CastoreRpc
    {
        // Pays: see docs/benchmarks.md, "A pooled Read marshaller" (cat of 1 GiB, whole processes, same run).
        private static readonly Method<SnixV1.ReadBlobRequest, RentedBlobChunk> ReadMethod =
            BlobChunkMarshaller.ReadMethod(SnixV1.BlobService.Descriptor.FullName, SnixV1.ReadBlobRequest.Parser);

        private readonly SnixV1.BlobService.BlobServiceClient _blobs = new(invoker);
        private readonly SnixV1.DirectoryService.DirectoryServiceClient _directories = new(invoker);

        public override string Package => "snix.castore.v1";

        public override CastoreProtocol Protocol => CastoreProtocol.Snix;

        public override async Task<IReadOnlyList<(ByteString Digest, ulong Size)>> StatAsync(B3Digest digest, bool withChunks, CallOptions options)
        {
            var reply = await _blobs.StatAsync(new SnixV1.StatBlobRequest { Digest = digest.ToByteString(), SendChunks = withChunks }, options).ConfigureAwait(false);
            return reply.Chunks.Select(c => (c.Digest, c.Size)).ToList();
        }

        public override BlobRead Read(B3Digest digest, CallOptions options) =>
            new(invoker.AsyncServerStreamingCall(ReadMethod, null, options, new SnixV1.ReadBlobRequest { Digest = digest.ToByteString() }));

        public override Upload<ByteString> Put(CallOptions options)
        {
            var call = _blobs.Put(options);
            return new(
                call,
                data => call.RequestStream.WriteAsync(new SnixV1.BlobChunk { Data = data }),
                call.RequestStream.CompleteAsync,
                async () => (await call.ResponseAsync.ConfigureAwait(false)).Digest);
        }

        public override Stream<CastoreDirectory> GetDirectory(B3Digest digest, bool recursive, CallOptions options)
        {
            var call = _directories.Get(new SnixV1.GetDirectoryRequest { Digest = digest.ToByteString(), Recursive = recursive }, options);
            return new(call, call.ResponseStream.MoveNext, () => call.ResponseStream.Current.ToModel());
        }

        public override Upload<CastoreDirectory> PutDirectory(CallOptions options)
        {
            var call = _directories.Put(options);
            return new(
                call,
                directory => call.RequestStream.WriteAsync(directory.ToSnixProto()),
                call.RequestStream.CompleteAsync,
                async () => (await call.ResponseAsync.ConfigureAwait(false)).RootDigest);
        }
    }
}
