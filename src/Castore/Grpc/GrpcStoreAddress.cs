using System.Globalization;
using System.Net;

namespace TvixFuseBuild.Castore.Grpc;

/// <summary>
/// A gRPC castore address, the tvix way: <c>grpc+http://HOST:PORT</c>, <c>grpc+https://HOST:PORT</c> (no path) or
/// <c>grpc+unix:///ABSOLUTE/PATH</c> (no host), with optional query parameters:
/// <list type="bullet">
/// <item><c>wait-connect=1</c>: connect when the store is opened and fail at once if it is unreachable.</item>
/// <item><c>offline=1</c>: never connect when the store is opened, even for a caller that asks for it
/// (<see cref="GrpcStoreOptions.ConnectAtOpen"/>): what the cache holds is served, and only what it lacks needs the store.</item>
/// <item><c>protocol=tvix</c> (default) or <c>protocol=snix</c>: call the <c>tvix.castore.v1</c> or <c>snix.castore.v1</c> services.</item>
/// <item><c>timeout=SECONDS</c>: the deadline of each request (default 60; whole-blob downloads get none).</item>
/// <item><c>cache=/ABSOLUTE/PATH</c>: the local store that caches what is fetched (default: the default local store);
/// <c>cache=none</c>: no cache, every read goes to the remote.</item>
/// <item><c>fetch=level</c> (default) or <c>fetch=closure</c>: a directory missing from the cache is fetched alone, or
/// with its whole closure in one call (fewer round trips on slow links, more data; see docs/benchmarks.md).</item>
/// </list>
/// </summary>
public sealed record GrpcStoreAddress(
    string Address,
    GrpcEndpoint Endpoint,
    bool WaitConnect,
    CastoreProtocol Protocol,
    TimeSpan CallTimeout,
    GrpcCacheSetting Cache,
    DirectoryFetchMode DirectoryFetch)
{
    public const string Usage =
        "grpc+http://HOST:PORT, grpc+https://HOST:PORT or grpc+unix:///ABSOLUTE/PATH, optionally with ?wait-connect=1, ?offline=1, " +
        "?protocol=tvix|snix, ?timeout=SECONDS, ?cache=none|/ABSOLUTE/PATH, ?fetch=level|closure";

    public static readonly TimeSpan DefaultCallTimeout = TimeSpan.FromSeconds(60);

    /// <summary><c>offline=1</c>: the store is not reached when opened, whatever the caller prefers.</summary>
    public bool Offline { get; init; }

    public static bool IsGrpcAddress(string address) =>
        address.StartsWith("grpc+", StringComparison.Ordinal);

    /// <summary>Parses an address; throws <see cref="StoreAddressException"/> saying what is wrong.</summary>
    public static GrpcStoreAddress Parse(string address)
    {
        ArgumentNullException.ThrowIfNull(address);
        int schemeEnd = address.IndexOf("://", StringComparison.Ordinal);
        if (schemeEnd < 0)
        {
            throw Invalid(address, "expected SCHEME://…");
        }

        string scheme = address[..schemeEnd];
        string rest = address[(schemeEnd + 3)..];
        if (rest.Contains('#'))
        {
            throw Invalid(address, "a store address has no fragment (#)");
        }

        int queryStart = rest.IndexOf('?');
        string query = queryStart < 0 ? string.Empty : rest[(queryStart + 1)..];
        string location = queryStart < 0 ? rest : rest[..queryStart];
        var endpoint = scheme switch
        {
            "grpc+unix" => ParseUnix(address, location),
            "grpc+http" => ParseTcp(address, location, tls: false),
            "grpc+https" => ParseTcp(address, location, tls: true),
            _ => throw Invalid(address, $"unknown scheme '{scheme}'"),
        };

        bool waitConnect = false;
        bool offline = false;
        var protocol = CastoreProtocol.Tvix;
        var timeout = DefaultCallTimeout;
        var cache = GrpcCacheSetting.Default;
        var fetch = DirectoryFetchMode.PerLevel;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (string pair in query.Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = pair.IndexOf('=');
            string key = Uri.UnescapeDataString(eq < 0 ? pair : pair[..eq]);
            string? value = eq < 0 ? null : Uri.UnescapeDataString(pair[(eq + 1)..]);
            if (!seen.Add(key))
            {
                throw Invalid(address, $"parameter '{key}' given twice");
            }

            switch (key)
            {
                case "wait-connect":
                    waitConnect = value switch
                    {
                        null or "1" or "true" => true,
                        "0" or "false" => false,
                        _ => throw Invalid(address, $"wait-connect must be 1 or 0, got '{value}'"),
                    };
                    break;
                case "offline":
                    offline = value switch
                    {
                        null or "1" or "true" => true,
                        "0" or "false" => false,
                        _ => throw Invalid(address, $"offline must be 1 or 0, got '{value}'"),
                    };
                    break;
                case "protocol":
                    protocol = value switch
                    {
                        "tvix" => CastoreProtocol.Tvix,
                        "snix" => CastoreProtocol.Snix,
                        _ => throw Invalid(address, $"protocol must be tvix or snix, got '{value}'"),
                    };
                    break;
                case "timeout":
                    if (!double.TryParse(value, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double seconds) ||
                        seconds <= 0 || seconds > 86_400 * 365)
                    {
                        throw Invalid(address, $"timeout must be a positive number of seconds, got '{value}'");
                    }

                    timeout = TimeSpan.FromSeconds(seconds);
                    break;
                case "cache":
                    cache = value switch
                    {
                        "none" => GrpcCacheSetting.None,
                        ['/', ..] when !value.Contains('\0') => GrpcCacheSetting.At(value),
                        _ => throw Invalid(address, $"cache must be none or an absolute path, got '{value}'"),
                    };
                    break;
                case "fetch":
                    fetch = value switch
                    {
                        "level" => DirectoryFetchMode.PerLevel,
                        "closure" => DirectoryFetchMode.Closure,
                        _ => throw Invalid(address, $"fetch must be level or closure, got '{value}'"),
                    };
                    break;
                default:
                    throw Invalid(address, $"unknown parameter '{key}' (known: wait-connect, offline, protocol, timeout, cache, fetch)");
            }
        }

        if (offline && waitConnect)
        {
            throw Invalid(address, "offline=1 and wait-connect=1 contradict each other");
        }

        if (offline && !cache.Enabled)
        {
            throw Invalid(address, "offline=1 needs the local cache (not cache=none)");
        }

        return new GrpcStoreAddress(address, endpoint, waitConnect, protocol, timeout, cache, fetch) { Offline = offline };
    }

    private static GrpcEndpoint ParseUnix(string address, string location)
    {
        if (!location.StartsWith('/'))
        {
            throw Invalid(address, "grpc+unix takes no host: use grpc+unix:///ABSOLUTE/PATH (three slashes)");
        }

        string path = Uri.UnescapeDataString(location);
        if (path.Length <= 1 || path.EndsWith('/'))
        {
            throw Invalid(address, "grpc+unix needs the socket's absolute path");
        }

        if (path.Contains('\0'))
        {
            throw Invalid(address, "the socket path contains NUL");
        }

        return GrpcEndpoint.UnixSocket(path);
    }

    private static GrpcEndpoint ParseTcp(string address, string location, bool tls)
    {
        int slash = location.IndexOf('/');
        string authority = slash < 0 ? location : location[..slash];
        if (slash >= 0 && location.Length > slash + 1)
        {
            throw Invalid(address, $"{(tls ? "grpc+https" : "grpc+http")} takes no path, only HOST:PORT");
        }

        if (authority.Contains('@'))
        {
            throw Invalid(address, "user names and passwords are not supported");
        }

        string host;
        string port;
        if (authority.StartsWith('['))
        {
            int close = authority.IndexOf(']');
            if (close < 0 || !IPAddress.TryParse(authority[1..close], out var v6) || v6.AddressFamily != System.Net.Sockets.AddressFamily.InterNetworkV6)
            {
                throw Invalid(address, "invalid IPv6 address in brackets");
            }

            host = authority[1..close];
            if (close + 1 >= authority.Length || authority[close + 1] != ':')
            {
                throw Invalid(address, "no port: use [IPV6]:PORT");
            }

            port = authority[(close + 2)..];
        }
        else
        {
            int colon = authority.LastIndexOf(':');
            if (colon < 0)
            {
                throw Invalid(address, authority.Length == 0 ? "no host: use HOST:PORT" : "no port: use HOST:PORT");
            }

            if (authority.IndexOf(':') != colon)
            {
                throw Invalid(address, "an IPv6 address must be in brackets: [IPV6]:PORT");
            }

            host = authority[..colon];
            port = authority[(colon + 1)..];
            if (host.Length == 0 || Uri.CheckHostName(host) is UriHostNameType.Unknown or UriHostNameType.Basic)
            {
                throw Invalid(address, host.Length == 0 ? "no host: use HOST:PORT" : $"invalid host '{host}'");
            }
        }

        if (port.Length is 0 or > 5 || !port.All(char.IsAsciiDigit) || int.Parse(port, CultureInfo.InvariantCulture) is < 1 or > 65535)
        {
            throw Invalid(address, port.Length == 0 ? "no port: use HOST:PORT" : $"invalid port '{port}'");
        }

        return GrpcEndpoint.Tcp(host, int.Parse(port, CultureInfo.InvariantCulture), tls);
    }

    private static StoreAddressException Invalid(string address, string reason) =>
        new($"invalid store address '{address}': {reason}; expected {Usage}");
}

/// <summary>Where a gRPC store keeps what it fetched: the default local store, another local store, or nowhere.</summary>
public readonly record struct GrpcCacheSetting(bool Enabled, string? Path)
{
    public static GrpcCacheSetting Default => new(true, null);

    public static GrpcCacheSetting None => new(false, null);

    public static GrpcCacheSetting At(string path) => new(true, path);
}
