using System.Runtime.InteropServices;
using System.Text;

namespace TvixFuseBuild.Build.Nix;

/// <summary>
/// Read-only queries against the local Nix store's own database (<c>/nix/var/nix/db/db.sqlite</c>, schema 10, the
/// one Nix 2.x writes) through the system's libsqlite3, as <c>nix-store --query</c> answers them without a process per
/// question. Only SELECTs are run; the connection is opened read-write, as nix-store opens it, so that closing it
/// removes SQLite's <c>-wal</c>/<c>-shm</c> files again as Nix does (a read-only connection would leave them behind).
/// </summary>
internal sealed partial class NixDatabase : IDisposable
{
    private const string Library = "libsqlite3.so.0";
    private const int Ok = 0, Row = 100, Done = 101;
    private const int OpenReadWrite = 0x2, OpenNoMutex = 0x8000, OpenPrivateCache = 0x40000;
    private const string DatabaseDirectory = "/nix/var/nix/db";

    private nint _db;

    private NixDatabase(nint db) => _db = db;

    /// <summary>
    /// The database when queries can go to it: the default local store (no NIX_REMOTE other than local, no store, state
    /// or database directory moved by the environment or nix.conf), schema 10, libsqlite3 present and the database
    /// openable (root, as the tool runs). Null otherwise: the caller asks nix-store.
    /// </summary>
    public static NixDatabase? TryOpen()
    {
        if (Environment.GetEnvironmentVariable("NIX_REMOTE") is { Length: > 0 } remote && remote != "local"
            || Environment.GetEnvironmentVariable("NIX_STORE_DIR") is { Length: > 0 }
            || Environment.GetEnvironmentVariable("NIX_STORE") is { Length: > 0 }
            || Environment.GetEnvironmentVariable("NIX_STATE_DIR") is { Length: > 0 }
            || Environment.GetEnvironmentVariable("NIX_DB_DIR") is { Length: > 0 }
            || Environment.GetEnvironmentVariable("NIX_CONFIG") is { Length: > 0 } config && MovesStore(config))
        {
            return null;
        }

        try
        {
            if (File.ReadAllText(Path.Combine(DatabaseDirectory, "schema")).Trim() != "10"
                || File.Exists("/etc/nix/nix.conf") && MovesStore(File.ReadAllText("/etc/nix/nix.conf")))
            {
                return null;
            }

            string file = Path.Combine(DatabaseDirectory, "db.sqlite");
            if (!File.Exists(file))
            {
                return null;
            }

            if (sqlite3_open_v2(file, out nint db, OpenReadWrite | OpenNoMutex | OpenPrivateCache, 0) != Ok)
            {
                _ = sqlite3_close_v2(db);
                return null;
            }

            // Nix writes in WAL mode, so readers wait only while a writer recovers or checkpoints.
            var opened = new NixDatabase(db);
            _ = sqlite3_busy_timeout(db, 60_000);
            return opened;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }
    }

    /// <summary>The paths among <paramref name="paths"/> that are not valid, in the given order.</summary>
    public List<string> InvalidPaths(IEnumerable<string> paths)
    {
        var invalid = new List<string>();
        foreach (string path in paths)
        {
            if (Query("select 1 from ValidPaths where path = ?1", [path]).Count == 0)
            {
                invalid.Add(path);
            }
        }

        return invalid;
    }

    /// <summary>The closure of <paramref name="paths"/> (all valid), each path with its NAR hash as <c>sha256:NIXBASE32</c>, by path.</summary>
    public (List<string> Paths, List<string> NarHashes) Closure(IReadOnlyCollection<string> paths)
    {
        var seeds = string.Join(", ", Enumerable.Range(1, paths.Count).Select(i => $"?{i}"));
        var rows = Query(
            $"with recursive closure(id) as (select id from ValidPaths where path in ({seeds}) " +
            "union select reference from Refs join closure on Refs.referrer = closure.id) " +
            "select path, hash from ValidPaths join closure using (id) order by path",
            [.. paths]);
        return ([.. rows.Select(r => r[0])], [.. rows.Select(r => NarHash(r[0], r[1]))]);
    }

