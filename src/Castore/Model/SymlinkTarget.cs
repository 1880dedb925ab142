using System.Diagnostics.CodeAnalysis;
using System.Text;

namespace TvixFuseBuild.Castore;

/// <summary>A symlink target: raw bytes, not empty, at most 4095 bytes, no NUL. Relative or absolute, never interpreted.</summary>
public readonly struct SymlinkTarget : IEquatable<SymlinkTarget>
{
    public const int MaxLength = 4095;

    private readonly byte[] _bytes;

    private SymlinkTarget(byte[] bytes) => _bytes = bytes;

    public ReadOnlySpan<byte> Span => _bytes;

    public ReadOnlyMemory<byte> Memory => _bytes;

    public int Length => _bytes?.Length ?? 0;

    public static SymlinkTarget Create(ReadOnlySpan<byte> target)
    {
        if (!TryCreate(target, out var result, out var error))
        {
            throw new InvalidSymlinkTargetException(error);
        }

        return result;
    }

    public static SymlinkTarget Create(string target) => Create(Encoding.UTF8.GetBytes(target));

    public static bool TryCreate(ReadOnlySpan<byte> target, out SymlinkTarget result, [NotNullWhen(false)] out string? error)
    {
        error = Validate(target);
        result = error is null ? new SymlinkTarget(target.ToArray()) : default;
        return error is null;
    }

    public static string? Validate(ReadOnlySpan<byte> target)
    {
        if (target.IsEmpty)
        {
            return "invalid symlink target \"\": empty";
        }

        if (target.Length > MaxLength)
        {
            return $"invalid symlink target: longer than {MaxLength} bytes";
        }

        if (target.Contains((byte)0))
        {
            return $"invalid symlink target {PathComponent.Quote(target)}: contains a NUL byte";
        }

        return null;
    }

    internal static SymlinkTarget CreateUnchecked(byte[] bytes) => new(bytes);

    public bool Equals(SymlinkTarget other) => Span.SequenceEqual(other.Span);

    public override bool Equals(object? obj) => obj is SymlinkTarget other && Equals(other);

    public override int GetHashCode()
    {
        var hash = new HashCode();
        hash.AddBytes(Span);
        return hash.ToHashCode();
    }

    public static bool operator ==(SymlinkTarget left, SymlinkTarget right) => left.Equals(right);

    public static bool operator !=(SymlinkTarget left, SymlinkTarget right) => !left.Equals(right);

    public override string ToString() => Encoding.UTF8.GetString(Span);

    public string ToQuotedString() => PathComponent.Quote(Span);
}
