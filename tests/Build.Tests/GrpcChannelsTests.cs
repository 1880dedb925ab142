using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Grpc.Core;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Grpc;
using TvixFuseBuild.Castore.Hashing;
using TvixFuseBuild.Castore.Stores;
using Tvix.Castore.V1;

namespace TvixFuseBuild.Build.Tests.Grpc;

/// <summary>
/// The one channel factory (<see cref="GrpcChannels"/>) against Python grpcio servers in their own processes: TLS with
/// a test CA made by openssl, client certificates, bearer tokens, and several backends balanced round-robin with
/// health checks (static lists and dns:///).
/// </summary>
public sealed class GrpcChannelsTests
{
    private static readonly byte[] Hello = GrpcInteropFixtures.Blobs()["HELLOWORLD"];
    private static readonly B3Digest HelloDigest = Blake3.Hash(Hello);
    private static readonly string HelloKey = Convert.ToHexStringLower(HelloDigest.ToByteString().Span); // as the servers count

    [Fact]
    public async Task TlsWithATestCaAndClientCertificates()
    {
        using var temp = new GrpcTempDirectory();
        var pki = await TestPki.CreateAsync(temp);
        await using var server = await PythonCastoreServer.StartAsync(
            GrpcInteropFixtures.ServerFixture(), "tvix", null, "--tls", pki.ServerCert, pki.ServerKey);
        string port = server.Target.Split(':')[1];
        string address = $"grpc+https://localhost:{port}";

        await using (var blobs = await GrpcBlobService.OpenAsync($"{address}?ca={pki.Ca}&wait-connect=1&cache=none"))
        {
            using var reader = await blobs.OpenReadAsync(HelloDigest);
            Assert.Equal(Hello, await GrpcInteropClientTests.ReadAllAsync(reader!));
        }

        // The test CA is not among the system's roots: the handshake fails, naming the store.
        var untrusted = await Assert.ThrowsAsync<StoreUnavailableException>(() =>
            GrpcBlobService.OpenAsync($"{address}?wait-connect=1", new GrpcStoreOptions { Retry = GrpcRetryPolicy.None }));
        Assert.Contains("cannot reach the store " + address, untrusted.Message);

        // A server that wants a client certificate from the CA.
        await using var strict = await PythonCastoreServer.StartAsync(
            GrpcInteropFixtures.ServerFixture(), "tvix", null, "--tls", pki.ServerCert, pki.ServerKey, "--client-ca", pki.Ca);
        string strictAddress = $"grpc+https://localhost:{strict.Target.Split(':')[1]}?ca={pki.Ca}";
        await using (var blobs = await GrpcBlobService.OpenAsync($"{strictAddress}&cert={pki.ClientCert}&key={pki.ClientKey}&cache=none"))
        {
            Assert.True(await blobs.HasAsync(HelloDigest));
        }

        await using (var anonymous = await GrpcBlobService.OpenAsync(strictAddress, new GrpcStoreOptions { Retry = GrpcRetryPolicy.None }))
        {
            await Assert.ThrowsAsync<StoreUnavailableException>(async () => await anonymous.HasAsync(HelloDigest));
        }
    }

