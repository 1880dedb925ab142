using System.Runtime.InteropServices;
using System.Text;

namespace TvixFuseBuild.Native;

/// <summary>
/// NUL-terminated strings and NULL-terminated arrays of them in unmanaged memory, for the exec family (argv, envp), all
/// freed together on <see cref="Dispose"/>.
/// </summary>
internal sealed unsafe class NativeStrings : IDisposable
{
    private readonly List<nint> _owned = [];

    /// <summary><paramref name="value"/> as UTF-8.</summary>
    public byte* Add(string value)
    {
        int count = Encoding.UTF8.GetByteCount(value);
        byte* p = Allocate(count);
        Encoding.UTF8.GetBytes(value, new Span<byte>(p, count));
        return p;
    }

    /// <summary><paramref name="bytes"/> as they are (an argument or variable read back from /proc, whatever its encoding).</summary>
    public byte* Add(ReadOnlySpan<byte> bytes)
    {
        byte* p = Allocate(bytes.Length);
        bytes.CopyTo(new Span<byte>(p, bytes.Length));
        return p;
    }

    public byte** AddArray(IReadOnlyList<string> values)
    {
        byte** array = AllocateArray(values.Count);
        for (int i = 0; i < values.Count; i++)
        {
            array[i] = Add(values[i]);
        }

        return array;
    }

    public byte** AddArray(IReadOnlyList<byte[]> values)
    {
        byte** array = AllocateArray(values.Count);
        for (int i = 0; i < values.Count; i++)
        {
            array[i] = Add(values[i]);
        }

        return array;
    }

    public void Dispose()
    {
        foreach (nint p in _owned)
        {
            NativeMemory.Free((void*)p);
        }

        _owned.Clear();
    }

    /// <summary><paramref name="count"/> bytes and the NUL after them.</summary>
    private byte* Allocate(int count)
    {
        var p = (byte*)NativeMemory.Alloc((nuint)count + 1);
        _owned.Add((nint)p);
        p[count] = 0;
        return p;
    }

    /// <summary><paramref name="count"/> pointers and the NULL after them.</summary>
    private byte** AllocateArray(int count)
    {
        var array = (byte**)NativeMemory.Alloc((nuint)(count + 1), (nuint)sizeof(byte*));
        _owned.Add((nint)array);
        array[count] = null;
        return array;
    }
}
