using System.Collections.Immutable;
using System.CommandLine;
using System.Text;
using TvixFuseBuild.Build.Nix;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Transfer;
using TvixFuseBuild.Sandbox;

namespace TvixFuseBuild.Tool.Commands;

/// <summary>
/// <c>tvix-fuse-build run --input PATH[=NAME]... --output NAME... -- CMD ARGS</c>: a build without a BuildRequest at hand.
/// Imports the inputs, writes a Nix-shaped request (inputs in /nix/store, scratch /build and /nix/store, working
/// directory /build, Nix's usual build environment, the output paths in variables named after the outputs), runs it,
/// and exports each output to ./result-NAME.
/// </summary>
internal static class RunCommand
{
    public static Command Create()
    {
        var inputs = new Option<string[]>("--input", "-i")
        {
            Description = "A host path to import and offer at /nix/store/HASH-NAME (NAME defaults to its last component). Its store path is in $NAME, and its bin/ is on PATH.",
            HelpName = "PATH[=NAME]",
            Arity = ArgumentArity.ZeroOrMore,
        };
        var outputs = new Option<string[]>("--output")
        {
            Description = "An output the command must create at the path in $NAME (default: out).",
            HelpName = "NAME",
            Arity = ArgumentArity.ZeroOrMore,
        };
        var environment = new Option<string[]>("--env", "-e")
        {
            Description = "Set (or override) a variable of the build's environment.",
            HelpName = "KEY=VALUE",
            Arity = ArgumentArity.ZeroOrMore,
        };
        var network = new Option<bool>("--network") { Description = "Give the build the host's network." };
        var binSh = new Option<bool>("--bin-sh") { Description = "Provide a shell at /bin/sh (Debian's static busybox)." };
        var name = new Option<string>("--name") { Description = "The build's name, part of its output paths.", DefaultValueFactory = _ => "run" };
        var dryRun = new Option<bool>("--dry-run") { Description = "Print the BuildRequest (protobuf JSON) and stop." };
        var resultPrefix = new Option<string>("--result")
        {
            Description = "Export output NAME to PREFIX-NAME (replacing what is there).",
            HelpName = "PREFIX",
            DefaultValueFactory = _ => "result",
        };
        var command = new Argument<string[]>("COMMAND")
        {
            Description = "The program and its arguments, after '--'. A bare program name is looked up in the build's PATH.",
            Arity = ArgumentArity.OneOrMore,
        };
        var common = new BuildCommand.BuildOptions();
        var run = new Command("run", "Import host paths, run a command over them in the sandbox the way Nix runs a builder, and export its outputs to ./result-NAME.")
        {
            inputs,
            outputs,
            environment,
            network,
            binSh,
            name,
            dryRun,
            resultPrefix,
            command,
        };
        common.AddTo(run);
        run.SetAction(async (parse, cancellationToken) =>
        {
            string buildName = parse.GetValue(name)!;
            if (PathComponent.Validate(Encoding.UTF8.GetBytes(buildName)) is { } nameError)
            {
                throw new UsageException($"--name: {nameError}");
            }

            var outputNames = parse.GetValue(outputs) is { Length: > 0 } given ? given.Distinct().ToArray() : ["out"];
            await using var store = StoreSelection.Open(parse);
            var importedInputs = new List<(string Name, Node Node)>();
            foreach (string input in parse.GetValue(inputs) ?? [])
            {
                var (path, inputName) = SplitInput(input);
                var node = await HostImporter.ImportAsync(path, inputName, store.Blobs, store.Directories, cancellationToken: cancellationToken);
                importedInputs.Add((inputName.ToString(), node));
            }

            var plan = NixShapedRequest.Create(
                buildName, importedInputs, outputNames, parse.GetValue(command)!, ParseEnvironment(parse.GetValue(environment) ?? []),
                parse.GetValue(network), parse.GetValue(binSh));
            if (parse.GetValue(dryRun))
            {
                Console.Out.Write(Encoding.UTF8.GetString(BuildMessages.FormatRequest(plan.Spec, BuildProtocol.Tvix, MessageFormat.Json)));
                Console.Out.WriteLine();
                return ToolConsole.Ok;
            }

            var result = await common.RunAsync(parse, store, plan.Spec, BuildProtocol.Tvix, cancellationToken);
            string prefix = parse.GetValue(resultPrefix)!;
            for (int i = 0; i < plan.OutputNames.Length; i++)
            {
                var output = result.Result.Outputs[i];
                string destination = Path.GetFullPath($"{prefix}-{plan.OutputNames[i]}");
                HostTree.Remove(destination);
                await HostExporter.ExportAsync(output.Node, store, destination, cancellationToken: cancellationToken);
                string references = output.Needles.Length == 0
                    ? "no references"
                    : "references " + string.Join(", ", output.Needles.Select(n => plan.NeedleOwners[n]));
                Console.WriteLine($"{plan.OutputNames[i]}\t{NixStorePaths.StoreDir}/{plan.OutputBaseNames[i]}\t{Path.GetRelativePath(Environment.CurrentDirectory, destination)}\t{NodeText.Line(output.Node).Split('\t')[1]} {Digest(output.Node)}\t{references}");
            }

            return ToolConsole.Ok;
        });
        return run;
    }

