
namespace TvixFuseBuild.Native;

/// <summary>
/// posix_spawn (vfork-based, safe in a multi-threaded process) the way every child of ours starts: the given standard
/// descriptors, every other one closed, in a directory of the caller's choosing, in a session of its own, with default
/// signal dispositions and an empty signal mask. The sandbox init starts the build's command with it, the mount server
/// its unmount watchdog.
/// </summary>
internal static unsafe class PosixSpawn
{
    /// <summary>
    /// Starts <paramref name="program"/> (a path, no PATH search). <paramref name="stdin"/> becomes descriptor 0, or
    /// /dev/null when -1; <paramref name="stdout"/> descriptor 1; <paramref name="stderr"/> descriptor 2, or this
    /// process's own when -1 or 2. Returns 0 with <paramref name="pid"/> set, or an errno with <paramref name="step"/>
    /// naming what failed ("stdout", "chdir", …, or "spawn" for posix_spawn itself), for the caller's own exception.
    /// </summary>
    public static int Start(
        string program, IReadOnlyList<string> argv, IReadOnlyList<string> environment, string directory,
        int stdin, int stdout, int stderr, out int pid, out string step)
    {
        pid = 0;

        // glibc's posix_spawn_file_actions_t is 80 bytes, posix_spawnattr_t 336, sigset_t 128: room to spare.
        byte* actions = stackalloc byte[512];
        byte* attr = stackalloc byte[1024];
        byte* signals = stackalloc byte[256];
        Libc.posix_spawn_file_actions_init(actions);
        Libc.posix_spawnattr_init(attr);
        using var strings = new NativeStrings();
        try
        {
            // Output first: stdin's /dev/null is opened onto 0 after any dup2 from there.
            step = "stdout";
            int rc = Libc.posix_spawn_file_actions_adddup2(actions, stdout, 1);
            if (rc == 0 && stderr >= 0 && stderr != 2)
            {
                step = "stderr";
                rc = Libc.posix_spawn_file_actions_adddup2(actions, stderr, 2);
            }

            if (rc == 0)
            {
                step = "stdin";
                rc = stdin < 0
                    ? Libc.posix_spawn_file_actions_addopen(actions, 0, "/dev/null", Libc.O_RDONLY, 0)
                    : Libc.posix_spawn_file_actions_adddup2(actions, stdin, 0);
            }

            if (rc == 0)
            {
                step = "closefrom";
                rc = Libc.posix_spawn_file_actions_addclosefrom_np(actions, 3);
            }

            if (rc == 0)
            {
                step = "chdir";
                rc = Libc.posix_spawn_file_actions_addchdir_np(actions, directory);
            }

            if (rc == 0)
            {
                step = "flags";
                rc = Libc.posix_spawnattr_setflags(attr, (short)(Libc.POSIX_SPAWN_SETSIGDEF | Libc.POSIX_SPAWN_SETSIGMASK | Libc.POSIX_SPAWN_SETSID));
            }

            if (rc == 0)
            {
                step = "signal defaults";
                Libc.sigfillset(signals);
                rc = Libc.posix_spawnattr_setsigdefault(attr, signals);
            }

            if (rc == 0)
            {
                step = "signal mask";
                Libc.sigemptyset(signals);
                rc = Libc.posix_spawnattr_setsigmask(attr, signals);
            }

            if (rc != 0)
            {
                return rc;
            }

            step = "spawn";
            int child;
            rc = Libc.posix_spawn(&child, strings.Add(program), actions, attr, strings.AddArray(argv), strings.AddArray(environment));
            pid = rc == 0 ? child : 0;
            return rc;
        }
        finally
        {
            Libc.posix_spawn_file_actions_destroy(actions);
            Libc.posix_spawnattr_destroy(attr);
        }
    }
}
