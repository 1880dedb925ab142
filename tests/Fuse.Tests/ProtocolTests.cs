using System.Runtime.InteropServices;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Fuse.Abi;
using TvixFuseBuild.Native;
using TvixFuseBuild.Fuse.Tests.Support;
using static TvixFuseBuild.Fuse.Tests.Support.Fixtures;

namespace TvixFuseBuild.Fuse.Tests;

/// <summary>
/// The session and the filesystem at the protocol level, driven by a fake kernel over a socket pair: INIT
/// negotiation, the errno of every opcode we do not implement, replies the kernel must never get (FORGET, INTERRUPT),
/// lookup counting, and requests that wait for the store (answered out of order, interruptible).
/// </summary>
public sealed class ProtocolTests
{
    private static async Task<FixtureStores> Stores() =>
        await (await (await new FixtureStores().BlobA()).DirectoryComplicated()).HelloWorld();

    [Fact]
    public async Task InitNegotiatesWhatAReadOnlyFilesystemWants()
    {
        var stores = await Stores();
        using var kernel = FakeKernel.Start(stores.Nodes, stores.Blobs, stores.Directories);

        var reply = kernel.Init();
        Assert.Equal(7u, reply.Major);
        Assert.Equal(45u, reply.Minor);
        var flags = (FuseInitFlags)reply.Flags | (FuseInitFlags)((ulong)reply.Flags2 << 32);
        var expected = FuseInitFlags.AsyncRead | FuseInitFlags.ParallelDirops | FuseInitFlags.MaxPages |
            FuseInitFlags.CacheSymlinks | FuseInitFlags.DoReaddirplus | FuseInitFlags.ReaddirplusAuto |
            FuseInitFlags.InitExt | FuseInitFlags.NoExportSupport;
        Assert.Equal(expected, flags);
        Assert.Equal((ushort)256, reply.MaxPages);
        Assert.Equal((ushort)256, reply.MaxBackground);
        Assert.Equal((ushort)192, reply.CongestionThreshold);
        Assert.Equal(128u * 1024, reply.MaxWrite);
        Assert.Equal(128u * 1024, reply.MaxReadahead);
        Assert.Equal(0u, reply.MaxStackDepth);
        var info = await kernel.Session.Ready;
        Assert.Equal(1 << 20, info.MaxRead);
    }

    [Fact]
    public async Task InitAsksForPassthroughOnlyWhenWantedAndOffered()
    {
        var stores = await Stores();
        using (var kernel = FakeKernel.Start(stores.Nodes, stores.Blobs, stores.Directories, passthrough: true))
        {
            var reply = kernel.Init();
            Assert.Equal(FuseInitFlags.Passthrough, (FuseInitFlags)((ulong)reply.Flags2 << 32) & FuseInitFlags.Passthrough);
            Assert.Equal(1u, reply.MaxStackDepth);
            Assert.True(kernel.FileSystem.PassthroughActive);
        }

        // A kernel that does not offer it (or no FUSE_INIT_EXT at all) gets no flags2.
        using (var kernel = FakeKernel.Start(stores.Nodes, stores.Blobs, stores.Directories, passthrough: true))
        {
            var reply = kernel.Init(offered: (FuseInitFlags)uint.MaxValue & ~FuseInitFlags.InitExt);
            Assert.Equal(0u, reply.Flags2);
            Assert.Equal(0u, reply.MaxStackDepth);
            Assert.False(kernel.FileSystem.PassthroughActive);
        }
    }

    [Fact]
    public async Task InitUsesTheOlderMinorVersion()
    {
        var stores = await Stores();
        using (var kernel = FakeKernel.Start(stores.Nodes, stores.Blobs, stores.Directories))
        {
            Assert.Equal(45u, kernel.Init(minor: 99).Minor);
        }

        using (var kernel = FakeKernel.Start(stores.Nodes, stores.Blobs, stores.Directories))
        {
            Assert.Equal(38u, kernel.Init(minor: 38).Minor);
        }
    }

    [Fact]
    public async Task InitRefusesTooOldAKernel()
    {
        var stores = await Stores();
        using var kernel = FakeKernel.Start(stores.Nodes, stores.Blobs, stores.Directories);
        ulong unique = kernel.Send(FuseOpcode.Init, 0, new FuseInitIn { Major = 7, Minor = 27 });
        Assert.Equal(71 /* EPROTO */, kernel.ExpectError(unique));
        var e = await Assert.ThrowsAsync<FuseException>(() => kernel.Session.Ready);
        Assert.Contains("7.27", e.Message);
    }

