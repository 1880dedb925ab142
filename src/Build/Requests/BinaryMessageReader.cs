using System.Text.Unicode;
using Google.Protobuf;

namespace TvixFuseBuild.Build.Requests;

/// <summary>
/// Binary protobuf input: checked against the message's <see cref="MessageSchema"/> first (so an error names the field
/// and byte offset, and invalid UTF-8 in a string field is refused instead of being replaced), then parsed by the
/// generated code.
/// Unknown fields are skipped, as prost does.
/// </summary>
internal static class BinaryMessageReader
{
    private const int MaxDepth = 100;

    private enum WireType
    {
        Varint = 0,
        Fixed64 = 1,
        LengthDelimited = 2,
        StartGroup = 3,
        EndGroup = 4,
        Fixed32 = 5,
    }

    public static IMessage Parse(ReadOnlySpan<byte> data, MessageSchema schema, string source)
    {
        var reader = new Reader(data);
        if (CheckMessage(ref reader, data.Length, schema, schema.Name, 0) is { } error)
        {
            throw new BuildMessageFormatException($"{source}: malformed binary {schema.FullName}: {error}");
        }

        try
        {
            return schema.ParseBinary(data);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new BuildMessageFormatException($"{source}: malformed binary {schema.FullName}: {e.Message}", e);
        }
    }

    /// <summary>Checks fields until <paramref name="end"/>; returns the first problem, or null.</summary>
    private static string? CheckMessage(ref Reader reader, int end, MessageSchema schema, string path, int depth)
    {
        if (depth > MaxDepth)
        {
            return $"at byte {reader.Position}: {path}: messages nested more than {MaxDepth} deep";
        }

        Dictionary<int, int>? counts = null;
        while (reader.Position < end)
        {
            int tagAt = reader.Position;
            if (!reader.TryReadVarint(end, out ulong tag) || tag > uint.MaxValue)
            {
                return $"at byte {tagAt}: {path}: truncated or overlong field tag";
            }

            int number = (int)(tag >> 3);
            var wire = (WireType)(tag & 7);
            if (number == 0 || (int)wire > 5)
            {
                return $"at byte {tagAt}: {path}: invalid field tag 0x{tag:x} (field {number}, wire type {(int)wire})";
            }

            var field = schema.FindByNumber(number);
            if (field is null)
            {
                if (SkipUnknown(ref reader, end, wire, number, depth) is { } skipError)
                {
                    return $"at byte {tagAt}: {path}: unknown field {number}: {skipError}";
                }

                continue;
            }

            string fieldPath = $"{path}.{field.Name}";
            if (field.IsRepeated)
            {
                counts ??= [];
                counts.TryGetValue(number, out int index);
                counts[number] = index + 1;
                fieldPath = $"{fieldPath}[{index}]";
            }

            if (CheckField(ref reader, end, field, wire, fieldPath, depth) is { } error)
            {
                return error.StartsWith("at byte ", StringComparison.Ordinal) ? error : $"at byte {tagAt}: {fieldPath}: {error}";
            }
        }

        return reader.Position == end ? null : $"at byte {reader.Position}: {path}: a field runs past the end of the message";
    }

