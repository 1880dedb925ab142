namespace TvixFuseBuild.Build.Grpc;

public enum GrpcMethodType
{
    Unary,
    ClientStreaming,
    ServerStreaming,
}

/// <summary>A gRPC method: its path <c>/package.Service/Method</c>, its kind and how its messages are encoded.</summary>
public sealed class GrpcMethod<TRequest, TResponse>
{
    public GrpcMethod(
        GrpcMethodType type,
        string serviceName,
        string name,
        GrpcMarshaller<TRequest> requestMarshaller,
        GrpcMarshaller<TResponse> responseMarshaller)
    {
        Type = type;
        ServiceName = serviceName;
        Name = name;
        RequestMarshaller = requestMarshaller;
        ResponseMarshaller = responseMarshaller;
        Path = $"/{serviceName}/{name}";
    }

    public GrpcMethodType Type { get; }

    /// <summary>The fully qualified service name, e.g. <c>tvix.castore.v1.BlobService</c>.</summary>
    public string ServiceName { get; }

    public string Name { get; }

    /// <summary>The HTTP/2 path: <c>/tvix.castore.v1.BlobService/Read</c>.</summary>
    public string Path { get; }

    public GrpcMarshaller<TRequest> RequestMarshaller { get; }

    public GrpcMarshaller<TResponse> ResponseMarshaller { get; }

    public override string ToString() => Path;
}
