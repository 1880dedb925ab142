using System.Globalization;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Grpc;

namespace TvixFuseBuild.Build.Grpc;

/// <summary>
/// Where a builder (a BuildService, such as <c>tvix-fuse-build serve</c>) listens: a gRPC store address
/// (<c>grpc+unix:///PATH</c>, <c>grpc+http://HOST:PORT</c>, <c>grpc+https://HOST:PORT</c>), an address as
/// <c>serve --listen</c> takes it (<c>unix:/PATH</c>, <c>HOST:PORT</c>), or <c>dns:///NAME:PORT</c>: every address the
/// name resolves to is a builder (a Kubernetes headless service, for one).
/// </summary>
public sealed record BuilderAddress
{
    public const string Usage = "grpc+unix:///PATH, grpc+http://HOST:PORT, grpc+https://HOST:PORT, unix:/PATH, HOST:PORT or dns:///NAME:PORT";

    /// <summary>The environment variable of the default builders, space-separated (what <c>--builder</c> adds to).</summary>
    public const string BuildersVariable = "TVIX_FUSE_BUILD_BUILDERS";

    private BuilderAddress(string text, GrpcEndpoint endpoint, string? storeAddress)
    {
        Text = text;
        Endpoint = endpoint;
        StoreAddress = storeAddress;
    }

    /// <summary>As given.</summary>
    public string Text { get; }

    /// <summary>Where to connect: one builder, or a <c>dns:///</c> name standing for all it resolves to.</summary>
    public GrpcEndpoint Endpoint { get; }

    /// <summary>The castore the builder serves at its own address (<c>grpc+…</c>); null for a <c>dns:///</c> name.</summary>
    public string? StoreAddress { get; }

    /// <summary>The name of a <c>dns:///</c> address.</summary>
    public string? DnsName => Endpoint.IsDnsName ? Endpoint.Host : null;

    public override string ToString() => Text;

    /// <summary>Parses an address; throws <see cref="StoreAddressException"/> saying what is wrong.</summary>
    public static BuilderAddress Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.StartsWith("dns:", StringComparison.Ordinal))
        {
            return ParseDns(text);
        }

        string address = text switch
        {
            _ when GrpcStoreAddress.IsGrpcAddress(text) => text,
            _ when text.StartsWith("unix:", StringComparison.Ordinal) => "grpc+unix://" + text["unix:".Length..],
            _ when text.Contains("://", StringComparison.Ordinal) => throw Invalid(text, $"unknown scheme '{text[..text.IndexOf("://", StringComparison.Ordinal)]}'"),
            _ => "grpc+http://" + text,
        };

        GrpcStoreAddress parsed;
        try
        {
            parsed = GrpcStoreAddress.Parse(address);
        }
        catch (StoreAddressException e)
        {
            throw Invalid(text, e.Message);
        }

        return new BuilderAddress(text, parsed.Endpoint, address);
    }

    /// <summary>
    /// The builders named by <paramref name="given"/> (in order, duplicates dropped), after those of
    /// <see cref="BuildersVariable"/> when <paramref name="environment"/> is set.
    /// </summary>
    public static IReadOnlyList<BuilderAddress> ParseAll(IEnumerable<string> given, string? environment)
    {
        var texts = (environment ?? "").Split([' ', '\t', '\n'], StringSplitOptions.RemoveEmptyEntries).Concat(given).Distinct(StringComparer.Ordinal);
        return [.. texts.Select(Parse)];
    }

    private static BuilderAddress ParseDns(string text)
    {
        const string prefix = "dns:///";
        if (!text.StartsWith(prefix, StringComparison.Ordinal))
        {
            throw Invalid(text, "use dns:///NAME:PORT (three slashes; no DNS server of its own)");
        }

        string rest = text[prefix.Length..];
        int colon = rest.LastIndexOf(':');
        if (colon <= 0)
        {
            throw Invalid(text, "no port: use dns:///NAME:PORT");
        }

        string name = rest[..colon];
        string port = rest[(colon + 1)..];
        if (Uri.CheckHostName(name) is not (UriHostNameType.Dns or UriHostNameType.IPv4))
        {
            throw Invalid(text, $"invalid name '{name}'");
        }

        if (port.Length is 0 or > 5 || !port.All(char.IsAsciiDigit) || int.Parse(port, CultureInfo.InvariantCulture) is < 1 or > 65535)
        {
            throw Invalid(text, $"invalid port '{port}'");
        }

        return new BuilderAddress(text, GrpcEndpoint.DnsName(name, int.Parse(port, CultureInfo.InvariantCulture)), null);
    }

    private static StoreAddressException Invalid(string text, string reason) =>
        new($"'{text}' is not a builder address ({reason}); expected {Usage}");
}
