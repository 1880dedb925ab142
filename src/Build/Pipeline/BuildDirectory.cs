using System.Diagnostics;
using System.Globalization;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Castore.Transfer;
using TvixFuseBuild.Fuse;
using TvixFuseBuild.Native;
using TvixFuseBuild.Sandbox;

namespace TvixFuseBuild.Build.Pipeline;

/// <summary>
/// A build's directory on the host, nobody else's to reach:
/// <code>
/// WORKROOT/tvix-fuse-builds-UID/           the caller's (UID), mode 0700
/// WORKROOT/tvix-fuse-builds-UID/NAME.lock  held (flock) by the process that owns the build
/// WORKROOT/tvix-fuse-builds-UID/NAME/      the build user's, mode 0700, as are:
///     inputs/                              the FUSE mountpoint
///     scratch/N/                           one per scratch path
/// </code>
/// A directory whose lock can be taken belongs to a process that is gone: <see cref="RemoveStale"/> detaches its mounts
/// and removes it. A kept directory (<c>--keep-failed</c>) loses its lock file, so it is never swept.
/// </summary>
internal sealed class BuildDirectory
{
    private const string ParentPrefix = "tvix-fuse-builds-";
    private const uint Mode0700 = 0x1C0;

    private readonly string _lockPath;
    private int _lockFd;

    private BuildDirectory(string root, string lockPath, int lockFd, Dictionary<string, string> scratchPaths)
    {
        Root = root;
        Inputs = Path.Combine(root, "inputs");
        ScratchPaths = scratchPaths;
        _lockPath = lockPath;
        _lockFd = lockFd;
    }

    public string Root { get; }

    public string Inputs { get; }

    /// <summary>Scratch path (relative, as in the request) to its host directory.</summary>
    public IReadOnlyDictionary<string, string> ScratchPaths { get; }

    /// <summary>The directory holding this user's build directories under <paramref name="workRoot"/> (null: the temp directory).</summary>
    public static string ParentOf(string? workRoot) =>
        Path.Combine(Path.GetFullPath(workRoot ?? Path.GetTempPath()), ParentPrefix + Libc.geteuid().ToString(CultureInfo.InvariantCulture));

    public static BuildDirectory Create(string? workRoot, BuildSpec spec, BuildUser user)
    {
        string parent = EnsureParent(workRoot);
        while (true)
        {
            string name = Random.Shared.NextInt64().ToString("x16", CultureInfo.InvariantCulture);
            string lockPath = Path.Combine(parent, name + ".lock");
            int fd = Libc.open(lockPath, Libc.O_RDWR | Libc.O_CREAT | Libc.O_EXCL | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0x180);
            if (fd < 0)
            {
                int errno = Errno.Last;
                if (errno == Errno.EEXIST)
                {
                    continue;
                }

                throw new PosixException("cannot create", lockPath, errno);
            }

            // A sweep may have opened the new file before it was locked, found no directory and unlinked it: the lock is
            // only ours while the name still leads to this file.
            if (Libc.flock(fd, Libc.LOCK_EX) < 0 || Libc.Inode(fd, null) != Libc.Inode(Libc.AT_FDCWD, lockPath))
            {
                Libc.close(fd);
                continue;
            }

            string root = Path.Combine(parent, name);
            try
            {
                MakeDirectory(root, user);
                MakeDirectory(Path.Combine(root, "inputs"), user);
                MakeDirectory(Path.Combine(root, "scratch"), user);
                var scratch = new Dictionary<string, string>(StringComparer.Ordinal);
                foreach (string path in spec.ScratchPaths.Distinct())
                {
                    string host = Path.Combine(root, "scratch", scratch.Count.ToString(CultureInfo.InvariantCulture));
                    MakeDirectory(host, user);
                    scratch[path] = host;
                }

                return new BuildDirectory(root, lockPath, fd, scratch);
            }
            catch
            {
                new BuildDirectory(root, lockPath, fd, []).Remove(static _ => { });
                throw;
            }
        }
    }

    /// <summary>
    /// Removes the build directories under <paramref name="workRoot"/> whose owner is gone (its lock is free),
    /// detaching their mounts first. Directories of the old layout (<c>tvix-fuse-build-HEX</c> directly in the work
    /// root) have no lock to tell whether their owner lives, and are left alone. Returns how many were removed.
    /// </summary>
    public static int RemoveStale(string? workRoot, Action<string> log)
    {
        string parent = ParentOf(workRoot);
        if (!Directory.Exists(parent) || CheckParent(parent) is not null)
        {
            return 0;
        }

        int removed = 0;
        foreach (string lockPath in Directory.EnumerateFiles(parent, "*.lock"))
        {
            int fd = Libc.open(lockPath, Libc.O_RDWR | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0);
            if (fd < 0)
            {
                continue;
            }

            if (Libc.flock(fd, Libc.LOCK_EX | Libc.LOCK_NB) < 0 || Libc.Inode(fd, null) != Libc.Inode(Libc.AT_FDCWD, lockPath))
            {
                Libc.close(fd); // its owner runs (or another sweep got there first)
                continue;
            }

            string root = lockPath[..^".lock".Length];
            var stale = new BuildDirectory(root, lockPath, fd, []);
            if (Path.Exists(root))
            {
                if (!CastoreMount.DetachMountsUnder(root, log))
                {
                    stale.Release(unlink: false);
                    continue;
                }

                if (!stale.Remove(log))
                {
                    continue;
                }

                removed++;
                log($"removed the build directory {root}: the process that ran its build is gone");
            }
            else
            {
                stale.Release(unlink: true);
            }
        }

        return removed;
    }

