using TvixFuseBuild.Native;
using static TvixFuseBuild.Native.Libc;

namespace TvixFuseBuild.Sandbox.Init;

/// <summary>
/// Assembles the sandbox root inside the new mount namespace: a fresh tmpfs made the root with pivot_root, every host
/// path taken as a detached mount clone (open_tree) before the host disappears, then attached by file descriptor
/// (move_mount), so no mount costs a path walk of the whole table. Read-only-ness is set once on each clone
/// (mount_setattr); per-input clones of the read-only inputs clone inherit it.
/// </summary>
internal sealed unsafe class RootBuilder(InitPlan plan)
{
    /// <summary>Where the new root tmpfs is attached before pivot_root; hidden from then on.</summary>
    private const string Staging = "/tmp";

    /// <summary>Where the inputs clone waits while each input is cloned from it (removed before the command starts).</summary>
    private const string InputsStaging = "/.inputs";

    private static readonly string[] DeviceNodes = HostMounts.DeviceNodes;

    // C# has no octal literals.
    private const uint Mode0444 = 0x124;
    private const uint Mode0555 = 0x16D;
    private const uint Mode0644 = 0x1A4;
    private const uint Mode0700 = 0x1C0;
    private const uint Mode0755 = 0x1ED;
    private const uint Mode1777 = 0x3FF;

    public void Build()
    {
        // 1. Everything taken from the host, while it is still visible (as root, the caller took it already).
        var mounts = plan.Mounts ?? HostMounts.Take(plan);
        int inputs = mounts.Inputs;
        var entries = new List<Entry>();
        for (int i = 0; i < plan.Scratch.Count; i++)
        {
            entries.Add(new Entry(plan.Scratch[i].Path, EntryKind.Bind, mounts.Scratch[i], true));
        }

        if (plan.InputsHost is not null)
        {
            entries.Add(new Entry(plan.InputsPath, EntryKind.Inputs, inputs, true));
        }

        foreach (var (path, fd, directory) in mounts.ReadOnly)
        {
            entries.Add(new Entry(path, EntryKind.Bind, fd, directory));
        }

        if (mounts.BinSh >= 0)
        {
            entries.Add(new Entry("/bin/sh", EntryKind.Bind, mounts.BinSh, false));
        }

        var devices = mounts.Devices;
        bool hostsBound = false;
        foreach (var (file, fd) in mounts.NetworkFiles)
        {
            entries.Add(new Entry(file, EntryKind.Bind, fd, false));
            hostsBound |= file == "/etc/hosts";
        }

        entries.Add(new Entry("/dev", EntryKind.Dev, -1, true));
        entries.Add(new Entry("/proc", EntryKind.Proc, -1, true));
        if (plan.PrivateTmp)
        {
            entries.Add(new Entry("/tmp", EntryKind.Tmp, -1, true));
        }

        // 2. The new root.
        Check(mount("tmpfs", Staging, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"), "mount the root tmpfs");
        Check(mkdirat(AT_FDCWD, Staging + "/.old", Mode0700), "mkdir /.old");
        Check(PivotRoot(Staging, Staging + "/.old"), "pivot_root");
        Check(chdir("/"), "chdir /");

        // 3. Mounts, parents before children.
        // Parents before children; at the same path a scratch mount before the inputs bound into it.
        entries.Sort(static (a, b) => string.CompareOrdinal(a.Path, b.Path) is var c && c != 0 ? c : a.Kind.CompareTo(b.Kind));
        foreach (var entry in entries)
        {
            switch (entry.Kind)
            {
                case EntryKind.Bind:
                    if (entry.Directory)
                    {
                        MkdirAll(entry.Path);
                    }
                    else
                    {
                        MkdirAll(Parent(entry.Path));
                        CreateFile(entry.Path);
                    }

                    Attach(entry.Fd, entry.Path);
                    break;
                case EntryKind.Inputs:
                    MkdirAll(entry.Path);
                    if (plan.InputsPerEntry)
                    {
                        AttachEachInput(entry.Fd, entry.Path);
                    }
                    else
                    {
                        Attach(entry.Fd, entry.Path);
                    }

                    break;
                case EntryKind.Dev:
                    BuildDev(devices);
                    break;
                case EntryKind.Proc:
                    MkdirAll("/proc");
                    // Must happen while the host's /proc is still in this namespace (mount_too_revealing).
                    Check(mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, null), "mount /proc");
                    break;
                case EntryKind.Tmp:
                    MkdirAll("/tmp");
                    Check(mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, $"mode=1777,size={plan.TmpSize}"), "mount /tmp");
                    break;
            }
        }

        // 4. The host is gone from here on.
        Check(umount2("/.old", MNT_DETACH), "detach the host root");
        Check(unlinkat(AT_FDCWD, "/.old", 0x200 /* AT_REMOVEDIR */), "rmdir /.old");

        // 5. Files.
        MkdirAll("/etc");
        WriteNew("/etc/passwd",
            "root:x:0:0:Nix build user:" + plan.WorkingDirectory + ":/noshell\n" +
            "nixbld:x:1000:100:Nix build user:" + plan.WorkingDirectory + ":/noshell\n" +
            "nobody:x:65534:65534:Nobody:/:/noshell\n");
        WriteNew("/etc/group", "root:x:0:\nnixbld:!:100:\nnogroup:x:65534:\n");
        if (!hostsBound)
        {
            WriteNew("/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n");
        }

        foreach (var (path, content) in plan.Files)
        {
            MkdirAll(Parent(path));
            WriteFile(path, content);
        }

        // 6. Identity and network.
        fixed (byte* name = "localhost"u8)
        {
            Check(sethostname(name, 9), "sethostname");
        }

        if (!plan.Network)
        {
            LoopbackUp();
        }

        // 7. Nothing outside the scratch paths, /tmp and /dev/shm stays writable.
        Check(MountSetAttr(AT_FDCWD, "/", 0, MOUNT_ATTR_RDONLY, 0), "make / read-only");
        Check(MountSetAttr(AT_FDCWD, "/dev", 0, MOUNT_ATTR_RDONLY, 0), "make /dev read-only");
    }

