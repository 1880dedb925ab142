using System.Collections.Immutable;
using System.Text;
using Google.Protobuf;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Hashing;

namespace TvixFuseBuild.Build.Requests;

/// <summary>The two dialects of the build protocol: <c>tvix.build.v1</c> and its fork <c>snix.build.v1</c>.</summary>
public enum BuildProtocol
{
    Tvix,
    Snix,
}

/// <summary>
/// A build request in memory, whatever protocol it came in: what the pipeline runs. Mirrors the BuildRequest message
/// field for field (paths relative to the build root, as UTF-8 strings; environment values and file contents as bytes).
/// <para>
/// A spec is data: build one in code with an object initializer, or get one from <see cref="FromTvix"/> /
/// <see cref="FromSnix"/> / <see cref="BuildMessages"/>, which validate as tvix does. Check a spec built in code with
/// <see cref="BuildRequestValidator.Validate(BuildSpec, BuildProtocol)"/>, and call
/// <see cref="BuildRequestValidator.CheckRunnable"/> before running anything.
/// </para>
/// Two specs are equal when their canonical encodings are (see <see cref="ComputeDigest"/>).
/// </summary>
public sealed partial record BuildSpec
{
    private readonly ImmutableArray<Node> _inputs = [];
    private readonly ImmutableArray<string> _commandArgs = [];
    private readonly ImmutableArray<string> _scratchPaths = [];
    private readonly ImmutableArray<string> _outputs = [];
    private readonly ImmutableArray<EnvironmentVariable> _environmentVars = [];
    private readonly ImmutableArray<AdditionalFile> _additionalFiles = [];
    private readonly ImmutableArray<string> _refscanNeedles = [];

    /// <summary>Input nodes, each named (the name is its place under <see cref="InputsDir"/>), strictly ascending by name.</summary>
    public ImmutableArray<Node> Inputs { get => _inputs; init => _inputs = OrEmpty(value); }

    /// <summary>The program (argv[0], looked up as a path inside the sandbox) and its arguments.</summary>
    public ImmutableArray<string> CommandArgs { get => _commandArgs; init => _commandArgs = OrEmpty(value); }

    /// <summary>Clean relative path of the directory the command starts in; <c>""</c> is the build root.</summary>
    public string WorkingDir { get; init; } = string.Empty;

    /// <summary>Clean relative paths of the writable directories, ascending (duplicates allowed).</summary>
    public ImmutableArray<string> ScratchPaths { get => _scratchPaths; init => _scratchPaths = OrEmpty(value); }

    /// <summary>Clean relative path where the inputs appear, read-only, each at <c>InputsDir/name</c>.</summary>
    public string InputsDir { get; init; } = string.Empty;

    /// <summary>Clean relative paths that must exist after the command; ascending. Each becomes one output node.</summary>
    public ImmutableArray<string> Outputs { get => _outputs; init => _outputs = OrEmpty(value); }

    /// <summary>The command's whole environment, ascending by key.</summary>
    public ImmutableArray<EnvironmentVariable> EnvironmentVars { get => _environmentVars; init => _environmentVars = OrEmpty(value); }

    /// <summary>What the host must offer; null when the request sets no constraints message.</summary>
    public BuildConstraints? Constraints { get; init; }

    /// <summary>Files written under the build root before the command starts, ascending by path.</summary>
    public ImmutableArray<AdditionalFile> AdditionalFiles { get => _additionalFiles; init => _additionalFiles = OrEmpty(value); }

    /// <summary>Strings searched for in every output; the reply reports indexes into this list. The scanner works on their UTF-8 bytes.</summary>
    public ImmutableArray<string> RefscanNeedles { get => _refscanNeedles; init => _refscanNeedles = OrEmpty(value); }

    /// <summary>The UTF-8 bytes of each needle, in order (what the reference scanner takes).</summary>
    public byte[][] GetRefscanNeedleBytes()
    {
        var needles = new byte[_refscanNeedles.Length][];
        for (int i = 0; i < needles.Length; i++)
        {
            needles[i] = Encoding.UTF8.GetBytes(_refscanNeedles[i]);
        }

        return needles;
    }

