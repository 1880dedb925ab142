using System.Diagnostics;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Sandbox.Tests;

/// <summary>
/// The cgroup v2 file protocol, against a directory laid out like a cgroup2 mount: this host's cgroup2 (hybrid layout)
/// has no controllers, so a real v2 build cgroup cannot be had here. <see cref="FakeCgroupFs"/> plays the kernel's part
/// (the interface files a new cgroup comes with; rmdir refused while it holds processes). The v1 code path is tested
/// for real by <see cref="LimitsTests"/>.
/// </summary>
public sealed class BuildCgroupV2Tests : IDisposable
{
    private const string RootSession = "0::/user.slice/user-0.slice/session-1.scope";
    private const string UserApp = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-term.scope";
    private const string UserSession = "0::/user.slice/user-1000.slice/session-2.scope";

    private readonly string _mount = Directory.CreateTempSubdirectory("tvix-cgroup2-test-").FullName;
    private readonly FakeCgroupFs _fs = new();

    public BuildCgroupV2Tests()
    {
        // A systemd host: the root and the slices enable memory and pids for their children.
        File.WriteAllText(Path.Combine(_mount, "cgroup.controllers"), "cpuset cpu io memory hugetlb pids rdma misc\n");
        File.WriteAllText(Path.Combine(_mount, "cgroup.subtree_control"), "cpu io memory pids\n");
        File.WriteAllText(Path.Combine(_mount, "cgroup.procs"), "1\n");
        foreach (string dir in new[]
        {
            "user.slice", "user.slice/user-0.slice", "user.slice/user-0.slice/session-1.scope",
            "user.slice/user-1000.slice", "user.slice/user-1000.slice/session-2.scope",
            "user.slice/user-1000.slice/user@1000.service", "user.slice/user-1000.slice/user@1000.service/app.slice",
            "user.slice/user-1000.slice/user@1000.service/app.slice/app-term.scope",
        })
        {
            string path = Path.Combine(_mount, dir);
            _fs.MakeDirectory(path);
            if (!dir.EndsWith(".scope", StringComparison.Ordinal))
            {
                File.WriteAllText(Path.Combine(path, "cgroup.subtree_control"), "memory pids\n");
            }
            else
            {
                File.WriteAllText(Path.Combine(path, "cgroup.procs"), $"{Environment.ProcessId}\n");
            }
        }

        // user@1000.service is delegated: systemd chowns its subtree to the user.
        foreach (string path in Directory.EnumerateFileSystemEntries(Path.Combine(_mount, "user.slice/user-1000.slice/user@1000.service"), "*", SearchOption.AllDirectories)
                     .Append(Path.Combine(_mount, "user.slice/user-1000.slice/user@1000.service")))
        {
            Assert.Equal(0, Libc.lchown(path, 1000, 1000));
        }
    }

    public void Dispose() => Directory.Delete(_mount, recursive: true);

    private string[] Mountinfo(string options = "rw,nosuid,nodev,noexec,relatime") =>
    [
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw",
        $"30 22 0:26 / {_mount} {options} shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot",
    ];

    private (CgroupV2Parent? Parent, string? Reason) Detect(string procCgroup, string? configured = null, uint euid = 0, bool memory = true) =>
        CgroupV2Parent.Detect(Mountinfo(), [procCgroup], configured, euid, memory);

    [Fact]
    public void AsRootTheParentOfOurCgroupIsUsedWhenItEnablesTheControllers()
    {
        var (parent, reason) = Detect(RootSession);
        Assert.Null(reason);
        Assert.Equal(Path.Combine(_mount, "user.slice/user-0.slice"), parent!.Path);
        Assert.Empty(parent.Enable);
    }

    [Fact]
    public void OurCgroupBeingTheRootItIsUsedItself()
    {
        var (parent, reason) = Detect("0::/");
        Assert.Null(reason);
        Assert.Equal(_mount, parent!.Path);
    }

    [Fact]
    public void NoCgroup2MountIsNoV2()
    {
        var (parent, reason) = CgroupV2Parent.Detect(
            ["22 1 8:1 / / rw - ext4 /dev/sda1 rw", "33 25 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids"],
            [RootSession], null, 0, true);
        Assert.Null(parent);
        Assert.Equal("no cgroup2 file system is mounted", reason);
    }

    [Fact]
    public void AReadOnlyMountIsNoV2()
    {
        var (parent, reason) = CgroupV2Parent.Detect(Mountinfo("ro,nosuid"), [RootSession], null, 0, true);
        Assert.Null(parent);
        Assert.Equal($"the cgroup2 file system at {_mount} is mounted read-only", reason);
    }