    /// <summary>
    /// One read-only bind per input, so the writable directory around them cannot rename or delete them. The inputs
    /// clone is attached at a staging directory first: only a mount of this namespace may be cloned again (a clone the
    /// caller made in its own namespace could not).
    /// </summary>
    private void AttachEachInput(int clone, string path)
    {
        Check(mkdirat(AT_FDCWD, InputsStaging, Mode0700), $"mkdir {InputsStaging}");
        Attach(clone, InputsStaging);
        int inputs = Check(openat(AT_FDCWD, InputsStaging, O_PATH | O_DIRECTORY | O_CLOEXEC, 0), $"open {InputsStaging}");
        try
        {
            AttachEachInput(inputs, path, plan.InputNames);
        }
        finally
        {
            close(inputs);
        }

        Check(umount2(InputsStaging, MNT_DETACH), $"detach {InputsStaging}");
        Check(unlinkat(AT_FDCWD, InputsStaging, 0x200 /* AT_REMOVEDIR */), $"rmdir {InputsStaging}");
    }

    private static void AttachEachInput(int inputs, string path, string[] names)
    {
        int dir = Check(openat(AT_FDCWD, path, O_PATH | O_DIRECTORY | O_CLOEXEC, 0), $"open {path}");
        byte* link = stackalloc byte[4096];
        foreach (var name in names)
        {
            int mode = StatMode(inputs, name, AT_SYMLINK_NOFOLLOW);
            if (mode < 0)
            {
                throw SandboxSetupException.FromErrno($"input {name}", Errno.Last);
            }

            int rc;
            switch ((uint)mode & S_IFMT)
            {
                case S_IFDIR:
                    rc = mkdirat(dir, name, Mode0555);
                    break;
                case S_IFREG:
                    rc = openat(dir, name, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, Mode0444);
                    if (rc >= 0)
                    {
                        close(rc);
                    }

                    break;
                case S_IFLNK:
                    nint n = readlinkat(inputs, name, link, 4096);
                    Check((int)n, $"readlink input {name}");
                    rc = symlinkat(System.Text.Encoding.UTF8.GetString(link, (int)n), dir, name);
                    break;
                default:
                    throw new SandboxSetupException($"input {name} is neither a directory, a file nor a symlink");
            }

            if (rc < 0 && Errno.Last != Errno.EEXIST)
            {
                throw SandboxSetupException.FromErrno($"create the mountpoint of input {name} in {path}", Errno.Last);
            }

            int clone = Check(OpenTree(inputs, name, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_SYMLINK_NOFOLLOW), $"clone input {name}");
            rc = MoveMount(clone, "", dir, name, MOVE_MOUNT_F_EMPTY_PATH);
            close(clone);
            Check(rc, $"mount input {name} at {path}");
        }

        close(dir);
    }

