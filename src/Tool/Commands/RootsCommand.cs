using System.CommandLine;
using System.Text.Json;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores.Local;

namespace TvixFuseBuild.Tool.Commands;

/// <summary><c>root add NAME DIGEST | root list | root remove NAME</c>: explicit garbage-collection roots of a local store.</summary>
internal static class RootsCommand
{
    public static Command Create()
    {
        var command = new Command(
            "root",
            "Manage explicit garbage-collection roots of a local store: a named digest whose closure 'gc' always keeps.")
        {
            Add(),
            List(),
            Remove(),
        };
        return command;
    }

    private static Command Add()
    {
        var name = NameArgument();
        var digest = new Argument<string>("DIGEST") { Description = "A directory or blob in the store (blake3-<base64> or 64 hex characters)." };
        var replace = new Option<bool>("--replace") { Description = "Point an existing root at DIGEST instead of failing." };
        var command = new Command("add", "Add root NAME for DIGEST, which must be in the store with its whole closure.")
        {
            name,
            digest,
            replace,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            string rootName = ValidName(parse.GetValue(name)!);
            string text = parse.GetValue(digest)!;
            if (!B3Digest.TryParse(text, out var parsed, out string? error))
            {
                throw new UsageException(error);
            }

            await using var store = StoreSelection.Open(parse);
            var local = GcCommand.RequireLocal(store, "root add");
            await local.Roots.AddAsync(rootName, parsed, parse.GetValue(replace), cancellationToken);
            Console.WriteLine($"root {rootName} -> {parsed}");
            return ToolConsole.Ok;
        });
        return command;
    }

    private static Command List()
    {
        var json = new Option<bool>("--json") { Description = "Print a JSON array of {\"name\", \"digest\"}." };
        var command = new Command("list", "List the roots: NAME DIGEST, one a line, by name.") { json };
        command.SetAction(async parse =>
        {
            await using var store = StoreSelection.Open(parse);
            var roots = GcCommand.RequireLocal(store, "root list").Roots.List();
            if (parse.GetValue(json))
            {
                using var stream = Console.OpenStandardOutput();
                using (var writer = new Utf8JsonWriter(stream))
                {
                    writer.WriteStartArray();
                    foreach (var root in roots)
                    {
                        writer.WriteStartObject();
                        writer.WriteString("name", root.Name);
                        writer.WriteString("digest", root.Digest.ToString());
                        writer.WriteEndObject();
                    }

                    writer.WriteEndArray();
                }

                stream.Write("\n"u8);
            }
            else
            {
                foreach (var root in roots)
                {
                    Console.WriteLine($"{root.Name}\t{root.Digest}");
                }
            }

            return ToolConsole.Ok;
        });
        return command;
    }

    private static Command Remove()
    {
        var name = NameArgument();
        var command = new Command("remove", "Remove root NAME (what it kept goes at the next 'gc' unless something else keeps it).") { name };
        command.SetAction(async parse =>
        {
            string rootName = ValidName(parse.GetValue(name)!);
            await using var store = StoreSelection.Open(parse);
            if (!GcCommand.RequireLocal(store, "root remove").Roots.Remove(rootName))
            {
                throw new StoreRootException($"there is no root named {rootName}");
            }

            return ToolConsole.Ok;
        });
        return command;
    }

    private static Argument<string> NameArgument() => new("NAME")
    {
        Description = $"The root's name: letters, digits and . _ + - (not starting with '.'), at most {StoreRoots.MaxNameLength} characters.",
    };

    private static string ValidName(string name) =>
        StoreRoots.IsValidName(name, out string? error) ? name : throw new UsageException($"invalid root name '{(name.Length > 40 ? name[..37] + "..." : name)}': {error}");
}
