using System.CommandLine;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Grpc;
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

    public static readonly Option<bool> Offline = new("--offline")
    {
        Description = "Work from the local cache of a remote store: do not fail when the store cannot be reached (only what the cache " +
                      "lacks needs it). Without this (or ?offline=1 in the address), a remote store that cannot be reached is an error.",
        Recursive = true,
    };

    /// <summary>The client's token; named apart from <c>serve --token-file</c>, the token a server requires.</summary>
    public static readonly Option<string?> GrpcTokenFile = new("--grpc-token-file")
    {
        Description = "Send 'authorization: Bearer TOKEN' to gRPC stores and builders (--builder), TOKEN being this file's content " +
                      $"(surrounding whitespace ignored). An address's own ?token-file= wins; without either, ${GrpcChannels.TokenFileVariable} names the file.",
        Recursive = true,
        HelpName = "FILE",
    };

    public static StoreOptions Options(ParseResult parse) =>
        new(parse.GetValue(Store), parse.GetValue(BlobServiceAddress), parse.GetValue(DirectoryServiceAddress))
        {
            ConnectAtOpen = !parse.GetValue(Offline),
            TokenFile = TokenFile(parse),
        };

    /// <summary>The absolute path of <c>--grpc-token-file</c>, if given.</summary>
    public static string? TokenFile(ParseResult parse) =>
        parse.GetValue(GrpcTokenFile) is { } file
            ? file.Length > 0 && !file.Contains('\0') ? Path.GetFullPath(file) : throw new UsageException("--grpc-token-file needs a file name")
            : null;

    /// <summary>
    /// Opens the selected store. A malformed address is a usage error; a remote store is reached first (so that an
    /// unreachable one fails here, not later with a cache hiding it), on another thread, and a signal interrupts that
    /// wait. A local or memory store opens on the caller's thread: nothing there waits for anyone.
    /// </summary>
    public static CastoreStore Open(ParseResult parse)
    {
        var options = Options(parse);
        var (blobs, directories) = Addresses(options);
        Validate(blobs);
        Validate(directories);

        try
        {
            if (IsHere(blobs) && IsHere(directories))
            {
                return CastoreStore.Open(options);
            }

            var opening = Task.Run(() => CastoreStore.Open(options));
            try
            {
                return opening.WaitAsync(ToolConsole.Stopping).GetAwaiter().GetResult();
            }
            catch (OperationCanceledException) when (!opening.IsCompleted)
            {
                // Closed when it opens after all; the command is over by then.
                _ = opening.ContinueWith(t => t.Result.DisposeAsync(), TaskContinuationOptions.OnlyOnRanToCompletion);
                throw;
            }
        }
        catch (StoreUnavailableException e)
        {
            throw new StoreUnavailableException($"{e.Message} (--offline works from the local cache alone)", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            string address = Describe(options);
            string reason = StoreAddress.Parse(address) is { Kind: StoreKind.Local, Path: { } path } && File.Exists(path)
                ? $"{ToolText.Elide(path)} is a file, not a directory"
                : ToolConsole.IOReason(e);
            throw new StoreAddressException($"cannot open the store {ToolText.Elide(address)}: {reason}");
        }
    }

    /// <summary>
    /// Whether the options and the environment select a remote store, which needs the gRPC client (<see cref="FullTool"/>).
    /// A malformed address is not: opening it reports it.
    /// </summary>
    public static bool UsesRemoteStore(ParseResult parse)
    {
        var (blobs, directories) = Addresses(Options(parse));
        return IsRemote(blobs) || IsRemote(directories);

        static bool IsRemote(string? address)
        {
            try
            {
                return !IsHere(address);
            }
            catch (StoreAddressException)
            {
                return false;
            }
        }
    }

    /// <summary>The addresses <see cref="CastoreStore.Open(StoreOptions)"/> will use, in its order of precedence.</summary>
    private static (string? Blobs, string? Directories) Addresses(StoreOptions options) =>
        (options.BlobServiceAddress ?? options.Store ?? Environment.GetEnvironmentVariable(StoreOptions.BlobServiceAddressVariable),
         options.DirectoryServiceAddress ?? options.Store ?? Environment.GetEnvironmentVariable(StoreOptions.DirectoryServiceAddressVariable));

    /// <summary>True for an address of a store in this process or on this host's filesystem (unset: the default local store).</summary>
    private static bool IsHere(string? address) =>
        string.IsNullOrEmpty(address) || StoreAddress.Parse(address).Kind is StoreKind.Local or StoreKind.Memory;

    private static void Validate(string? address)
    {
        if (string.IsNullOrEmpty(address))
        {
            return;
        }

        try
        {
            if (StoreAddress.Parse(address).Kind is StoreKind.GrpcHttp or StoreKind.GrpcHttps or StoreKind.GrpcUnix or StoreKind.GrpcDns)
            {
                GrpcStoreAddress.Parse(address);
            }
        }
        catch (StoreAddressException e)
        {
            throw new UsageException(e.Message);
        }
    }

    private static string Describe(StoreOptions options) =>
        options.Store ?? options.BlobServiceAddress ?? options.DirectoryServiceAddress ?? StoreAddress.DefaultLocal;
}
