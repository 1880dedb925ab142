using TvixFuseBuild.Fuse.Abi;

namespace TvixFuseBuild.Fuse.Session;

/// <summary>What the kernel and we agreed on in FUSE_INIT.</summary>
internal sealed record FuseConnectionInfo(uint Minor, FuseInitFlags Flags, int MaxRead, bool Passthrough)
{
    public bool ReaddirPlus => (Flags & FuseInitFlags.DoReaddirplus) != 0;

    /// <summary>The kernel opens files without asking once OPEN has answered ENOSYS.</summary>
    public bool NoOpen => (Flags & FuseInitFlags.NoOpenSupport) != 0;
}

/// <summary>
/// The operations of a read-only filesystem, as the session hands them over: already parsed, one call per request.
/// Every handler replies exactly once through its <see cref="FuseRequestContext"/>; it may wait for the store (via
/// <see cref="FuseRequestContext.Track{T}"/>) and reply later from another thread. An exception it throws becomes EIO
/// (EINTR if the request was cancelled) and a log line.
/// </summary>
internal abstract class FuseFileSystem
{
    /// <summary>Called once, after INIT, before any other request.</summary>
    public virtual void OnInit(FuseSession session, FuseConnectionInfo connection)
    {
    }

    /// <summary>Looks up <see cref="FuseRequestContext.Name"/> in <paramref name="parent"/>; a found entry counts one lookup.</summary>
    public abstract ValueTask LookupAsync(FuseRequestContext request, ulong parent);

    /// <summary>The kernel dropped <paramref name="count"/> lookups of a node. No reply.</summary>
    public abstract void Forget(ulong nodeId, ulong count);

    public abstract ValueTask GetAttrAsync(FuseRequestContext request, ulong nodeId);

    public abstract ValueTask ReadLinkAsync(FuseRequestContext request, ulong nodeId);

    public abstract ValueTask OpenAsync(FuseRequestContext request, ulong nodeId, int flags);

    public abstract ValueTask ReadAsync(FuseRequestContext request, ulong nodeId, ulong handle, long offset, int size);

    public abstract void Release(FuseRequestContext request, ulong nodeId, ulong handle);

    public abstract ValueTask OpenDirAsync(FuseRequestContext request, ulong nodeId, int flags);

    public abstract ValueTask ReadDirAsync(FuseRequestContext request, ulong nodeId, ulong handle, long offset, int size, bool plus);

    public abstract void ReleaseDir(FuseRequestContext request, ulong nodeId, ulong handle);

    public abstract void StatFs(FuseRequestContext request, ulong nodeId);

    /// <summary>Reads the attribute named <see cref="FuseRequestContext.Name"/>; size 0 asks for its length only.</summary>
    public abstract ValueTask GetXAttrAsync(FuseRequestContext request, ulong nodeId, int size);

    public abstract ValueTask ListXAttrAsync(FuseRequestContext request, ulong nodeId, int size);

    public abstract ValueTask AccessAsync(FuseRequestContext request, ulong nodeId, uint mask);

    public abstract ValueTask LSeekAsync(FuseRequestContext request, ulong nodeId, ulong handle, long offset, uint whence);

    /// <summary>The session ends (unmounted, DESTROY, or disposed): release whatever is still open.</summary>
    public virtual void OnDestroy()
    {
    }
}
