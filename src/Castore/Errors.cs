namespace TvixFuseBuild.Castore;

/// <summary>Base of every error the castore reports. The message is meant for the user, one line.</summary>
public class CastoreException : Exception
{
    public CastoreException(string message)
        : base(message)
    {
    }

    public CastoreException(string message, Exception? inner)
        : base(message, inner)
    {
    }
}

public sealed class InvalidNameException(string message) : CastoreException(message);

public sealed class InvalidSymlinkTargetException(string message) : CastoreException(message);

/// <summary>The ways a Directory can be invalid; names follow tvix's DirectoryError.</summary>
public enum DirectoryErrorKind
{
    /// <summary>A list is not sorted by name.</summary>
    WrongSorting,

    /// <summary>A name appears twice, in one list or across lists.</summary>
    DuplicateName,

    /// <summary>A name is empty, <c>.</c>, <c>..</c>, too long, or contains NUL or <c>/</c>.</summary>
    InvalidName,

    /// <summary>A node's digest is not 32 bytes.</summary>
    InvalidDigestLength,

    /// <summary>A symlink target is empty, too long, or contains NUL.</summary>
    InvalidSymlinkTarget,

    /// <summary>The directory's size does not fit in 64 bits.</summary>
    SizeOverflow,

    /// <summary>A Node message has none of directory, file or symlink set.</summary>
    NoNodeSet,

    /// <summary>The bytes are not a protobuf Directory message.</summary>
    Malformed,
}

public sealed class DirectoryValidationException(DirectoryErrorKind kind, string message) : CastoreException(message)
{
    public DirectoryErrorKind Kind { get; } = kind;
}

/// <summary>A blob or directory is not in the store.</summary>
public sealed class ObjectNotFoundException(string message) : CastoreException(message);

/// <summary>Bytes read from a store do not match the digest they are stored under.</summary>
public sealed class CorruptObjectException(string message) : CastoreException(message);

/// <summary>A directory closure sent to a store is not acceptable (dangling reference, several roots, wrong sizes).</summary>
public sealed class InvalidClosureException(string message) : CastoreException(message);

/// <summary>A store address cannot be parsed or opened.</summary>
public sealed class StoreAddressException(string message) : CastoreException(message);

/// <summary>A store cannot be reached or failed in a way unrelated to the request.</summary>
public sealed class StoreUnavailableException(string message, Exception? inner = null) : CastoreException(message, inner);

/// <summary>A host path cannot be imported (unsupported file type, unreadable).</summary>
public sealed class ImportException(string message, Exception? inner = null) : CastoreException(message, inner);

/// <summary>A node cannot be exported to a host path.</summary>
public sealed class ExportException(string message, Exception? inner = null) : CastoreException(message, inner);
