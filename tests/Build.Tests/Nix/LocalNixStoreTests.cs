using TvixFuseBuild.Build.Nix;

namespace TvixFuseBuild.Build.Tests.Nix;

/// <summary>
/// The local Nix store's queries answered from Nix's database (as <c>drv</c> asks them) against the same queries asked
/// of real <c>nix-store</c> processes (Nix 2.8, scripts/setup installs it), on paths this test puts in the store: a
/// source tree and a derivation referring to it, so the closure has references.
/// </summary>
public sealed class LocalNixStoreTests : IDisposable
{
    private readonly string _temp = Directory.CreateTempSubdirectory("tvix-fuse-build-nixdb-test-").FullName;
    private readonly List<string> _created = [];

    public void Dispose()
    {
        if (_created.Count > 0)
        {
            // The derivation first: it refers to the source.
            NixCommand.Output("nix-store", ["--delete", .. Enumerable.Reverse(_created)]);
        }

        Directory.Delete(_temp, recursive: true);
    }

    [Fact]
    public async Task DatabaseAnswersAsNixStoreDoes()
    {
        string source = Path.Combine(_temp, "source");
        Directory.CreateDirectory(Path.Combine(source, "bin"));
        File.WriteAllText(Path.Combine(source, "nonce"), Guid.NewGuid().ToString("N"));
        File.CreateSymbolicLink(Path.Combine(source, "bin", "link"), "../nonce");
        string sourcePath = NixCommand.Output("nix-store", ["--add", source]).Trim();
        _created.Add(sourcePath);
        string expression = Path.Combine(_temp, "d.nix");
        File.WriteAllText(expression, $$"""
            builtins.derivation { name = "nixdb-test"; system = "x86_64-linux"; builder = "/bin/sh"; src = builtins.storePath {{sourcePath}}; }
            """);
        string drv = NixCommand.Output("nix-instantiate", [expression]).Trim();
        _created.Add(drv);
        string missing = NixStorePaths.StoreDir + "/00000000000000000000000000000000-not-there";

        using var database = new LocalNixStore();
        using var processes = LocalNixStore.ProcessesOnly();
        Assert.True(database.ReadsDatabase, "the Nix database at /nix/var/nix/db could not be read directly");
        Assert.False(processes.ReadsDatabase);

        string[] asked = [missing, drv, sourcePath, missing + "2"];
        var invalid = await database.InvalidPathsAsync(asked, CancellationToken.None);
        Assert.Equal([missing, missing + "2"], invalid);
        Assert.Equal(await processes.InvalidPathsAsync(asked, CancellationToken.None), invalid);

        var (closure, hashes) = await database.ClosureWithHashesAsync([drv], CancellationToken.None);
        var (expectedClosure, expectedHashes) = await processes.ClosureWithHashesAsync([drv], CancellationToken.None);
        Assert.Equal([.. new[] { drv, sourcePath }.Order(StringComparer.Ordinal)], closure);
        Assert.Equal(
            expectedClosure.Zip(expectedHashes).OrderBy(p => p.First, StringComparer.Ordinal),
            closure.Zip(hashes));
        Assert.All(hashes, h => Assert.Matches("^sha256:[0-9a-z]{52}$", h));

        Assert.Equal([sourcePath], await database.ReferencesAsync(drv, CancellationToken.None));
        Assert.Equal(await processes.ReferencesAsync(drv, CancellationToken.None), await database.ReferencesAsync(drv, CancellationToken.None));
        Assert.Empty(await database.ReferencesAsync(sourcePath, CancellationToken.None));
        var notValid = await Assert.ThrowsAsync<IOException>(() => database.ReferencesAsync(missing, CancellationToken.None));
        Assert.Contains(missing, notValid.Message);
    }
}
