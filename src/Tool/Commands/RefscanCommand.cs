using System.Collections.Immutable;
using System.CommandLine;
using System.Text;
using System.Text.Json;
using System.Text.Unicode;
using TvixFuseBuild.Build.Refscan;

namespace TvixFuseBuild.Tool.Commands;

/// <summary>
/// <c>tvix-fuse-build refscan --needles FILE PATH...</c>: which needles occur in each path (file contents, symlink
/// targets, and with <c>--names</c> entry names), as the build does for its outputs.
/// </summary>
internal static class RefscanCommand
{
    public static Command Create()
    {
        var needles = new Option<string>("--needles", "-n")
        {
            Description = "File with one needle per line (bytes, searched as they are; a line ending may be LF or CRLF; '-' reads stdin). Needle N is line N+1.",
            Required = true,
            HelpName = "FILE",
        };
        var paths = new Argument<string[]>("PATH")
        {
            Description = "Files, directories (scanned recursively) or symlinks (their target text is scanned; they are never followed).",
            Arity = ArgumentArity.OneOrMore,
        };
        var json = new Option<bool>("--json") { Description = "Print JSON: {\"paths\": [{\"path\", \"found\": [{\"index\", \"needle\"}]}]}." };
        var names = new Option<bool>("--names") { Description = "Also search the names of entries inside directories, as Nix's NAR-based scan does." };
        var threads = new Option<int>("--threads", "-j")
        {
            Description = "Files scanned at once (default: one per core).",
            HelpName = "N",
            DefaultValueFactory = _ => Environment.ProcessorCount,
        };
        var engine = new Option<string>("--engine")
        {
            Description = "Search engine: auto (the Nix-hash fast path when every needle is 32 nixbase32 characters), nix, or general.",
            DefaultValueFactory = _ => "auto",
        };
        engine.AcceptOnlyFromAmong("auto", "nix", "general");

        var command = new Command("refscan", "Report which needles (e.g. Nix store path hashes) occur in files, symlink targets and directory trees.")
        {
            needles, paths, json, names, threads, engine,
        };
        command.SetAction(parse => Run(
            parse.GetValue(needles)!,
            parse.GetValue(paths)!,
            parse.GetValue(json),
            parse.GetValue(names),
            parse.GetValue(threads),
            parse.GetValue(engine)!));
        return command;
    }

    private static int Run(string needlesFile, string[] paths, bool json, bool names, int threads, string engine)
    {
        if (threads < 1)
        {
            throw new UsageException($"--threads must be at least 1, not {threads}");
        }

        byte[][] needles = ReadNeedles(needlesFile);
        NeedleSet set;
        try
        {
            set = NeedleSet.Create(needles, engine switch { "nix" => RefscanEngine.NixHash, "general" => RefscanEngine.General, _ => null });
        }
        catch (ArgumentException)
        {
            throw new UsageException($"--engine nix needs every needle to be {NeedleSet.NixHashLength} characters of the nixbase32 alphabet ({NeedleSet.NixBase32Alphabet})");
        }

        var scanner = new ReferenceScanner(set, new ReferenceScanOptions { IncludeNames = names, MaxDegreeOfParallelism = threads });
        using var stdout = new BufferedStream(Console.OpenStandardOutput(), 1 << 16);
        using var writer = json ? new Utf8JsonWriter(stdout, new JsonWriterOptions { Indented = true }) : null;
        writer?.WriteStartObject();
        writer?.WriteStartArray("paths");
        int failures = 0;
        foreach (string path in paths)
        {
            ImmutableArray<int> found;
            try
            {
                // On a thread of its own: a signal ends the command without waiting for a large tree's scan.
                found = Task.Run(() => scanner.ScanPath(path)).WaitAsync(ToolConsole.Stopping).GetAwaiter().GetResult();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Report and go on with the other paths; the exit code says something failed.
                writer?.Flush();
                stdout.Flush();
                ToolConsole.Report(e);
                failures++;
                continue;
            }

            if (writer is not null)
            {
                WriteJson(writer, path, found, needles);
            }
            else
            {
                WritePlain(stdout, path, found, needles);
            }
        }

        writer?.WriteEndArray();
        writer?.WriteEndObject();
        writer?.Flush();
        if (json)
        {
            stdout.WriteByte((byte)'\n');
        }

        return failures == 0 ? ToolConsole.Ok : ToolConsole.Failed;
    }

    /// <summary>One needle per line; a final line ending is optional; an empty line is an error (it would match everything).</summary>
    internal static byte[][] ReadNeedles(string file)
    {
        byte[] data = ToolInput.ReadAllBytes(file, "needles file");
        if (data.Length == 0)
        {
            throw new IOException($"needles file {file} is empty");
        }

        var needles = new List<byte[]>();
        ReadOnlySpan<byte> rest = data;
        for (int line = 1; !rest.IsEmpty; line++)
        {
            int end = rest.IndexOf((byte)'\n');
            var needle = end < 0 ? rest : rest[..end];
            rest = end < 0 ? default : rest[(end + 1)..];
            if (!needle.IsEmpty && needle[^1] == (byte)'\r')
            {
                needle = needle[..^1];
            }

            if (needle.IsEmpty)
            {
                throw new IOException($"needles file {file}: line {line} is empty (an empty needle would match everything)");
            }

            needles.Add(needle.ToArray());
        }

        return [.. needles];
    }

    // "PATH: needle needle ...", one line per path; bytes that are not printable ASCII are written as \xNN.
    private static void WritePlain(Stream output, string path, ImmutableArray<int> found, byte[][] needles)
    {
        var line = new StringBuilder(path.Length + 2 + found.Length * 33);
        line.Append(path).Append(':');
        foreach (int index in found)
        {
            line.Append(' ');
            foreach (byte b in needles[index])
            {
                if (b is > 0x20 and < 0x7f and not (byte)'\\')
                {
                    line.Append((char)b);
                }
                else
                {
                    line.Append($"\\x{b:x2}");
                }
            }
        }

        line.Append('\n');
        output.Write(Encoding.UTF8.GetBytes(line.ToString()));
    }

    private static void WriteJson(Utf8JsonWriter writer, string path, ImmutableArray<int> found, byte[][] needles)
    {
        writer.WriteStartObject();
        writer.WriteString("path", path);
        writer.WriteStartArray("found");
        foreach (int index in found)
        {
            writer.WriteStartObject();
            writer.WriteNumber("index", index);
            if (Utf8.IsValid(needles[index]))
            {
                writer.WriteString("needle", needles[index]);
            }
            else
            {
                writer.WriteBase64String("needle_base64", needles[index]);
            }

            writer.WriteEndObject();
        }

        writer.WriteEndArray();
        writer.WriteEndObject();
    }
}
