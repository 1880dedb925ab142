using System.Diagnostics;
using System.Security.Cryptography.X509Certificates;

namespace TvixFuseBuild.Server.Tests;

/// <summary>
/// A test PKI made with openssl: a CA, a server certificate for localhost and 127.0.0.1 signed by it, a client
/// certificate signed by it, and a client certificate signed by another CA. PEM files in a temporary directory.
/// Also used by tests/Tool.Tests (the NativeAOT tool's serve with TLS).
/// </summary>
internal sealed class TestCertificates : IDisposable
{
    private readonly string _directory = System.IO.Directory.CreateTempSubdirectory("tfb-pki-").FullName;

    private TestCertificates()
    {
    }

    public string CaCertificate => PathOf("ca.pem");

    public string ServerCertificate => PathOf("server.pem");

    public string ServerKey => PathOf("server.key");

    public string ClientCertificate => PathOf("client.pem");

    public string ClientKey => PathOf("client.key");

    public string StrangerCertificate => PathOf("stranger.pem");

    public string StrangerKey => PathOf("stranger.key");

    public string Directory => _directory;

    public static TestCertificates Create()
    {
        var pki = new TestCertificates();
        try
        {
            File.WriteAllText(pki.PathOf("server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
            File.WriteAllText(pki.PathOf("client.ext"), "extendedKeyUsage=clientAuth\n");
            pki.OpenSsl("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=tvix-fuse-build-test-ca");
            pki.OpenSsl("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout other-ca.key -out other-ca.pem -days 2 -subj /CN=some-other-ca");
            pki.Issue("server", "localhost", "ca", "server.ext");
            pki.Issue("client", "builder-client", "ca", "client.ext");
            pki.Issue("stranger", "stranger", "other-ca", "client.ext");
            return pki;
        }
        catch
        {
            pki.Dispose();
            throw;
        }
    }

    public X509Certificate2 LoadCa() => X509CertificateLoader.LoadCertificateFromFile(CaCertificate);

    public static X509Certificate2 LoadWithKey(string certificate, string key)
    {
        using var pem = X509Certificate2.CreateFromPemFile(certificate, key);
        return X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
    }

    public void Dispose() => System.IO.Directory.Delete(_directory, recursive: true);

    private string PathOf(string name) => Path.Combine(_directory, name);

    private void Issue(string name, string commonName, string ca, string extensions)
    {
        OpenSsl($"req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout {name}.key -out {name}.csr -subj /CN={commonName}");
        OpenSsl($"x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial -out {name}.pem -days 2 -extfile {extensions}");
    }

    private void OpenSsl(string arguments)
    {
        const string OpenSslPath = "/usr/bin/openssl";
        Assert.True(File.Exists(OpenSslPath), $"{OpenSslPath} is missing: the TLS tests need Debian's openssl (run scripts/setup)");
        var psi = new ProcessStartInfo(OpenSslPath)
        {
            WorkingDirectory = _directory,
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        };
        foreach (string argument in arguments.Split(' '))
        {
            psi.ArgumentList.Add(argument);
        }

        using var process = Process.Start(psi)!;
        var stderr = process.StandardError.ReadToEndAsync();
        process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"openssl {arguments} failed: {stderr.Result}");
    }
}
