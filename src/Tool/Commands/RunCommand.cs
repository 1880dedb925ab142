using System.CommandLine;
using System.Text;
using TvixFuseBuild.Build.Nix;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;
using TvixFuseBuild.Castore.Transfer;

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
            Description = "Export output NAME to PREFIX-NAME, replacing an earlier result there (a directory, file or symlink; never a symlink's target). " +
                          "A character device or FIFO there receives a file output's bytes; anything else there is an error.",
            HelpName = "PREFIX",
            DefaultValueFactory = _ => "result",
        };
        var command = new Argument<string[]>("COMMAND")
        {
            Description = "The program and its arguments, after '--'. A bare program name runs the file input of that name, or is looked up in the build's PATH.",
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

            NixShapedRequest plan;
            try
            {
                plan = NixShapedRequest.Create(
                    buildName, importedInputs, outputNames, parse.GetValue(command)!, ParseEnvironment(parse.GetValue(environment) ?? []),
                    parse.GetValue(network), parse.GetValue(binSh));
            }
            catch (ArgumentException e)
            {
                throw new UsageException(e.Message);
            }
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
                await HostExporter.ExportAsync(output.Node, store, destination, new ExportOptions { ReplaceExisting = true }, cancellationToken);
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