    [Fact]
    public async Task BearerTokenIsSentAndAMissingOneIsRefused()
    {
        using var temp = new GrpcTempDirectory();
        await File.WriteAllTextAsync(temp.File("token"), "s3cret-token\n");
        await File.WriteAllTextAsync(temp.File("wrong"), "not-it");
        await using var server = await PythonCastoreServer.StartAsync(GrpcInteropFixtures.ServerFixture(), "tvix", null, "--token", "s3cret-token");

        // Over h2c, as on loopback: allowed on purpose (UnsafeUseInsecureChannelCallCredentials).
        await using (var blobs = await GrpcBlobService.OpenAsync(server.StoreAddress($"?token-file={temp.File("token")}&cache=none")))
        {
            Assert.True(await blobs.HasAsync(HelloDigest));
        }

        var counts = await server.CountsAsync("authorized");
        Assert.True(counts.GetValueOrDefault("/tvix.castore.v1.BlobService/Stat") >= 1, string.Join(", ", counts));

        foreach (string query in new[] { "?cache=none", $"?token-file={temp.File("wrong")}&cache=none" })
        {
            await using var blobs = await GrpcBlobService.OpenAsync(server.StoreAddress(query));
            var e = await Assert.ThrowsAsync<StoreUnavailableException>(async () => await blobs.HasAsync(HelloDigest));
            Assert.Contains("unauthenticated", e.Message);
            Assert.Contains("token", e.Message);
        }

        var missing = Assert.Throws<StoreAddressException>(() => GrpcBlobService.Open(server.StoreAddress($"?token-file={temp.File("absent")}")));
        Assert.Contains("cannot read the token file '" + temp.File("absent") + "'", missing.Message);

        // The default token file of every client. (Other test classes' servers ignore tokens, and the file exists while
        // the variable is set, so setting it for the process disturbs nobody; this class's tests run one at a time.)
        Environment.SetEnvironmentVariable(GrpcChannels.TokenFileVariable, temp.File("token"));
        try
        {
            await using (var blobs = await GrpcBlobService.OpenAsync(server.StoreAddress("?cache=none")))
            {
                Assert.True(await blobs.HasAsync(HelloDigest));
            }

        }
        finally
        {
            Environment.SetEnvironmentVariable(GrpcChannels.TokenFileVariable, null);
        }
    }

    [Fact]
    public async Task SeveralAddressesAreUsedRoundRobin()
    {
        await using var a = await PythonCastoreServer.StartAsync(GrpcInteropFixtures.ServerFixture(), "tvix", null, "--health", "SERVING");
        await using var b = await PythonCastoreServer.StartAsync(GrpcInteropFixtures.ServerFixture(), "tvix", null);
        await using var c = await PythonCastoreServer.StartAsync(GrpcInteropFixtures.ServerFixture(), "tvix", null);
        using var channel = GrpcChannels.Create([a.Endpoint, b.Endpoint, c.Endpoint]);
        var client = new BlobService.BlobServiceClient(channel);
        for (int i = 0; i < 30; i++)
        {
            await client.StatAsync(new StatBlobRequest { Digest = HelloDigest.ToByteString() }, deadline: DateTime.UtcNow.AddMinutes(1));
        }

        int[] seen = [.. await Task.WhenAll(new[] { a, b, c }.Select(async s => (await s.CountsAsync("stat")).GetValueOrDefault(HelloKey)))];
        Assert.Equal(30, seen.Sum());
        Assert.All(seen, n => Assert.True(n > 0, $"a backend was never used: {string.Join(", ", seen)}"));
    }

    [Fact]
    public async Task DeadAndNotServingBackendsAreSkipped()
    {
        await using var live = await PythonCastoreServer.StartAsync(GrpcInteropFixtures.ServerFixture(), "tvix", null, "--health", "SERVING");
        await using var draining = await PythonCastoreServer.StartAsync(GrpcInteropFixtures.ServerFixture(), "tvix", null, "--health", "NOT_SERVING");
        var dead = GrpcEndpoint.Tcp("127.0.0.1", ClosedPort());
        using var channel = GrpcChannels.Create([dead, live.Endpoint, draining.Endpoint], new GrpcChannelSettings { Retry = GrpcRetryPolicy.None });
        var client = new BlobService.BlobServiceClient(channel);
        for (int i = 0; i < 20; i++)
        {
            await client.StatAsync(new StatBlobRequest { Digest = HelloDigest.ToByteString() }, deadline: DateTime.UtcNow.AddMinutes(1));
        }

        Assert.Equal(20, (await live.CountsAsync("stat")).GetValueOrDefault(HelloKey));
        Assert.Equal(0, (await draining.CountsAsync("stat")).GetValueOrDefault(HelloKey));
        Assert.True((await draining.CountsAsync("health")).Values.Sum() > 0, "the draining backend's health was never checked");
    }

