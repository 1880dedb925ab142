using System.Collections.Immutable;
using System.Security.Cryptography;
using System.Text;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Castore;

namespace TvixFuseBuild.Build.Nix;

/// <summary>
/// A Nix derivation as a BuildRequest, the way tvix-glue converts it (environment, outputs at their store paths, the
/// input closure as castore nodes under <c>/nix/store</c>, scratch <c>/build</c> and <c>/nix/store</c>, the store
/// paths' hash parts as needles), plus what the glue leaves undone and Nix does: hash placeholders replaced by the
/// output paths (as snix does), structuredAttrs (<c>/build/.attrs.json</c>, <c>/build/.attrs.sh</c>) and the
/// variables Nix sets itself winning over the derivation's.
/// </summary>
/// <param name="Spec">The request.</param>
/// <param name="OutputNames">The output names, in the order of <see cref="BuildSpec.Outputs"/> (and of the result's outputs).</param>
/// <param name="OutputPaths">Each output's store path, in the same order.</param>
/// <param name="NeedlePaths">For each of <see cref="BuildSpec.RefscanNeedles"/>: the store path it stands for.</param>
public sealed record DerivationRequest(
    BuildSpec Spec, ImmutableArray<string> OutputNames, ImmutableArray<string> OutputPaths, ImmutableArray<string> NeedlePaths)
{
    public const string BuildTop = "/build";

    /// <summary>The variables Nix sets for every builder, before the derivation's own (NIX.md).</summary>
    public static IReadOnlyList<KeyValuePair<string, string>> BaseEnvironment { get; } =
    [
        new("HOME", "/homeless-shelter"),
        new("NIX_BUILD_CORES", "0"),
        new("NIX_BUILD_TOP", BuildTop),
        new("NIX_LOG_FD", "2"),
        new("NIX_STORE", NixStorePaths.StoreDir),
        new("PATH", "/path-not-set"),
        new("PWD", BuildTop),
        new("TEMP", BuildTop),
        new("TEMPDIR", BuildTop),
        new("TERM", "xterm-256color"),
        new("TMP", BuildTop),
        new("TMPDIR", BuildTop),
    ];

    private static readonly System.Buffers.SearchValues<char> Base32 = System.Buffers.SearchValues.Create(NixBase32.Alphabet);

    // Nix's initEnv sets these after the derivation's variables; the derivation cannot override them.
    private static readonly HashSet<string> Forced = ["NIX_BUILD_TOP", "TMPDIR", "TEMPDIR", "TMP", "TEMP", "PWD", "NIX_LOG_FD", "TERM"];

    /// <summary>Nix's placeholder for output <paramref name="outputName"/>: <c>/</c> + nixbase32(sha256("nix-output:NAME")).</summary>
    public static string HashPlaceholder(string outputName) =>
        "/" + NixBase32.Encode(SHA256.HashData(Encoding.UTF8.GetBytes("nix-output:" + outputName)));

    /// <summary>Whether <paramref name="s"/> has a <c>/</c> followed by a placeholder's 52 base-32 characters.</summary>
    internal static bool MayHoldPlaceholder(string s)
    {
        const int Length = 52; // nixbase32 of a SHA-256
        for (int slash = s.IndexOf('/'); slash >= 0 && s.Length - slash > Length; slash = s.IndexOf('/', slash + 1))
        {
            if (s.AsSpan(slash + 1, Length).IndexOfAnyExcept(Base32) < 0)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Converts <paramref name="derivation"/>. <paramref name="inputs"/>: the input closure, each store path with its
    /// castore node (any name; it is renamed to the path's base name).
    /// </summary>
    /// <exception cref="FormatException">The derivation cannot be built this way (an output without a path, a bad passAsFile or __json).</exception>
    public static DerivationRequest Create(Derivation derivation, IReadOnlyList<(string StorePath, Node Node)> inputs)
    {
        ArgumentNullException.ThrowIfNull(derivation);
        foreach (var output in derivation.Outputs)
        {
            if (!NixStorePaths.TryBaseName(output.Path, out _))
            {
                throw new FormatException($"output '{output.Name}' has no store path ('{output.Path}'); only input-addressed and fixed-output derivations can be built");
            }
        }

        // Computed only when some string could hold a placeholder: SHA-256 loads OpenSSL, a few milliseconds of a
        // small build.
        List<(string Placeholder, string Path)>? rewrites = null;
        string Rewrite(string s)
        {
            if (!MayHoldPlaceholder(s))
            {
                return s;
            }

            rewrites ??= derivation.Outputs.Select(o => (Placeholder: HashPlaceholder(o.Name), o.Path)).ToList();
            foreach (var (placeholder, path) in rewrites)
            {
                s = s.Replace(placeholder, path, StringComparison.Ordinal);
            }

            return s;
        }

        var environment = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var pair in BaseEnvironment)
        {
            environment[pair.Key] = pair.Value;
        }

        var files = new List<AdditionalFile>();
        if (derivation.GetEnvironment("__json") is { } json)
        {
            var (jsonText, shell) = StructuredAttrs.Render(json, [.. derivation.Outputs.Select(o => (o.Name, o.Path))]);
            files.Add(new AdditionalFile("build/.attrs.json", Encoding.UTF8.GetBytes(Rewrite(jsonText))));
            files.Add(new AdditionalFile("build/.attrs.sh", Encoding.UTF8.GetBytes(Rewrite(shell))));
            environment["NIX_ATTRS_JSON_FILE"] = BuildTop + "/.attrs.json";
            environment["NIX_ATTRS_SH_FILE"] = BuildTop + "/.attrs.sh";
        }
        else
        {
            var passAsFile = (derivation.GetEnvironment("passAsFile") ?? "").Split(' ', StringSplitOptions.RemoveEmptyEntries).ToHashSet(StringComparer.Ordinal);
            foreach (string key in passAsFile)
            {
                if (derivation.GetEnvironment(key) is null)
                {
                    throw new FormatException("passAsFile refers to non-existent env key");
                }
            }

            foreach (var (key, value) in derivation.Environment)
            {
                if (passAsFile.Contains(key))
                {
                    string file = ".attr-" + NixBase32.Encode(SHA256.HashData(Encoding.UTF8.GetBytes(key)));
                    files.Add(new AdditionalFile("build/" + file, Encoding.UTF8.GetBytes(Rewrite(value))));
                    environment[key + "Path"] = BuildTop + "/" + file;
                }
                else if (!Forced.Contains(key))
                {
                    environment[key] = Rewrite(value);
                }
            }
        }

        var inputNodes = inputs
            .Select(i => i.Node.WithName(PathComponent.Create(NixStorePaths.TryBaseName(i.StorePath, out string? b) ? b : throw new FormatException($"input {i.StorePath} is not a store path"))))
            .OrderBy(n => n.Name)
            .ToList();
        var outputs = derivation.Outputs.OrderBy(o => o.Path, StringComparer.Ordinal).ToList();

        // Needles: the outputs' hash parts (in the derivation's output order), then the inputs'.
        var needlePaths = derivation.Outputs.Select(o => o.Path)
            .Concat(inputNodes.Select(n => NixStorePaths.StoreDir + "/" + n.Name))
            .ToImmutableArray();

        var spec = new BuildSpec
        {
            Inputs = [.. inputNodes],
            CommandArgs = [derivation.Builder, .. derivation.Arguments.Select(Rewrite)],
            WorkingDir = "build",
            ScratchPaths = ["build", "nix/store"],
            InputsDir = "nix/store",
            Outputs = [.. outputs.Select(o => o.Path[1..])],
            EnvironmentVars = [.. environment
                .OrderBy(e => e.Key, Comparer<string>.Create(BuildRequestValidator.CompareUtf8))
                .Select(e => new EnvironmentVariable(e.Key, e.Value))],
            Constraints = new BuildConstraints(derivation.System, 0, ImmutableArray<string>.Empty, derivation.IsFixedOutput, true),
            AdditionalFiles = [.. files.OrderBy(f => f.Path, StringComparer.Ordinal)],
            RefscanNeedles = [.. needlePaths.Select(p => p[(NixStorePaths.StoreDir.Length + 1)..][..NixStorePaths.HashLength])],
        };
        return new DerivationRequest(spec, [.. outputs.Select(o => o.Name)], [.. outputs.Select(o => o.Path)], needlePaths);
    }
}
