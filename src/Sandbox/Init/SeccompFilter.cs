using System.Runtime.InteropServices;
using TvixFuseBuild.Native;

namespace TvixFuseBuild.Sandbox.Init;

/// <summary>
/// The syscall filter every build runs under, with Nix's rules: chmod, fchmod, fchmodat and fchmodat2 with S_ISUID or
/// S_ISGID in the mode fail with EPERM; setxattr, lsetxattr, fsetxattr and setxattrat fail with ENOTSUP (no extended
/// attributes, hence no ACLs or security.* attributes). On x86-64 the same rules cover the i386 and x32 system call
/// tables, so a 32-bit program cannot go around them. libseccomp (Debian's libseccomp2, as Nix uses) compiles the
/// filter once in the caller; the init only loads the BPF program on the thread that spawns the command, so the
/// command and its descendants inherit it and the init does not. Syscalls newer than the installed libseccomp
/// (setxattrat in 2.5) go into a second filter of a few instructions, by their fixed numbers.
/// </summary>
internal static unsafe partial class SeccompFilter
{
    private const string Lib = "libseccomp.so.2";

    private const uint ActAllow = 0x7fff0000;
    private const uint ActErrnoBase = 0x00050000;
    private const int CmpMaskedEq = 7;
    private const ulong SetUid = 0x800;
    private const ulong SetGid = 0x400;
    private const int EPERM = 1;
    private const int ENOTSUP = 95;

    internal const uint ArchX86 = 0x40000003;
    internal const uint ArchX86_64 = 0xC000003E;
    internal const uint ArchX32 = 0x4000003E;
    internal const uint ArchAarch64 = 0xC00000B7;
    internal const uint ArchArm = 0x40000028;
    private const int X32SyscallBit = 0x40000000;

    private static readonly Lazy<byte[]> s_program = new(Compile);

    /// <summary>(syscall, index of the mode argument): a mode with S_ISUID or S_ISGID fails with EPERM.</summary>
    private static readonly (string Name, uint ModeArg)[] ChmodCalls = [("chmod", 1), ("fchmod", 1), ("fchmodat", 2), ("fchmodat2", 2)];

    private static readonly string[] SetXattrCalls = ["setxattr", "lsetxattr", "fsetxattr", "setxattrat"];

    /// <summary>
    /// The BPF programs (each an int32 byte length and its struct sock_filter[]), compiled once; a
    /// <see cref="SandboxException"/> when libseccomp is missing.
    /// </summary>
    public static byte[] Program => s_program.Value;

    /// <summary>The libseccomp-compiled filter in its readable form (pseudo filter code), for tests.</summary>
    internal static string Describe() => System.Text.Encoding.UTF8.GetString(Export(bpf: false));

