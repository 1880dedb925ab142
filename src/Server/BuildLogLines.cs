using System.Text;

namespace TvixFuseBuild.Server;

/// <summary>
/// Cuts a build's output into lines, each handed to a sink with a prefix (<c>[build 7] </c>), so that the logs of
/// builds running at once stay readable when they share one stream. Very long lines are wrapped; invalid UTF-8 shows as
/// U+FFFD. Called by the sandbox from one task at a time.
/// </summary>
internal sealed class BuildLogLines(string prefix, Action<string> sink)
{
    private const int MaxLineBytes = 16 << 10;

    private readonly byte[] _partial = new byte[MaxLineBytes];
    private int _length;

    public ValueTask WriteAsync(ReadOnlyMemory<byte> chunk, CancellationToken cancellationToken)
    {
        var rest = chunk.Span;
        while (!rest.IsEmpty)
        {
            int newline = rest.IndexOf((byte)'\n');
            int take = Math.Min(newline < 0 ? rest.Length : newline, MaxLineBytes - _length);
            rest[..take].CopyTo(_partial.AsSpan(_length));
            _length += take;
            rest = rest[take..];
            if (!rest.IsEmpty && rest[0] == (byte)'\n')
            {
                Emit();
                rest = rest[1..];
            }
            else if (_length == MaxLineBytes)
            {
                Emit(); // a line this long goes on in the next one
            }
        }

        return ValueTask.CompletedTask;
    }

    /// <summary>Hands over what is left of an unterminated last line.</summary>
    public void Flush()
    {
        if (_length > 0)
        {
            Emit();
        }
    }

    private void Emit()
    {
        var line = _partial.AsSpan(0, _length);
        if (line.EndsWith((byte)'\r'))
        {
            line = line[..^1];
        }

        sink(prefix + Encoding.UTF8.GetString(line));
        _length = 0;
    }
}