    [Fact]
    public void NoV2LineInProcSelfCgroupIsNoV2()
    {
        var (parent, reason) = CgroupV2Parent.Detect(Mountinfo(), ["4:pids:/user.slice", "1:name=systemd:/"], null, 0, true);
        Assert.Null(parent);
        Assert.Equal("this process is in no cgroup v2 it can see (no usable 0:: line in /proc/self/cgroup)", reason);
    }

    [Fact]
    public void MissingControllersAreNamed()
    {
        File.WriteAllText(Path.Combine(_mount, "user.slice/user-0.slice/cgroup.controllers"), "cpu pids\n");
        var (parent, reason) = Detect(RootSession);
        Assert.Null(parent);
        Assert.Equal($"{_mount}/user.slice/user-0.slice does not have the memory controller (cgroup.controllers: cpu pids)", reason);

        // Without a memory limit, pids is all it takes.
        (parent, reason) = Detect(RootSession, memory: false);
        Assert.Null(reason);
        Assert.Equal(Path.Combine(_mount, "user.slice/user-0.slice"), parent!.Path);
    }

    [Fact]
    public void AParentThatDoesNotEnableTheControllersIsNotChanged()
    {
        File.WriteAllText(Path.Combine(_mount, "user.slice/user-0.slice/cgroup.subtree_control"), "pids\n");
        var (parent, reason) = Detect(RootSession);
        Assert.Null(parent);
        Assert.Equal(
            $"{_mount}/user.slice/user-0.slice does not enable memory for its children (cgroup.subtree_control: pids), " +
            "and it is not ours to change; set TVIX_FUSE_BUILD_CGROUP to a cgroup delegated to us", reason);
        Assert.Equal("pids\n", File.ReadAllText(Path.Combine(_mount, "user.slice/user-0.slice/cgroup.subtree_control")));
    }

    [Fact]
    public void AUserWhoseCgroupIsDelegatedCanUseIt()
    {
        var (parent, reason) = Detect(UserApp, euid: 1000);
        Assert.Null(reason);
        Assert.Equal(Path.Combine(_mount, "user.slice/user-1000.slice/user@1000.service/app.slice"), parent!.Path);
    }

    [Fact]
    public void AUserWhoseCgroupIsNotDelegatedCannot()
    {
        // A login session's scope sits in the root-owned user-1000.slice.
        var (parent, reason) = Detect(UserSession, euid: 1000);
        Assert.Null(parent);
        Assert.Equal($"{_mount}/user.slice/user-1000.slice is not writable by uid 1000 (the cgroup is not delegated to it)", reason);

        // Another user cannot use uid 1000's delegated subtree either.
        (parent, reason) = Detect(UserApp, euid: 1001);
        Assert.Null(parent);
        Assert.Equal($"{_mount}/user.slice/user-1000.slice/user@1000.service/app.slice is not writable by uid 1001 (the cgroup is not delegated to it)", reason);
    }

    [Fact]
    public void MovingTheInitNeedsTheCommonAncestorsProcsFile()
    {
        // The parent is ours, but its cgroup.procs (the common ancestor of ours and the build's) is not.
        string app = Path.Combine(_mount, "user.slice/user-1000.slice/user@1000.service/app.slice");
        Assert.Equal(0, Libc.lchown(Path.Combine(app, "cgroup.procs"), 0, 0));
        var (parent, reason) = Detect(UserApp, euid: 1000);
        Assert.Null(parent);
        Assert.Equal($"{app}/cgroup.procs is not writable by uid 1000 (the cgroup is not delegated to it)", reason);
    }

    [Fact]
    public void AConfiguredEmptyCgroupIsUsedAndItsControllersEnabled()
    {
        string builds = Path.Combine(_mount, "tvix-builds");
        _fs.MakeDirectory(builds);
        var (parent, reason) = Detect(RootSession, configured: builds + "/");
        Assert.Null(reason);
        Assert.Equal(builds, parent!.Path);
        Assert.Equal(["memory", "pids"], parent.Enable);

        using var cgroup = BuildCgroupV2.Create(parent, new SandboxLimits { MaxMemory = 64L << 20 }, _fs);
        Assert.Equal("+memory +pids", File.ReadAllText(Path.Combine(builds, "cgroup.subtree_control")));
        Assert.Equal(builds, Path.GetDirectoryName(cgroup.CgroupPath));
    }

    [Fact]
    public void AConfiguredCgroupWithProcessesCannotEnableControllers()
    {
        string builds = Path.Combine(_mount, "tvix-builds");
        _fs.MakeDirectory(builds);
        File.WriteAllText(Path.Combine(builds, "cgroup.procs"), "4242\n");
        var (parent, reason) = Detect(RootSession, configured: builds);
        Assert.Null(parent);
        Assert.Equal($"{builds} holds processes, so it cannot enable memory and pids for its children (cgroup v2's no-internal-processes rule)", reason);
    }

