using System.Collections;
using Google.Protobuf;
using Google.Protobuf.Collections;

namespace TvixFuseBuild.Build.Requests;

/// <summary>The protobuf types the request and reply messages use (proto3: no enums, maps or well-known types among them).</summary>
internal enum FieldKind
{
    String,
    Bytes,
    UInt64,
    Bool,
    Message,
}

/// <summary>
/// One field of a <see cref="MessageSchema"/>: what the .proto file says about it, and delegates into the generated
/// class to read and write it. Taking the place of Google.Protobuf's descriptors, whose construction at the first use
/// (every file descriptor, an accessor per field, by reflection) cost more than the rest of a result-cache hit.
/// </summary>
internal sealed class FieldSchema
{
    private readonly Func<IMessage, object?> _get;
    private readonly Action<IMessage, object?>? _set;

    private FieldSchema(string name, int number, FieldKind kind, bool repeated, MessageSchema? message, string? oneof, Func<IMessage, object?> get, Action<IMessage, object?>? set)
    {
        Name = name;
        JsonName = ToJsonName(name);
        NameUtf8 = System.Text.Encoding.UTF8.GetBytes(Name);
        JsonNameUtf8 = System.Text.Encoding.UTF8.GetBytes(JsonName);
        Number = number;
        Kind = kind;
        IsRepeated = repeated;
        MessageType = message;
        Oneof = oneof;
        _get = get;
        _set = set;
    }

    /// <summary>The name in the .proto file (<c>command_args</c>).</summary>
    public string Name { get; }

    /// <summary>The proto3 JSON name (<c>commandArgs</c>).</summary>
    public string JsonName { get; }

    public byte[] NameUtf8 { get; }

    public byte[] JsonNameUtf8 { get; }

    public int Number { get; }

    public FieldKind Kind { get; }

    public bool IsRepeated { get; }

    /// <summary>The type of a message field (of its elements when repeated).</summary>
    public MessageSchema? MessageType { get; }

    /// <summary>The oneof the field belongs to, or null.</summary>
    public string? Oneof { get; }

    /// <summary>
    /// The field's value in <paramref name="message"/>: a string, ByteString, boxed ulong or bool, a message or null
    /// (absent; for a oneof member: another member or none is set); the <see cref="IList"/> of a repeated field.
    /// </summary>
    public object? Get(IMessage message) => _get(message);

    /// <summary>The list of a repeated field, to add to or clear.</summary>
    public IList List(IMessage message) => (IList)_get(message)!;

    /// <summary>Sets a singular field; null sets the default (absent for a message field, none for a oneof).</summary>
    public void Set(IMessage message, object? value) => _set!(message, value);

    /// <summary>Resets the field to its default (a repeated field to empty), as a JSON <c>null</c> does.</summary>
    public void Clear(IMessage message)
    {
        if (IsRepeated)
        {
            List(message).Clear();
        }
        else
        {
            Set(message, null);
        }
    }

    /// <summary>True when the proto3 JSON mapping (and the binary encoding) leaves the field out: a default scalar, an empty list, an absent message.</summary>
    public bool IsDefault(IMessage message) => _get(message) switch
    {
        null => true,
        IList list => list.Count == 0,
        string s => s.Length == 0,
        ByteString b => b.IsEmpty,
        ulong u => u == 0,
        bool b => !b,
        _ => false,
    };

    public static FieldSchema Scalar<T>(string name, int number, FieldKind kind, Func<T, string> get, Action<T, string> set)
        where T : IMessage =>
        new(name, number, kind, false, null, null, m => get((T)m), (m, v) => set((T)m, (string?)v ?? string.Empty));

    public static FieldSchema Bytes<T>(string name, int number, Func<T, ByteString> get, Action<T, ByteString> set)
        where T : IMessage =>
        new(name, number, FieldKind.Bytes, false, null, null, m => get((T)m), (m, v) => set((T)m, (ByteString?)v ?? ByteString.Empty));

