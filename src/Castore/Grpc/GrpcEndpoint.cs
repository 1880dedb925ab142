namespace TvixFuseBuild.Castore.Grpc;

public enum GrpcTransport
{
    /// <summary>Cleartext HTTP/2 over TCP with prior knowledge (h2c).</summary>
    Http,

    /// <summary>HTTP/2 over TLS, negotiated with ALPN.</summary>
    Https,

    /// <summary>Cleartext HTTP/2 over a unix domain socket.</summary>
    Unix,
}

/// <summary>Where a channel connects: a TCP host and port (cleartext or TLS) or a unix socket path.</summary>
public sealed record GrpcEndpoint
{
    private GrpcEndpoint(GrpcTransport transport, string host, int port, string? socketPath)
    {
        Transport = transport;
        Host = host;
        Port = port;
        SocketPath = socketPath;
        string authority = host.Contains(':') && !host.StartsWith('[') ? $"[{host}]" : host;
        BaseUri = new Uri($"{(transport == GrpcTransport.Https ? "https" : "http")}://{authority}:{port}/");
        Display = transport == GrpcTransport.Unix ? $"unix:{socketPath}" : $"{authority}:{port}";
    }

    public GrpcTransport Transport { get; }

    /// <summary>The host name or IP literal (without brackets); <c>localhost</c> for unix sockets (the :authority sent).</summary>
    public string Host { get; }

    public int Port { get; }

    public string? SocketPath { get; }

    internal Uri BaseUri { get; }

    /// <summary><c>host:port</c> or <c>unix:/path</c>, for messages.</summary>
    public string Display { get; }

    public static GrpcEndpoint Tcp(string host, int port, bool tls = false)
    {
        ArgumentException.ThrowIfNullOrEmpty(host);
        ArgumentOutOfRangeException.ThrowIfLessThan(port, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(port, 65535);
        return new GrpcEndpoint(tls ? GrpcTransport.Https : GrpcTransport.Http, host.Trim('[', ']'), port, null);
    }

    public static GrpcEndpoint UnixSocket(string path)
    {
        if (string.IsNullOrEmpty(path) || !Path.IsPathRooted(path))
        {
            throw new ArgumentException($"a unix socket path must be absolute, got '{path}'", nameof(path));
        }

        return new GrpcEndpoint(GrpcTransport.Unix, "localhost", 80, path);
    }

    public override string ToString() => Display;
}
