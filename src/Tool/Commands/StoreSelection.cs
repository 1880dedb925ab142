using System.CommandLine;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Tool.Commands;

/// <summary>The store options every command accepts (recursive options of the root command).</summary>
internal static class StoreSelection
{
    public static readonly Option<string?> Store = new("--store")
    {
        Description = $"The castore to use: {StoreAddress.Supported}. Default: the local store in " +
                      "$XDG_DATA_HOME/tvix-fuse-build/store (or ~/.local/share/...), unless BLOB_SERVICE_ADDR/DIRECTORY_SERVICE_ADDR are set.",
        Recursive = true,
        HelpName = "URL",
    };

    public static readonly Option<string?> BlobServiceAddress = new("--blob-service-addr")
    {
        Description = "The blob service's address, when blobs and directories live in different stores (env BLOB_SERVICE_ADDR).",
        Recursive = true,
        HelpName = "URL",
    };

    public static readonly Option<string?> DirectoryServiceAddress = new("--directory-service-addr")
    {
        Description = "The directory service's address (env DIRECTORY_SERVICE_ADDR).",
        Recursive = true,
        HelpName = "URL",
    };

    public static StoreOptions Options(ParseResult parse) =>
        new(parse.GetValue(Store), parse.GetValue(BlobServiceAddress), parse.GetValue(DirectoryServiceAddress));

    public static CastoreStore Open(ParseResult parse) => CastoreStore.Open(Options(parse));
}
