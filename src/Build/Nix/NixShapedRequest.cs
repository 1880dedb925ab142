using System.Collections.Immutable;
using System.Globalization;
using System.Text;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Sandbox;

namespace TvixFuseBuild.Build.Nix;

/// <summary>
/// A BuildRequest laid out and named the way Nix builds a derivation, from inputs already in the store: each input at
/// <c>/nix/store/HASH-NAME</c> (its path in <c>$NAME</c>, its <c>bin/</c> on PATH, and <c>/bin</c> after them with a
/// /bin/sh), scratch <c>/build</c> (the working
/// directory) and <c>/nix/store</c>, Nix's usual build environment, each output's path in the variable named after it,
/// and the inputs' and outputs' hash parts as the needles. What <c>tvix-fuse-build run</c> and the MSBuild task build.
/// </summary>
/// <param name="Spec">The request.</param>
/// <param name="OutputNames">The output names, in the order of <see cref="BuildSpec.Outputs"/> (and of the result's outputs).</param>
/// <param name="OutputBaseNames">Each output's <c>HASH-NAME</c> under <see cref="NixStorePaths.StoreDir"/>, in the same order.</param>
/// <param name="NeedleOwners">For each of <see cref="BuildSpec.RefscanNeedles"/>: the input or output name it stands for.</param>
public sealed record NixShapedRequest(BuildSpec Spec, string[] OutputNames, string[] OutputBaseNames, string[] NeedleOwners)
{
    /// <summary>
    /// Writes the request. <paramref name="command"/>[0] is a sandbox path, a name looked up in the build's PATH, or the
    /// name of a file input, which runs that input.
    /// </summary>
    /// <exception cref="ArgumentException">An output name is not valid, two inputs share a name, or the command is empty.</exception>
    public static NixShapedRequest Create(
        string name,
        IReadOnlyList<(string Name, Node Node)> inputs,
        IReadOnlyList<string> outputNames,
        IReadOnlyList<string> command,
        IReadOnlyDictionary<string, string> extraEnvironment,
        bool network,
        bool binSh)
    {
        if (PathComponent.Validate(Encoding.UTF8.GetBytes(name)) is { } nameError)
        {
            throw new ArgumentException($"the build's name '{name}' is not valid: {nameError}");
        }

        if (command.Count == 0 || command[0].Length == 0)
        {
            throw new ArgumentException("there is no program to run");
        }

        foreach (string output in outputNames)
        {
            if (PathComponent.Validate(Encoding.UTF8.GetBytes(output)) is { } error || output.Contains('='))
            {
                throw new ArgumentException($"'{output}' is not a valid output name");
            }
        }

        // Inputs are named HASH-NAME, the hash standing for their content, as Nix names store paths.
        var storeInputs = inputs
            .Select(i => (i.Name, BaseName: NixStorePaths.BaseName("input:" + Fingerprint(i.Node), i.Name), i.Node))
            .ToList();
        if (storeInputs.GroupBy(i => i.Name).FirstOrDefault(g => g.Count() > 1) is { } duplicate)
        {
            throw new ArgumentException($"two inputs are named {duplicate.Key}");
        }

        var argv = command.ToArray();
        if (storeInputs.FirstOrDefault(i => i.Name == argv[0] && i.Node is FileNode) is { BaseName: { } program })
        {
            argv[0] = $"{NixStorePaths.StoreDir}/{program}";
        }

        // Outputs are named after everything that went into the build, so the same run gets the same paths.
        var fingerprint = new StringBuilder($"run:{name}\n");
        foreach (var input in storeInputs.OrderBy(i => i.BaseName, StringComparer.Ordinal))
        {
            fingerprint.Append("input ").Append(input.BaseName).Append('\n');
        }

        foreach (string arg in argv)
        {
            fingerprint.Append("arg ").Append(arg).Append('\n');
        }

        foreach (var (key, value) in extraEnvironment.OrderBy(e => e.Key, StringComparer.Ordinal))
        {
            fingerprint.Append("env ").Append(key).Append('=').Append(value).Append('\n');
        }

        fingerprint.Append(network ? "network\n" : "").Append(binSh ? "binsh\n" : "");
        string[] outputBaseNames = outputNames
            .Select(o => NixStorePaths.BaseName($"{fingerprint}output {o}", o == "out" ? name : $"{name}-{o}"))
            .ToArray();

        string system = SandboxRunner.SupportedSystems[0];
        var environment = new SortedDictionary<string, string>(StringComparer.Ordinal)
        {
            ["HOME"] = "/homeless-shelter",
            ["NIX_BUILD_CORES"] = Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture),
            ["NIX_BUILD_TOP"] = "/build",
            ["NIX_LOG_FD"] = "2",
            ["NIX_STORE"] = NixStorePaths.StoreDir,
            ["PATH"] = SearchPath(storeInputs.Where(i => i.Node is DirectoryNode).Select(i => $"{NixStorePaths.StoreDir}/{i.BaseName}/bin"), binSh),
            ["PWD"] = "/build",
            ["TEMP"] = "/build",
            ["TEMPDIR"] = "/build",
            ["TERM"] = "xterm-256color",
            ["TMP"] = "/build",
            ["TMPDIR"] = "/build",
            ["builder"] = argv[0],
            ["name"] = name,
            ["outputs"] = string.Join(' ', outputNames),
            ["system"] = system,
        };
        foreach (var input in storeInputs)
        {
            environment[input.Name] = $"{NixStorePaths.StoreDir}/{input.BaseName}";
        }

