namespace TvixFuseBuild.Build.Grpc;

/// <summary>
/// A call ended with a non-OK gRPC status: received from the peer, or produced locally (deadline, transport failure).
/// Handlers on the server throw it to answer with a chosen status. <see cref="Exception.Message"/> is
/// <c>CODE: detail</c>; <see cref="Detail"/> is the peer's message alone.
/// </summary>
public sealed class RpcStatusException : Exception
{
    public RpcStatusException(GrpcStatusCode code, string detail, Exception? innerException = null)
        : base(string.IsNullOrEmpty(detail) ? code.ToWireName() : $"{code.ToWireName()}: {detail}", innerException)
    {
        Code = code;
        Detail = detail;
    }

    public GrpcStatusCode Code { get; }

    /// <summary>The status message (grpc-message), already percent-decoded.</summary>
    public string Detail { get; }

    /// <summary>Whether retrying the same call later may succeed (the peer was unreachable or overloaded).</summary>
    public bool IsTransient => Code is GrpcStatusCode.Unavailable;
}
