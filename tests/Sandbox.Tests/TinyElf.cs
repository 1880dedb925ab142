namespace TvixFuseBuild.Sandbox.Tests;

/// <summary>
/// Static programs of a few bytes for what busybox cannot do: each makes one syscall with its arguments from argv
/// and exits with the errno it got (0 on success), so a test can tell the exact denial.
/// </summary>
internal static class TinyElf
{
    /// <summary>A valid POSIX ACL (system.posix_acl_access) value: user::rw-, group::r--, other::r--.</summary>
    public static readonly byte[] Acl = [2, 0, 0, 0, 1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff, 4, 0, 4, 0, 0xff, 0xff, 0xff, 0xff, 0x20, 0, 4, 0, 0xff, 0xff, 0xff, 0xff];

    /// <summary>x86-64: <c>setxattr ARGV1 ARGV2</c> with <see cref="Acl"/> as the value.</summary>
    public static byte[] SetXattr64()
    {
        byte[] code =
        [
            0x48, 0x8b, 0x7c, 0x24, 0x10, // mov rdi, [rsp+16]  (argv[1])
            0x48, 0x8b, 0x74, 0x24, 0x18, // mov rsi, [rsp+24]  (argv[2])
            0x48, 0x8d, 0x15, 27, 0, 0, 0, // lea rdx, [rip+27] (the value, after the code)
            0x41, 0xba, (byte)Acl.Length, 0, 0, 0, // mov r10d, size
            0x45, 0x31, 0xc0, // xor r8d, r8d
            0xb8, 188, 0, 0, 0, // mov eax, SYS_setxattr
            0x0f, 0x05, // syscall
            0xf7, 0xd8, // neg eax
            0x89, 0xc7, // mov edi, eax
            0xb8, 60, 0, 0, 0, // mov eax, SYS_exit
            0x0f, 0x05, // syscall
        ];
        return Elf64([.. code, .. Acl]);
    }

    /// <summary>x86-64: <c>setxattrat(AT_FDCWD, ARGV1, 0, ARGV2, {value, size, 0}, 16)</c> (Linux 6.13), <see cref="Acl"/> as the value.</summary>
    public static byte[] SetXattrAt64()
    {
        byte[] code =
        [
            0x48, 0xc7, 0xc7, 0x9c, 0xff, 0xff, 0xff, // mov rdi, AT_FDCWD
            0x48, 0x8b, 0x74, 0x24, 0x10, // mov rsi, [rsp+16]  (argv[1])
            0x31, 0xd2, // xor edx, edx
            0x4c, 0x8b, 0x54, 0x24, 0x18, // mov r10, [rsp+24]  (argv[2])
            0x4c, 0x8d, 0x05, 24, 0, 0, 0, // lea r8, [rip+24]  (struct xattr_args, after the code)
            0x41, 0xb9, 16, 0, 0, 0, // mov r9d, sizeof(struct xattr_args)
            0xb8, 0xcf, 0x01, 0, 0, // mov eax, SYS_setxattrat (463)
            0x0f, 0x05, // syscall
            0xf7, 0xd8, // neg eax
            0x89, 0xc7, // mov edi, eax
            0xb8, 60, 0, 0, 0, // mov eax, SYS_exit
            0x0f, 0x05, // syscall
        ];
        var args = new byte[16];
        BitConverter.TryWriteBytes(args, 0x400000UL + 120 + (ulong)code.Length + 16); // value: right after the struct
        BitConverter.TryWriteBytes(args.AsSpan(8), (uint)Acl.Length);
        return Elf64([.. code, .. args, .. Acl]);
    }

    /// <summary>i386 (int 0x80): <c>chmod ARGV1 04755</c>, the 32-bit system call table.</summary>
    public static byte[] Chmod32()
    {
        byte[] code =
        [
            0x8b, 0x5c, 0x24, 0x08, // mov ebx, [esp+8]  (argv[1])
            0xb9, 0xed, 0x09, 0, 0, // mov ecx, 04755
            0xb8, 15, 0, 0, 0, // mov eax, chmod (i386)
            0xcd, 0x80, // int 0x80
            0xf7, 0xd8, // neg eax
            0x89, 0xc3, // mov ebx, eax
            0xb8, 1, 0, 0, 0, // mov eax, exit (i386)
            0xcd, 0x80, // int 0x80
        ];
        return Elf32(code);
    }

    private static byte[] Elf64(byte[] code)
    {
        const ulong Base = 0x400000;
        using var ms = new MemoryStream();
        using var w = new BinaryWriter(ms);
        w.Write([0x7f, (byte)'E', (byte)'L', (byte)'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        w.Write((ushort)2); // ET_EXEC
        w.Write((ushort)0x3e); // x86-64
        w.Write(1u);
        w.Write(Base + 120); // entry: after the headers
        w.Write(64UL); // phoff
        w.Write(0UL);
        w.Write(0u);
        w.Write((ushort)64);
        w.Write((ushort)56);
        w.Write((ushort)1);
        w.Write((ushort)0);
        w.Write((ushort)0);
        w.Write((ushort)0);
        w.Write(1u); // PT_LOAD
        w.Write(5u); // R+X
        w.Write(0UL);
        w.Write(Base);
        w.Write(Base);
        w.Write((ulong)(120 + code.Length));
        w.Write((ulong)(120 + code.Length));
        w.Write(0x1000UL);
        w.Write(code);
        return ms.ToArray();
    }

    private static byte[] Elf32(byte[] code)
    {
        const uint Base = 0x08048000;
        using var ms = new MemoryStream();
        using var w = new BinaryWriter(ms);
        w.Write([0x7f, (byte)'E', (byte)'L', (byte)'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        w.Write((ushort)2); // ET_EXEC
        w.Write((ushort)3); // i386
        w.Write(1u);
        w.Write(Base + 84); // entry: after the headers
        w.Write(52u); // phoff
        w.Write(0u);
        w.Write(0u);
        w.Write((ushort)52);
        w.Write((ushort)32);
        w.Write((ushort)1);
        w.Write((ushort)0);
        w.Write((ushort)0);
        w.Write((ushort)0);
        w.Write(1u); // PT_LOAD
        w.Write(0u);
        w.Write(Base);
        w.Write(Base);
        w.Write((uint)(84 + code.Length));
        w.Write((uint)(84 + code.Length));
        w.Write(5u); // R+X
        w.Write(0x1000u);
        w.Write(code);
        return ms.ToArray();
    }
}
