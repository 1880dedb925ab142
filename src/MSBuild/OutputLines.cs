using System.Buffers;
using System.Text;

namespace TvixFuseBuild.MSBuild;

/// <summary>
/// Cuts the build's output (chunks of bytes as the sandbox reads them) into lines for the MSBuild log, which takes
/// messages, not streams. Invalid UTF-8 is replaced; a line longer than <see cref="MaxLineBytes"/> is cut so that a
/// build printing binary cannot grow the buffer without bound. Called from one task at a time.
/// </summary>
internal sealed class OutputLines(Action<string> line)
{
    public const int MaxLineBytes = 16 * 1024;

    private readonly ArrayBufferWriter<byte> _pending = new();

    public ValueTask WriteAsync(ReadOnlyMemory<byte> chunk, CancellationToken cancellationToken)
    {
        var rest = chunk.Span;
        while (!rest.IsEmpty)
        {
            int newline = rest.IndexOf((byte)'\n');
            int room = MaxLineBytes - _pending.WrittenCount;
            if (newline >= 0 && newline <= room)
            {
                _pending.Write(rest[..newline]);
                rest = rest[(newline + 1)..];
                Emit();
            }
            else if (newline < 0 && rest.Length < room)
            {
                _pending.Write(rest);
                break;
            }
            else
            {
                _pending.Write(rest[..room]);
                rest = rest[room..];
                Emit();
            }
        }

        return ValueTask.CompletedTask;
    }

    /// <summary>Emits what is left after the last newline.</summary>
    public void Flush()
    {
        if (_pending.WrittenCount > 0)
        {
            Emit();
        }
    }

    private void Emit()
    {
        var bytes = _pending.WrittenSpan;
        if (!bytes.IsEmpty && bytes[^1] == (byte)'\r')
        {
            bytes = bytes[..^1];
        }

        string text = Encoding.UTF8.GetString(bytes);
        _pending.ResetWrittenCount();
        line(text);
    }
}
