using TvixFuseBuild.Sandbox.Interop;
using static TvixFuseBuild.Sandbox.Interop.Libc;

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

    private static readonly string[] DeviceNodes = ["null", "zero", "full", "random", "urandom", "tty"];
    private static readonly string[] NetworkFiles = ["/etc/resolv.conf", "/etc/hosts", "/etc/services"];

    // C# has no octal literals.
    private const uint Mode0444 = 0x124;
    private const uint Mode0555 = 0x16D;
    private const uint Mode0644 = 0x1A4;
    private const uint Mode0700 = 0x1C0;
    private const uint Mode0755 = 0x1ED;
    private const uint Mode1777 = 0x3FF;

    private const ulong Hardened = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    private const ulong ReadOnly = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;

    public void Build()
    {
        // 1. Everything taken from the host, while it is still visible.
        int inputs = plan.InputsHost is null ? -1 : Clone(plan.InputsHost, ReadOnly, "the inputs directory");
        var entries = new List<Entry>();
        foreach (var (path, host) in plan.Scratch)
        {
            entries.Add(new Entry(path, EntryKind.Bind, Clone(host, Hardened, $"scratch path {path}"), true));
        }

        if (plan.InputsHost is not null)
        {
            entries.Add(new Entry(plan.InputsPath, EntryKind.Inputs, inputs, true));
        }

        foreach (var path in plan.ReadOnlyPaths)
        {
            int mode = StatMode(AT_FDCWD, path, 0);
            if (mode < 0)
            {
                throw Errno.Exception($"read-only path {path}", Errno.Last);
            }

            uint type = (uint)mode & S_IFMT;
            bool device = type is S_IFCHR or S_IFBLK;
            ulong attrs = device ? MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID : ReadOnly;
            entries.Add(new Entry(path, EntryKind.Bind, Clone(path, attrs, $"read-only path {path}"), type == S_IFDIR));
        }

        if (plan.BinSh is not null)
        {
            entries.Add(new Entry("/bin/sh", EntryKind.Bind, Clone(plan.BinSh, ReadOnly, "the shell for /bin/sh"), false));
        }

        var devices = new int[DeviceNodes.Length];
        for (int i = 0; i < devices.Length; i++)
        {
            // Writes to a device node are not affected by a read-only mount; its mode and owner are.
            devices[i] = Clone("/dev/" + DeviceNodes[i], MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, "/dev/" + DeviceNodes[i]);
        }

        bool hostsBound = false;
        if (plan.Network)
        {
            foreach (var file in NetworkFiles)
            {
                if (StatMode(AT_FDCWD, file, 0) >= 0)
                {
                    entries.Add(new Entry(file, EntryKind.Bind, Clone(file, ReadOnly, file), false));
                    hostsBound |= file == "/etc/hosts";
                }
            }
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

        if (inputs >= 0)
        {
            close(inputs);
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

    /// <summary>One read-only bind per input, so the writable directory around them cannot rename or delete them.</summary>
    private void AttachEachInput(int inputs, string path)
    {
        int dir = Check(openat(AT_FDCWD, path, O_PATH | O_DIRECTORY | O_CLOEXEC, 0), $"open {path}");
        byte* link = stackalloc byte[4096];
        foreach (var name in plan.InputNames)
        {
            int mode = StatMode(inputs, name, AT_SYMLINK_NOFOLLOW);
            if (mode < 0)
            {
                throw Errno.Exception($"input {name}", Errno.Last);
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

            if (rc < 0 && Errno.Last != EEXIST)
            {
                throw Errno.Exception($"create the mountpoint of input {name} in {path}", Errno.Last);
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

    private static int Clone(string hostPath, ulong attrs, string what)
    {
        int fd = OpenTree(AT_FDCWD, hostPath, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
        if (fd < 0)
        {
            throw Errno.Exception($"{what} ({hostPath})", Errno.Last);
        }

        Check(MountSetAttr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, attrs, 0), $"set the mount flags of {what}");
        return fd;
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
                if (prefix.Length > 1 && mkdirat(AT_FDCWD, prefix, Mode0755) < 0 && Errno.Last != EEXIST)
                {
                    throw Errno.Exception($"mkdir {prefix}", Errno.Last);
                }
            }
        }
    }

    private static void CreateFile(string path)
    {
        int fd = openat(AT_FDCWD, path, O_CREAT | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, Mode0444);
        if (fd < 0)
        {
            throw Errno.Exception($"create {path}", Errno.Last);
        }

        close(fd);
    }

    private static void WriteNew(string path, string content)
    {
        int fd = openat(AT_FDCWD, path, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, Mode0644);
        if (fd < 0)
        {
            if (Errno.Last == EEXIST)
            {
                return; // provided by a mount
            }

            throw Errno.Exception($"create {path}", Errno.Last);
        }

        WriteAndClose(fd, System.Text.Encoding.UTF8.GetBytes(content), path);
    }

    private static void WriteFile(string path, byte[] content)
    {
        int fd = openat(AT_FDCWD, path, O_CREAT | O_TRUNC | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, Mode0644);
        if (fd < 0)
        {
            throw Errno.Exception($"create {path}", Errno.Last);
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
                        if (Errno.Last == EINTR)
                        {
                            continue;
                        }

                        throw Errno.Exception($"write {path}", Errno.Last);
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

    private static int Check(int rc, string operation) => Errno.Check(rc, operation);

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
