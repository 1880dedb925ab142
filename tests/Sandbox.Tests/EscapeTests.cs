using System.Net;
using System.Net.Sockets;
using System.Text;

namespace TvixFuseBuild.Sandbox.Tests;

/// <summary>
/// Escapes that need more than a script and its output (most attempts are in <see cref="EscapeSuite"/>, run as root
/// and as an unprivileged caller), and the network that a build given access does reach.
/// </summary>
[Collection("sandbox")]
public sealed class EscapeTests
{
    private const string B = SandboxTree.Busybox;

    [Fact]
    public async Task TheHostIsReachableWithNetworkAccess()
    {
        using var tree = new SandboxTree();
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        int port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var received = new List<string>();
        using var stop = new CancellationTokenSource();
        var server = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                using var client = await listener.AcceptTcpClientAsync(stop.Token);
                using var reader = new StreamReader(client.GetStream(), Encoding.UTF8);
                string text = await reader.ReadToEndAsync(stop.Token);
                lock (received)
                {
                    received.Add(text);
                }
            }
        });

        // Without it, the same connection is refused: EscapeSuite's network-without-access.
        string connect = $"echo from-sandbox | {B} nc -w 3 127.0.0.1 {port}";
        string output = await Run.Ok(SandboxEnvironmentTests.Copy(tree.Sh(connect + " && echo connected"), network: true));
        Assert.Equal("connected\n", output);
        await Task.Delay(200);
        lock (received)
        {
            Assert.Equal(["from-sandbox\n"], received);
        }

        stop.Cancel();
        listener.Stop();
        await Task.WhenAny(server, Task.Delay(1000));
    }
}