    [Theory]
    [InlineData((uint)FuseOpcode.SetAttr, 30)]
    [InlineData((uint)FuseOpcode.Symlink, 30)]
    [InlineData((uint)FuseOpcode.MkNod, 30)]
    [InlineData((uint)FuseOpcode.MkDir, 30)]
    [InlineData((uint)FuseOpcode.Unlink, 30)]
    [InlineData((uint)FuseOpcode.RmDir, 30)]
    [InlineData((uint)FuseOpcode.Rename, 30)]
    [InlineData((uint)FuseOpcode.Link, 30)]
    [InlineData((uint)FuseOpcode.Write, 30)]
    [InlineData((uint)FuseOpcode.SetXAttr, 30)]
    [InlineData((uint)FuseOpcode.RemoveXAttr, 30)]
    [InlineData((uint)FuseOpcode.Create, 30)]
    [InlineData((uint)FuseOpcode.FAllocate, 30)]
    [InlineData((uint)FuseOpcode.Rename2, 30)]
    [InlineData((uint)FuseOpcode.CopyFileRange, 30)]
    [InlineData((uint)FuseOpcode.CopyFileRange64, 30)]
    [InlineData((uint)FuseOpcode.TmpFile, 30)]
    [InlineData((uint)FuseOpcode.FSync, 38)]
    [InlineData((uint)FuseOpcode.FSyncDir, 38)]
    [InlineData((uint)FuseOpcode.GetLk, 38)]
    [InlineData((uint)FuseOpcode.SetLk, 38)]
    [InlineData((uint)FuseOpcode.SetLkW, 38)]
    [InlineData((uint)FuseOpcode.BMap, 38)]
    [InlineData((uint)FuseOpcode.IoCtl, 38)]
    [InlineData((uint)FuseOpcode.Poll, 38)]
    [InlineData((uint)FuseOpcode.SetupMapping, 38)]
    [InlineData((uint)FuseOpcode.RemoveMapping, 38)]
    [InlineData((uint)FuseOpcode.SyncFs, 38)]
    [InlineData((uint)FuseOpcode.StatX, 38)]
    [InlineData(12345u, 38)]
    public async Task OtherOpcodesGetEroFsOrEnosys(uint opcode, int errno)
    {
        var stores = await Stores();
        using var kernel = FakeKernel.Start(stores.Nodes, stores.Blobs, stores.Directories);
        kernel.Init();
        ulong unique = kernel.Send((FuseOpcode)opcode, FuseConstants.RootId, new byte[64]);
        Assert.Equal(errno, kernel.ExpectError(unique));
    }

    [Fact]
    public async Task RequestsWithoutRepliesGetNone()
    {
        var stores = await Stores();
        using var kernel = FakeKernel.Start(stores.Nodes, stores.Blobs, stores.Directories);
        kernel.Init();
        kernel.Send(FuseOpcode.Forget, 12345, new FuseForgetIn { NLookup = 1 });
        kernel.Send(FuseOpcode.BatchForget, 0, new FuseBatchForgetIn { Count = 0 });
        kernel.Send(FuseOpcode.Interrupt, 0, new FuseInterruptIn { Unique = 999 });
        kernel.Send(FuseOpcode.NotifyReply, 0, new byte[8]);

        // The next reply is the STATFS one: nothing was answered in between.
        ulong statfs = kernel.Send(FuseOpcode.StatFs, FuseConstants.RootId, ReadOnlySpan<byte>.Empty);
        var reply = kernel.ExpectStruct<FuseStatFsOut>(statfs);
        Assert.Equal(255u, reply.St.NameLen);
        Assert.True(kernel.NothingWithin(100));
    }

    [Fact]
    public async Task FlushIsNotNeededAndReleaseAndDestroyAreAnswered()
    {
        var stores = await Stores();
        using var kernel = FakeKernel.Start(stores.Nodes, stores.Blobs, stores.Directories);
        kernel.Init();
        Assert.Equal(Errno.ENOSYS, kernel.ExpectError(kernel.Send(FuseOpcode.Flush, FuseConstants.RootId, new FuseFlushIn())));
        Assert.Equal(0, kernel.ExpectError(kernel.Send(FuseOpcode.ReleaseDir, FuseConstants.RootId, new FuseReleaseIn())));
        Assert.Equal(0, kernel.ExpectError(kernel.Send(FuseOpcode.Destroy, 0, ReadOnlySpan<byte>.Empty)));
        await kernel.Session.Completion.WaitAsync(TimeSpan.FromSeconds(5));
    }

