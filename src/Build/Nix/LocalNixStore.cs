using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Build.Nix;

/// <summary>
/// The local Nix store (<c>/nix/store</c>): queries from Nix's database when it can be read directly (one process
/// fewer per question; see <see cref="NixDatabase"/>), otherwise through <c>nix-store</c>; imports and GC roots
/// always through <c>nix-store</c>.
/// </summary>
public sealed class LocalNixStore(string nixStore = "nix-store") : IDisposable
{
    private const ulong ExportMagic = 0x4558494e;

    private readonly Lazy<NixDatabase?> _database = new(() => nixStore == "nix-store" ? NixDatabase.TryOpen() : null);

    /// <summary>A store that always asks nix-store (to compare the database's answers with it).</summary>
    internal static LocalNixStore ProcessesOnly() => new("nix-store", database: false);

    private LocalNixStore(string nixStore, bool database)
        : this(nixStore)
    {
        if (!database)
        {
            _database = new((NixDatabase?)null);
        }
    }

    /// <summary>Whether queries go to Nix's database rather than to nix-store processes.</summary>
    internal bool ReadsDatabase => _database.Value is not null;

    public void Dispose()
    {
        if (_database.IsValueCreated)
        {
            _database.Value?.Dispose();
        }
    }

    /// <summary>The paths among <paramref name="paths"/> that are not valid in the Nix store.</summary>
    public async Task<IReadOnlyList<string>> InvalidPathsAsync(IReadOnlyCollection<string> paths, CancellationToken cancellationToken)
    {
        if (paths.Count == 0)
        {
            return [];
        }

        if (_database.Value is { } database)
        {
            return database.InvalidPaths(paths);
        }

        return Lines(await RunAsync(["--check-validity", "--print-invalid", .. paths], null, cancellationToken).ConfigureAwait(false));
    }

    /// <summary>The closure of <paramref name="paths"/> (every path they reference, transitively, and themselves).</summary>
    public async Task<IReadOnlyList<string>> ClosureAsync(IReadOnlyCollection<string> paths, CancellationToken cancellationToken) =>
        paths.Count == 0 ? [] : Lines(await RunAsync(["--query", "--requisites", .. paths], null, cancellationToken).ConfigureAwait(false));

    /// <summary>The closure of <paramref name="paths"/> (all valid) with the NAR hash of each path (<c>sha256:NIXBASE32</c>).</summary>
    public async Task<(IReadOnlyList<string> Paths, IReadOnlyList<string> NarHashes)> ClosureWithHashesAsync(
        IReadOnlyCollection<string> paths, CancellationToken cancellationToken)
    {
        if (paths.Count > 0 && _database.Value is { } database)
        {
            return database.Closure(paths);
        }

        var closure = await ClosureAsync(paths, cancellationToken).ConfigureAwait(false);
        return (closure, await NarHashesAsync(closure, cancellationToken).ConfigureAwait(false));
    }

    /// <summary>The store paths <paramref name="path"/> refers to, as registered in the Nix database.</summary>
    public async Task<IReadOnlyList<string>> ReferencesAsync(string path, CancellationToken cancellationToken) =>
        _database.Value is { } database
            ? database.References(path)
            : Lines(await RunAsync(["--query", "--references", path], null, cancellationToken).ConfigureAwait(false));

    /// <summary>The NAR hash of each path (<c>sha256:NIXBASE32</c>), in order.</summary>
    public async Task<IReadOnlyList<string>> NarHashesAsync(IReadOnlyList<string> paths, CancellationToken cancellationToken)
    {
        if (paths.Count == 0)
        {
            return [];
        }

        var hashes = Lines(await RunAsync(["--query", "--hash", .. paths], null, cancellationToken).ConfigureAwait(false));
        return hashes.Count == paths.Count ? hashes : throw new IOException($"nix-store --query --hash printed {hashes.Count} hashes for {paths.Count} paths");
    }

