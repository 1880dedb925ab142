using TvixFuseBuild.Castore.Stores.Local;

namespace TvixFuseBuild.Castore.Stores;

public enum StoreKind
{
    Memory,
    Local,
    GrpcHttp,
    GrpcHttps,
    GrpcUnix,

    /// <summary><c>dns:///HOST:PORT</c>: every address of the name, balanced (see <see cref="Grpc.GrpcChannels"/>).</summary>
    GrpcDns,
}

/// <summary>
/// A parsed store address: <c>memory://</c>, <c>local:///abs/path</c> (or just <c>/abs/path</c>; <c>local:</c> alone
/// is the default location), <c>grpc+http://host:port</c>, <c>grpc+https://host:port</c>, <c>grpc+unix:///abs/path</c>,
/// <c>dns:///host:port</c>; the gRPC ones with the parameters of <see cref="Grpc.GrpcStoreAddress"/>.
/// </summary>
public sealed record StoreAddress(StoreKind Kind, string Display, string? Path, string? Host, int Port, IReadOnlyDictionary<string, string> Query)
{
    public const string Supported =
        "memory://, local:///ABS/PATH (or /ABS/PATH), grpc+http://HOST:PORT, grpc+https://HOST:PORT, grpc+unix:///ABS/PATH, dns:///HOST:PORT";

    public static string DefaultLocal => "local://" + LocalStore.DefaultRoot;

    public bool WaitConnect => Query.TryGetValue("wait-connect", out var v) && v is "1" or "true";

    public static StoreAddress Parse(string address)
    {
        if (string.IsNullOrWhiteSpace(address))
        {
            throw Invalid(address, "empty address");
        }

        if (address.StartsWith('/'))
        {
            return Local(address, address);
        }

        int colon = address.IndexOf(':');
        if (colon <= 0)
        {
            throw Invalid(address, "no scheme");
        }

        string scheme = address[..colon];
        string rest = address[(colon + 1)..];
        switch (scheme)
        {
            case "memory":
                if (rest is not ("" or "//"))
                {
                    throw Invalid(address, "memory:// takes no host, path or query");
                }

                return new StoreAddress(StoreKind.Memory, "memory://", null, null, 0, Empty);
            case "local":
                if (rest is "" or "//")
                {
                    return Local(LocalStore.DefaultRoot, address);
                }

                if (!rest.StartsWith("///", StringComparison.Ordinal))
                {
                    throw Invalid(address, "expected local:///ABSOLUTE/PATH (three slashes: no host)");
                }

                return Local(Uri.UnescapeDataString(rest[2..]), address);
            case "grpc+http":
            case "grpc+https":
            case "grpc+unix":
                return ParseGrpc(address, scheme);
            case "dns":
                var dns = Grpc.GrpcStoreAddress.Parse(address);
                return new StoreAddress(StoreKind.GrpcDns, address, null, dns.Endpoint.Host, dns.Endpoint.Port, ParseQuery(address, rest.Contains('?') ? rest[rest.IndexOf('?')..] : ""));
            default:
                throw Invalid(address, $"unknown scheme '{scheme}'");
        }
    }

    private static StoreAddress Local(string path, string display)
    {
        if (path.Contains('?'))
        {
            throw Invalid(display, "a local store takes no query");
        }

        return new StoreAddress(StoreKind.Local, display, path, null, 0, Empty);
    }

    private static StoreAddress ParseGrpc(string address, string scheme)
    {
        if (!Uri.TryCreate(address, UriKind.Absolute, out var uri))
        {
            throw Invalid(address, "not a valid URL");
        }

        var query = ParseQuery(address, uri.Query);
        if (scheme == "grpc+unix")
        {
            if (!string.IsNullOrEmpty(uri.Host))
            {
                throw Invalid(address, "grpc+unix takes no host: use grpc+unix:///ABSOLUTE/PATH");
            }

            string path = Uri.UnescapeDataString(uri.AbsolutePath);
            if (path.Length <= 1)
            {
                throw Invalid(address, "grpc+unix needs the socket's absolute path");
            }

            return new StoreAddress(StoreKind.GrpcUnix, address, path, null, 0, query);
        }

        if (string.IsNullOrEmpty(uri.Host))
        {
            throw Invalid(address, "no host");
        }

        if (uri.AbsolutePath is not ("" or "/"))
        {
            throw Invalid(address, $"{scheme} takes no path");
        }

        if (uri.IsDefaultPort && !address.Contains($"{uri.Host}:", StringComparison.Ordinal) && !address.Contains("]:", StringComparison.Ordinal))
        {
            throw Invalid(address, "no port: use HOST:PORT");
        }

        return new StoreAddress(scheme == "grpc+http" ? StoreKind.GrpcHttp : StoreKind.GrpcHttps, address, null, uri.Host, uri.Port, query);
    }

    private static Dictionary<string, string> ParseQuery(string address, string query)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string pair in query.TrimStart('?').Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            int eq = pair.IndexOf('=');
            string key = Uri.UnescapeDataString(eq < 0 ? pair : pair[..eq]);
            string value = eq < 0 ? "1" : Uri.UnescapeDataString(pair[(eq + 1)..]);
            if (!result.TryAdd(key, value))
            {
                throw Invalid(address, $"query parameter '{key}' given twice");
            }
        }

        return result;
    }

    private static readonly IReadOnlyDictionary<string, string> Empty = new Dictionary<string, string>();

    private static StoreAddressException Invalid(string address, string reason) =>
        new($"invalid store address '{address}': {reason}; supported: {Supported}");
}