    [Fact]
    public void AConfiguredPathOutsideTheCgroup2MountIsRefused()
    {
        foreach (string configured in new[] { "/tmp", "relative/path", Path.Combine(_mount, "missing"), _mount + "/../etc" })
        {
            var (parent, reason) = Detect(RootSession, configured: configured);
            Assert.Null(parent);
            Assert.Equal($"it is not a cgroup directory in the cgroup2 file system at {_mount}", reason);
        }
    }

    [Fact]
    public void AConfiguredCgroupThatCannotBeUsedIsAClearError()
    {
        // Through the real /proc/self/mountinfo of this host; no fallback to v1 when the admin asked for this.
        var e = Assert.Throws<SandboxException>(() => BuildCgroups.Create(SandboxLimits.Default, "/nonexistent/tvix-builds"));
        Assert.StartsWith("TVIX_FUSE_BUILD_CGROUP=/nonexistent/tvix-builds cannot hold the builds' cgroups: ", e.Message);
    }

    [Fact]
    public void CreationSetsTheMemoryLimitAndNoSwap()
    {
        var (parent, _) = Detect(RootSession);
        var limits = new SandboxLimits { MaxMemory = 96L << 20, MaxProcesses = 50 };
        using var cgroup = BuildCgroupV2.Create(parent!, limits, _fs);
        Assert.Equal(Path.Combine(_mount, "user.slice/user-0.slice"), Path.GetDirectoryName(cgroup.CgroupPath));
        Assert.StartsWith($"tvix-fuse-build-{Environment.ProcessId}-", Path.GetFileName(cgroup.CgroupPath));
        Assert.Equal("100663296", File.ReadAllText(Path.Combine(cgroup.CgroupPath, "memory.max")));
        Assert.Equal("0", File.ReadAllText(Path.Combine(cgroup.CgroupPath, "memory.swap.max")));
        Assert.Equal("max\n", File.ReadAllText(Path.Combine(cgroup.CgroupPath, "pids.max"))); // set when the init is placed
        Assert.Equal([SandboxLimit.Processes, SandboxLimit.Memory], cgroup.Watched);
        Assert.Equal("memory pids\n", File.ReadAllText(Path.Combine(_mount, "user.slice/user-0.slice/cgroup.subtree_control")));
    }

    [Fact]
    public void WithoutSwapAccountingOnlyMemoryMaxIsWritten()
    {
        _fs.SwapAccounting = false;
        var (parent, _) = Detect(RootSession);
        using var cgroup = BuildCgroupV2.Create(parent!, new SandboxLimits { MaxMemory = 64L << 20 }, _fs);
        Assert.Equal("67108864", File.ReadAllText(Path.Combine(cgroup.CgroupPath, "memory.max")));
        Assert.False(File.Exists(Path.Combine(cgroup.CgroupPath, "memory.swap.max")));
    }

    [Fact]
    public void WithoutAMemoryLimitOnlyProcessesAreWatched()
    {
        var (parent, _) = Detect(RootSession, memory: false);
        using var cgroup = BuildCgroupV2.Create(parent!, new SandboxLimits { MaxMemory = null }, _fs);
        Assert.Equal("max\n", File.ReadAllText(Path.Combine(cgroup.CgroupPath, "memory.max")));
        Assert.Equal([SandboxLimit.Processes], cgroup.Watched);
    }

    [Fact]
    public void AFailedCreationLeavesNothing()
    {
        _fs.BrokenMemoryMax = true;
        var (parent, _) = Detect(RootSession);
        var e = Assert.Throws<SandboxException>(() => BuildCgroupV2.Create(parent!, new SandboxLimits { MaxMemory = 64L << 20 }, _fs));
        Assert.StartsWith($"cannot create the build's cgroup in {parent!.Path}: ", e.Message);
        Assert.Empty(Directory.EnumerateDirectories(parent.Path, "tvix-fuse-build-*"));
    }

    [Fact]
    public void TheSandboxStartsInTheBuildsCgroupWithItsPidsLimit()
    {
        var (parent, _) = Detect(RootSession);
        using var cgroup = BuildCgroupV2.Create(parent!, new SandboxLimits { MaxProcesses = 50 }, _fs);
        Assert.Equal([cgroup.CgroupPath], cgroup.Directories);
        Assert.Equal(Path.Combine(cgroup.CgroupPath, "pids.max"), cgroup.PidsMax);
    }

