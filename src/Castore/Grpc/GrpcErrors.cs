using Grpc.Core;

namespace TvixFuseBuild.Castore.Grpc;

/// <summary>gRPC failures in words for people, for every client (stores and builders).</summary>
public static class GrpcErrors
{
    private static readonly string[] Names =
    [
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
        "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
        "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
    ];

    /// <summary>The canonical name people and other gRPC tools know, e.g. <c>NOT_FOUND</c>; the number for others.</summary>
    public static string ToWireName(this StatusCode code) =>
        (uint)code < (uint)Names.Length ? Names[(int)code] : ((int)code).ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>
    /// The status message; for a status made here (connection refused, TLS handshake, ...) the root cause alone, in
    /// words for people rather than the transport's exception chain.
    /// </summary>
    public static string Describe(RpcException e)
    {
        if (e.Status.DebugException is not { } local)
        {
            return e.Status.Detail;
        }

        var innermost = local;
        for (var x = local; x is not null; x = x.InnerException)
        {
            if (x is GrpcChannels.UnixSocketConnectException unix)
            {
                return unix.Message;
            }

            innermost = x;
        }

        return innermost.Message;
    }
}