    [Fact]
    public async Task NegativeLookupsAreCachedEntries()
    {
        var stores = await Stores();
        using var kernel = FakeKernel.Start(stores.Nodes, stores.Blobs, stores.Directories);
        kernel.Init();
        var entry = kernel.ExpectStruct<FuseEntryOut>(kernel.SendName(FuseOpcode.Lookup, FuseConstants.RootId, "nope"));
        Assert.Equal(0ul, entry.NodeId);
        Assert.Equal((ulong)TimeSpan.FromDays(365).TotalSeconds, entry.EntryValid);
    }

    [Fact]
    public async Task LookupCountsAreKeptAndForgetFreesTheNode()
    {
        var stores = await Stores();
        using var kernel = FakeKernel.Start(stores.Nodes, stores.Blobs, stores.Directories);
        kernel.Init();
        var first = kernel.ExpectStruct<FuseEntryOut>(kernel.SendName(FuseOpcode.Lookup, FuseConstants.RootId, BlobAName));
        var second = kernel.ExpectStruct<FuseEntryOut>(kernel.SendName(FuseOpcode.Lookup, FuseConstants.RootId, BlobAName));
        Assert.Equal(first.NodeId, second.NodeId);
        Assert.Equal((ulong)BlobA.Length, first.Attr.Size);
        Assert.Equal(1000u, first.Attr.Uid);
        Assert.Equal(2, kernel.FileSystem.Inodes.Count);

        kernel.Send(FuseOpcode.Forget, first.NodeId, new FuseForgetIn { NLookup = 1 });
        Assert.Equal(Errno.ENOSYS, kernel.ExpectError(kernel.Send(FuseOpcode.Flush, FuseConstants.RootId, new FuseFlushIn())));
        Assert.NotNull(kernel.FileSystem.Inodes.Get(first.NodeId));

        var forget = new FuseForgetOne { NodeId = first.NodeId, NLookup = 1 };
        kernel.Send(FuseOpcode.BatchForget, 0, new FuseBatchForgetIn { Count = 1 }, MemoryMarshal.AsBytes(new ReadOnlySpan<FuseForgetOne>(in forget)));
        Assert.Equal(Errno.ENOSYS, kernel.ExpectError(kernel.Send(FuseOpcode.Flush, FuseConstants.RootId, new FuseFlushIn())));
        Assert.Null(kernel.FileSystem.Inodes.Get(first.NodeId));
        Assert.Equal(1, kernel.FileSystem.Inodes.Count);

        // GETATTR of a forgotten node: the kernel would not ask, but the answer is clean.
        Assert.Equal(2, kernel.ExpectError(kernel.Send(FuseOpcode.GetAttr, first.NodeId, new FuseGetAttrIn())));
    }

    [Fact]
    public async Task ReaddirPlusCountsLookupsButDoesNotFetchDirectories()
    {
        var stores = await Stores();
        var directories = new CountingDirectoryService(stores.Directories);
        using var kernel = FakeKernel.Start(stores.Nodes, stores.Blobs, directories);
        kernel.Init();
        ulong unique = kernel.Send(FuseOpcode.ReadDirPlus, FuseConstants.RootId, new FuseReadIn { Size = 4096 });
        var (header, payload) = kernel.Expect(unique);
        Assert.Equal(0, header.Error);

        var names = new List<string>();
        int offset = 0;
        while (offset < payload.Length)
        {
            var entry = MemoryMarshal.Read<FuseDirentPlus>(payload.AsSpan(offset));
            string name = System.Text.Encoding.UTF8.GetString(payload, offset + 152, (int)entry.Dirent.NameLen);
            names.Add(name);
            if (name is "." or ".." || name == DirectoryComplicatedName)
            {
                // Not counted, no attributes: "." and ".." never, and a directory nobody looked into is not fetched.
                Assert.Equal(0ul, entry.EntryOut.NodeId);
            }
            else
            {
                Assert.Equal(entry.Dirent.Ino, entry.EntryOut.NodeId);
                Assert.NotNull(kernel.FileSystem.Inodes.Get(entry.EntryOut.NodeId));
            }

            offset += FuseDirentPlus.EntrySize((int)entry.Dirent.NameLen);
        }

        Assert.Equal([".", "..", BlobAName, DirectoryComplicatedName, HelloWorldName], names);
        Assert.Empty(directories.Fetched);
        Assert.Equal(3, kernel.FileSystem.Inodes.Count);
    }

