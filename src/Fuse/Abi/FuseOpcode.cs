namespace TvixFuseBuild.Fuse.Abi;

/// <summary>The request opcodes of &lt;linux/fuse.h&gt; (protocol 7.45).</summary>
internal enum FuseOpcode : uint
{
    Lookup = 1,
    Forget = 2,
    GetAttr = 3,
    SetAttr = 4,
    ReadLink = 5,
    Symlink = 6,
    MkNod = 8,
    MkDir = 9,
    Unlink = 10,
    RmDir = 11,
    Rename = 12,
    Link = 13,
    Open = 14,
    Read = 15,
    Write = 16,
    StatFs = 17,
    Release = 18,
    FSync = 20,
    SetXAttr = 21,
    GetXAttr = 22,
    ListXAttr = 23,
    RemoveXAttr = 24,
    Flush = 25,
    Init = 26,
    OpenDir = 27,
    ReadDir = 28,
    ReleaseDir = 29,
    FSyncDir = 30,
    GetLk = 31,
    SetLk = 32,
    SetLkW = 33,
    Access = 34,
    Create = 35,
    Interrupt = 36,
    BMap = 37,
    Destroy = 38,
    IoCtl = 39,
    Poll = 40,
    NotifyReply = 41,
    BatchForget = 42,
    FAllocate = 43,
    ReadDirPlus = 44,
    Rename2 = 45,
    LSeek = 46,
    CopyFileRange = 47,
    SetupMapping = 48,
    RemoveMapping = 49,
    SyncFs = 50,
    TmpFile = 51,
    StatX = 52,
    CopyFileRange64 = 53,
    CuseInit = 4096,
}

internal static class FuseOpcodes
{
    /// <summary>
    /// Opcodes that would change the filesystem: a read-only filesystem answers them with EROFS. (The kernel already
    /// refuses most of them on a read-only mount; this covers a remount or a kernel that asks anyway.)
    /// </summary>
    public static bool Writes(FuseOpcode opcode) => opcode switch
    {
        FuseOpcode.SetAttr or FuseOpcode.Symlink or FuseOpcode.MkNod or FuseOpcode.MkDir or FuseOpcode.Unlink
            or FuseOpcode.RmDir or FuseOpcode.Rename or FuseOpcode.Link or FuseOpcode.Write or FuseOpcode.SetXAttr
            or FuseOpcode.RemoveXAttr or FuseOpcode.Create or FuseOpcode.FAllocate or FuseOpcode.Rename2
            or FuseOpcode.CopyFileRange or FuseOpcode.CopyFileRange64 or FuseOpcode.TmpFile => true,
        _ => false,
    };

    /// <summary>Requests the kernel sends without waiting for a reply; answering them is an error.</summary>
    public static bool ExpectsNoReply(FuseOpcode opcode) =>
        opcode is FuseOpcode.Forget or FuseOpcode.BatchForget or FuseOpcode.Interrupt or FuseOpcode.NotifyReply;
}
