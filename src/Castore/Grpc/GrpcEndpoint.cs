using System.Globalization;
using System.Net;

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

/// <summary>
/// Where and how a gRPC client connects: a TCP host and port (h2c or TLS), a unix socket, or a <c>dns:///HOST:PORT</c>
/// name whose every address is used (balanced); with the credentials the address names: <c>ca=FILE</c> (PEM roots to
/// trust instead of the system's), <c>token-file=FILE</c> (a bearer token), <c>cert=FILE&amp;key=FILE</c> (a PEM client
/// certificate). Parsed from the address forms of <see cref="Parse"/>; <see cref="GrpcChannels"/> makes channels of it.
/// </summary>
public sealed record GrpcEndpoint
{
    public const string Usage =
        "grpc+unix:///ABSOLUTE/PATH, grpc+http://HOST:PORT, grpc+https://HOST:PORT or dns:///HOST:PORT, " +
        "optionally with ?ca=FILE, ?token-file=FILE, ?cert=FILE&key=FILE (and ?tls=1 for dns:///)";

    private GrpcEndpoint(GrpcTransport transport, string host, int port, string? socketPath, bool dns)
    {
        Transport = transport;
        Host = host;
        Port = port;
        SocketPath = socketPath;
        IsDnsName = dns;
    }

    public GrpcTransport Transport { get; }

    /// <summary>The host name or IP literal (without brackets); <c>localhost</c> for unix sockets (the :authority sent).</summary>
    public string Host { get; }

    public int Port { get; }

    public string? SocketPath { get; }

    /// <summary>A <c>dns:///</c> name: every address it resolves to is a backend, re-resolved while the channel lives.</summary>
    public bool IsDnsName { get; }

    /// <summary>PEM file of the roots to trust for TLS instead of the system's (<c>ca=</c>).</summary>
    public string? CaFile { get; init; }

    /// <summary>File holding the bearer token sent with every call (<c>token-file=</c>).</summary>
    public string? TokenFile { get; init; }

    /// <summary>PEM client certificate and key for TLS (<c>cert=</c>, <c>key=</c>).</summary>
    public string? CertFile { get; init; }

    public string? KeyFile { get; init; }

    public bool UsesTls => Transport == GrpcTransport.Https;

    /// <summary><c>host:port</c>, <c>unix:/path</c> or <c>dns:///host:port</c>, for messages.</summary>
    public string Display => Transport == GrpcTransport.Unix
        ? $"unix:{SocketPath}"
        : (IsDnsName ? "dns:///" : string.Empty) + (Host.Contains(':') ? $"[{Host}]" : Host) + ":" + Port.ToString(CultureInfo.InvariantCulture);