    [Fact]
    public async Task ReaddirResumesAtTheOffsetAndStopsWhenTheBufferIsFull()
    {
        var stores = await Stores();
        using var kernel = FakeKernel.Start(stores.Nodes, stores.Blobs, stores.Directories);
        kernel.Init();

        // Room for two 32-byte entries (".", "..") but not the third (24 + 37 bytes, padded to 64).
        var (_, payload) = kernel.Expect(kernel.Send(FuseOpcode.ReadDir, FuseConstants.RootId, new FuseReadIn { Size = 100 }));
        Assert.Equal(64, payload.Length);
        var second = MemoryMarshal.Read<FuseDirent>(payload.AsSpan(32));
        Assert.Equal(2ul, second.Off);

        (_, payload) = kernel.Expect(kernel.Send(FuseOpcode.ReadDir, FuseConstants.RootId, new FuseReadIn { Offset = 2, Size = 4096 }));
        var first = MemoryMarshal.Read<FuseDirent>(payload);
        Assert.Equal(System.Text.Encoding.UTF8.GetBytes(BlobAName), payload.AsSpan(24, (int)first.NameLen).ToArray());
        Assert.Equal(3ul, first.Off);
        Assert.Equal(FuseConstants.DT_REG, first.Type);

        // Past the end: an empty reply.
        (_, payload) = kernel.Expect(kernel.Send(FuseOpcode.ReadDir, FuseConstants.RootId, new FuseReadIn { Offset = 5, Size = 4096 }));
        Assert.Empty(payload);
    }

    [Fact]
    public async Task RootListingOffRefusesOpendirAndReaddir()
    {
        var stores = await Stores();
        using var kernel = FakeKernel.Start(stores.Nodes, stores.Blobs, stores.Directories, listRoot: false);
        kernel.Init();
        Assert.Equal(1, kernel.ExpectError(kernel.Send(FuseOpcode.OpenDir, FuseConstants.RootId, new FuseOpenIn())));
        Assert.Equal(1, kernel.ExpectError(kernel.Send(FuseOpcode.ReadDir, FuseConstants.RootId, new FuseReadIn { Size = 4096 })));
    }

    [Fact]
    public async Task ReadsLseekAndAccessOfAFile()
    {
        var stores = await Stores();
        using var kernel = FakeKernel.Start(stores.Nodes, stores.Blobs, stores.Directories);
        kernel.Init();
        var entry = kernel.ExpectStruct<FuseEntryOut>(kernel.SendName(FuseOpcode.Lookup, FuseConstants.RootId, HelloWorldName));
        ulong node = entry.NodeId;
        Assert.Equal(0x816Du, entry.Attr.Mode); // S_IFREG | 0555

        Assert.Equal(30, kernel.ExpectError(kernel.Send(FuseOpcode.Open, node, new FuseOpenIn { Flags = 2 /* O_RDWR */ })));
        var open = kernel.ExpectStruct<FuseOpenOut>(kernel.Send(FuseOpcode.Open, node, new FuseOpenIn()));
        Assert.Equal(FuseOpenFlags.KeepCache | FuseOpenFlags.NoFlush, open.OpenFlags);

        var (_, data) = kernel.Expect(kernel.Send(FuseOpcode.Read, node, new FuseReadIn { Fh = open.Fh, Offset = 6, Size = 100 }));
        Assert.Equal(HelloWorld[6..], data);
        (_, data) = kernel.Expect(kernel.Send(FuseOpcode.Read, node, new FuseReadIn { Fh = open.Fh, Offset = 100, Size = 100 }));
        Assert.Empty(data);

        Assert.Equal(3ul, kernel.ExpectStruct<FuseLSeekOut>(kernel.Send(FuseOpcode.LSeek, node, new FuseLSeekIn { Offset = 3, Whence = 3 })).Offset);
        Assert.Equal((ulong)HelloWorld.Length, kernel.ExpectStruct<FuseLSeekOut>(kernel.Send(FuseOpcode.LSeek, node, new FuseLSeekIn { Offset = 3, Whence = 4 })).Offset);
        Assert.Equal(6 /* ENXIO */, kernel.ExpectError(kernel.Send(FuseOpcode.LSeek, node, new FuseLSeekIn { Offset = 12, Whence = 3 })));
        Assert.Equal(22 /* EINVAL */, kernel.ExpectError(kernel.Send(FuseOpcode.LSeek, node, new FuseLSeekIn { Offset = 0, Whence = 0 })));

        Assert.Equal(0, kernel.ExpectError(kernel.Send(FuseOpcode.Access, node, new FuseAccessIn { Mask = 5 /* R_OK | X_OK */ })));
        Assert.Equal(30, kernel.ExpectError(kernel.Send(FuseOpcode.Access, node, new FuseAccessIn { Mask = 2 })));
        Assert.Equal(0, kernel.ExpectError(kernel.Send(FuseOpcode.Release, node, new FuseReleaseIn { Fh = open.Fh })));

        var plain = kernel.ExpectStruct<FuseEntryOut>(kernel.SendName(FuseOpcode.Lookup, FuseConstants.RootId, BlobAName));
        Assert.Equal(13 /* EACCES */, kernel.ExpectError(kernel.Send(FuseOpcode.Access, plain.NodeId, new FuseAccessIn { Mask = 1 })));
        Assert.Equal(22 /* EINVAL */, kernel.ExpectError(kernel.Send(FuseOpcode.ReadLink, plain.NodeId, ReadOnlySpan<byte>.Empty)));
        Assert.Equal(21 /* EISDIR */, kernel.ExpectError(kernel.Send(FuseOpcode.Open, FuseConstants.RootId, new FuseOpenIn())));
    }

