using System.Text;

namespace TvixFuseBuild.Castore.Stores.Local;

/// <summary>One explicit root: a name and the digest of a directory or blob it keeps, with its closure.</summary>
public sealed record StoreRoot(string Name, B3Digest Digest);

/// <summary>
/// Explicit garbage-collection roots: <c>ROOT/roots/NAME</c> holding one digest. Names are simple tokens (letters,
/// digits, <c>. _ + -</c>, not starting with a dot, at most 100 characters), so a name is never a path.
/// </summary>
public sealed class StoreRoots
{
    public const int MaxNameLength = 100;

    private readonly LocalStore _store;

    internal StoreRoots(LocalStore store)
    {
        _store = store;
        Directory = Path.Combine(store.Root, "roots");
    }

    internal string Directory { get; }

    public static bool IsValidName(string name, out string? error)
    {
        error = name switch
        {
            "" => "a root name cannot be empty",
            { Length: > MaxNameLength } => $"a root name has at most {MaxNameLength} characters",
            _ when name[0] == '.' => "a root name cannot start with '.'",
            _ when name.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '+' or '-')) =>
                "a root name is made of letters, digits and . _ + - only",
            _ => null,
        };
        return error is null;
    }

    /// <summary>Every root, by name; a file that is not a valid root is skipped (and keeps nothing).</summary>
    public IReadOnlyList<StoreRoot> List()
    {
        var roots = new List<StoreRoot>();
        IEnumerable<string> files;
        try
        {
            files = System.IO.Directory.EnumerateFiles(Directory).ToList();
        }
        catch (DirectoryNotFoundException)
        {
            return roots;
        }

        foreach (string file in files)
        {
            string name = Path.GetFileName(file);
            if (IsValidName(name, out _) && TryRead(file) is { } digest)
            {
                roots.Add(new StoreRoot(name, digest));
            }
        }

        roots.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
        return roots;
    }

    public StoreRoot? Get(string name)
    {
        ThrowIfInvalid(name);
        return TryRead(Path.Combine(Directory, name)) is { } digest ? new StoreRoot(name, digest) : null;
    }

    /// <summary>
    /// Adds root <paramref name="name"/> for <paramref name="digest"/>, which must be a directory (with its whole
    /// closure) or a blob in the store. The object is a temp root of this process while it is checked, so a collection
    /// running now cannot take it between the check and the root's creation.
    /// </summary>
    /// <exception cref="ObjectNotFoundException">The object, or part of a directory's closure, is not in the store.</exception>
    /// <exception cref="StoreRootException">The name is invalid, or taken by another digest and <paramref name="replace"/> is false.</exception>
    public async Task AddAsync(string name, B3Digest digest, bool replace, CancellationToken cancellationToken = default)
    {
        ThrowIfInvalid(name);
        string path = Path.Combine(Directory, name);
        if (!replace && TryRead(path) is { } existing && existing != digest)
        {
            throw new StoreRootException($"root {name} already exists for {existing}; remove it first, or replace it");
        }

        using var tempRoots = _store.CreateTempRoots();
        await tempRoots.AddAsync(digest, cancellationToken).ConfigureAwait(false);
        if (await _store.Directories.GetAsync(digest, cancellationToken).ConfigureAwait(false) is not null)
        {
            // Every directory below must be there too, or the root would keep a broken tree.
            await foreach (var directory in _store.Directories.GetRecursiveAsync(digest, cancellationToken).ConfigureAwait(false))
            {
                foreach (var file in directory.Files)
                {
                    if (!await _store.Blobs.HasAsync(file.Digest, cancellationToken).ConfigureAwait(false))
                    {
                        throw new ObjectNotFoundException(
                            $"blob {file.Digest} ({file.Name.ToQuotedString()} in directory {directory.Digest}, in the closure of {digest}) is not in the store {_store.Root}");
                    }
                }
            }
        }
        else if (!await _store.Blobs.HasAsync(digest, cancellationToken).ConfigureAwait(false))
        {
            throw new ObjectNotFoundException($"{digest} is neither a directory nor a blob in the store {_store.Root}");
        }

        System.IO.Directory.CreateDirectory(Directory);
        string temporary = Path.Combine(Directory, $".{name}.{Environment.ProcessId}.{Random.Shared.Next():x8}");
        await File.WriteAllTextAsync(temporary, digest + "\n", Encoding.ASCII, cancellationToken).ConfigureAwait(false);
        File.Move(temporary, path, overwrite: true);
    }

    /// <summary>Removes root <paramref name="name"/>; false when there is no such root.</summary>
    public bool Remove(string name)
    {
        ThrowIfInvalid(name);
        string path = Path.Combine(Directory, name);
        if (TryRead(path) is null)
        {
            return false;
        }

        File.Delete(path);
        return true;
    }

    private static void ThrowIfInvalid(string name)
    {
        if (!IsValidName(name, out string? error))
        {
            throw new StoreRootException($"invalid root name '{(name.Length > 40 ? name[..37] + "..." : name)}': {error}");
        }
    }

    private static B3Digest? TryRead(string path)
    {
        string text;
        try
        {
            var info = new FileInfo(path);
            if (!info.Exists || info.LinkTarget is not null || info.Length > 200)
            {
                return null;
            }

            text = File.ReadAllText(path).Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        return B3Digest.TryParse(text, out var digest) ? digest : null;
    }
}

/// <summary>A root cannot be added or removed as asked.</summary>
public sealed class StoreRootException(string message) : CastoreException(message);