    private static string Digest(Node node) => node switch
    {
        DirectoryNode d => d.Digest.ToString(),
        FileNode f => f.Digest.ToString(),
        SymlinkNode s => "-> " + s.Target,
        _ => "",
    };

    private static (string Path, PathComponent Name) SplitInput(string input)
    {
        int eq = input.LastIndexOf('=');
        string path = eq > 0 ? input[..eq] : input;
        string? name = eq > 0 ? input[(eq + 1)..] : null;
        try
        {
            return (path, name is null ? HostImporter.DefaultName(path) : PathComponent.Create(name));
        }
        catch (CastoreException e)
        {
            throw new UsageException($"--input {input}: {e.Message}");
        }
    }

    private static Dictionary<string, string> ParseEnvironment(string[] pairs)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (string pair in pairs)
        {
            int eq = pair.IndexOf('=');
            if (eq <= 0)
            {
                throw new UsageException($"--env {pair}: expected KEY=VALUE");
            }

            result[pair[..eq]] = pair[(eq + 1)..];
        }

        return result;
    }
}

/// <summary>The BuildRequest <c>run</c> writes: laid out and named the way Nix builds a derivation.</summary>
internal sealed record NixShapedRequest(BuildSpec Spec, string[] OutputNames, string[] OutputBaseNames, string[] NeedleOwners)
{
    public static NixShapedRequest Create(
        string name,
        IReadOnlyList<(string Name, Node Node)> inputs,
        string[] outputNames,
        string[] command,
        IReadOnlyDictionary<string, string> extraEnvironment,
        bool network,
        bool binSh)
    {
        foreach (string output in outputNames)
        {
            if (PathComponent.Validate(Encoding.UTF8.GetBytes(output)) is { } error || output.Contains('='))
            {
                throw new UsageException($"--output {output}: not a valid output name");
            }
        }

        // Inputs are named HASH-NAME, the hash standing for their content, as Nix names store paths.
        var storeInputs = inputs
            .Select(i => (i.Name, BaseName: NixStorePaths.BaseName("input:" + NodeText.Line(i.Node.WithName(PathComponent.Empty)), i.Name), i.Node))
            .ToList();
        if (storeInputs.GroupBy(i => i.Name).FirstOrDefault(g => g.Count() > 1) is { } duplicate)
        {
            throw new UsageException($"two inputs are named {duplicate.Key}");
        }

        // Outputs are named after everything that went into the build, so the same run gets the same paths.
        var fingerprint = new StringBuilder($"run:{name}\n");
        foreach (var input in storeInputs.OrderBy(i => i.BaseName, StringComparer.Ordinal))
        {
            fingerprint.Append("input ").Append(input.BaseName).Append('\n');
        }

        foreach (string arg in command)
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
            ["NIX_BUILD_CORES"] = Environment.ProcessorCount.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["NIX_BUILD_TOP"] = "/build",
            ["NIX_LOG_FD"] = "2",
            ["NIX_STORE"] = NixStorePaths.StoreDir,
            ["PATH"] = storeInputs.Any(i => i.Node is DirectoryNode)
                ? string.Join(':', storeInputs.Where(i => i.Node is DirectoryNode).Select(i => $"{NixStorePaths.StoreDir}/{i.BaseName}/bin"))
                : "/path-not-set",
            ["PWD"] = "/build",
            ["TEMP"] = "/build",
            ["TEMPDIR"] = "/build",
            ["TERM"] = "xterm-256color",
            ["TMP"] = "/build",
            ["TMPDIR"] = "/build",
            ["builder"] = command[0],
            ["name"] = name,
            ["outputs"] = string.Join(' ', outputNames),
            ["system"] = system,
        };
        foreach (var input in storeInputs)
        {
            environment[input.Name] = $"{NixStorePaths.StoreDir}/{input.BaseName}";
        }

        for (int i = 0; i < outputNames.Length; i++)
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
        var order = Enumerable.Range(0, outputNames.Length).OrderBy(i => outputPaths[i], StringComparer.Ordinal).ToArray();
        var spec = new BuildSpec
        {
            Inputs = [.. storeInputs.Select(i => i.Node.WithName(PathComponent.Create(i.BaseName))).OrderBy(n => n.Name)],
            CommandArgs = [.. command],
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
}
