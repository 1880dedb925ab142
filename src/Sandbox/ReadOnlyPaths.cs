using TvixFuseBuild.Native;
using static TvixFuseBuild.Native.Libc;

namespace TvixFuseBuild.Sandbox;

/// <summary>
/// Opens a read-only host path the way a build may see it: from <c>/</c>, one component at a time with openat2 and
/// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS (a symlink anywhere is refused, never followed), and never through
/// <c>..</c>. The mount is then cloned from the descriptor, so nothing walks the path again. Refused: a path that is,
/// lies inside or contains a build directory, the store (<see cref="SandboxSpec.ProtectedHostPaths"/>), /proc or
/// /sys, or another kernel interface filesystem. Used by the caller as root, by the init otherwise.
/// </summary>
internal static class ReadOnlyPaths
{
    /// <summary>The name of the directory (under a work root) that holds a user's build directories.</summary>
    public const string BuildDirectoriesPrefix = "tvix-fuse-builds-";

    private static readonly string[] KernelDirectories = ["/proc", "/sys"];

    /// <summary>proc, sysfs, cgroup, cgroup2, debugfs, tracefs, securityfs, bpf, efivarfs, configfs, pstore.</summary>
    private static readonly long[] KernelFilesystems =
        [0x9fa0, 0x62656572, 0x27e0eb, 0x63677270, 0x64626720, 0x74726163, 0x73636673, unchecked((long)0xcafe4a11), unchecked((long)0xde5e81e4), 0x62656570, 0x6165676C];

    private static readonly HashSet<string> KernelFilesystemTypes =
        ["proc", "sysfs", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "bpf", "efivarfs", "configfs", "pstore"];

    /// <summary>The path with its '/'s normalized; refuses a relative path and '.' or '..' components.</summary>
    public static string Normalize(string path)
    {
        if (string.IsNullOrEmpty(path) || path[0] != '/')
        {
            throw new SandboxRefusedException($"read-only path '{path}' is not absolute");
        }

        if (path.Contains('\0'))
        {
            throw new SandboxRefusedException("a read-only path contains a NUL byte");
        }

        var parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        foreach (var part in parts)
        {
            if (part is "." or "..")
            {
                throw new SandboxRefusedException($"read-only path {path} contains '{part}'; name the path itself");
            }
        }

        return "/" + string.Join('/', parts);
    }

    /// <summary>
    /// Checks and opens <paramref name="path"/> (already <see cref="Normalize"/>d); returns an O_PATH descriptor and its
    /// st_mode. <paramref name="protectedPaths"/> are canonical host paths (see <see cref="Canonical"/>).
    /// </summary>
    /// <exception cref="SandboxRefusedException">The path may not be exposed, or does not exist.</exception>
    public static int Open(string path, IReadOnlyCollection<string> protectedPaths, out uint mode)
    {
        if (path == "/")
        {
            throw new SandboxRefusedException("read-only path / would expose the whole host, /proc and /sys included");
        }

        foreach (var kernel in KernelDirectories)
        {
            if (IsSameOrUnder(path, kernel) || IsSameOrUnder(kernel, path))
            {
                throw new SandboxRefusedException($"read-only path {path} is, lies inside or contains {kernel}, which a build never sees of the host");
            }
        }

        foreach (var place in protectedPaths)
        {
            if (IsSameOrUnder(path, place))
            {
                throw new SandboxRefusedException($"read-only path {path} lies inside {place} (build directories or the store), which a build never sees");
            }

            if (IsSameOrUnder(place, path))
            {
                throw new SandboxRefusedException($"read-only path {path} contains {place} (build directories or the store), which a build never sees");
            }
        }

        int fd = SandboxSetupException.Check(openat(AT_FDCWD, "/", O_PATH | O_DIRECTORY | O_CLOEXEC, 0), "open /");
        mode = 0;
        string walked = "";
        try
        {
            foreach (var part in path.Split('/', StringSplitOptions.RemoveEmptyEntries))
            {
                walked += "/" + part;
                int next = OpenAt2Path(fd, part, RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
                if (next < 0)
                {
                    int errno = Errno.Last;
                    throw new SandboxRefusedException(errno switch
                    {
                        Errno.ELOOP => $"read-only path {path}: {walked} is a symbolic link; read-only paths are never resolved through symlinks, name the target",
                        Errno.ENOENT => $"read-only path {path} does not exist",
                        Errno.EXDEV => $"read-only path {path}: {walked} crosses into a filesystem it may not",
                        _ => $"read-only path {path}: {SandboxSetupException.FromErrno($"open {walked}", errno).Message}",
                    });
                }

                close(fd);
                fd = next;
                if (!StatFd(fd, out uint owner, out mode))
                {
                    throw new SandboxRefusedException($"read-only path {path}: {SandboxSetupException.FromErrno($"stat {walked}", Errno.Last).Message}");
                }

                if (BuildUser.IsRoot && BuildUser.IsBuildUid(owner))
                {
                    throw new SandboxRefusedException($"read-only path {path} lies inside a build directory ({walked} belongs to build user {owner})");
                }

                if ((mode & S_IFMT) == S_IFDIR && part.StartsWith(BuildDirectoriesPrefix, StringComparison.Ordinal))
                {
                    throw new SandboxRefusedException($"read-only path {path} lies inside the build directories {walked}");
                }

                if (Array.IndexOf(KernelFilesystems, FsType(fd)) >= 0)
                {
                    throw new SandboxRefusedException($"read-only path {path}: {walked} is a kernel interface filesystem (like /proc or /sys), which a build never sees of the host");
                }
            }

            if ((mode & S_IFMT) == S_IFDIR && MountBelow(path) is { } mount)
            {
                throw new SandboxRefusedException($"read-only path {path} contains {mount}, which a build never sees of the host");
            }

            int result = fd;
            fd = -1;
            return result;
        }
        finally
        {
            if (fd >= 0)
            {
                close(fd);
            }
        }
    }

    /// <summary>A kernel interface filesystem or a build's inputs mounted below <paramref name="directory"/>, described; or null.</summary>
    private static string? MountBelow(string directory)
    {
        List<MountInfo> mounts;
        try
        {
            mounts = MountInfo.ReadSelf();
        }
        catch (IOException e)
        {
            throw new SandboxRefusedException($"read-only path {directory}: cannot read /proc/self/mountinfo: {e.Message}");
        }

        foreach (var mount in mounts)
        {
            string type = mount.FileSystemType;
            if (mount.IsAtOrUnder(directory) &&
                (KernelFilesystemTypes.Contains(type) || type == "fuse.tvix-fuse-build"))
            {
                return type == "fuse.tvix-fuse-build" ? $"a build's inputs (mounted at {mount.MountPoint})" : $"a {type} filesystem (mounted at {mount.MountPoint})";
            }
        }

        return null;
    }

    /// <summary>The path with every symlink resolved (realpath), or the absolute path when it does not exist.</summary>
    public static unsafe string Canonical(string path)
    {
        byte* buffer = stackalloc byte[4097];
        nint resolved = realpath(path, buffer);
        return resolved == 0
            ? Path.TrimEndingDirectorySeparator(Path.GetFullPath(path))
            : System.Runtime.InteropServices.Marshal.PtrToStringUTF8((nint)buffer)!;
    }

    public static bool IsSameOrUnder(string path, string dir) =>
        path == dir || dir == "/" ||
        (path.Length > dir.Length && path.StartsWith(dir, StringComparison.Ordinal) && path[dir.Length] == '/');
}
