using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using TvixFuseBuild.Build.Pipeline;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Build.Service;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Sandbox;

namespace TvixFuseBuild.Server;

/// <summary>
/// Runs around every call of every service: first authentication (bearer token, client certificate), then the one
/// mapping of exceptions to gRPC statuses. Services throw what happened (the store's, the build's exceptions); the
/// client hears it here.
/// </summary>
/// <remarks>
/// The health service answers without credentials, so that orchestrators can probe a server whose clients must
/// authenticate; it tells nothing but SERVING or NOT_SERVING.
/// </remarks>
internal sealed class ServerInterceptor(GrpcServerOptions options) : Interceptor
{
    private const string HealthPrefix = "/grpc.health.v1.Health/";
    private const string CertificateCheckKey = "tvix-fuse-build.client-certificate";

    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(
        TRequest request, ServerCallContext context, UnaryServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            Authenticate(context);
            return await continuation(request, context).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not RpcException)
        {
            throw ToStatus(e, context);
        }
    }

    public override async Task<TResponse> ClientStreamingServerHandler<TRequest, TResponse>(
        IAsyncStreamReader<TRequest> requestStream, ServerCallContext context, ClientStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            Authenticate(context);
            return await continuation(requestStream, context).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not RpcException)
        {
            throw ToStatus(e, context);
        }
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(
        TRequest request, IServerStreamWriter<TResponse> responseStream, ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            Authenticate(context);
            await continuation(request, responseStream, context).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not RpcException)
        {
            throw ToStatus(e, context);
        }
    }

    public override async Task DuplexStreamingServerHandler<TRequest, TResponse>(
        IAsyncStreamReader<TRequest> requestStream, IServerStreamWriter<TResponse> responseStream, ServerCallContext context,
        DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        try
        {
            Authenticate(context);
            await continuation(requestStream, responseStream, context).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not RpcException)
        {
            throw ToStatus(e, context);
        }
    }

    private void Authenticate(ServerCallContext context)
    {
        if (context.Method.StartsWith(HealthPrefix, StringComparison.Ordinal))
        {
            return;
        }

        if (options.Tls?.ClientCa is { } clientCa && CheckClientCertificate(context.GetHttpContext(), clientCa) is { } certificateProblem)
        {
            throw new RpcException(new Status(StatusCode.Unauthenticated, certificateProblem));
        }

        if (options.BearerToken is { } token && CheckToken(context.RequestHeaders.GetValue("authorization"), token) is { } tokenProblem)
        {
            throw new RpcException(new Status(StatusCode.Unauthenticated, tokenProblem));
        }
    }

    /// <summary>Null when <paramref name="header"/> is <c>Bearer TOKEN</c> with the right token; otherwise what is wrong.</summary>
    internal static string? CheckToken(string? header, ReadOnlySpan<byte> expected)
    {
        const string Scheme = "Bearer ";
        if (string.IsNullOrEmpty(header))
        {
            return "no bearer token: this server requires 'authorization: Bearer TOKEN' (a client's --grpc-token-file, ?token-file= or TVIX_FUSE_BUILD_TOKEN_FILE)";
        }

        if (!header.StartsWith(Scheme, StringComparison.OrdinalIgnoreCase))
        {
            return "the authorization header is not 'Bearer TOKEN'";
        }

        // Constant time in the token's content (its length is not secret enough to hide: it is fixed per server).
        byte[] given = Encoding.UTF8.GetBytes(header.AsSpan(Scheme.Length).Trim().ToString());
        return CryptographicOperations.FixedTimeEquals(given, expected) ? null : "the bearer token is wrong";
    }

    /// <summary>
    /// Null when the connection's client certificate chains to <paramref name="clientCa"/>; otherwise what is wrong.
    /// Checked once per connection.
    /// </summary>
    private static string? CheckClientCertificate(HttpContext http, X509Certificate2Collection clientCa)
    {
        var items = http.Features.Get<IConnectionItemsFeature>()?.Items;
        if (items is not null && items.TryGetValue(CertificateCheckKey, out var cached))
        {
            return (string?)cached;
        }

        string? problem = Check(http.Connection.ClientCertificate, clientCa);
        if (items is not null)
        {
            items[CertificateCheckKey] = problem;
        }

        return problem;

        static string? Check(X509Certificate2? certificate, X509Certificate2Collection clientCa)
        {
            if (certificate is null)
            {
                return "no client certificate: this server requires one issued by its client CA (--client-ca)";
            }

            using var chain = new X509Chain();
            chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
            chain.ChainPolicy.CustomTrustStore.AddRange(clientCa);
            chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
            chain.ChainPolicy.ApplicationPolicy.Add(new System.Security.Cryptography.Oid("1.3.6.1.5.5.7.3.2")); // TLS client authentication
            if (chain.Build(certificate))
            {
                return null;
            }

            string why = string.Join("; ", chain.ChainStatus.Select(s => s.StatusInformation.Trim()).Where(s => s.Length > 0).Distinct());
            return $"the client certificate '{certificate.Subject}' is not accepted: {(why.Length > 0 ? why : "it does not chain to the client CA")}";
        }
    }

    /// <summary>What the client hears when a call fails with <paramref name="e"/>.</summary>
    private RpcException ToStatus(Exception e, ServerCallContext context)
    {
        bool build = IsBuildMethod(context.Method);
        switch (e)
        {
            case OperationCanceledException or IOException when context.CancellationToken.IsCancellationRequested && context.Deadline <= DateTime.UtcNow:
                return Status(StatusCode.DeadlineExceeded, build ? "the deadline passed; the build was cancelled" : $"{context.Method}: the deadline passed", e);
            case ServerShuttingDownException:
                return Status(StatusCode.Unavailable, e.Message, e);
            case OperationCanceledException:
                // The client went away (it hears nothing), or the server was stopped past its grace period.
                return Status(StatusCode.Cancelled, $"{context.Method}: cancelled", e);
            case BuildRequestValidationException:
                return Status(StatusCode.InvalidArgument, e.Message, e);
            case SandboxRefusedException:
                return Status(StatusCode.FailedPrecondition, e.Message, e);
            case ObjectNotFoundException:
                // A build's missing input is the client's to upload; a missing blob or directory is simply not found.
                return Status(build ? StatusCode.FailedPrecondition : StatusCode.NotFound, e.Message, e);
            case BuildFailedException failure:
                return Status(StatusCode.Internal, FailureDetail(failure, options.BuildFailureLogLines), e);
            case SandboxException or IOException or UnauthorizedAccessException when build:
                options.ErrorLog?.Invoke($"{context.Method} from {context.Peer}: cannot run builds: {e.Message}");
                return Status(StatusCode.Internal, $"the server cannot run the build: {e.Message}", e);
            case InvalidClosureException or DirectoryValidationException or InvalidNameException or InvalidSymlinkTargetException:
                return Status(StatusCode.InvalidArgument, e.Message, e);
            case CorruptObjectException:
                return Status(StatusCode.DataLoss, e.Message, e);
            case StoreUnavailableException:
                return Status(StatusCode.Unavailable, e.Message, e);
        }

        options.ErrorLog?.Invoke($"{context.Method} from {context.Peer}: {e}");
        return Status(StatusCode.Internal, e is CastoreException ? e.Message : $"{e.GetType().Name}: {e.Message}", e);
    }

    private static bool IsBuildMethod(string method) =>
        method.StartsWith("/tvix.build.v1.", StringComparison.Ordinal) || method.StartsWith("/snix.build.v1.", StringComparison.Ordinal);

    private static RpcException Status(StatusCode code, string detail, Exception e) => new(new Status(code, detail, e));

    /// <summary>The status detail of a failed build: the one wording (<see cref="BuildFailureText.StatusDetail"/>) a client turns back into the failure.</summary>
    internal static string FailureDetail(BuildFailedException failure, int lineCount) =>
        BuildFailureText.StatusDetail(failure, lineCount);
}

/// <summary>The server is draining or stopping: the call was refused or cut short (UNAVAILABLE: try another server).</summary>
internal sealed class ServerShuttingDownException(string message) : Exception(message);
