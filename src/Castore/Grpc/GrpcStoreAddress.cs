using System.Globalization;

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
/// <item>the connection parameters of <see cref="GrpcEndpoint"/>: <c>ca=</c>, <c>token-file=</c>, <c>cert=</c>/<c>key=</c>;
/// and <c>dns:///HOST:PORT</c> to balance over every address of a name.</item>
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
        "grpc+http://HOST:PORT, grpc+https://HOST:PORT, grpc+unix:///ABSOLUTE/PATH or dns:///HOST:PORT, optionally with ?wait-connect=1, " +
        "?offline=1, ?protocol=tvix|snix, ?timeout=SECONDS, ?cache=none|/ABSOLUTE/PATH, ?fetch=level|closure, ?ca=FILE, " +
        "?token-file=FILE, ?cert=FILE&key=FILE, ?tls=1 (dns:///)";

    public static readonly TimeSpan DefaultCallTimeout = TimeSpan.FromSeconds(60);

    /// <summary><c>offline=1</c>: the store is not reached when opened, whatever the caller prefers.</summary>
    public bool Offline { get; init; }

    public static bool IsGrpcAddress(string address) => GrpcEndpoint.IsGrpcAddress(address);

    /// <summary>Parses an address; throws <see cref="StoreAddressException"/> saying what is wrong.</summary>
    public static GrpcStoreAddress Parse(string address)
    {
        ArgumentNullException.ThrowIfNull(address);
        bool waitConnect = false;
        bool offline = false;
        var protocol = CastoreProtocol.Tvix;
        var timeout = DefaultCallTimeout;
        var cache = GrpcCacheSetting.Default;
        var fetch = DirectoryFetchMode.PerLevel;
        var endpoint = GrpcEndpoint.Parse(address, StoreParameter, $"invalid store address '{address}'", Usage);

        bool StoreParameter(string key, string? value)
        {
            switch (key)
            {
                case "wait-connect":
                    waitConnect = value switch
                    {
                        null or "1" or "true" => true,
                        "0" or "false" => false,
                        _ => throw Invalid(address, $"wait-connect must be 1 or 0, got '{value}'"),
                    };
                    return true;
                case "offline":
                    offline = value switch
                    {
                        null or "1" or "true" => true,
                        "0" or "false" => false,
                        _ => throw Invalid(address, $"offline must be 1 or 0, got '{value}'"),
                    };
                    return true;
                case "protocol":
                    protocol = value switch
                    {
                        "tvix" => CastoreProtocol.Tvix,
                        "snix" => CastoreProtocol.Snix,
                        _ => throw Invalid(address, $"protocol must be tvix or snix, got '{value}'"),
                    };
                    return true;
                case "timeout":
                    if (!double.TryParse(value, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double seconds) ||
                        seconds <= 0 || seconds > 86_400 * 365)
                    {
                        throw Invalid(address, $"timeout must be a positive number of seconds, got '{value}'");
                    }

                    timeout = TimeSpan.FromSeconds(seconds);
                    return true;
                case "cache":
                    cache = value switch
                    {
                        "none" => GrpcCacheSetting.None,
                        ['/', ..] when !value.Contains('\0') => GrpcCacheSetting.At(value),
                        _ => throw Invalid(address, $"cache must be none or an absolute path, got '{value}'"),
                    };
                    return true;
                case "fetch":
                    fetch = value switch
                    {
                        "level" => DirectoryFetchMode.PerLevel,
                        "closure" => DirectoryFetchMode.Closure,
                        _ => throw Invalid(address, $"fetch must be level or closure, got '{value}'"),
                    };
                    return true;
                default:
                    return false;
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