    /// <summary>The store paths <paramref name="path"/> (valid) refers to, by path.</summary>
    public List<string> References(string path)
    {
        var id = Query("select id from ValidPaths where path = ?1", [path]);
        if (id.Count == 0)
        {
            throw new IOException($"path '{path}' is not valid");
        }

        return [.. Query(
            "select p.path from Refs join ValidPaths p on p.id = Refs.reference where Refs.referrer = ?1 order by p.path",
            [id[0][0]]).Select(r => r[0])];
    }

    public void Dispose()
    {
        if (_db != 0)
        {
            _ = sqlite3_close_v2(_db);
            _db = 0;
        }
    }

    /// <summary>Nix stores <c>sha256:BASE16</c>; nix-store --query --hash prints <c>sha256:NIXBASE32</c>.</summary>
    private static string NarHash(string path, string stored)
    {
        if (!stored.StartsWith("sha256:", StringComparison.Ordinal) || stored.Length != 7 + 64)
        {
            throw new IOException($"the Nix database holds an unexpected NAR hash for {path}: {stored}");
        }

        return "sha256:" + NixBase32.Encode(Convert.FromHexString(stored.AsSpan(7)));
    }

    private static bool MovesStore(string config) =>
        config.Split('\n').Select(l => l.Split('#')[0].Trim())
            .Any(l => l.Split('=')[0].Trim() is "store" or "state-dir" or "store-dir" or "nix-store-dir" or "include" or "!include");

    private List<string[]> Query(string sql, string[] parameters)
    {
        ObjectDisposedException.ThrowIf(_db == 0, this);
        Check(sqlite3_prepare_v2(_db, sql, -1, out nint statement, 0), "prepare");
        try
        {
            for (int i = 0; i < parameters.Length; i++)
            {
                byte[] text = Encoding.UTF8.GetBytes(parameters[i]);
                Check(sqlite3_bind_text(statement, i + 1, text, text.Length, -1), "bind");
            }

            var rows = new List<string[]>();
            int columns = -1;
            while (true)
            {
                int status = sqlite3_step(statement);
                if (status == Done)
                {
                    return rows;
                }

                Check(status == Row ? Ok : status, "step");
                if (columns < 0)
                {
                    columns = sqlite3_column_count(statement);
                }

                string[] row = new string[columns];
                for (int c = 0; c < columns; c++)
                {
                    row[c] = Marshal.PtrToStringUTF8(sqlite3_column_text(statement, c)) ?? "";
                }

                rows.Add(row);
            }
        }
        finally
        {
            _ = sqlite3_finalize(statement);
        }
    }

    private void Check(int status, string operation)
    {
        if (status != Ok)
        {
            throw new IOException($"reading the Nix database {DatabaseDirectory}/db.sqlite: sqlite3 {operation} failed ({status}): {Marshal.PtrToStringUTF8(sqlite3_errmsg(_db))}");
        }
    }

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int sqlite3_open_v2(string filename, out nint db, int flags, nint vfs);

    [LibraryImport(Library)]
    private static partial int sqlite3_close_v2(nint db);

    [LibraryImport(Library)]
    private static partial int sqlite3_busy_timeout(nint db, int milliseconds);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int sqlite3_prepare_v2(nint db, string sql, int bytes, out nint statement, nint tail);

    [LibraryImport(Library)]
    private static partial int sqlite3_bind_text(nint statement, int index, byte[] text, int bytes, nint destructor);

    [LibraryImport(Library)]
    private static partial int sqlite3_step(nint statement);

    [LibraryImport(Library)]
    private static partial int sqlite3_column_count(nint statement);

    [LibraryImport(Library)]
    private static partial nint sqlite3_column_text(nint statement, int column);

    [LibraryImport(Library)]
    private static partial int sqlite3_finalize(nint statement);

    [LibraryImport(Library)]
    private static partial nint sqlite3_errmsg(nint db);
}