        for (int i = 0; i < outputNames.Count; i++)
        {
            environment[outputNames[i]] = $"{NixStorePaths.StoreDir}/{outputBaseNames[i]}";
        }

        foreach (var (key, value) in extraEnvironment)
        {
            environment[key] = value;
        }

        // Needles: every input's and output's hash part; an output's references are reported by name.
        var needles = storeInputs.Select(i => (Hash: i.BaseName[..NixStorePaths.HashLength], Owner: i.Name))
            .Concat(outputBaseNames.Select((b, i) => (Hash: b[..NixStorePaths.HashLength], Owner: outputNames[i])))
            .ToList();

        var outputPaths = outputBaseNames.Select(b => $"nix/store/{b}").ToList();
        var order = Enumerable.Range(0, outputNames.Count).OrderBy(i => outputPaths[i], StringComparer.Ordinal).ToArray();
        var spec = new BuildSpec
        {
            Inputs = [.. storeInputs.Select(i => i.Node.WithName(PathComponent.Create(i.BaseName))).OrderBy(n => n.Name)],
            CommandArgs = [.. argv],
            WorkingDir = "build",
            ScratchPaths = ["build", "nix/store"],
            InputsDir = "nix/store",
            Outputs = [.. order.Select(i => outputPaths[i])],
            EnvironmentVars = [.. environment
                .OrderBy(e => e.Key, Comparer<string>.Create(BuildRequestValidator.CompareUtf8))
                .Select(e => new EnvironmentVariable(e.Key, e.Value))],
            Constraints = new BuildConstraints(system, 0, ImmutableArray<string>.Empty, network, binSh),
            RefscanNeedles = [.. needles.Select(n => n.Hash)],
        };
        return new NixShapedRequest(
            spec, [.. order.Select(i => outputNames[i])], [.. order.Select(i => outputBaseNames[i])], [.. needles.Select(n => n.Owner)]);
    }

    /// <summary>The inputs' <c>bin/</c> directories, then <c>/bin</c> (holding only <c>sh</c>) when the build has a /bin/sh, or Nix's <c>/path-not-set</c>.</summary>
    private static string SearchPath(IEnumerable<string> inputBins, bool binSh)
    {
        var path = inputBins.ToList();
        if (binSh)
        {
            path.Add("/bin");
        }

        return path.Count == 0 ? "/path-not-set" : string.Join(':', path);
    }

    /// <summary>What an input is, independent of its name: its kind, digest and size (or a symlink's target).</summary>
    private static string Fingerprint(Node node) => node switch
    {
        DirectoryNode d => $"(anonymous)\tdirectory\t{d.Digest}\t{d.Size}",
        FileNode f => $"(anonymous)\t{f.KindDisplay}\t{f.Digest}\t{f.Size}",
        SymlinkNode s => $"(anonymous)\tsymlink\t-> {s.Target}",
        _ => throw new ArgumentOutOfRangeException(nameof(node)),
    };
}