    [Fact]
    public async Task DnsNameOverLocalhost()
    {
        // localhost resolves to 127.0.0.1 and usually ::1; the server listens on 127.0.0.1 only, so ::1 is a dead backend.
        await using var server = await PythonCastoreServer.StartAsync(GrpcInteropFixtures.ServerFixture(), "tvix", null);
        string address = $"dns:///localhost:{server.Target.Split(':')[1]}?cache=none";
        await using (var blobs = await GrpcBlobService.OpenAsync(address))
        {
            for (int i = 0; i < 5; i++)
            {
                Assert.True(await blobs.HasAsync(HelloDigest));
            }
        }

        Assert.Equal(5, (await server.CountsAsync("stat")).GetValueOrDefault(HelloKey));
        Assert.Equal(StoreKind.GrpcDns, StoreAddress.Parse(address).Kind);
    }

    [Fact]
    public void BadFilesAndMixedAddressesAreClearErrors()
    {
        using var temp = new GrpcTempDirectory();
        var noCa = Assert.Throws<StoreAddressException>(() => GrpcChannels.Create(GrpcEndpoint.Parse($"grpc+https://localhost:1?ca={temp.File("ca.pem")}")));
        Assert.Contains($"cannot read the CA file '{temp.File("ca.pem")}'", noCa.Message);

        File.WriteAllText(temp.File("empty.pem"), "");
        var empty = Assert.Throws<StoreAddressException>(() => GrpcChannels.Create(GrpcEndpoint.Parse($"grpc+https://localhost:1?ca={temp.File("empty.pem")}")));
        Assert.Contains("holds no PEM certificate", empty.Message);

        var noCert = Assert.Throws<StoreAddressException>(() => GrpcChannels.Create(
            GrpcEndpoint.Parse($"grpc+https://localhost:1?cert={temp.File("c.pem")}&key={temp.File("k.pem")}")));
        Assert.Contains($"cannot load the client certificate '{temp.File("c.pem")}'", noCert.Message);

        var mixed = Assert.Throws<StoreAddressException>(() => GrpcChannels.Create(
            [GrpcEndpoint.Parse("grpc+http://127.0.0.1:1"), GrpcEndpoint.Parse("grpc+https://127.0.0.1:2")]));
        Assert.Contains("differ in TLS or credentials", mixed.Message);

        var unix = Assert.Throws<StoreAddressException>(() => GrpcChannels.Create(
            [GrpcEndpoint.Parse("grpc+http://127.0.0.1:1"), GrpcEndpoint.Parse("grpc+unix:///run/x.sock")]));
        Assert.Contains("unix socket unix:/run/x.sock cannot be one of several backends", unix.Message);
    }

    private static int ClosedPort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>A CA, a server certificate for localhost/127.0.0.1 and a client certificate, made by openssl.</summary>
    private sealed record TestPki(string Ca, string ServerCert, string ServerKey, string ClientCert, string ClientKey)
    {
        public static async Task<TestPki> CreateAsync(GrpcTempDirectory temp)
        {
            string F(string name) => temp.File(name);
            await File.WriteAllTextAsync(F("server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
            await File.WriteAllTextAsync(F("client.ext"), "extendedKeyUsage=clientAuth\n");
            await OpenSslAsync("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", F("ca.key"),
                "-out", F("ca.pem"), "-days", "2", "-subj", "/CN=tvix-fuse-build test CA",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
            foreach (string who in new[] { "server", "client" })
            {
                await OpenSslAsync("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", F($"{who}.key"),
                    "-out", F($"{who}.csr"), "-subj", who == "server" ? "/CN=localhost" : "/CN=test client");
                await OpenSslAsync("x509", "-req", "-in", F($"{who}.csr"), "-CA", F("ca.pem"), "-CAkey", F("ca.key"), "-CAcreateserial",
                    "-out", F($"{who}.pem"), "-days", "2", "-extfile", F($"{who}.ext"));
            }

            return new TestPki(F("ca.pem"), F("server.pem"), F("server.key"), F("client.pem"), F("client.key"));
        }

        private static async Task OpenSslAsync(params string[] arguments)
        {
            var psi = new ProcessStartInfo("openssl", arguments) { RedirectStandardError = true, RedirectStandardOutput = true };
            using var process = Process.Start(psi)!;
            var stderr = process.StandardError.ReadToEndAsync();
            await process.StandardOutput.ReadToEndAsync();
            await process.WaitForExitAsync();
            Assert.True(process.ExitCode == 0, $"openssl {string.Join(' ', arguments)} failed: {await stderr}");
        }
    }
}