    /// <summary>Where a request path (under some scratch path) is on the host: below the longest scratch path holding it.</summary>
    public string HostPath(string path)
    {
        string? best = null;
        foreach (string scratch in ScratchPaths.Keys)
        {
            if ((path == scratch || scratch.Length == 0 || path.StartsWith(scratch + "/", StringComparison.Ordinal)) &&
                (best is null || scratch.Length > best.Length))
            {
                best = scratch;
            }
        }

        if (best is null)
        {
            throw new UnreachableException($"output {path} is under no scratch path; validation should have refused it");
        }

        string rest = path.Length == best.Length ? "" : path[(best.Length == 0 ? 0 : best.Length + 1)..];
        return rest.Length == 0 ? ScratchPaths[best] : Path.Combine(ScratchPaths[best], rest);
    }

    /// <summary>Removes the directory, then its lock; false (the lock file kept, for a later sweep) when it cannot.</summary>
    public bool Remove(Action<string> log)
    {
        try
        {
            HostTree.Remove(Root);
        }
        catch (IOException e)
        {
            log($"could not remove the build directory {Root}: {e.Message}");
            Release(unlink: false);
            return false;
        }

        Release(unlink: true);
        return true;
    }

    /// <summary>Keeps the directory for good: without its lock file, no sweep ever removes it.</summary>
    public void Keep() => Release(unlink: true);

    private void Release(bool unlink)
    {
        int fd = Interlocked.Exchange(ref _lockFd, -1);
        if (fd < 0)
        {
            return;
        }

        if (unlink)
        {
            File.Delete(_lockPath);
        }

        Libc.close(fd);
    }

    /// <summary>Creates (mode 0700) and validates the caller's directory of build directories.</summary>
    private static string EnsureParent(string? workRoot)
    {
        string parent = ParentOf(workRoot);
        Directory.CreateDirectory(Path.GetDirectoryName(parent)!);
        if (Libc.mkdir(parent, Mode0700) < 0 && Errno.Last is var errno && errno != Errno.EEXIST)
        {
            throw new PosixException("cannot create", parent, errno);
        }

        if (CheckParent(parent) is { } problem)
        {
            throw new IOException($"cannot build under {parent}: {problem}; remove it or choose another work directory (TMPDIR)");
        }

        MarkTopDirectory(parent);
        return parent;
    }

    /// <summary>
    /// Sets the "top of a directory hierarchy" attribute (<c>chattr +T</c>, FS_TOPDIR_FL) on <paramref name="parent"/>, so
    /// that ext4 places each build directory in a block group of its own choosing (Orlov) rather than in the parent's.
    /// Without it every build lands in one group, and on ext4 without a journal each new inode there first skips every
    /// inode freed in the last 30 seconds (<c>recently_deleted</c>): a build writing 2,000 files after a few like it
    /// spent ~0.8 s of CPU in that search (docs/benchmarks.md, Nix derivations). Best effort: other filesystems refuse.
    /// </summary>
    private static unsafe void MarkTopDirectory(string parent)
    {
        const nuint GetFlags = 0x80086601; // FS_IOC_GETFLAGS
        const nuint SetFlags = 0x40086602; // FS_IOC_SETFLAGS
        const int TopDir = 0x00020000;     // FS_TOPDIR_FL
        int fd = Libc.open(parent, Libc.O_RDONLY | Libc.O_DIRECTORY | Libc.O_NOFOLLOW | Libc.O_CLOEXEC, 0);
        if (fd < 0)
        {
            return;
        }

        int flags = 0;
        if (Libc.ioctl(fd, GetFlags, &flags) == 0 && (flags & TopDir) == 0)
        {
            flags |= TopDir;
            Libc.ioctl(fd, SetFlags, &flags);
        }

        Libc.close(fd);
    }

    /// <summary>Why <paramref name="parent"/> is not ours to use (not a real directory of ours with mode 0700), or null.</summary>
    private static string? CheckParent(string parent)
    {
        if (!Libc.StatPath(parent, out uint owner, out uint mode))
        {
            return "it cannot be examined";
        }

        if ((mode & 0xF000) != 0x4000)
        {
            return "it is not a directory (a symlink, perhaps)";
        }

        uint euid = Libc.geteuid();
        return owner != euid || (mode & 0xFFF) != Mode0700
            ? $"it must be a directory of uid {euid} with mode 0700 (it is uid {owner}'s, mode {Convert.ToString(mode & 0xFFF, 8)})"
            : null;
    }

    private static void MakeDirectory(string path, BuildUser user)
    {
        if (Libc.mkdir(path, Mode0700) < 0)
        {
            throw PosixException.FromLastError("cannot create", path);
        }

        if (!user.IsCallersOwn && Libc.lchown(path, user.Uid, user.Gid) < 0)
        {
            throw PosixException.FromLastError($"cannot give {path} to the build user {user.Uid}", null);
        }
    }
}
