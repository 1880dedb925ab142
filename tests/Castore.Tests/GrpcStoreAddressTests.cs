using TvixFuseBuild.Castore.Grpc;

namespace TvixFuseBuild.Castore.Tests;

public sealed class GrpcStoreAddressTests
{
    [Theory]
    [InlineData("grpc+http://localhost:8000", GrpcTransport.Http, "localhost", 8000)]
    [InlineData("grpc+http://127.0.0.1:1", GrpcTransport.Http, "127.0.0.1", 1)]
    [InlineData("grpc+http://[::1]:8000", GrpcTransport.Http, "::1", 8000)]
    [InlineData("grpc+http://store.example.org:65535/", GrpcTransport.Http, "store.example.org", 65535)]
    [InlineData("grpc+https://store.example.org:443", GrpcTransport.Https, "store.example.org", 443)]
    public void TcpAddresses(string address, GrpcTransport transport, string host, int port)
    {
        var parsed = GrpcStoreAddress.Parse(address);
        Assert.Equal(transport, parsed.Endpoint.Transport);
        Assert.Equal(host, parsed.Endpoint.Host);
        Assert.Equal(port, parsed.Endpoint.Port);
        Assert.False(parsed.WaitConnect);
        Assert.Equal(CastoreProtocol.Tvix, parsed.Protocol);
        Assert.Equal(GrpcStoreAddress.DefaultCallTimeout, parsed.CallTimeout);
    }

    [Fact]
    public void UnixAddressesAndParameters()
    {
        var parsed = GrpcStoreAddress.Parse("grpc+unix:///run/my%20store/castore.sock?wait-connect=1&protocol=snix&timeout=2.5&cache=/var/cache/x&fetch=closure");
        Assert.Equal(GrpcTransport.Unix, parsed.Endpoint.Transport);
        Assert.Equal("/run/my store/castore.sock", parsed.Endpoint.SocketPath);
        Assert.True(parsed.WaitConnect);
        Assert.Equal(CastoreProtocol.Snix, parsed.Protocol);
        Assert.Equal(TimeSpan.FromSeconds(2.5), parsed.CallTimeout);
        Assert.Equal(GrpcCacheSetting.At("/var/cache/x"), parsed.Cache);
        Assert.Equal(DirectoryFetchMode.Closure, parsed.DirectoryFetch);
        Assert.Equal(GrpcCacheSetting.None, GrpcStoreAddress.Parse("grpc+http://h:1?cache=none").Cache);
        Assert.Equal(GrpcCacheSetting.Default, GrpcStoreAddress.Parse("grpc+http://h:1").Cache);
        Assert.Equal(DirectoryFetchMode.PerLevel, GrpcStoreAddress.Parse("grpc+http://h:1").DirectoryFetch);
        Assert.Equal("unix:/run/my store/castore.sock", parsed.Endpoint.Display);

        Assert.True(GrpcStoreAddress.Parse("grpc+http://h:1?offline=1").Offline);
        Assert.False(GrpcStoreAddress.Parse("grpc+http://h:1?offline=0").Offline);
        Assert.False(GrpcStoreAddress.Parse("grpc+http://h:1").Offline);
        Assert.False(GrpcStoreAddress.Parse("grpc+http://h:1?wait-connect=0").WaitConnect);
        Assert.True(GrpcStoreAddress.Parse("grpc+http://h:1?wait-connect").WaitConnect);
        Assert.Equal("[::1]:8000", GrpcStoreAddress.Parse("grpc+http://[::1]:8000").Endpoint.Display);
    }

