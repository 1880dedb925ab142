namespace TvixFuseBuild.Fuse.Abi;

/// <summary>FUSE_INIT flags: the low 32 bits travel in <c>flags</c>, the high 32 in <c>flags2</c> (with FUSE_INIT_EXT).</summary>
[Flags]
internal enum FuseInitFlags : ulong
{
    None = 0,
    AsyncRead = 1UL << 0,
    PosixLocks = 1UL << 1,
    FileOps = 1UL << 2,
    AtomicOTrunc = 1UL << 3,
    ExportSupport = 1UL << 4,
    BigWrites = 1UL << 5,
    DontMask = 1UL << 6,
    SpliceWrite = 1UL << 7,
    SpliceMove = 1UL << 8,
    SpliceRead = 1UL << 9,
    FlockLocks = 1UL << 10,
    HasIoctlDir = 1UL << 11,
    AutoInvalData = 1UL << 12,
    DoReaddirplus = 1UL << 13,
    ReaddirplusAuto = 1UL << 14,
    AsyncDio = 1UL << 15,
    WritebackCache = 1UL << 16,
    NoOpenSupport = 1UL << 17,
    ParallelDirops = 1UL << 18,
    HandleKillpriv = 1UL << 19,
    PosixAcl = 1UL << 20,
    AbortError = 1UL << 21,
    MaxPages = 1UL << 22,
    CacheSymlinks = 1UL << 23,
    NoOpendirSupport = 1UL << 24,
    ExplicitInvalData = 1UL << 25,
    MapAlignment = 1UL << 26,
    Submounts = 1UL << 27,
    HandleKillprivV2 = 1UL << 28,
    SetxattrExt = 1UL << 29,
    InitExt = 1UL << 30,
    InitReserved = 1UL << 31,
    SecurityCtx = 1UL << 32,
    HasInodeDax = 1UL << 33,
    CreateSuppGroup = 1UL << 34,
    HasExpireOnly = 1UL << 35,
    DirectIoAllowMmap = 1UL << 36,
    Passthrough = 1UL << 37,
    NoExportSupport = 1UL << 38,
    HasResend = 1UL << 39,
    AllowIdmap = 1UL << 40,
    OverIoUring = 1UL << 41,
    RequestTimeout = 1UL << 42,
}

/// <summary>FOPEN_* flags in the reply to OPEN and OPENDIR.</summary>
[Flags]
internal enum FuseOpenFlags : uint
{
    None = 0,
    DirectIo = 1u << 0,
    KeepCache = 1u << 1,
    NonSeekable = 1u << 2,
    CacheDir = 1u << 3,
    Stream = 1u << 4,
    NoFlush = 1u << 5,
    ParallelDirectWrites = 1u << 6,
    Passthrough = 1u << 7,
}

internal static class FuseConstants
{
    public const uint KernelMajor = 7;

    /// <summary>The newest minor version we speak; the session uses min(kernel's, this).</summary>
    public const uint KernelMinor = 45;

    /// <summary>The oldest minor version we accept (max_pages, cache_dir and cache_symlinks arrived in 7.28).</summary>
    public const uint OldestMinor = 28;

    public const ulong RootId = 1;

    /// <summary>Set in the <c>unique</c> of an INTERRUPT request.</summary>
    public const ulong InterruptRequestBit = 1;

    public const int MinReadBuffer = 8192;

    /// <summary>The kernel's upper bound for max_pages (fs.fuse.max_pages_limit defaults to 256: 1 MiB requests).</summary>
    public const int MaxPages = 256;

    public const int PageSize = 4096;

    // ioctls on /dev/fuse: _IOR(229, 0, uint32_t), _IOW(229, 1, struct fuse_backing_map), _IOW(229, 2, uint32_t).
    public const uint DevIocClone = 0x8004E500;
    public const uint DevIocBackingOpen = 0x4010E501;
    public const uint DevIocBackingClose = 0x4004E502;

    // File types in fuse_attr.mode and fuse_dirent.type.
    public const uint S_IFDIR = 0x4000;
    public const uint S_IFREG = 0x8000;
    public const uint S_IFLNK = 0xA000;
    public const uint DT_DIR = 4;
    public const uint DT_REG = 8;
    public const uint DT_LNK = 10;

    // access(2) mask bits in FUSE_ACCESS.
    public const uint X_OK = 1;
    public const uint W_OK = 2;
    public const uint R_OK = 4;

    // lseek whence values FUSE_LSEEK is sent for.
    public const uint SEEK_DATA = 3;
    public const uint SEEK_HOLE = 4;
}
