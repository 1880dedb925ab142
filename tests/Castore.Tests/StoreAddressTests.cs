using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Stores.Local;

namespace TvixFuseBuild.Castore.Tests;

public sealed class StoreAddressTests
{
    [Theory]
    [InlineData("memory://", StoreKind.Memory)]
    [InlineData("memory:", StoreKind.Memory)]
    [InlineData("local:///var/lib/store", StoreKind.Local)]
    [InlineData("/var/lib/store", StoreKind.Local)]
    [InlineData("grpc+http://localhost:8000", StoreKind.GrpcHttp)]
    [InlineData("grpc+http://[::1]:8000", StoreKind.GrpcHttp)]
    [InlineData("grpc+https://store.example:443", StoreKind.GrpcHttps)]
    [InlineData("grpc+unix:///run/store.sock", StoreKind.GrpcUnix)]
    [InlineData("grpc+unix:///run/store.sock?wait-connect=1", StoreKind.GrpcUnix)]
    public void ValidAddresses(string address, StoreKind kind) => Assert.Equal(kind, StoreAddress.Parse(address).Kind);

    [Fact]
    public void Details()
    {
        Assert.Equal("/var/lib/store", StoreAddress.Parse("local:///var/lib/store").Path);
        Assert.Equal(LocalStore.DefaultRoot, StoreAddress.Parse("local:").Path);
        var unix = StoreAddress.Parse("grpc+unix:///run/store.sock?wait-connect=1");
        Assert.Equal("/run/store.sock", unix.Path);
        Assert.True(unix.WaitConnect);
        var http = StoreAddress.Parse("grpc+http://[::1]:8000");
        Assert.Equal(8000, http.Port);
        Assert.False(http.WaitConnect);
    }

    [Theory]
    [InlineData("", "empty address")]
    [InlineData("store", "no scheme")]
    [InlineData("sled:///var/lib/store", "unknown scheme 'sled'")]
    [InlineData("memory://foo", "memory:// takes no host")]
    [InlineData("local://host/path", "three slashes")]
    [InlineData("grpc+http://localhost:8000/path", "takes no path")]
    [InlineData("grpc+http://localhost", "no port")]
    [InlineData("grpc+unix://host/run/store.sock", "takes no host")]
    [InlineData("grpc+unix:///a?x=1&x=2", "given twice")]
    public void InvalidAddressesSayWhy(string address, string reason)
    {
        var error = Assert.Throws<StoreAddressException>(() => StoreAddress.Parse(address));
        Assert.Contains(reason, error.Message);
        Assert.Contains("supported:", error.Message);
    }

    [Fact]
    public async Task SeparateBlobAndDirectoryAddresses()
    {
        using var temp = new TempDirectory();
        await using var store = CastoreStore.Open(new StoreOptions(BlobServiceAddress: "memory://", DirectoryServiceAddress: "local://" + temp.Combine("s")));
        Assert.IsType<Stores.Memory.MemoryBlobService>(store.Blobs);
        Assert.IsType<LocalDirectoryService>(store.Directories);
    }
}