    public static FieldSchema UInt64<T>(string name, int number, Func<T, ulong> get, Action<T, ulong> set)
        where T : IMessage =>
        new(name, number, FieldKind.UInt64, false, null, null, m => get((T)m), (m, v) => set((T)m, v is null ? 0 : (ulong)v));

    public static FieldSchema Bool<T>(string name, int number, Func<T, bool> get, Action<T, bool> set)
        where T : IMessage =>
        new(name, number, FieldKind.Bool, false, null, null, m => get((T)m), (m, v) => set((T)m, v is not null && (bool)v));

    public static FieldSchema Repeated<T, TValue>(string name, int number, FieldKind kind, Func<T, RepeatedField<TValue>> list)
        where T : IMessage =>
        new(name, number, kind, true, null, null, m => list((T)m), null);

    public static FieldSchema Message<T, TField>(string name, int number, MessageSchema type, Func<T, TField?> get, Action<T, TField?> set, string? oneof = null)
        where T : IMessage
        where TField : class, IMessage =>
        new(name, number, FieldKind.Message, false, type, oneof, m => get((T)m), (m, v) => set((T)m, (TField?)v));

    public static FieldSchema RepeatedMessage<T, TField>(string name, int number, MessageSchema type, Func<T, RepeatedField<TField>> list)
        where T : IMessage =>
        new(name, number, FieldKind.Message, true, type, null, m => list((T)m), null);

    /// <summary>protoc's default JSON name: underscores dropped, the letter after each one upper-cased.</summary>
    private static string ToJsonName(string name)
    {
        var result = new System.Text.StringBuilder(name.Length);
        bool upper = false;
        foreach (char c in name)
        {
            if (c == '_')
            {
                upper = true;
            }
            else
            {
                result.Append(upper ? char.ToUpperInvariant(c) : c);
                upper = false;
            }
        }

        return result.ToString();
    }
}

/// <summary>
/// A message type of the build protocols, described by hand from the .proto files (tests compare every entry with
/// Google.Protobuf's descriptors): enough for the JSON reader and writer and the binary checker to work without
/// building descriptors.
/// </summary>
internal sealed class MessageSchema
{
    private readonly Func<IMessage> _create;
    private readonly ParseBinaryFunc _parse;
    private readonly FieldSchema[] _fields;

    private MessageSchema(string fullName, Type clrType, Func<IMessage> create, ParseBinaryFunc parse, FieldSchema[] fields)
    {
        FullName = fullName;
        Name = fullName[(fullName.LastIndexOf('.') + 1)..];
        ClrType = clrType;
        _create = create;
        _parse = parse;
        _fields = fields;
    }

    private delegate IMessage ParseBinaryFunc(ReadOnlySpan<byte> data);

    /// <summary>The full name (<c>tvix.build.v1.BuildRequest</c>); nested types as in protobuf (<c>tvix.build.v1.BuildRequest.EnvVar</c>).</summary>
    public string FullName { get; }

    /// <summary>The name without package and containing types (<c>BuildRequest</c>).</summary>
    public string Name { get; }

    /// <summary>The generated class.</summary>
    public Type ClrType { get; }

    /// <summary>The fields in field-number order (which is also their order in the .proto files).</summary>
    public ReadOnlySpan<FieldSchema> Fields => _fields;

    public static MessageSchema Create<T>(string fullName, MessageParser<T> parser, params FieldSchema[] fields)
        where T : IMessage<T>, new() =>
        new(fullName, typeof(T), static () => new T(), data => parser.ParseFrom(data), fields);

    /// <summary>A new, empty message of this type.</summary>
    public IMessage New() => _create();

    /// <summary>Parses binary protobuf with the generated code.</summary>
    public IMessage ParseBinary(ReadOnlySpan<byte> data) => _parse(data);

    public FieldSchema? FindByNumber(int number)
    {
        foreach (var field in _fields)
        {
            if (field.Number == number)
            {
                return field;
            }
        }

        return null;
    }
}
