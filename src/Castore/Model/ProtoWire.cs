using System.Numerics;
using System.Runtime.CompilerServices;

namespace TvixFuseBuild.Castore;

/// <summary>The few protobuf wire primitives the canonical Directory encoding needs.</summary>
internal static class ProtoWire
{
    public const int WireVarint = 0;
    public const int WireFixed64 = 1;
    public const int WireLengthDelimited = 2;
    public const int WireFixed32 = 5;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int VarintLength(ulong value) => value == 0 ? 1 : ((64 - BitOperations.LeadingZeroCount(value)) + 6) / 7;

    /// <summary>Tag byte plus length prefix plus payload of a length-delimited field.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int LengthDelimitedFieldLength(int payloadLength) => 1 + VarintLength((ulong)payloadLength) + payloadLength;
}

/// <summary>Writes protobuf fields into a span sized in advance.</summary>
internal ref struct ProtoWriter(Span<byte> destination)
{
    private readonly Span<byte> _destination = destination;
    private int _position;

    public readonly int Position => _position;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void WriteTag(int field, int wireType) => WriteVarint((ulong)((field << 3) | wireType));

    public void WriteVarint(ulong value)
    {
        while (value >= 0x80)
        {
            _destination[_position++] = (byte)(value | 0x80);
            value >>= 7;
        }

        _destination[_position++] = (byte)value;
    }

    public void WriteBytesField(int field, ReadOnlySpan<byte> value)
    {
        WriteTag(field, ProtoWire.WireLengthDelimited);
        WriteVarint((ulong)value.Length);
        value.CopyTo(_destination[_position..]);
        _position += value.Length;
    }

    public void WriteDigestField(int field, in B3Digest digest)
    {
        WriteTag(field, ProtoWire.WireLengthDelimited);
        WriteVarint(B3Digest.Length);
        digest.CopyTo(_destination[_position..]);
        _position += B3Digest.Length;
    }

    public void WriteLengthPrefix(int field, int length)
    {
        WriteTag(field, ProtoWire.WireLengthDelimited);
        WriteVarint((ulong)length);
    }
}

/// <summary>Reads protobuf fields from a span; reports malformed input by returning false.</summary>
internal ref struct ProtoReader(ReadOnlySpan<byte> source)
{
    private readonly ReadOnlySpan<byte> _source = source;
    private int _position;

    public readonly bool AtEnd => _position >= _source.Length;

    public bool TryReadTag(out int field, out int wireType)
    {
        field = 0;
        wireType = 0;
        if (!TryReadVarint(out ulong tag) || tag > uint.MaxValue || (tag >> 3) == 0)
        {
            return false;
        }

        field = (int)(tag >> 3);
        wireType = (int)(tag & 7);
        return true;
    }

    public bool TryReadVarint(out ulong value)
    {
        value = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (_position >= _source.Length)
            {
                return false;
            }

            byte b = _source[_position++];
            value |= (ulong)(b & 0x7f) << shift;
            if (b < 0x80)
            {
                return true;
            }
        }

        return false;
    }

    public bool TryReadLengthDelimited(out ReadOnlySpan<byte> value)
    {
        value = default;
        if (!TryReadVarint(out ulong length) || length > (ulong)(_source.Length - _position))
        {
            return false;
        }

        value = _source.Slice(_position, (int)length);
        _position += (int)length;
        return true;
    }

    public bool TrySkip(int wireType)
    {
        switch (wireType)
        {
            case ProtoWire.WireVarint:
                return TryReadVarint(out _);
            case ProtoWire.WireFixed64:
                return Advance(8);
            case ProtoWire.WireLengthDelimited:
                return TryReadLengthDelimited(out _);
            case ProtoWire.WireFixed32:
                return Advance(4);
            default:
                return false;
        }
    }

    private bool Advance(int count)
    {
        if (_source.Length - _position < count)
        {
            return false;
        }

        _position += count;
        return true;
    }
}
