namespace TvixFuseBuild.Castore.Stores;

/// <summary>
/// Checks a closure sent leaves to root: every directory refers only to directories sent before it, with a size that
/// matches the child (either accepted form), and in the end everything is reachable from the root, the last one sent.
/// </summary>
public sealed class LeavesToRootValidator
{
    private readonly Dictionary<B3Digest, CastoreDirectory> _received = [];
    private readonly HashSet<B3Digest> _referenced = [];
    private readonly List<CastoreDirectory> _order = [];
    private B3Digest? _last;

    public int Count => _order.Count;

    /// <summary>The accepted directories, each once, in the order they first arrived (children before parents).</summary>
    public IReadOnlyList<CastoreDirectory> Directories => _order;

    public void Add(CastoreDirectory directory)
    {
        foreach (var edge in directory.Directories)
        {
            if (!_received.TryGetValue(edge.Digest, out var child))
            {
                throw new InvalidClosureException(
                    $"directory {directory.Digest} refers to {edge.Name.ToQuotedString()} ({edge.Digest}), which was not sent before it");
            }

            if (!child.IsAcceptableSize(edge.Size))
            {
                throw new InvalidClosureException(
                    $"directory {directory.Digest} records size {edge.Size} for {edge.Name.ToQuotedString()} ({edge.Digest}), but that directory has size {child.Size}");
            }

            _referenced.Add(edge.Digest);
        }

        // A directory sent again (equal subtrees) is stored once; the last one sent is the root candidate.
        if (_received.TryAdd(directory.Digest, directory))
        {
            _order.Add(directory);
        }

        _last = directory.Digest;
    }

    /// <summary>Returns the root, or throws when the closure is empty or has more than one root.</summary>
    public CastoreDirectory Finish()
    {
        if (_last is not { } last)
        {
            throw new InvalidClosureException("no directories were sent");
        }

        var root = _received[last];
        foreach (var directory in _order)
        {
            if (directory.Digest != root.Digest && !_referenced.Contains(directory.Digest))
            {
                throw new InvalidClosureException(
                    $"directory {directory.Digest} is not reachable from the root {root.Digest}: a closure has exactly one root, sent last");
            }
        }

        return root;
    }
}

/// <summary>
/// Checks a closure received root to leaves: the root first, then only directories an earlier one referred to, with
/// matching sizes, each once, until nothing referred to is missing.
/// </summary>
public sealed class RootToLeavesValidator(B3Digest root)
{
    // Digest -> the size the referring edge recorded.
    private readonly Dictionary<B3Digest, ulong> _expected = new() { [root] = ulong.MaxValue };
    private readonly HashSet<B3Digest> _received = [];

    public void Add(CastoreDirectory directory)
    {
        var digest = directory.Digest;
        if (_received.Count == 0 && digest != root)
        {
            throw new InvalidClosureException($"expected the root directory {root} first, got {digest}");
        }

        if (!_expected.Remove(digest, out ulong size))
        {
            throw new InvalidClosureException(
                _received.Contains(digest)
                    ? $"directory {digest} was sent twice"
                    : $"directory {digest} was sent, but nothing sent before it refers to it");
        }

        if (size != ulong.MaxValue && !directory.IsAcceptableSize(size))
        {
            throw new InvalidClosureException($"directory {digest} has size {directory.Size}, but its parent recorded {size}");
        }

        _received.Add(digest);
        foreach (var edge in directory.Directories)
        {
            if (!_received.Contains(edge.Digest))
            {
                _expected.TryAdd(edge.Digest, edge.Size);
            }
        }
    }

    /// <summary>Throws when a referenced directory never arrived.</summary>
    public void Finish()
    {
        foreach (var missing in _expected.Keys)
        {
            throw new ObjectNotFoundException(
                _received.Count == 0 ? $"directory {missing} not found" : $"directory {missing} (in the closure of {root}) not found");
        }
    }
}
