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

    public abstract Stream<ByteString> Read(B3Digest digest, CallOptions options);

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
        private readonly TvixV1.BlobService.BlobServiceClient _blobs = new(invoker);
        private readonly TvixV1.DirectoryService.DirectoryServiceClient _directories = new(invoker);

        public override string Package => "tvix.castore.v1";

        public override CastoreProtocol Protocol => CastoreProtocol.Tvix;

        public override async Task<IReadOnlyList<(ByteString Digest, ulong Size)>> StatAsync(B3Digest digest, bool withChunks, CallOptions options)
        {
            var reply = await _blobs.StatAsync(new TvixV1.StatBlobRequest { Digest = digest.ToByteString(), SendChunks = withChunks }, options).ConfigureAwait(false);
            return reply.Chunks.Select(c => (c.Digest, c.Size)).ToList();
        }

        public override Stream<ByteString> Read(B3Digest digest, CallOptions options)
        {
            var call = _blobs.Read(new TvixV1.ReadBlobRequest { Digest = digest.ToByteString() }, options);
            return new(call, call.ResponseStream.MoveNext, () => call.ResponseStream.Current.Data);
        }

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
        private readonly SnixV1.BlobService.BlobServiceClient _blobs = new(invoker);
        private readonly SnixV1.DirectoryService.DirectoryServiceClient _directories = new(invoker);

        public override string Package => "snix.castore.v1";

        public override CastoreProtocol Protocol => CastoreProtocol.Snix;

        public override async Task<IReadOnlyList<(ByteString Digest, ulong Size)>> StatAsync(B3Digest digest, bool withChunks, CallOptions options)
        {
            var reply = await _blobs.StatAsync(new SnixV1.StatBlobRequest { Digest = digest.ToByteString(), SendChunks = withChunks }, options).ConfigureAwait(false);
            return reply.Chunks.Select(c => (c.Digest, c.Size)).ToList();
        }

        public override Stream<ByteString> Read(B3Digest digest, CallOptions options)
        {
            var call = _blobs.Read(new SnixV1.ReadBlobRequest { Digest = digest.ToByteString() }, options);
            return new(call, call.ResponseStream.MoveNext, () => call.ResponseStream.Current.Data);
        }

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
