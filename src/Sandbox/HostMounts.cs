using TvixFuseBuild.Native;
using static TvixFuseBuild.Native.Libc;

namespace TvixFuseBuild.Sandbox;

/// <summary>
/// Every host path a sandbox shows, taken as a detached mount clone (open_tree with OPEN_TREE_CLONE) with its mount
/// flags already set (mount_setattr). As root the caller takes them in its own mount namespace, where it can reach
/// directories the build user cannot, and the init inherits the descriptors and attaches them; an unprivileged init
/// takes them itself in its new namespace. A detached clone made in another namespace can still be attached
/// (move_mount) by the init; a plain descriptor of a mount could not.
/// </summary>
internal sealed class HostMounts
{
    public static readonly string[] DeviceNodes = ["null", "zero", "full", "random", "urandom", "tty"];
    public static readonly string[] NetworkFileNames = ["/etc/resolv.conf", "/etc/hosts", "/etc/services"];

    private const ulong Hardened = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    private const ulong ReadOnlyFlags = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;

    public int Inputs { get; set; } = -1;

    /// <summary>One per <see cref="InitPlan.Scratch"/> entry, in order.</summary>
    public List<int> Scratch { get; } = [];

    /// <summary>The read-only host paths: path, clone, whether it is a directory.</summary>
    public List<(string Path, int Fd, bool Directory)> ReadOnly { get; } = [];

    public int BinSh { get; set; } = -1;

    /// <summary>One per <see cref="DeviceNodes"/> entry.</summary>
    public int[] Devices { get; set; } = [];

    public List<(string Path, int Fd)> NetworkFiles { get; } = [];

    /// <summary>Every descriptor held, for the init to keep and the caller to close.</summary>
    public IEnumerable<int> All =>
        new[] { Inputs, BinSh }.Concat(Scratch).Concat(ReadOnly.Select(r => r.Fd)).Concat(Devices).Concat(NetworkFiles.Select(n => n.Fd)).Where(fd => fd >= 0);

    /// <summary>
    /// Takes everything <paramref name="plan"/> names, close-on-exec (the caller clears the flag only while it starts
    /// the init: see <see cref="SandboxRun"/>). On failure nothing stays open.
    /// </summary>
    /// <exception cref="SandboxRefusedException">A read-only path may not be exposed.</exception>
    /// <exception cref="SandboxSetupException">A host path cannot be cloned.</exception>
    public static HostMounts Take(InitPlan plan)
    {
        var mounts = new HostMounts();
        const uint flags = OPEN_TREE_CLONE | AT_RECURSIVE | OPEN_TREE_CLOEXEC;
        try
        {
            if (plan.InputsHost is not null)
            {
                mounts.Inputs = Clone(AT_FDCWD, plan.InputsHost, flags, ReadOnlyFlags, "the inputs directory");
            }

            foreach (var (path, host) in plan.Scratch)
            {
                mounts.Scratch.Add(Clone(AT_FDCWD, host, flags, Hardened, $"scratch path {path}"));
            }

            foreach (var path in plan.ReadOnlyPaths)
            {
                int fd = ReadOnlyPaths.Open(path, plan.ProtectedPaths, out uint mode);
                try
                {
                    // A device node listed on purpose (/dev/kvm) stays usable; any device below a directory does not.
                    uint type = mode & S_IFMT;
                    ulong attrs = type is S_IFCHR or S_IFBLK ? MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID : ReadOnlyFlags;
                    mounts.ReadOnly.Add((path, Clone(fd, "", flags | AT_EMPTY_PATH, attrs, $"read-only path {path}"), type == S_IFDIR));
                }
                finally
                {
                    close(fd);
                }
            }

            if (plan.BinSh is not null)
            {
                mounts.BinSh = Clone(AT_FDCWD, plan.BinSh, flags, ReadOnlyFlags, "the shell for /bin/sh");
            }

            mounts.Devices = new int[DeviceNodes.Length];
            Array.Fill(mounts.Devices, -1);
            for (int i = 0; i < DeviceNodes.Length; i++)
            {
                // Writes to a device node are not affected by a read-only mount; its mode and owner are.
                mounts.Devices[i] = Clone(AT_FDCWD, "/dev/" + DeviceNodes[i], flags, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, "/dev/" + DeviceNodes[i]);
            }

            if (plan.Network)
            {
                foreach (var file in NetworkFileNames)
                {
                    if (StatMode(AT_FDCWD, file, 0) >= 0)
                    {
                        mounts.NetworkFiles.Add((file, Clone(AT_FDCWD, file, flags, ReadOnlyFlags, file)));
                    }
                }
            }

            return mounts;
        }
        catch
        {
            mounts.Close();
            throw;
        }
    }

    /// <summary>Closes every descriptor (the clones vanish with their last descriptor unless attached).</summary>
    public void Close()
    {
        foreach (int fd in All)
        {
            close(fd);
        }
    }

    private static int Clone(int dirFd, string path, uint flags, ulong attrs, string what)
    {
        int fd = OpenTree(dirFd, path, flags);
        if (fd < 0)
        {
            throw SandboxSetupException.FromErrno(path.Length == 0 ? what : $"{what} ({path})", Errno.Last);
        }

        if (MountSetAttr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, attrs, 0) < 0)
        {
            int errno = Errno.Last;
            close(fd);
            throw SandboxSetupException.FromErrno($"set the mount flags of {what}", errno);
        }

        return fd;
    }
}
