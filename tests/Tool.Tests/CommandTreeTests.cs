using System.CommandLine;
using TvixFuseBuild.Tool.Commands;

namespace TvixFuseBuild.Tool.Tests;

/// <summary>
/// The tool builds only the sub-command its arguments name (start-up): every command line parses, helps and fails
/// with that one command exactly as with the whole tree.
/// </summary>
public sealed class CommandTreeTests
{
    public static TheoryData<string[]> CommandLines()
    {
        var lines = new TheoryData<string[]>();
        foreach (string name in new[] { "build", "run", "drv", "import", "export", "ls", "cat", "mount", "refscan", "serve", "gc", "root", "store" })
        {
            lines.Add([name, "--help"]);
            lines.Add([name]);
            lines.Add(["--store", "/s", "--offline", name, "--bogus"]);
        }

        lines.Add(["store", "info", "--help"]);
        lines.Add(["root", "add", "--help"]);
        lines.Add(["store", "inf"]);
        lines.Add(["build", "--timout", "3", "r.json"]);
        lines.Add(["build", "--timeout", "0", "r.json"]);
        lines.Add(["build", "--protocol", "tvx", "r.json"]);
        lines.Add(["--store", "/s", "import", "--jsn", "x"]);
        lines.Add(["import", "--bogus"]);
        lines.Add(["ls", "import"]);
        lines.Add(["cat", "a", "b"]);
        lines.Add(["gc", "--max-size", "lots"]);
        lines.Add(["run", "sh", "-c", "true"]);
        lines.Add(["refscan", "-j", "x", "p"]);
        lines.Add(["--store", "build", "ls"]);
        lines.Add(["--store"]);
        lines.Add(["--offline", "true", "ls"]);
        lines.Add(["build", "--version"]);
        lines.Add(["build", "--help", "--store", "x"]);
        lines.Add(["--version"]);
        lines.Add(["--help"]);
        lines.Add(["impot", "x"]);
        lines.Add([]);
        return lines;
    }

    [Theory]
    [MemberData(nameof(CommandLines))]
    public void OneCommandParsesAsTheWholeTree(string[] args)
    {
        Assert.Equal(Outcome(Program.CreateRoot(CommandCatalog.All()), args), Outcome(Program.CreateRoot(CommandCatalog.For(args)), args));
    }

    [Theory]
    [InlineData(1, "build", "--help")]
    [InlineData(1, "--store", "/s", "--offline", "--blob-service-addr", "x", "--directory-service-addr", "y", "store", "info")]
    [InlineData(13, "--help")]
    [InlineData(13, "--version")]
    [InlineData(13, "--store", "build", "ls")]
    [InlineData(13, "--store=/s", "ls")]
    [InlineData(13, "impot")]
    [InlineData(13, "[suggest:3]", "tvix-fuse-build im")]
    public void OnlyTheNamedCommandIsBuilt(int expected, params string[] args)
    {
        var commands = CommandCatalog.For(args).ToList();
        Assert.Equal(expected, commands.Count);
        string[] names = expected == 1 ? [args.First(a => a == commands[0].Name)] : [.. CommandCatalog.All().Select(c => c.Name)];
        Assert.Equal(names, commands.Select(c => c.Name));
    }

    private static string Outcome(RootCommand root, string[] args)
    {
        var parse = root.Parse(args, new ParserConfiguration { ResponseFileTokenReplacer = null });
        string? usage = UsageErrors.Find(parse);
        var output = new StringWriter();
        if (usage is null && parse.Action is { } action && !ReferenceEquals(action, parse.CommandResult.Command.Action))
        {
            int code = parse.Invoke(new InvocationConfiguration { Output = output, Error = output });
            output.Write($"\nexit {code}");
        }

        return $"{UsageErrors.CommandPath(parse)}\n{usage}\n{output}";
    }
}