    [Fact]
    public async Task AsynchronousStoresAnswerOutOfOrder()
    {
        var stores = await Stores();
        var directories = new CountingDirectoryService(stores.Directories) { Gate = new(TaskCreationOptions.RunContinuationsAsynchronously) };
        using var kernel = FakeKernel.Start(stores.Nodes, stores.Blobs, directories);
        kernel.Init();

        ulong lookup = kernel.SendName(FuseOpcode.Lookup, FuseConstants.RootId, DirectoryComplicatedName);
        await directories.Entered.Task.WaitAsync(TimeSpan.FromSeconds(5));

        // The worker is free while the lookup waits for the store: a later request is answered first.
        ulong statfs = kernel.Send(FuseOpcode.StatFs, FuseConstants.RootId, ReadOnlySpan<byte>.Empty);
        kernel.ExpectStruct<FuseStatFsOut>(statfs);

        directories.Gate.SetResult();
        var entry = kernel.ExpectStruct<FuseEntryOut>(lookup);
        Assert.Equal(0x416Du, entry.Attr.Mode); // S_IFDIR | 0555
        Assert.Equal(3ul, entry.Attr.Size);
        Assert.Equal(3u, entry.Attr.NLink);
    }

    [Fact]
    public async Task InterruptAnswersEintrAndCancelsTheStoreCall()
    {
        var stores = await Stores();
        var directories = new CountingDirectoryService(stores.Directories) { Gate = new(TaskCreationOptions.RunContinuationsAsynchronously) };
        using var kernel = FakeKernel.Start(stores.Nodes, stores.Blobs, directories);
        kernel.Init();

        ulong lookup = kernel.SendName(FuseOpcode.Lookup, FuseConstants.RootId, DirectoryComplicatedName);
        await directories.Entered.Task.WaitAsync(TimeSpan.FromSeconds(5));
        kernel.Send(FuseOpcode.Interrupt, 0, new FuseInterruptIn { Unique = lookup }, unique: lookup | FuseConstants.InterruptRequestBit);
        Assert.Equal(4 /* EINTR */, kernel.ExpectError(lookup));

        // The store call was cancelled (its gate never opened), and nothing else is sent for the lookup.
        Assert.True(kernel.NothingWithin(200));
        Assert.Equal(1, kernel.FileSystem.Inodes.Count);
        ulong statfs = kernel.Send(FuseOpcode.StatFs, FuseConstants.RootId, ReadOnlySpan<byte>.Empty);
        kernel.ExpectStruct<FuseStatFsOut>(statfs);
    }

    [Fact]
    public async Task AnInterruptArrivingBeforeTheRequestWaitsIsRemembered()
    {
        var stores = await Stores();
        var directories = new CountingDirectoryService(stores.Directories) { Gate = new(TaskCreationOptions.RunContinuationsAsynchronously) };
        using var kernel = FakeKernel.Start(stores.Nodes, stores.Blobs, directories);
        kernel.Init();

        ulong next = 1000;
        kernel.Send(FuseOpcode.Interrupt, 0, new FuseInterruptIn { Unique = next }, unique: next | FuseConstants.InterruptRequestBit);
        kernel.SendName(FuseOpcode.Lookup, FuseConstants.RootId, DirectoryComplicatedName);
        Assert.Equal(4 /* EINTR */, kernel.ExpectError(kernel.Send(FuseOpcode.Lookup, FuseConstants.RootId,
            [.. System.Text.Encoding.UTF8.GetBytes(DirectoryComplicatedName), 0], unique: next)));
    }
}