    private static string? CheckField(ref Reader reader, int end, FieldSchema field, WireType wire, string path, int depth)
    {
        WireType expected = ExpectedWireType(field.Kind);
        if (wire != expected)
        {
            // Repeated scalars may be packed into one length-delimited field.
            bool packed = field.IsRepeated && wire == WireType.LengthDelimited && expected != WireType.LengthDelimited;
            if (!packed)
            {
                return $"wire type {(int)wire} where a {TypeName(field.Kind)} (wire type {(int)expected}) belongs";
            }

            if (!reader.TryReadLength(end, out int packedLength))
            {
                return "length runs past the end of the input";
            }

            int packedEnd = reader.Position + packedLength;
            while (reader.Position < packedEnd)
            {
                if (!reader.TrySkip(packedEnd, expected))
                {
                    return "malformed packed values";
                }
            }

            return null;
        }

        switch (field.Kind)
        {
            case FieldKind.String:
            {
                if (!reader.TryReadLength(end, out int length))
                {
                    return "length runs past the end of the input";
                }

                var bytes = reader.Take(length);
                if (!Utf8.IsValid(bytes))
                {
                    int bad = Utf8Text.FirstInvalid(bytes);
                    return $"string is not valid UTF-8 (at byte {reader.Position - length + bad})";
                }

                return null;
            }

            case FieldKind.Message:
            {
                if (!reader.TryReadLength(end, out int length))
                {
                    return "length runs past the end of the input";
                }

                return CheckMessage(ref reader, reader.Position + length, field.MessageType!, path, depth + 1);
            }

            default:
                return reader.TrySkip(end, wire) ? null : $"truncated or overlong {TypeName(field.Kind)}";
        }
    }

    private static string? SkipUnknown(ref Reader reader, int end, WireType wire, int number, int depth)
    {
        switch (wire)
        {
            case WireType.StartGroup:
                if (depth > MaxDepth)
                {
                    return "groups nested too deep";
                }

                while (true)
                {
                    if (!reader.TryReadVarint(end, out ulong tag) || tag > uint.MaxValue)
                    {
                        return "unterminated group";
                    }

                    var inner = (WireType)(tag & 7);
                    if (inner == WireType.EndGroup)
                    {
                        return (int)(tag >> 3) == number ? null : "mismatched end of group";
                    }

                    if ((int)inner > 5 || (tag >> 3) == 0 || SkipUnknown(ref reader, end, inner, (int)(tag >> 3), depth + 1) is not null)
                    {
                        return "malformed group";
                    }
                }

            case WireType.EndGroup:
                return "end of a group that was not started";

            default:
                return reader.TrySkip(end, wire) ? null : "truncated value";
        }
    }

    private static WireType ExpectedWireType(FieldKind kind) => kind switch
    {
        FieldKind.String or FieldKind.Bytes or FieldKind.Message => WireType.LengthDelimited,
        _ => WireType.Varint,
    };

    private static string TypeName(FieldKind kind) => kind switch
    {
        FieldKind.String => "string",
        FieldKind.Bytes => "bytes",
        FieldKind.UInt64 => "uint64",
        FieldKind.Bool => "bool",
        _ => "message",
    };

    private ref struct Reader(ReadOnlySpan<byte> data)
    {
        private readonly ReadOnlySpan<byte> _data = data;

        public int Position { get; private set; }

        public bool TryReadVarint(int end, out ulong value)
        {
            value = 0;
            for (int shift = 0; shift < 70; shift += 7)
            {
                if (Position >= end)
                {
                    return false;
                }

                byte b = _data[Position++];
                if (shift == 63 && b > 1)
                {
                    return false;
                }

                value |= (ulong)(b & 0x7f) << shift;
                if (b < 0x80)
                {
                    return true;
                }
            }

            return false;
        }

        public bool TryReadLength(int end, out int length)
        {
            length = 0;
            if (!TryReadVarint(end, out ulong value) || value > (ulong)(end - Position))
            {
                return false;
            }

            length = (int)value;
            return true;
        }

        public ReadOnlySpan<byte> Take(int length)
        {
            var slice = _data.Slice(Position, length);
            Position += length;
            return slice;
        }

        public bool TrySkip(int end, WireType wire)
        {
            switch (wire)
            {
                case WireType.Varint:
                    return TryReadVarint(end, out _);
                case WireType.Fixed64:
                    return Advance(end, 8);
                case WireType.Fixed32:
                    return Advance(end, 4);
                case WireType.LengthDelimited:
                    if (!TryReadLength(end, out int length))
                    {
                        return false;
                    }

                    Position += length;
                    return true;
                default:
                    return false;
            }
        }

        private bool Advance(int end, int count)
        {
            if (end - Position < count)
            {
                return false;
            }

            Position += count;
            return true;
        }
    }
}
