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

        // Inputs are named HASH-NAME, the hash standing for their content, as Nix names store paths. Loops and arrays
        // rather than LINQ over tuples: the MSBuild task's first call in a process JIT-compiled each of those
        // framework generics (ReadyToRun leaves them out).
        var storeInputs = new StoreInput[inputs.Count];
        var inputCounts = new Dictionary<string, int>(inputs.Count, StringComparer.Ordinal);
        for (int i = 0; i < storeInputs.Length; i++)
        {
            var (inputName, node) = inputs[i];
            storeInputs[i] = new StoreInput(inputName, NixStorePaths.BaseName("input:" + Fingerprint(node), inputName), node);
            inputCounts[inputName] = inputCounts.GetValueOrDefault(inputName) + 1;
        }

        foreach (var input in storeInputs)
        {
            if (inputCounts[input.Name] > 1)
            {
                throw new ArgumentException($"two inputs are named {input.Name}");
            }
        }

        string[] argv = new string[command.Count];
        for (int i = 0; i < argv.Length; i++)
        {
            argv[i] = command[i];
        }

        foreach (var input in storeInputs)
        {
            if (input.Name == argv[0] && input.Node is FileNode)
            {
                argv[0] = $"{NixStorePaths.StoreDir}/{input.BaseName}";
                break;
            }
        }

        // Outputs are named after everything that went into the build, so the same run gets the same paths.
        var fingerprint = new StringBuilder($"run:{name}\n");
        string[] inputBaseNames = new string[storeInputs.Length];
        for (int i = 0; i < storeInputs.Length; i++)
        {
            inputBaseNames[i] = storeInputs[i].BaseName;
        }

        Array.Sort(inputBaseNames, StringComparer.Ordinal);
        foreach (string baseName in inputBaseNames)
        {
            fingerprint.Append("input ").Append(baseName).Append('\n');
        }

        foreach (string arg in argv)
        {
            fingerprint.Append("arg ").Append(arg).Append('\n');
        }

        string[] extraKeys = new string[extraEnvironment.Count];
        int extraCount = 0;
        foreach (var entry in extraEnvironment)
        {
            extraKeys[extraCount++] = entry.Key;
        }

        Array.Sort(extraKeys, StringComparer.Ordinal);
        foreach (string key in extraKeys)
        {
            fingerprint.Append("env ").Append(key).Append('=').Append(extraEnvironment[key]).Append('\n');
        }

        fingerprint.Append(network ? "network\n" : "").Append(binSh ? "binsh\n" : "");
        string[] outputBaseNames = new string[outputNames.Count];
        for (int i = 0; i < outputBaseNames.Length; i++)
        {
            string o = outputNames[i];
            outputBaseNames[i] = NixStorePaths.BaseName($"{fingerprint}output {o}", o == "out" ? name : $"{name}-{o}");
        }

        var inputBins = new List<string>(storeInputs.Length);
        foreach (var input in storeInputs)
        {
            if (input.Node is DirectoryNode)
            {
                inputBins.Add($"{NixStorePaths.StoreDir}/{input.BaseName}/bin");
            }
        }

        string system = SandboxRunner.HostSystem;
        var environment = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["HOME"] = "/homeless-shelter",
            ["NIX_BUILD_CORES"] = Environment.ProcessorCount.ToString(CultureInfo.InvariantCulture),
            ["NIX_BUILD_TOP"] = "/build",
            ["NIX_LOG_FD"] = "2",
            ["NIX_STORE"] = NixStorePaths.StoreDir,
            ["PATH"] = SearchPath(inputBins, binSh),
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

        foreach (var entry in extraEnvironment)
        {
            environment[entry.Key] = entry.Value;
        }

        var variables = new EnvironmentVariable[environment.Count];
        int variableCount = 0;
        foreach (var entry in environment)
        {
            variables[variableCount++] = new EnvironmentVariable(entry.Key, entry.Value);
        }

        Array.Sort(variables, static (a, b) => BuildRequestValidator.CompareUtf8(a.Key, b.Key));

        // Needles: every input's and output's hash part; an output's references are reported by name.
        string[] needleHashes = new string[storeInputs.Length + outputNames.Count];
        string[] needleOwners = new string[needleHashes.Length];
        for (int i = 0; i < storeInputs.Length; i++)
        {
            needleHashes[i] = storeInputs[i].BaseName[..NixStorePaths.HashLength];
            needleOwners[i] = storeInputs[i].Name;
        }

        for (int i = 0; i < outputNames.Count; i++)
        {
            needleHashes[storeInputs.Length + i] = outputBaseNames[i][..NixStorePaths.HashLength];
            needleOwners[storeInputs.Length + i] = outputNames[i];
        }

        // The request's outputs sorted by path (stable: a few, so an insertion sort).
        string[] outputPaths = new string[outputNames.Count];
        int[] order = new int[outputNames.Count];
        for (int i = 0; i < order.Length; i++)
        {
            outputPaths[i] = $"nix/store/{outputBaseNames[i]}";
            int j = i;
            for (; j > 0 && string.CompareOrdinal(outputPaths[order[j - 1]], outputPaths[i]) > 0; j--)
            {
                order[j] = order[j - 1];
            }

            order[j] = i;
        }

        var specInputs = new Node[storeInputs.Length];
        for (int i = 0; i < specInputs.Length; i++)
        {
            specInputs[i] = storeInputs[i].Node.WithName(PathComponent.Create(storeInputs[i].BaseName));
        }

        Array.Sort(specInputs, static (a, b) => a.Name.CompareTo(b.Name));
        string[] sortedOutputPaths = new string[order.Length], sortedOutputNames = new string[order.Length], sortedBaseNames = new string[order.Length];
        for (int i = 0; i < order.Length; i++)
        {
            sortedOutputPaths[i] = outputPaths[order[i]];
            sortedOutputNames[i] = outputNames[order[i]];
            sortedBaseNames[i] = outputBaseNames[order[i]];
        }

        var spec = new BuildSpec
        {
            Inputs = ImmutableArray.Create(specInputs),
            CommandArgs = ImmutableArray.Create(argv),
            WorkingDir = "build",
            ScratchPaths = ["build", "nix/store"],
            InputsDir = "nix/store",
            Outputs = ImmutableArray.Create(sortedOutputPaths),
            EnvironmentVars = ImmutableArray.Create(variables),
            Constraints = new BuildConstraints(system, 0, ImmutableArray<string>.Empty, network, binSh),
            RefscanNeedles = ImmutableArray.Create(needleHashes),
        };
        return new NixShapedRequest(spec, sortedOutputNames, sortedBaseNames, needleOwners);
    }

    /// <summary>An input under its store name.</summary>
    private sealed record StoreInput(string Name, string BaseName, Node Node);

    /// <summary>The inputs' <c>bin/</c> directories, then <c>/bin</c> (holding only <c>sh</c>) when the build has a /bin/sh, or Nix's <c>/path-not-set</c>.</summary>
    private static string SearchPath(List<string> path, bool binSh)
    {
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
