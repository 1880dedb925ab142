using System.CommandLine;
using System.Text;
using System.Text.Json;
using TvixFuseBuild.Build.Nix;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Tool.Commands;

/// <summary>
/// <c>tvix-fuse-build drv FILE.drv...</c>: builds Nix derivations the way nix-build does, from the local Nix store's
/// inputs, and registers the outputs in the Nix store at their paths.
/// </summary>
internal static class DrvCommand
{
    /// <summary>nix-build's exit status for a failed build, and for a fixed-output hash mismatch.</summary>
    private const int BuildFailed = 100;
    private const int HashMismatch = 102;
    private const int TimedOut = 101;

    public static Command Create()
    {
        var files = new Argument<string[]>("FILE.drv")
        {
            Description = "Derivations in Nix's ATerm format (in /nix/store or anywhere).",
            Arity = ArgumentArity.OneOrMore,
        };
        var printRequest = new Option<bool>("--print-request") { Description = "Print each derivation's BuildRequest (protobuf JSON) instead of building." };
        var binary = new Option<bool>("--binary") { Description = "With --print-request: the binary encoding." };
        var json = new Option<bool>("--json") { Description = "Print a JSON array: each derivation's outputs, their store paths and references." };
        var noOutLink = new Option<bool>("--no-out-link") { Description = "Do not create ./result symlinks." };
        var outLink = new Option<string>("--out-link", "-o")
        {
            Description = "The symlink to the output 'out' (others: PATH-NAME; later derivations: PATH-2, ...).",
            HelpName = "PATH",
            DefaultValueFactory = _ => "result",
        };
        var common = new BuildCommand.BuildOptions();
        var command = new Command(
            "drv",
            "Build Nix derivations (.drv files) as nix-build does: inputs from the local Nix store (imported into the castore once), " +
            "the build in the sandbox, each output registered in the Nix store at its path with the references Nix would find, " +
            "./result symlinks, and the output paths on stdout. A failed build exits 100, a fixed-output hash mismatch 102.")
        {
            files,
            printRequest,
            binary,
            json,
            noOutLink,
            outLink,
        };
        common.AddTo(command);
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var nix = new LocalNixStore();
            var results = new List<(string DrvPath, Dictionary<string, (string Path, string[] References)> Outputs)>();
            await using var store = StoreSelection.Open(parse);
            var paths = parse.GetValue(files)!;
            for (int n = 0; n < paths.Length; n++)
            {
                string file = paths[n];
                var (derivation, drvPath) = Read(file);
                var inputs = await InputClosureAsync(nix, derivation, drvPath, store, cancellationToken);
                DerivationRequest request;
                try
                {
                    request = DerivationRequest.Create(derivation, inputs);
                }
                catch (FormatException e)
                {
                    throw new ReportedFailureException($"{drvPath}: {e.Message}", []);
                }

                if (parse.GetValue(printRequest))
                {
                    var format = parse.GetValue(binary) ? MessageFormat.Binary : MessageFormat.Json;
                    byte[] bytes = BuildMessages.FormatRequest(request.Spec, BuildProtocol.Tvix, format);
                    using var stdout = Console.OpenStandardOutput();
                    stdout.Write(bytes);
                    if (format == MessageFormat.Json)
                    {
                        stdout.Write("\n"u8);
                    }

                    continue;
                }

                var outputs = new Dictionary<string, (string Path, string[] References)>(StringComparer.Ordinal);
                var invalid = await nix.InvalidPathsAsync(request.OutputPaths, cancellationToken);
                if (invalid.Count == 0 && !parse.GetValue(common.Rebuild))
                {
                    // As nix-build: outputs already valid are not built again.
                    for (int i = 0; i < request.OutputNames.Length; i++)
                    {
                        var references = await nix.ReferencesAsync(request.OutputPaths[i], cancellationToken);
                        outputs[request.OutputNames[i]] = (request.OutputPaths[i], [.. references.Order(StringComparer.Ordinal)]);
                    }
                }
                else
                {
                    Build.Pipeline.BuildRun run;
                    Build.Pipeline.BuildFailedException? failed = null;
                    try
                    {
                        run = await common.RunAsync(parse, store, request.Spec, BuildProtocol.Tvix, cancellationToken, f => failed = f);
                    }
                    catch (ReportedFailureException failure)
                    {
                        ToolConsole.WriteError(failure.Message);
                        foreach (string detail in failure.Details)
                        {
                            Console.Error.WriteLine(ToolText.Line(detail));
                        }

                        return ReportFailure(failed, drvPath, request);
                    }

                    if (derivation.IsFixedOutput && await CheckFixedOutputAsync(derivation, drvPath, run.Result.Outputs[0].Node, store, cancellationToken) is { } mismatch)
                    {
                        string[] lines = mismatch.Split('\n');
                        WriteNixError(lines[0]);
                        foreach (string line in lines.Skip(1))
                        {
                            Console.Error.WriteLine(line);
                        }

                        return HashMismatch;
                    }

                    var register = new List<(string Path, Node Node, IReadOnlyCollection<string> References)>();
                    for (int i = 0; i < request.OutputNames.Length; i++)
                    {
                        var output = run.Result.Outputs[i];
                        string[] references = [.. output.Needles.Select(needle => request.NeedlePaths[needle]).Distinct().Order(StringComparer.Ordinal)];
                        outputs[request.OutputNames[i]] = (request.OutputPaths[i], references);
                        if (invalid.Contains(request.OutputPaths[i]))
                        {
                            register.Add((request.OutputPaths[i], output.Node, references));
                        }
                    }

                    if (register.Count > 0)
                    {
                        await nix.ImportAsync(
                            register, drvPath.StartsWith(NixStorePaths.StoreDir + "/", StringComparison.Ordinal) ? drvPath : null, store, cancellationToken);
                    }
                }

                if (!parse.GetValue(noOutLink))
                {
                    string prefix = parse.GetValue(outLink)! + (n == 0 ? "" : $"-{n + 1}");
                    foreach (var (name, output) in outputs)
                    {
                        string link = Path.GetFullPath(name == "out" ? prefix : $"{prefix}-{name}");
                        await nix.AddRootAsync(output.Path, link, cancellationToken);
                    }
                }

                foreach (var (name, output) in outputs.OrderBy(o => o.Key, StringComparer.Ordinal))
                {
                    if (!parse.GetValue(json))
                    {
                        Console.Out.WriteLine(output.Path);
                    }
                }

                results.Add((drvPath, outputs));
            }

            if (parse.GetValue(json) && !parse.GetValue(printRequest))
            {
                Console.Out.WriteLine(ResultsJson(results));
            }

            return ToolConsole.Ok;
        });
        return command;
    }

    /// <summary>
    /// nix-build --json's list: <c>[{"drvPath": …, "outputs": {NAME: {"path": …, "references": […]}}}]</c>, outputs by
    /// name. Written by hand rather than by JsonSerializer, which needs reflection (not in the NativeAOT tool).
    /// </summary>
    private static string ResultsJson(IEnumerable<(string DrvPath, Dictionary<string, (string Path, string[] References)> Outputs)> results)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartArray();
            foreach (var (drvPath, outputs) in results)
            {
                writer.WriteStartObject();
                writer.WriteString("drvPath", drvPath);
                writer.WriteStartObject("outputs");
                foreach (var (name, output) in outputs.OrderBy(o => o.Key, StringComparer.Ordinal))
                {
                    writer.WriteStartObject(name);
                    writer.WriteString("path", output.Path);
                    writer.WriteStartArray("references");
                    foreach (string reference in output.References)
                    {
                        writer.WriteStringValue(reference);
                    }

                    writer.WriteEndArray();
                    writer.WriteEndObject();
                }

                writer.WriteEndObject();
                writer.WriteEndObject();
            }

            writer.WriteEndArray();
        }

        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    /// <summary>Nix's last line for a failed build, and nix-build's exit status for it.</summary>
    private static int ReportFailure(Build.Pipeline.BuildFailedException? failure, string drvPath, DerivationRequest request)
    {
        var sandbox = failure?.Sandbox;
        if (sandbox is { Succeeded: true })
        {
            // The builder succeeded but left an output out: Nix fails the build with status 1, not 100.
            var missing = request.OutputPaths.Select((path, i) => (path, name: request.OutputNames[i]))
                .FirstOrDefault(o => failure!.Message.EndsWith(o.path[1..], StringComparison.Ordinal));
            WriteNixError(missing.path is null
                ? $"builder for '{drvPath}' failed to produce an output path"
                : $"builder for '{drvPath}' failed to produce output path for output '{missing.name}' at '{missing.path}'");
            return ToolConsole.Failed;
        }

        if (sandbox is { Outcome: Sandbox.SandboxOutcome.TimedOut or Sandbox.SandboxOutcome.SilenceTimedOut })
        {
            WriteNixError($"builder for '{drvPath}' timed out");
            return TimedOut;
        }

        WriteNixError(sandbox is { Outcome: Sandbox.SandboxOutcome.Exited, ExitCode: { } code }
            ? $"builder for '{drvPath}' failed with exit code {code}"
            : $"builder for '{drvPath}' failed");
        return BuildFailed;
    }

    private static (Derivation Derivation, string DrvPath) Read(string file)
    {
        string full = Path.GetFullPath(file);
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(full);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw new ReportedFailureException($"{file}: no such file", []);
        }

        try
        {
            return (Derivation.Parse(bytes), full);
        }
        catch (FormatException e)
        {
            throw new ReportedFailureException($"{file}: {e.Message}", []);
        }
    }

    /// <summary>
    /// The input sources and the selected outputs of the input derivations, with everything they reference, as castore
    /// nodes; store paths imported before are not imported again.
    /// </summary>
    private static async Task<List<(string StorePath, Node Node)>> InputClosureAsync(
        LocalNixStore nix, Derivation derivation, string drvPath, CastoreStore store, CancellationToken cancellationToken)
    {
        var roots = new List<string>(derivation.InputSources);
        var fromDerivation = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var input in derivation.InputDerivations)
        {
            var (inputDerivation, _) = Read(input.DrvPath);
            foreach (string outputName in input.Outputs)
            {
                var output = inputDerivation.Outputs.FirstOrDefault(o => o.Name == outputName)
                    ?? throw new ReportedFailureException($"{drvPath}: input derivation {input.DrvPath} has no output '{outputName}'", []);
                roots.Add(output.Path);
                fromDerivation[output.Path] = input.DrvPath;
            }
        }

        var invalid = await nix.InvalidPathsAsync(roots, cancellationToken);
        if (invalid.Count > 0)
        {
            var lines = invalid.Select(p => fromDerivation.TryGetValue(p, out string? d)
                ? $"  {p} (an output of {d}; build it first: nix-store --realise {d})"
                : $"  {p} (an input source)");
            throw new ReportedFailureException(
                $"{drvPath}: {(invalid.Count == 1 ? "an input is" : "inputs are")} not in the Nix store:", [.. lines]);
        }

        var (closure, hashes) = await nix.ClosureWithHashesAsync(roots, cancellationToken);
        var (nodes, imported) = await NixInputIndex.Default.GetNodesAsync(closure, hashes, store, cancellationToken);
        if (imported > 0)
        {
            Console.Error.WriteLine($"{ToolConsole.Name}: imported {imported} of {closure.Count} input store paths into the castore");
        }

        return nodes;
    }

    /// <summary>Nix's message when a fixed output's hash is not the one specified; null when it is.</summary>
    private static async Task<string?> CheckFixedOutputAsync(Derivation derivation, string drvPath, Node output, CastoreStore store, CancellationToken cancellationToken)
    {
        var fixedOutput = derivation.Outputs[0];
        bool recursive = fixedOutput.HashAlgorithm.StartsWith("r:", StringComparison.Ordinal);
        string algorithm = recursive ? fixedOutput.HashAlgorithm[2..] : fixedOutput.HashAlgorithm;
        NixHash wanted;
        try
        {
            wanted = NixHash.Parse(fixedOutput.Hash, algorithm);
        }
        catch (FormatException e)
        {
            return $"{drvPath}: {e.Message}";
        }

        NixHash got;
        if (recursive)
        {
            got = await NarWriter.HashAsync(output, store, algorithm, cancellationToken);
        }
        else if (output is FileNode { Executable: false } file)
        {
            got = await NarWriter.HashFileAsync(file, store, algorithm, cancellationToken);
        }
        else
        {
            return $"output path '{fixedOutput.Path}' should be a non-executable regular file since recursive hashing is not enabled (outputHashMode=flat)";
        }

        return wanted.Matches(got)
            ? null
            : $"hash mismatch in fixed-output derivation '{drvPath}':\n         specified: {wanted.ToSri()}\n            got:    {got.ToSri()}";
    }

    /// <summary>An error line as Nix words it, after the tool's prefix: store paths whole, never shortened.</summary>
    private static void WriteNixError(string message) => Console.Error.WriteLine(ToolConsole.ErrorPrefix + message);
}