    /// <summary>The input named <paramref name="name"/>, or null. Inputs must be sorted (as in a validated spec).</summary>
    public Node? FindInput(ReadOnlySpan<byte> name)
    {
        int lo = 0, hi = _inputs.Length - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            int c = _inputs[mid].Name.Span.SequenceCompareTo(name);
            if (c == 0)
            {
                return _inputs[mid];
            }

            if (c < 0)
            {
                lo = mid + 1;
            }
            else
            {
                hi = mid - 1;
            }
        }

        return null;
    }

    /// <summary>
    /// The canonical encoding of this request: the binary protobuf of its <c>tvix.build.v1.BuildRequest</c> form as
    /// Google.Protobuf writes it (fields in field-number order, default values omitted, lists in order, no unknown
    /// fields; <c>constraints</c> present exactly when <see cref="Constraints"/> is not null). The same request sent as
    /// tvix or snix, JSON or binary, has the same encoding.
    /// </summary>
    public byte[] GetCanonicalEncoding() => ToTvix().ToByteArray();

    /// <summary>
    /// The request's identity for the result cache: BLAKE3-256 of <see cref="GetCanonicalEncoding"/>.
    /// Every field counts, including the needles (they change the reply).
    /// </summary>
    public B3Digest ComputeDigest() => Blake3.Hash(GetCanonicalEncoding());

    public bool Equals(BuildSpec? other) =>
        other is not null && (ReferenceEquals(this, other) || GetCanonicalEncoding().AsSpan().SequenceEqual(other.GetCanonicalEncoding()));

    public override int GetHashCode() => ComputeDigest().GetHashCode();

    private static ImmutableArray<T> OrEmpty<T>(ImmutableArray<T> value) => value.IsDefault ? [] : value;
}

/// <summary>One environment variable: a UTF-8 key and a value of arbitrary bytes.</summary>
public sealed record EnvironmentVariable(string Key, ReadOnlyMemory<byte> Value)
{
    public EnvironmentVariable(string key, string value)
        : this(key, Encoding.UTF8.GetBytes(value))
    {
    }

    public bool Equals(EnvironmentVariable? other) =>
        other is not null && Key == other.Key && Value.Span.SequenceEqual(other.Value.Span);

    public override int GetHashCode() => HashCode.Combine(Key, Value.Length);
}

/// <summary>A file written at <paramref name="Path"/> (clean, relative to the build root) before the command starts.</summary>
public sealed record AdditionalFile(string Path, ReadOnlyMemory<byte> Contents)
{
    public bool Equals(AdditionalFile? other) =>
        other is not null && Path == other.Path && Contents.Span.SequenceEqual(other.Contents.Span);

    public override int GetHashCode() => HashCode.Combine(Path, Contents.Length);
}

/// <summary>
/// The host requirements of a build: <paramref name="System"/> (e.g. <c>x86_64-linux</c>) the host must run,
/// <paramref name="MinMemory"/> bytes available, host paths exposed read-only at the same place, host network
/// access, and a shell at <c>/bin/sh</c>.
/// </summary>
public sealed record BuildConstraints(
    string System,
    ulong MinMemory = 0,
    ImmutableArray<string> AvailableReadOnlyPaths = default,
    bool NetworkAccess = false,
    bool ProvideBinSh = false)
{
    public ImmutableArray<string> AvailableReadOnlyPaths { get; init; } = AvailableReadOnlyPaths.IsDefault ? [] : AvailableReadOnlyPaths;

    public bool Equals(BuildConstraints? other) =>
        other is not null && System == other.System && MinMemory == other.MinMemory &&
        AvailableReadOnlyPaths.SequenceEqual(other.AvailableReadOnlyPaths, StringComparer.Ordinal) &&
        NetworkAccess == other.NetworkAccess && ProvideBinSh == other.ProvideBinSh;

    public override int GetHashCode() => HashCode.Combine(System, MinMemory, AvailableReadOnlyPaths.Length, NetworkAccess, ProvideBinSh);
}
