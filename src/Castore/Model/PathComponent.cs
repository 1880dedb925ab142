using System.Diagnostics.CodeAnalysis;
using System.Text;

namespace TvixFuseBuild.Castore;

/// <summary>
/// A name in a directory: raw bytes, not empty, not <c>.</c> or <c>..</c>, at most 255 bytes, no NUL and no <c>/</c>.
/// Compared as raw bytes. The <c>default</c> value is the empty name, used only where a node is anonymous.
/// </summary>
public readonly struct PathComponent : IEquatable<PathComponent>, IComparable<PathComponent>
{
    public const int MaxLength = 255;

    private readonly byte[]? _bytes;

    private PathComponent(byte[] bytes) => _bytes = bytes;

    public static PathComponent Empty => default;

    public ReadOnlySpan<byte> Span => _bytes;

    public ReadOnlyMemory<byte> Memory => _bytes;

    public int Length => _bytes?.Length ?? 0;

    public bool IsEmpty => Length == 0;

    public static PathComponent Create(ReadOnlySpan<byte> name)
    {
        if (!TryCreate(name, out var component, out var error))
        {
            throw new InvalidNameException(error);
        }

        return component;
    }

    public static PathComponent Create(string name) => Create(Encoding.UTF8.GetBytes(name));

    public static bool TryCreate(ReadOnlySpan<byte> name, out PathComponent component, [NotNullWhen(false)] out string? error)
    {
        error = Validate(name);
        component = error is null ? new PathComponent(name.ToArray()) : default;
        return error is null;
    }

    /// <summary>Returns null when <paramref name="name"/> is a valid name, else the reason it is not.</summary>
    public static string? Validate(ReadOnlySpan<byte> name)
    {
        if (name.IsEmpty)
        {
            return "invalid name \"\": empty";
        }

        if (name.Length > MaxLength)
        {
            return $"invalid name {Quote(name)}: longer than {MaxLength} bytes";
        }

        if (name.SequenceEqual("."u8) || name.SequenceEqual(".."u8))
        {
            return $"invalid name {Quote(name)}: '.' and '..' are not names";
        }

        int bad = name.IndexOfAny((byte)0, (byte)'/');
        if (bad >= 0)
        {
            return name[bad] == 0
                ? $"invalid name {Quote(name)}: contains a NUL byte"
                : $"invalid name {Quote(name)}: contains a slash";
        }

        return null;
    }

    /// <summary>Wraps bytes already known to be a valid name, without copying.</summary>
    internal static PathComponent CreateUnchecked(byte[] bytes) => new(bytes);

    public bool Equals(PathComponent other) => Span.SequenceEqual(other.Span);

    public bool Equals(ReadOnlySpan<byte> other) => Span.SequenceEqual(other);

    public override bool Equals(object? obj) => obj is PathComponent other && Equals(other);

    public override int GetHashCode()
    {
        var hash = new HashCode();
        hash.AddBytes(Span);
        return hash.ToHashCode();
    }

    public int CompareTo(PathComponent other) => Span.SequenceCompareTo(other.Span);

    public static bool operator ==(PathComponent left, PathComponent right) => left.Equals(right);

    public static bool operator !=(PathComponent left, PathComponent right) => !left.Equals(right);

    public static bool operator <(PathComponent left, PathComponent right) => left.CompareTo(right) < 0;

    public static bool operator >(PathComponent left, PathComponent right) => left.CompareTo(right) > 0;

    public static bool operator <=(PathComponent left, PathComponent right) => left.CompareTo(right) <= 0;

    public static bool operator >=(PathComponent left, PathComponent right) => left.CompareTo(right) >= 0;

    public static implicit operator PathComponent(string name) => Create(name);

    /// <summary>The name decoded as UTF-8 (invalid sequences replaced), for display and host paths.</summary>
    public override string ToString() => Encoding.UTF8.GetString(Span);

    /// <summary>The name in double quotes with non-printable bytes escaped, for error messages.</summary>
    public string ToQuotedString() => Quote(Span);

    internal static string Quote(ReadOnlySpan<byte> bytes)
    {
        var builder = new StringBuilder(bytes.Length + 2);
        builder.Append('"');
        string text = Encoding.UTF8.GetString(bytes);
        bool roundTrips = Encoding.UTF8.GetByteCount(text) == bytes.Length && !text.Contains('\uFFFD');
        if (roundTrips)
        {
            foreach (char c in text)
            {
                switch (c)
                {
                    case '"': builder.Append("\\\""); break;
                    case '\\': builder.Append("\\\\"); break;
                    case '\0': builder.Append("\\0"); break;
                    case '\n': builder.Append("\\n"); break;
                    case '\t': builder.Append("\\t"); break;
                    default:
                        if (char.IsControl(c))
                        {
                            builder.Append($"\\x{(int)c:x2}");
                        }
                        else
                        {
                            builder.Append(c);
                        }

                        break;
                }
            }
        }
        else
        {
            foreach (byte b in bytes)
            {
                if (b is >= 0x20 and < 0x7f and not (byte)'"' and not (byte)'\\')
                {
                    builder.Append((char)b);
                }
                else
                {
                    builder.Append($"\\x{b:x2}");
                }
            }
        }

        builder.Append('"');
        return builder.ToString();
    }
}
