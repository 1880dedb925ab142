using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace TvixFuseBuild.Server;

/// <summary>
/// The server's TLS identity (certificate and key, PEM) and, optionally, the CA that client certificates must chain to.
/// </summary>
public sealed class ServerTls
{
    private ServerTls(X509Certificate2 certificate, X509Certificate2Collection? clientCa)
    {
        Certificate = certificate;
        ClientCa = clientCa;
    }

    public X509Certificate2 Certificate { get; }

    /// <summary>The trust anchors of client certificates. Null: clients are not asked for a certificate.</summary>
    public X509Certificate2Collection? ClientCa { get; }

    /// <summary>
    /// Loads <paramref name="certificateFile"/> (the certificate, possibly followed by its intermediates) and
    /// <paramref name="keyFile"/>, both PEM, and the client CA bundle when given. Throws <see cref="IOException"/>
    /// naming the file and what is wrong with it.
    /// </summary>
    public static ServerTls Load(string certificateFile, string keyFile, string? clientCaFile = null)
    {
        X509Certificate2 certificate;
        try
        {
            using var pem = X509Certificate2.CreateFromPemFile(certificateFile, keyFile);
            // Kestrel wants a key it can use from any thread: a PKCS#12 round trip turns the ephemeral key into one.
            certificate = X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
        }
        catch (Exception e) when (e is CryptographicException or ArgumentException or FormatException or IOException or UnauthorizedAccessException)
        {
            throw new IOException($"cannot load the TLS certificate {certificateFile} with the key {keyFile}: {e.Message}", e);
        }

        if (!certificate.HasPrivateKey)
        {
            throw new IOException($"cannot load the TLS certificate {certificateFile}: the key {keyFile} does not belong to it");
        }

        X509Certificate2Collection? clientCa = null;
        if (clientCaFile is not null)
        {
            clientCa = [];
            try
            {
                clientCa.ImportFromPemFile(clientCaFile);
            }
            catch (Exception e) when (e is CryptographicException or IOException or UnauthorizedAccessException)
            {
                throw new IOException($"cannot load the client CA {clientCaFile}: {e.Message}", e);
            }

            if (clientCa.Count == 0)
            {
                throw new IOException($"cannot load the client CA {clientCaFile}: it holds no PEM certificate");
            }
        }

        return new ServerTls(certificate, clientCa);
    }
}