    [Fact]
    public void ConnectionParametersAndDnsNames()
    {
        var tls = GrpcStoreAddress.Parse("grpc+https://h:1?ca=/etc/ca.pem&token-file=/run/token&cert=/c.pem&key=/k.pem&cache=none").Endpoint;
        Assert.Equal(("/etc/ca.pem", "/run/token", "/c.pem", "/k.pem"), (tls.CaFile, tls.TokenFile, tls.CertFile, tls.KeyFile));
        Assert.True(tls.UsesTls);
        Assert.Equal("/run/t", GrpcStoreAddress.Parse("grpc+unix:///run/s.sock?token-file=/run/t").Endpoint.TokenFile);

        var dns = GrpcStoreAddress.Parse("dns:///builders.default.svc:7000?protocol=snix").Endpoint;
        Assert.True(dns.IsDnsName);
        Assert.False(dns.UsesTls);
        Assert.Equal(("builders.default.svc", 7000), (dns.Host, dns.Port));
        Assert.Equal("dns:///builders.default.svc:7000", dns.Display);
        Assert.True(GrpcEndpoint.Parse("dns:///b:7000?tls=1&ca=/ca.pem").UsesTls);

        // The endpoint parser alone (what the build client uses) hands unknown keys to its caller.
        var seen = new List<string>();
        GrpcEndpoint.Parse("grpc+http://h:1?timeout=5&ca-not=x", (key, _) =>
        {
            seen.Add(key);
            return true;
        });
        Assert.Equal(["timeout", "ca-not"], seen);
        Assert.Contains("unknown parameter 'timeout'", Assert.Throws<StoreAddressException>(() => GrpcEndpoint.Parse("grpc+http://h:1?timeout=5")).Message);
    }

    [Theory]
    [InlineData("grpc+http://h:1?ca=/ca.pem", "needs TLS")]
    [InlineData("grpc+https://h:1?ca=ca.pem", "ca must be an absolute file path")]
    [InlineData("grpc+https://h:1?cert=/c.pem", "needs both cert=FILE and key=FILE")]
    [InlineData("grpc+http://h:1?token-file", "token-file must be an absolute file path")]
    [InlineData("dns://8.8.8.8/h:1", "three slashes")]
    [InlineData("dns:///h", "no port")]
    [InlineData("dns:///h:1?tls=2", "tls must be 1 or 0")]
    [InlineData("grpc+http://h:1?tls=1", "unknown parameter 'tls'")]
    [InlineData("grpc+http://h:1?offline=1&wait-connect=1", "contradict")]
    [InlineData("grpc+http://h:1?offline=1&cache=none", "needs the local cache")]
    [InlineData("grpc+http://h:1?offline=maybe", "offline must be 1 or 0")]
    [InlineData("grpc+http://localhost", "no port")]
    [InlineData("grpc+http://localhost:", "no port")]
    [InlineData("grpc+http://:8000", "no host")]
    [InlineData("grpc+http://localhost:0", "invalid port")]
    [InlineData("grpc+http://localhost:70000", "invalid port")]
    [InlineData("grpc+http://localhost:80a", "invalid port")]
    [InlineData("grpc+http://localhost:8000/path", "takes no path")]
    [InlineData("grpc+https://h:1/x", "takes no path")]
    [InlineData("grpc+http://user@h:1", "user names")]
    [InlineData("grpc+http://::1:8000", "in brackets")]
    [InlineData("grpc+http://[zz]:8000", "invalid IPv6")]
    [InlineData("grpc+http://[::1]", "no port")]
    [InlineData("grpc+http://bad_host!:1", "invalid host")]
    [InlineData("grpc+unix://host/run/s.sock", "takes no host")]
    [InlineData("grpc+unix:///", "absolute path")]
    [InlineData("grpc+unix://", "takes no host")]
    [InlineData("grpc+ftp://h:1", "unknown scheme")]
    [InlineData("grpc+http:/h:1", "SCHEME://")]
    [InlineData("grpc+http://h:1?wait-connect=yes", "wait-connect must be")]
    [InlineData("grpc+http://h:1?protocol=nix", "protocol must be")]
    [InlineData("grpc+http://h:1?timeout=0", "timeout must be")]
    [InlineData("grpc+http://h:1?timeout=abc", "timeout must be")]
    [InlineData("grpc+http://h:1?color=blue", "unknown parameter 'color'")]
    [InlineData("grpc+http://h:1?protocol=tvix&protocol=snix", "given twice")]
    [InlineData("grpc+http://h:1#frag", "fragment")]
    [InlineData("grpc+http://h:1?cache=rel/path", "cache must be")]
    [InlineData("grpc+http://h:1?cache", "cache must be")]
    [InlineData("grpc+http://h:1?fetch=all", "fetch must be")]
    public void InvalidAddressesSayWhy(string address, string reason)
    {
        var e = Assert.Throws<StoreAddressException>(() => GrpcStoreAddress.Parse(address));
        Assert.Contains(reason, e.Message);
        Assert.Contains(address, e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }
}