    /// <summary>
    /// Registers each node as the valid store path given with its references (and deriver), as <c>nix-store --import</c>
    /// of an export: Nix unpacks each NAR at that exact path. A path's references must be valid or come before it.
    /// </summary>
    public async Task ImportAsync(
        IReadOnlyList<(string Path, Node Node, IReadOnlyCollection<string> References)> paths, string? deriver, CastoreStore store,
        CancellationToken cancellationToken)
    {
        var pending = paths.ToList();
        var ordered = new List<(string Path, Node Node, IReadOnlyCollection<string> References)>();
        while (pending.Count > 0)
        {
            // Outputs may refer to each other (never in a cycle, which Nix refuses too): the referenced ones first.
            int next = pending.FindIndex(p => p.References.All(r => r == p.Path || pending.All(q => q.Path != r)));
            if (next < 0)
            {
                throw new IOException($"the outputs {string.Join(", ", pending.Select(p => p.Path))} refer to each other in a cycle, which Nix cannot register");
            }

            ordered.Add(pending[next]);
            pending.RemoveAt(next);
        }

        await RunAsync(["--import"], async stdin =>
        {
            foreach (var (path, node, references) in ordered)
            {
                await Number(stdin, 1, cancellationToken).ConfigureAwait(false);
                await NarWriter.WriteAsync(node, store, stdin, cancellationToken).ConfigureAwait(false);
                await Number(stdin, ExportMagic, cancellationToken).ConfigureAwait(false);
                await String(stdin, path, cancellationToken).ConfigureAwait(false);
                await Number(stdin, (ulong)references.Count, cancellationToken).ConfigureAwait(false);
                foreach (string reference in references.Order(StringComparer.Ordinal))
                {
                    await String(stdin, reference, cancellationToken).ConfigureAwait(false);
                }

                await String(stdin, deriver ?? "", cancellationToken).ConfigureAwait(false);
                await Number(stdin, 0, cancellationToken).ConfigureAwait(false);
            }

            await Number(stdin, 0, cancellationToken).ConfigureAwait(false);
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Makes <paramref name="link"/> a symlink to <paramref name="path"/> registered as an indirect GC root, as nix-build does with ./result.</summary>
    public Task AddRootAsync(string path, string link, CancellationToken cancellationToken) =>
        RunAsync(["--add-root", link, "--indirect", "--realise", path], null, cancellationToken);

    private static async Task Number(Stream stream, ulong value, CancellationToken cancellationToken)
    {
        byte[] bytes = new byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, value);
        await stream.WriteAsync(bytes, cancellationToken).ConfigureAwait(false);
    }

    private static async Task String(Stream stream, string value, CancellationToken cancellationToken)
    {
        byte[] bytes = Encoding.UTF8.GetBytes(value);
        await Number(stream, (ulong)bytes.Length, cancellationToken).ConfigureAwait(false);
        await stream.WriteAsync(bytes, cancellationToken).ConfigureAwait(false);
        await stream.WriteAsync(new byte[(8 - (bytes.Length % 8)) % 8], cancellationToken).ConfigureAwait(false);
    }

    private static List<string> Lines(string text) => [.. text.Split('\n', StringSplitOptions.RemoveEmptyEntries)];

    private async Task<string> RunAsync(IReadOnlyList<string> arguments, Func<Stream, Task>? input, CancellationToken cancellationToken)
    {
        var start = new ProcessStartInfo(nixStore)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = input is not null,
            UseShellExecute = false,
        };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        Process process;
        try
        {
            process = Process.Start(start) ?? throw new IOException($"could not start {nixStore}");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new IOException($"could not run {nixStore} ({e.Message}); is Nix installed (scripts/setup installs nix-bin)?");
        }

        using (process)
        {
            var stdout = process.StandardOutput.ReadToEndAsync(cancellationToken);
            var stderr = process.StandardError.ReadToEndAsync(cancellationToken);
            try
            {
                if (input is not null)
                {
                    try
                    {
                        await input(process.StandardInput.BaseStream).ConfigureAwait(false);
                    }
                    catch (IOException)
                    {
                        // nix-store stopped reading; its exit status and message say why.
                    }
                    finally
                    {
                        process.StandardInput.Close();
                    }
                }

                await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                process.Kill();
                await process.WaitForExitAsync(CancellationToken.None).ConfigureAwait(false);
                throw;
            }

            string output = await stdout.ConfigureAwait(false);
            string error = (await stderr.ConfigureAwait(false)).Trim();
            if (process.ExitCode != 0)
            {
                throw new IOException($"{nixStore} {arguments[0]} failed (exit status {process.ExitCode}): {error}");
            }

            return output;
        }
    }
}
