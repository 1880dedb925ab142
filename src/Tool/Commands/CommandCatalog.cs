using System.CommandLine;

namespace TvixFuseBuild.Tool.Commands;

/// <summary>Every user-facing sub-command, in the order --help lists them.</summary>
internal static class CommandCatalog
{
    private static readonly (string Name, Func<Command> Create)[] Commands =
    [
        ("build", BuildCommand.Create),
        ("run", RunCommand.Create),
        ("drv", DrvCommand.Create),
        ("import", ImportCommand.Create),
        ("export", ExportCommand.Create),
        ("ls", LsCommand.Create),
        ("cat", CatCommand.Create),
        ("mount", MountCommand.Create),
        ("refscan", RefscanCommand.Create),
        ("serve", ServeCommand.Create),
        ("gc", GcCommand.Create),
        ("root", RootsCommand.Create),
        ("store", StoreInfoCommand.Create),
    ];

    /// <summary>The root options that take a value (the next argument), as <see cref="Program"/> adds them.</summary>
    private static readonly string[] RootOptionsWithValue = ["--store", "--blob-service-addr", "--directory-service-addr", "--grpc-token-file"];

    public static IEnumerable<Command> All() => Commands.Select(c => c.Create());

    /// <summary>
    /// The sub-commands <paramref name="args"/> needs: only the one it names, when nothing but root options comes before
    /// that name (start-up builds one command's options instead of all of them); otherwise every one, so that help,
    /// completion, "did you mean" and every other parse see the whole tree.
    /// </summary>
    public static IEnumerable<Command> For(IReadOnlyList<string> args)
    {
        for (int i = 0; i < args.Count; i++)
        {
            string arg = args[i];
            if (RootOptionsWithValue.Contains(arg))
            {
                // A value that is also a command's name: the parser decides what it is, with the whole tree.
                if (++i < args.Count && IndexOf(args[i]) >= 0)
                {
                    break;
                }

                continue;
            }

            if (arg == "--offline")
            {
                continue;
            }

            int named = IndexOf(arg);
            return named >= 0 ? [Commands[named].Create()] : All();
        }

        return All();
    }

    private static int IndexOf(string name) => Array.FindIndex(Commands, c => c.Name == name);
}
