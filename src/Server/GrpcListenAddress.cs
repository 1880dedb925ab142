using System.Globalization;
using System.Net;

namespace TvixFuseBuild.Server;

/// <summary>
/// Where a <see cref="GrpcServer"/> listens, written like tvix's listen addresses: <c>[::1]:8000</c>,
/// <c>127.0.0.1:0</c> (any free port), <c>localhost:8000</c> (both loopbacks), or <c>unix:/absolute/path</c>.
/// </summary>
public sealed record GrpcListenAddress
{
    private GrpcListenAddress(IPEndPoint? endPoint, bool localhost, int port, string? socketPath)
    {
        EndPoint = endPoint;
        IsLocalhost = localhost;
        Port = port;
        SocketPath = socketPath;
    }

    public IPEndPoint? EndPoint { get; }

    public bool IsLocalhost { get; }

    public int Port { get; }

    public string? SocketPath { get; }

    public static GrpcListenAddress Unix(string path) => Parse("unix:" + path);

    public static GrpcListenAddress Tcp(IPEndPoint endPoint) => new(endPoint, false, endPoint.Port, null);

    /// <summary>Parses a listen address; throws <see cref="FormatException"/> saying what is wrong.</summary>
    public static GrpcListenAddress Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.StartsWith("unix:", StringComparison.Ordinal))
        {
            string path = text["unix:".Length..];
            if (!path.StartsWith('/') || path.Length < 2 || path.Contains('\0'))
            {
                throw Invalid(text, "expected unix:/ABSOLUTE/PATH");
            }

            return new GrpcListenAddress(null, false, 0, path);
        }

        int colon = text.LastIndexOf(':');
        if (colon <= 0)
        {
            throw Invalid(text, "expected HOST:PORT");
        }

        string host = text[..colon];
        string portText = text[(colon + 1)..];
        if (portText.Length is 0 or > 5 || !portText.All(char.IsAsciiDigit) || int.Parse(portText, CultureInfo.InvariantCulture) > 65535)
        {
            throw Invalid(text, $"invalid port '{portText}'");
        }

        int port = int.Parse(portText, CultureInfo.InvariantCulture);
        if (host == "localhost")
        {
            if (port == 0)
            {
                throw Invalid(text, "localhost:0 is ambiguous (two loopback addresses); use 127.0.0.1:0 or [::1]:0");
            }

            return new GrpcListenAddress(null, true, port, null);
        }

        if (host.StartsWith('[') != host.EndsWith(']'))
        {
            throw Invalid(text, "unbalanced brackets");
        }

        bool bracketed = host.StartsWith('[');
        if (!IPAddress.TryParse(bracketed ? host[1..^1] : host, out var ip) ||
            bracketed != (ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6))
        {
            throw Invalid(text, $"'{host}' is not an IP address (IPv6 in brackets: [::1]:8000) or localhost");
        }

        return new GrpcListenAddress(new IPEndPoint(ip, port), false, port, null);
    }

    public override string ToString() =>
        SocketPath is not null ? $"unix:{SocketPath}" :
        IsLocalhost ? $"localhost:{Port}" :
        EndPoint!.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{EndPoint.Address}]:{EndPoint.Port}" :
        $"{EndPoint.Address}:{EndPoint.Port}";

    private static FormatException Invalid(string text, string reason) =>
        new($"invalid listen address '{text}': {reason}; examples: [::1]:8000, 127.0.0.1:0, unix:/run/castore.sock");
}
