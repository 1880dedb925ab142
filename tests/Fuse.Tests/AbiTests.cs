using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using TvixFuseBuild.Fuse.Abi;

namespace TvixFuseBuild.Fuse.Tests;

/// <summary>Our structs against the kernel's: sizes and the offsets that moved over protocol versions (&lt;linux/fuse.h&gt; 7.45).</summary>
public sealed class AbiTests
{
    [Fact]
    public void StructSizesMatchTheKernelHeader()
    {
        // sizeof(struct ...) on x86-64 and arm64 alike (all fields naturally aligned, padded to 8).
        Assert.Equal(40, Unsafe.SizeOf<FuseInHeader>());
        Assert.Equal(16, Unsafe.SizeOf<FuseOutHeader>());
        Assert.Equal(64, Unsafe.SizeOf<FuseInitIn>());
        Assert.Equal(64, Unsafe.SizeOf<FuseInitOut>());
        Assert.Equal(88, Unsafe.SizeOf<FuseAttr>());
        Assert.Equal(128, Unsafe.SizeOf<FuseEntryOut>());
        Assert.Equal(104, Unsafe.SizeOf<FuseAttrOut>());
        Assert.Equal(16, Unsafe.SizeOf<FuseGetAttrIn>());
        Assert.Equal(8, Unsafe.SizeOf<FuseOpenIn>());
        Assert.Equal(16, Unsafe.SizeOf<FuseOpenOut>());
        Assert.Equal(40, Unsafe.SizeOf<FuseReadIn>());
        Assert.Equal(24, Unsafe.SizeOf<FuseReleaseIn>());
        Assert.Equal(24, Unsafe.SizeOf<FuseFlushIn>());
        Assert.Equal(8, Unsafe.SizeOf<FuseForgetIn>());
        Assert.Equal(16, Unsafe.SizeOf<FuseForgetOne>());
        Assert.Equal(8, Unsafe.SizeOf<FuseBatchForgetIn>());
        Assert.Equal(8, Unsafe.SizeOf<FuseGetXAttrIn>());
        Assert.Equal(8, Unsafe.SizeOf<FuseGetXAttrOut>());
        Assert.Equal(8, Unsafe.SizeOf<FuseAccessIn>());
        Assert.Equal(8, Unsafe.SizeOf<FuseInterruptIn>());
        Assert.Equal(24, Unsafe.SizeOf<FuseLSeekIn>());
        Assert.Equal(8, Unsafe.SizeOf<FuseLSeekOut>());
        Assert.Equal(80, Unsafe.SizeOf<FuseKStatFs>());
        Assert.Equal(80, Unsafe.SizeOf<FuseStatFsOut>());
        Assert.Equal(24, Unsafe.SizeOf<FuseDirent>());
        Assert.Equal(152, Unsafe.SizeOf<FuseDirentPlus>());
        Assert.Equal(16, Unsafe.SizeOf<FuseBackingMap>());
    }

    [Fact]
    public void FieldOffsetsMatchTheKernelHeader()
    {
        Assert.Equal(36, (int)Marshal.OffsetOf<FuseInHeader>(nameof(FuseInHeader.TotalExtLen)));
        Assert.Equal(16, (int)Marshal.OffsetOf<FuseInitIn>(nameof(FuseInitIn.Flags2)));
        Assert.Equal(20, (int)Marshal.OffsetOf<FuseInitOut>(nameof(FuseInitOut.MaxWrite)));
        Assert.Equal(28, (int)Marshal.OffsetOf<FuseInitOut>(nameof(FuseInitOut.MaxPages)));
        Assert.Equal(32, (int)Marshal.OffsetOf<FuseInitOut>(nameof(FuseInitOut.Flags2)));
        Assert.Equal(36, (int)Marshal.OffsetOf<FuseInitOut>(nameof(FuseInitOut.MaxStackDepth)));
        Assert.Equal(40, (int)Marshal.OffsetOf<FuseInitOut>(nameof(FuseInitOut.RequestTimeout)));
        Assert.Equal(40, (int)Marshal.OffsetOf<FuseEntryOut>(nameof(FuseEntryOut.Attr)));
        Assert.Equal(60, (int)Marshal.OffsetOf<FuseAttr>(nameof(FuseAttr.Mode)));
        Assert.Equal(12, (int)Marshal.OffsetOf<FuseOpenOut>(nameof(FuseOpenOut.BackingId)));
        Assert.Equal(128, (int)Marshal.OffsetOf<FuseDirentPlus>(nameof(FuseDirentPlus.Dirent)));
    }

    [Fact]
    public void DirentsArePaddedToEightBytes()
    {
        Assert.Equal(32, FuseDirent.EntrySize(1));
        Assert.Equal(32, FuseDirent.EntrySize(8));
        Assert.Equal(40, FuseDirent.EntrySize(9));
        Assert.Equal(160, FuseDirentPlus.EntrySize(5));
    }

    [Fact]
    public void IoctlNumbersAreTheKernels()
    {
        // _IOC(dir, 229, nr, size) = dir << 30 | size << 16 | 229 << 8 | nr, with read = 2, write = 1.
        static uint Ioc(uint dir, uint nr, uint size) => (dir << 30) | (size << 16) | (229u << 8) | nr;
        Assert.Equal(FuseConstants.DevIocClone, Ioc(2, 0, 4));
        Assert.Equal(FuseConstants.DevIocBackingOpen, Ioc(1, 1, 16));
        Assert.Equal(FuseConstants.DevIocBackingClose, Ioc(1, 2, 4));
    }

    [Fact]
    public void InitFlagsAreTheKernels()
    {
        Assert.Equal(1UL << 13, (ulong)FuseInitFlags.DoReaddirplus);
        Assert.Equal(1UL << 22, (ulong)FuseInitFlags.MaxPages);
        Assert.Equal(1UL << 23, (ulong)FuseInitFlags.CacheSymlinks);
        Assert.Equal(1UL << 30, (ulong)FuseInitFlags.InitExt);
        Assert.Equal(1UL << 37, (ulong)FuseInitFlags.Passthrough);
        Assert.Equal(1u << 7, (uint)FuseOpenFlags.Passthrough);
        Assert.Equal(53u, (uint)FuseOpcode.CopyFileRange64);
    }
}