    /// <summary>The architectures the filter covers: the native one, plus the 32-bit ones its kernel can also run (as Nix does).</summary>
    internal static uint[] Architectures() => RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 => [ArchX86_64, ArchX86, ArchX32],
        Architecture.Arm64 => [ArchAarch64, ArchArm],
        _ => [seccomp_arch_native()],
    };

    /// <summary>Installs the programs of <see cref="Program"/> on the calling thread only (no TSYNC). no_new_privs must be set.</summary>
    public static void Load(byte[] programs)
    {
        for (int at = 0; at < programs.Length;)
        {
            int length = BitConverter.ToInt32(programs, at);
            fixed (byte* filter = &programs[at + 4])
            {
                var fprog = new SockFprog { Length = (ushort)(length / 8), Filter = filter };
                SandboxSetupException.Check(Libc.prctl(22 /* PR_SET_SECCOMP */, 2 /* SECCOMP_MODE_FILTER */, (nuint)(&fprog), 0, 0), "install the seccomp filter");
            }

            at += 4 + length;
        }
    }

    private static byte[] Compile()
    {
        byte[] main = Export(bpf: true);
        byte[] extra = Supplement();
        var programs = new List<byte>();
        foreach (byte[] program in extra.Length == 0 ? [main] : new[] { main, extra })
        {
            programs.AddRange(BitConverter.GetBytes(program.Length));
            programs.AddRange(program);
        }

        return [.. programs];
    }

    /// <summary>
    /// The rules for syscalls this libseccomp does not know (setxattrat in 2.5, fchmodat2 before 2.5.5), as a second
    /// filter of a few instructions: the kernel applies every filter and the strictest answer wins.
    /// </summary>
    private static byte[] Supplement()
    {
        var code = new List<(ushort Code, byte Jt, byte Jf, uint K)>();
        foreach (uint arch in Architectures())
        {
            foreach (var (name, modeArg, errno) in Rules())
            {
                if (KnownEverywhere(name))
                {
                    continue;
                }

                int nr = Syscall(arch, name);
                bool mode = modeArg >= 0;
                code.Add((0x20, 0, 0, 4)); // ld [4]: arch
                code.Add((0x15, 0, (byte)(mode ? 5 : 3), arch)); // jeq arch
                code.Add((0x20, 0, 0, 0)); // ld [0]: nr
                code.Add((0x15, 0, (byte)(mode ? 3 : 1), (uint)nr)); // jeq nr
                if (mode)
                {
                    code.Add((0x20, 0, 0, (uint)(16 + (8 * modeArg)))); // ld the low word of the mode
                    code.Add((0x45, 0, 1, (uint)(SetUid | SetGid))); // jset S_ISUID|S_ISGID
                }

                code.Add((0x06, 0, 0, ActErrnoBase | (uint)errno)); // ret ERRNO
            }
        }

        if (code.Count == 0)
        {
            return [];
        }

        code.Add((0x06, 0, 0, ActAllow));
        var bytes = new byte[code.Count * 8];
        for (int i = 0; i < code.Count; i++)
        {
            BitConverter.TryWriteBytes(bytes.AsSpan(i * 8), code[i].Code);
            bytes[(i * 8) + 2] = code[i].Jt;
            bytes[(i * 8) + 3] = code[i].Jf;
            BitConverter.TryWriteBytes(bytes.AsSpan((i * 8) + 4), code[i].K);
        }

        return bytes;
    }

    /// <summary>Every rule: the syscall, the index of its mode argument (or -1: always) and the errno.</summary>
    private static IEnumerable<(string Name, int ModeArg, int Errno)> Rules() =>
        ChmodCalls.Select(c => (c.Name, (int)c.ModeArg, EPERM)).Concat(SetXattrCalls.Select(n => (n, -1, ENOTSUP)));

    private static byte[] Export(bool bpf)
    {
        try
        {
            NativeLibrary.Load(Lib, typeof(SeccompFilter).Assembly, null);
        }
        catch (DllNotFoundException)
        {
            throw new SandboxException(
                "cannot sandbox builds: libseccomp.so.2 was not found; install libseccomp (Debian and Ubuntu: libseccomp2, Fedora: libseccomp). " +
                "Builds never run without the filter that stops setuid files and extended attributes");
        }

        nint ctx = Create();
        try
        {
            int fd = SandboxSetupException.Check(Libc.memfd_create("seccomp", 1 /* MFD_CLOEXEC */), "memfd_create");
            try
            {
                Check(bpf ? seccomp_export_bpf(ctx, fd) : seccomp_export_pfc(ctx, fd), "export the seccomp filter");
                long size = Libc.lseek(fd, 0, 1 /* SEEK_CUR */);
                var bytes = new byte[size];
                fixed (byte* p = bytes)
                {
                    if (Libc.pread(fd, p, (nuint)size, 0) != size)
                    {
                        throw new SandboxException("cannot read the exported seccomp filter back");
                    }
                }

                return bytes;
            }
            finally
            {
                Libc.close(fd);
            }
        }
        finally
        {
            seccomp_release(ctx);
        }
    }

    /// <summary>True when libseccomp knows <paramref name="name"/> on every architecture of the filter.</summary>
    private static bool KnownEverywhere(string name) => Architectures().All(arch => seccomp_syscall_resolve_name_arch(arch, name) >= 0);

    private static nint Create()
    {
        nint ctx = seccomp_init(ActAllow);
        if (ctx == 0)
        {
            throw new SandboxException("cannot initialise a seccomp filter (seccomp_init failed)");
        }

        try
        {
            uint native = seccomp_arch_native();
            foreach (uint arch in Architectures())
            {
                if (arch != native)
                {
                    Check(seccomp_arch_add(ctx, arch), $"add seccomp architecture 0x{arch:x8}");
                }
            }

            // Rules name syscalls by their native number; libseccomp translates them for the other architectures.
            var cmp = stackalloc ArgCmp[1];
            foreach (var (name, modeArg, errno) in Rules())
            {
                if (!KnownEverywhere(name))
                {
                    continue; // in the supplement
                }

                int nr = seccomp_syscall_resolve_name_arch(native, name);
                if (modeArg < 0)
                {
                    Check(seccomp_rule_add_array(ctx, ActErrnoBase | (uint)errno, nr, 0, null), $"add the seccomp rule for {name}");
                    continue;
                }

                foreach (ulong bit in new[] { SetUid, SetGid })
                {
                    cmp[0] = new ArgCmp { Arg = (uint)modeArg, Op = CmpMaskedEq, DatumA = bit, DatumB = bit };
                    Check(seccomp_rule_add_array(ctx, ActErrnoBase | (uint)errno, nr, 1, cmp), $"add the seccomp rule for {name}");
                }
            }

            return ctx;
        }
        catch
        {
            seccomp_release(ctx);
            throw;
        }
    }

    /// <summary>The number of <paramref name="name"/> on <paramref name="arch"/>; the syscalls newer than libseccomp 2.5 by their fixed number.</summary>
    private static int Syscall(uint arch, string name)
    {
        int nr = seccomp_syscall_resolve_name_arch(arch, name);
        if (nr >= 0)
        {
            return nr;
        }

        // Syscalls added since Linux 4.20 have the same number on every architecture (x32 adds its marker bit).
        int common = name switch
        {
            "fchmodat2" => 452,
            "setxattrat" => 463,
            _ => throw new SandboxException($"libseccomp does not know the syscall {name} on architecture 0x{arch:x8}"),
        };
        return arch == ArchX32 ? common | X32SyscallBit : common;
    }

    private static void Check(int rc, string what)
    {
        if (rc < 0)
        {
            throw new SandboxException($"cannot build the seccomp filter: {Errno.Describe(what, null, -rc)} (errno {-rc})");
        }
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct ArgCmp
    {
        public uint Arg;
        public int Op;
        public ulong DatumA;
        public ulong DatumB;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct SockFprog
    {
        public ushort Length;
        public byte* Filter;
    }

    [LibraryImport(Lib)]
    private static partial nint seccomp_init(uint defaultAction);

    [LibraryImport(Lib)]
    private static partial void seccomp_release(nint ctx);

    [LibraryImport(Lib)]
    private static partial uint seccomp_arch_native();

    [LibraryImport(Lib)]
    private static partial int seccomp_arch_add(nint ctx, uint arch);

    [LibraryImport(Lib, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int seccomp_syscall_resolve_name_arch(uint arch, string name);

    [LibraryImport(Lib)]
    private static partial int seccomp_rule_add_array(nint ctx, uint action, int syscall, uint count, ArgCmp* args);

    [LibraryImport(Lib)]
    private static partial int seccomp_export_bpf(nint ctx, int fd);

    [LibraryImport(Lib)]
    private static partial int seccomp_export_pfc(nint ctx, int fd);
}