    public static GrpcEndpoint Tcp(string host, int port, bool tls = false)
    {
        ArgumentException.ThrowIfNullOrEmpty(host);
        ArgumentOutOfRangeException.ThrowIfLessThan(port, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(port, 65535);
        return new GrpcEndpoint(tls ? GrpcTransport.Https : GrpcTransport.Http, host.Trim('[', ']'), port, null, dns: false);
    }

    public static GrpcEndpoint UnixSocket(string path)
    {
        if (string.IsNullOrEmpty(path) || !Path.IsPathRooted(path))
        {
            throw new ArgumentException($"a unix socket path must be absolute, got '{path}'", nameof(path));
        }

        return new GrpcEndpoint(GrpcTransport.Unix, "localhost", 80, path, dns: false);
    }

    public static GrpcEndpoint DnsName(string host, int port, bool tls = false)
    {
        ArgumentException.ThrowIfNullOrEmpty(host);
        ArgumentOutOfRangeException.ThrowIfLessThan(port, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(port, 65535);
        return new GrpcEndpoint(tls ? GrpcTransport.Https : GrpcTransport.Http, host, port, null, dns: true);
    }

    /// <summary>Whether <paramref name="address"/> looks like a gRPC address (a scheme this parser knows).</summary>
    public static bool IsGrpcAddress(string address) =>
        address.StartsWith("grpc+", StringComparison.Ordinal) || address.StartsWith("dns:", StringComparison.Ordinal);

    /// <summary>
    /// Parses a gRPC address with its connection parameters; throws <see cref="StoreAddressException"/> saying what is
    /// wrong. Other query parameters go to <paramref name="otherParameter"/> (key, value or null, returns whether it
    /// knows the key; it may throw <see cref="StoreAddressException"/> for a bad value); without it they are errors.
    /// </summary>
    public static GrpcEndpoint Parse(string address, Func<string, string?, bool>? otherParameter = null) =>
        Parse(address, otherParameter, $"invalid gRPC address '{address}'", Usage);

    /// <summary><paramref name="usage"/> ends each error; <paramref name="prefix"/> starts it ("invalid store address '…'").</summary>
    internal static GrpcEndpoint Parse(string address, Func<string, string?, bool>? otherParameter, string prefix, string usage) =>
        ParseCore(address, otherParameter, new Errors(prefix, usage));

    private static GrpcEndpoint ParseCore(string address, Func<string, string?, bool>? otherParameter, Errors usage)
    {
        ArgumentNullException.ThrowIfNull(address);
        int schemeEnd = address.IndexOf("://", StringComparison.Ordinal);
        if (schemeEnd < 0)
        {
            throw Invalid(address, "expected SCHEME://…", usage);
        }

        string scheme = address[..schemeEnd];
        string rest = address[(schemeEnd + 3)..];
        if (rest.Contains('#'))
        {
            throw Invalid(address, "an address has no fragment (#)", usage);
        }

        int queryStart = rest.IndexOf('?');
        string query = queryStart < 0 ? string.Empty : rest[(queryStart + 1)..];
        string location = queryStart < 0 ? rest : rest[..queryStart];
        var endpoint = scheme switch
        {
            "grpc+unix" => ParseUnix(address, location, usage),
            "grpc+http" => ParseTcp(address, location, "grpc+http", usage),
            "grpc+https" => ParseTcp(address, location, "grpc+https", usage),
            "dns" => ParseDns(address, location, usage),
            _ => throw Invalid(address, $"unknown scheme '{scheme}'", usage),
        };

        string? ca = null, token = null, cert = null, key = null;
        bool tls = false;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (string pair in query.Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = pair.IndexOf('=');
            string name = Uri.UnescapeDataString(eq < 0 ? pair : pair[..eq]);
            string? value = eq < 0 ? null : Uri.UnescapeDataString(pair[(eq + 1)..]);
            if (!seen.Add(name))
            {
                throw Invalid(address, $"parameter '{name}' given twice", usage);
            }

            switch (name)
            {
                case "ca":
                    ca = FileParameter(address, name, value, usage);
                    break;
                case "token-file":
                    token = FileParameter(address, name, value, usage);
                    break;
                case "cert":
                    cert = FileParameter(address, name, value, usage);
                    break;
                case "key":
                    key = FileParameter(address, name, value, usage);
                    break;
                case "tls" when endpoint.IsDnsName:
                    tls = value switch
                    {
                        null or "1" or "true" => true,
                        "0" or "false" => false,
                        _ => throw Invalid(address, $"tls must be 1 or 0, got '{value}'", usage),
                    };
                    break;
                default:
                    if (otherParameter?.Invoke(name, value) != true)
                    {
                        throw Invalid(address, $"unknown parameter '{name}'", usage);
                    }

                    break;
            }
        }

        if ((cert is null) != (key is null))
        {
            throw Invalid(address, "a client certificate needs both cert=FILE and key=FILE", usage);
        }

        if (tls)
        {
            endpoint = DnsName(endpoint.Host, endpoint.Port, tls: true);
        }

        if ((ca is not null || cert is not null) && !endpoint.UsesTls)
        {
            throw Invalid(address, $"{(ca is not null ? "ca=" : "cert=")} needs TLS: use grpc+https:// (or ?tls=1 with dns:///)", usage);
        }

        return endpoint with { CaFile = ca, TokenFile = token, CertFile = cert, KeyFile = key };
    }

    private static string FileParameter(string address, string name, string? value, Errors usage) =>
        value is ['/', ..] && !value.Contains('\0') && !value.EndsWith('/')
            ? value
            : throw Invalid(address, $"{name} must be an absolute file path, got '{value}'", usage);

    private static GrpcEndpoint ParseUnix(string address, string location, Errors usage)
    {
        if (!location.StartsWith('/'))
        {
            throw Invalid(address, "grpc+unix takes no host: use grpc+unix:///ABSOLUTE/PATH (three slashes)", usage);
        }

        string path = Uri.UnescapeDataString(location);
        if (path.Length <= 1 || path.EndsWith('/'))
        {
            throw Invalid(address, "grpc+unix needs the socket's absolute path", usage);
        }

        if (path.Contains('\0'))
        {
            throw Invalid(address, "the socket path contains NUL", usage);
        }

        return UnixSocket(path);
    }

    private static GrpcEndpoint ParseDns(string address, string location, Errors usage)
    {
        if (!location.StartsWith('/'))
        {
            throw Invalid(address, "use dns:///HOST:PORT (three slashes: no DNS server authority)", usage);
        }

        var (host, port) = ParseHostPort(address, location[1..], "dns", usage);
        return DnsName(host, port);
    }

    private static GrpcEndpoint ParseTcp(string address, string location, string scheme, Errors usage)
    {
        int slash = location.IndexOf('/');
        if (slash >= 0 && location.Length > slash + 1)
        {
            throw Invalid(address, $"{scheme} takes no path, only HOST:PORT", usage);
        }

        var (host, port) = ParseHostPort(address, slash < 0 ? location : location[..slash], scheme, usage);
        return Tcp(host, port, tls: scheme == "grpc+https");
    }

    private static (string Host, int Port) ParseHostPort(string address, string authority, string scheme, Errors usage)
    {
        if (authority.Contains('@'))
        {
            throw Invalid(address, "user names and passwords are not supported", usage);
        }

        if (authority.Contains('/'))
        {
            throw Invalid(address, $"{scheme} takes no path, only HOST:PORT", usage);
        }

        string host;
        string port;
        if (authority.StartsWith('['))
        {
            int close = authority.IndexOf(']');
            if (close < 0 || !IPAddress.TryParse(authority[1..close], out var v6) || v6.AddressFamily != System.Net.Sockets.AddressFamily.InterNetworkV6)
            {
                throw Invalid(address, "invalid IPv6 address in brackets", usage);
            }

            host = authority[1..close];
            if (close + 1 >= authority.Length || authority[close + 1] != ':')
            {
                throw Invalid(address, "no port: use [IPV6]:PORT", usage);
            }

            port = authority[(close + 2)..];
        }
        else
        {
            int colon = authority.LastIndexOf(':');
            if (colon < 0)
            {
                throw Invalid(address, authority.Length == 0 ? "no host: use HOST:PORT" : "no port: use HOST:PORT", usage);
            }

            if (authority.IndexOf(':') != colon)
            {
                throw Invalid(address, "an IPv6 address must be in brackets: [IPV6]:PORT", usage);
            }

            host = authority[..colon];
            port = authority[(colon + 1)..];
            if (host.Length == 0 || Uri.CheckHostName(host) is UriHostNameType.Unknown or UriHostNameType.Basic)
            {
                throw Invalid(address, host.Length == 0 ? "no host: use HOST:PORT" : $"invalid host '{host}'", usage);
            }
        }

        if (port.Length is 0 or > 5 || !port.All(char.IsAsciiDigit) || int.Parse(port, CultureInfo.InvariantCulture) is < 1 or > 65535)
        {
            throw Invalid(address, port.Length == 0 ? "no port: use HOST:PORT" : $"invalid port '{port}'", usage);
        }

        return (host, int.Parse(port, CultureInfo.InvariantCulture));
    }

    private static StoreAddressException Invalid(string address, string reason, Errors errors)
    {
        _ = address; // named in errors.Prefix
        return new($"{errors.Prefix}: {reason}; expected {errors.Usage}");
    }

    private readonly record struct Errors(string Prefix, string Usage);

    public override string ToString() => Display;
}