    private void BuildDev(int[] devices)
    {
        MkdirAll("/dev");
        Check(mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755"), "mount /dev");
        for (int i = 0; i < devices.Length; i++)
        {
            string path = "/dev/" + DeviceNodes[i];
            CreateFile(path);
            Attach(devices[i], path);
        }

        Check(mkdirat(AT_FDCWD, "/dev/pts", Mode0755), "mkdir /dev/pts");
        Check(mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"), "mount /dev/pts");
        Check(symlinkat("pts/ptmx", AT_FDCWD, "/dev/ptmx"), "symlink /dev/ptmx");
        Check(mkdirat(AT_FDCWD, "/dev/shm", Mode1777), "mkdir /dev/shm");
        Check(mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, $"mode=1777,size={plan.TmpSize}"), "mount /dev/shm");
        Check(symlinkat("/proc/self/fd", AT_FDCWD, "/dev/fd"), "symlink /dev/fd");
        Check(symlinkat("/proc/self/fd/0", AT_FDCWD, "/dev/stdin"), "symlink /dev/stdin");
        Check(symlinkat("/proc/self/fd/1", AT_FDCWD, "/dev/stdout"), "symlink /dev/stdout");
        Check(symlinkat("/proc/self/fd/2", AT_FDCWD, "/dev/stderr"), "symlink /dev/stderr");
    }

    private static void LoopbackUp()
    {
        int fd = Check(socket(2 /* AF_INET */, 2 /* SOCK_DGRAM */ | O_CLOEXEC, 0), "socket");
        byte* ifreq = stackalloc byte[40];
        new Span<byte>(ifreq, 40).Clear();
        ifreq[0] = (byte)'l';
        ifreq[1] = (byte)'o';
        try
        {
            Check(ioctl(fd, 0x8913 /* SIOCGIFFLAGS */, ifreq), "get the flags of lo");
            *(short*)(ifreq + 16) |= 1; // IFF_UP
            Check(ioctl(fd, 0x8914 /* SIOCSIFFLAGS */, ifreq), "bring lo up");
        }
        finally
        {
            close(fd);
        }
    }

    private static void Attach(int fd, string path)
    {
        Check(MoveMount(fd, "", AT_FDCWD, path, MOVE_MOUNT_F_EMPTY_PATH), $"mount {path}");
        close(fd);
    }

    private static void MkdirAll(string path)
    {
        for (int i = 1; i <= path.Length; i++)
        {
            if (i == path.Length || path[i] == '/')
            {
                string prefix = path[..i];
                if (prefix.Length > 1 && mkdirat(AT_FDCWD, prefix, Mode0755) < 0 && Errno.Last != Errno.EEXIST)
                {
                    throw SandboxSetupException.FromErrno($"mkdir {prefix}", Errno.Last);
                }
            }
        }
    }

    private static void CreateFile(string path)
    {
        int fd = openat(AT_FDCWD, path, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, Mode0444);
        if (fd < 0)
        {
            throw SandboxSetupException.FromErrno($"create {path}", Errno.Last);
        }

        close(fd);
    }

    private static void WriteNew(string path, string content)
    {
        int fd = openat(AT_FDCWD, path, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, Mode0644);
        if (fd < 0)
        {
            if (Errno.Last == Errno.EEXIST)
            {
                return; // provided by a mount
            }

            throw SandboxSetupException.FromErrno($"create {path}", Errno.Last);
        }

        WriteAndClose(fd, System.Text.Encoding.UTF8.GetBytes(content), path);
    }

    private static void WriteFile(string path, byte[] content)
    {
        int fd = openat(AT_FDCWD, path, O_CREAT | O_TRUNC | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, Mode0644);
        if (fd < 0)
        {
            throw SandboxSetupException.FromErrno($"create {path}", Errno.Last);
        }

        WriteAndClose(fd, content, path);
    }

    private static void WriteAndClose(int fd, byte[] content, string path)
    {
        try
        {
            fixed (byte* p = content)
            {
                int done = 0;
                while (done < content.Length)
                {
                    nint n = write(fd, p + done, (nuint)(content.Length - done));
                    if (n < 0)
                    {
                        if (Errno.Last == Errno.EINTR)
                        {
                            continue;
                        }

                        throw SandboxSetupException.FromErrno($"write {path}", Errno.Last);
                    }

                    done += (int)n;
                }
            }
        }
        finally
        {
            close(fd);
        }
    }

    private static string Parent(string path)
    {
        int slash = path.LastIndexOf('/');
        return slash <= 0 ? "/" : path[..slash];
    }

    private static int Check(int rc, string operation) => SandboxSetupException.Check(rc, operation);

    private enum EntryKind
    {
        Bind,
        Inputs,
        Dev,
        Proc,
        Tmp,
    }

    private readonly record struct Entry(string Path, EntryKind Kind, int Fd, bool Directory);
}