    [Fact]
    public void ReachedLimitsComeFromTheEventsFiles()
    {
        var (parent, _) = Detect(RootSession);
        using var cgroup = BuildCgroupV2.Create(parent!, new SandboxLimits { MaxMemory = 64L << 20 }, _fs);
        Assert.Empty(cgroup.Hits());

        File.WriteAllText(Path.Combine(cgroup.CgroupPath, "pids.events"), "max 12\n");
        Assert.Equal([SandboxLimit.Processes], cgroup.Hits());

        // Reaching memory.max is not a hit while reclaim keeps up; an OOM kill is.
        File.WriteAllText(Path.Combine(cgroup.CgroupPath, "memory.events"), "low 0\nhigh 0\nmax 341\noom 1\noom_kill 0\noom_group_kill 0\n");
        Assert.Equal([SandboxLimit.Processes], cgroup.Hits());
        File.WriteAllText(Path.Combine(cgroup.CgroupPath, "memory.events"), "low 0\nhigh 0\nmax 341\noom 1\noom_kill 1\noom_group_kill 0\n");
        Assert.Equal([SandboxLimit.Processes, SandboxLimit.Memory], cgroup.Hits());
    }

    [Fact]
    public void DisposingRemovesTheCgroup()
    {
        var (parent, _) = Detect(RootSession);
        var cgroup = BuildCgroupV2.Create(parent!, SandboxLimits.Default, _fs);
        Assert.True(Directory.Exists(cgroup.CgroupPath));
        cgroup.Dispose();
        Assert.False(Directory.Exists(cgroup.CgroupPath));
        cgroup.Dispose();
    }

    [Fact]
    public void CreationSweepsTheCgroupsOfCallersThatAreGone()
    {
        var (parent, _) = Detect(RootSession);
        using var live = Process.Start("sleep", "60");
        using var gone = Process.Start("true");
        gone.WaitForExit();
        try
        {
            string Made(string name)
            {
                string path = Path.Combine(parent!.Path, name);
                _fs.MakeDirectory(path);
                return path;
            }

            string stale = Made($"tvix-fuse-build-{gone.Id}-00000000000000aa");
            string busy = Made($"tvix-fuse-build-{gone.Id}-00000000000000bb");
            File.WriteAllText(Path.Combine(busy, "cgroup.procs"), "4242\n"); // the kernel refuses rmdir: left alone
            string running = Made($"tvix-fuse-build-{live.Id}-00000000000000cc");
            string mine = Made($"tvix-fuse-build-{Environment.ProcessId}-00000000000000dd");
            string other = Made("session-7.scope");
            string odd = Made($"tvix-fuse-build-{gone.Id}");

            using var cgroup = BuildCgroupV2.Create(parent!, SandboxLimits.Default, _fs);
            Assert.False(Directory.Exists(stale));
            Assert.All([busy, running, mine, other, odd, cgroup.CgroupPath], d => Assert.True(Directory.Exists(d), d));
        }
        finally
        {
            live.Kill();
            live.WaitForExit();
        }
    }

    /// <summary>The kernel's part of a cgroup2 file system: what mkdir creates, and rmdir refused while populated.</summary>
    private sealed class FakeCgroupFs : ICgroupFs
    {
        public bool SwapAccounting { get; set; } = true;

        public bool BrokenMemoryMax { get; set; }

        public void MakeDirectory(string path)
        {
            if (Directory.Exists(path))
            {
                throw new IOException($"mkdir {path}: File exists");
            }

            Directory.CreateDirectory(path);
            string parentControl = Path.Combine(Path.GetDirectoryName(path)!, "cgroup.subtree_control");
            string controllers = File.Exists(parentControl) ? File.ReadAllText(parentControl).Trim() : "";
            File.WriteAllText(Path.Combine(path, "cgroup.controllers"), controllers + "\n");
            File.WriteAllText(Path.Combine(path, "cgroup.subtree_control"), "");
            File.WriteAllText(Path.Combine(path, "cgroup.procs"), "");
            File.WriteAllText(Path.Combine(path, "cgroup.events"), "populated 0\nfrozen 0\n");
            if (controllers.Split(' ').Contains("memory"))
            {
                if (BrokenMemoryMax)
                {
                    Directory.CreateDirectory(Path.Combine(path, "memory.max"));
                }
                else
                {
                    File.WriteAllText(Path.Combine(path, "memory.max"), "max\n");
                }

                File.WriteAllText(Path.Combine(path, "memory.events"), "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n");
                if (SwapAccounting)
                {
                    File.WriteAllText(Path.Combine(path, "memory.swap.max"), "max\n");
                }
            }

            if (controllers.Split(' ').Contains("pids"))
            {
                File.WriteAllText(Path.Combine(path, "pids.max"), "max\n");
                File.WriteAllText(Path.Combine(path, "pids.events"), "max 0\n");
            }
        }

        public void RemoveDirectory(string path)
        {
            if (!Directory.Exists(path))
            {
                throw new DirectoryNotFoundException(path);
            }

            if (File.ReadAllText(Path.Combine(path, "cgroup.procs")).Trim().Length > 0)
            {
                throw new IOException($"rmdir {path}: Device or resource busy");
            }

            Directory.Delete(path, recursive: true);
        }
    }
}
