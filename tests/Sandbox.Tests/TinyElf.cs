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

    /// <summary>An argument of <see cref="Syscall64"/>: a pointer to an argv string, a decimal argv string as a number, a constant, or an address in the program's data.</summary>
    public readonly record struct Arg(char Kind, long Value)
    {
        public static Arg Text(int argv) => new('s', argv);

        public static Arg Number(int argv) => new('n', argv);

        public static Arg Const(long value) => new('c', value);

        public static Arg Data(int offset) => new('d', offset);
    }

    /// <summary>
    /// x86-64: one system call with up to six arguments, exiting with the errno it got (0 on success, whatever it
    /// returned). <paramref name="data"/>, given its own address, follows the code in a writable segment.
    /// </summary>
    public static byte[] Syscall64(int number, Arg[] args, Func<ulong, byte[]>? data = null)
    {
        // Per argument register (rdi, rsi, rdx, r10, r8, r9): mov reg, [rsp+d8]; mov reg, imm64; mov reg, rax.
        byte[][] load = [[0x48, 0x8b, 0x7c], [0x48, 0x8b, 0x74], [0x48, 0x8b, 0x54], [0x4c, 0x8b, 0x54], [0x4c, 0x8b, 0x44], [0x4c, 0x8b, 0x4c]];
        byte[][] imm = [[0x48, 0xbf], [0x48, 0xbe], [0x48, 0xba], [0x49, 0xba], [0x49, 0xb8], [0x49, 0xb9]];
        byte[][] fromRax = [[0x48, 0x89, 0xc7], [0x48, 0x89, 0xc6], [0x48, 0x89, 0xc2], [0x49, 0x89, 0xc2], [0x49, 0x89, 0xc0], [0x49, 0x89, 0xc1]];
        byte[] atoi =
        [
            0x31, 0xc0, // xor eax, eax
            0x41, 0x0f, 0xb6, 0x0b, // next: movzx ecx, byte [r11]
            0x83, 0xe9, 0x30, // sub ecx, '0'
            0x72, 0x0c, // jb done (the NUL)
            0x48, 0x6b, 0xc0, 0x0a, // imul rax, rax, 10
            0x48, 0x01, 0xc8, // add rax, rcx
            0x49, 0xff, 0xc3, // inc r11
            0xeb, 0xeb, // jmp next
            0xc3, // done: ret
        ];
        byte[] exit =
        [
            0xf7, 0xd8, // neg eax
            0x89, 0xc7, // mov edi, eax
            0x85, 0xff, // test edi, edi
            0x79, 0x02, // jns +2
            0x31, 0xff, // xor edi, edi (it returned a count: success)
            0xb8, 60, 0, 0, 0, // mov eax, SYS_exit
            0x0f, 0x05, // syscall
        ];

        // The code's length does not depend on the values, so a first pass with zero addresses sizes it.
        byte[] Emit(ulong dataAddress, int atoiAt)
        {
            var code = new List<byte>();
            for (int i = 0; i < args.Length; i++)
            {
                var a = args[i];
                switch (a.Kind)
                {
                    case 's':
                        code.AddRange([.. load[i], 0x24, (byte)(8 * (a.Value + 1))]);
                        break;
                    case 'n':
                        code.AddRange([0x4c, 0x8b, 0x5c, 0x24, (byte)(8 * (a.Value + 1))]); // mov r11, [rsp+d8]
                        int next = code.Count + 5;
                        code.AddRange([0xe8, .. BitConverter.GetBytes(atoiAt - next)]); // call atoi
                        code.AddRange(fromRax[i]);
                        break;
                    default:
                        code.AddRange([.. imm[i], .. BitConverter.GetBytes(a.Kind == 'c' ? (ulong)a.Value : dataAddress + (ulong)a.Value)]);
                        break;
                }
            }

            code.AddRange([0xb8, .. BitConverter.GetBytes(number), 0x0f, 0x05]); // mov eax, number; syscall
            code.AddRange(exit);
            code.AddRange(atoi);
            return [.. code];
        }

        int length = Emit(0, 0).Length;
        ulong dataAddress = 0x400000UL + 120 + (ulong)length;
        return Elf64([.. Emit(dataAddress, length - atoi.Length), .. data?.Invoke(dataAddress) ?? []], writable: true);
    }

    /// <summary>A static x86-64 executable of one R+X (or RWX) segment holding <paramref name="code"/>, entered at its start.</summary>
    public static byte[] Elf64(byte[] code, bool writable = false)
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
        w.Write(writable ? 7u : 5u); // R+X, or RWX
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
