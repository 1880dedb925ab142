using System.Runtime.InteropServices;
using System.Text;

namespace TvixFuseBuild.Native.Tests;

/// <summary>The argv/envp arrays PosixSpawn and the front executable's execve pass to the kernel.</summary>
public sealed unsafe class NativeStringsTests
{
    [Fact]
    public void StringsAreUtf8AndNulTerminated()
    {
        using var strings = new NativeStrings();
        byte* p = strings.Add("grüße");
        Assert.Equal("grüße"u8.ToArray(), new ReadOnlySpan<byte>(p, (int)NativeStrlen(p)).ToArray());
        Assert.Equal(0, p[Encoding.UTF8.GetByteCount("grüße")]);

        byte* empty = strings.Add("");
        Assert.Equal(0, empty[0]);
    }

    [Fact]
    public void BytesAreCopiedAsTheyAre()
    {
        // Not UTF-8: an argument read back from /proc/self/cmdline keeps its bytes.
        byte[] raw = [0x66, 0xFF, 0xC3, 0x28];
        using var strings = new NativeStrings();
        byte* p = strings.Add(raw);
        Assert.Equal(raw, new ReadOnlySpan<byte>(p, raw.Length).ToArray());
        Assert.Equal(0, p[raw.Length]);
    }

    [Fact]
    public void ArraysEndWithNull()
    {
        using var strings = new NativeStrings();
        byte** argv = strings.AddArray(["sh", "-c", "echo hi"]);
        Assert.Equal(["sh", "-c", "echo hi"], Read(argv));

        byte** envp = strings.AddArray(new List<byte[]> { "A=1"u8.ToArray(), "B="u8.ToArray() });
        Assert.Equal(["A=1", "B="], Read(envp));

        byte** none = strings.AddArray(Array.Empty<string>());
        Assert.True(none[0] == null);
    }

    private static List<string> Read(byte** array)
    {
        var values = new List<string>();
        for (int i = 0; array[i] != null; i++)
        {
            values.Add(Marshal.PtrToStringUTF8((nint)array[i])!);
        }

        return values;
    }

    private static nuint NativeStrlen(byte* p)
    {
        nuint n = 0;
        while (p[n] != 0)
        {
            n++;
        }

        return n;
    }
}
