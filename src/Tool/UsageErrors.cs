using System.CommandLine;
using System.CommandLine.Completions;
using System.CommandLine.Parsing;
using System.Text.RegularExpressions;

namespace TvixFuseBuild.Tool;

/// <summary>
/// Turns what the parser found wrong into one sentence in the tool's words: the first problem only, naming the option
/// or command, with a "did you mean" when a name was mistyped. The parser's own messages name .NET types and come
/// several to a mistake.
/// </summary>
internal static partial class UsageErrors
{
    /// <summary>The message for a parse that failed, or that bound an unknown option to an argument; null when it is fine.</summary>
    public static string? Find(ParseResult parse)
    {
        string? unknown = OptionTakenAsArgument(parse);
        if (unknown is not null || parse.Errors.Count == 0)
        {
            return unknown;
        }

        if (parse.UnmatchedTokens.Count > 0)
        {
            return Unmatched(parse, parse.UnmatchedTokens[0]);
        }

        var error = parse.Errors[0];
        return error.SymbolResult switch
        {
            OptionResult { IdentifierToken: null } => Missing(parse) ?? Clean(error.Message),
            OptionResult option => BadOptionValue(option.Option, option.Tokens, error.Message),
            ArgumentResult { Parent: OptionResult option } => BadOptionValue(option.Option, option.Tokens, error.Message),
            ArgumentResult { Parent: CommandResult command } argument => BadArgument(command.Command, argument.Argument, argument.Tokens, error.Message),
            _ => Missing(parse) ?? Clean(error.Message),
        };
    }

    /// <summary>The command path the user typed, e.g. <c>tvix-fuse-build import</c>.</summary>
    public static string CommandPath(ParseResult parse)
    {
        var names = new List<string>();
        for (SymbolResult? result = parse.CommandResult; result is not null; result = result.Parent)
        {
            if (result is CommandResult { Command: not RootCommand } command)
            {
                names.Insert(0, command.Command.Name);
            }
        }

        return string.Join(' ', names.Prepend(ToolConsole.Name));
    }

    private static string Unmatched(ParseResult parse, string token)
    {
        var command = parse.CommandResult.Command;
        if (token.Length > 1 && token[0] == '-')
        {
            return UnknownOption(parse, token);
        }

        if (command.Subcommands.Count > 0 && parse.CommandResult.Tokens.Count == 0)
        {
            return $"unknown command {ToolText.Quote(token)}{Suggest(token, command.Subcommands.Select(c => c.Name))}";
        }

        return $"unexpected argument {ToolText.Quote(token)} for '{CommandPath(parse)}'";
    }

    private static string UnknownOption(ParseResult parse, string token, bool takenAsArgument = false)
    {
        string suggestion = Suggest(token.Split('=')[0], OptionNames(parse.CommandResult));
        string hint = suggestion.Length > 0 || !takenAsArgument ? suggestion : " (an argument that starts with '-' goes after '--')";
        return $"unknown option {ToolText.Quote(token)} for '{CommandPath(parse)}'{hint}";
    }

    private static IEnumerable<string> OptionNames(CommandResult command)
    {
        for (SymbolResult? result = command; result is not null; result = result.Parent)
        {
            if (result is CommandResult { Command: var c })
            {
                foreach (var option in c.Options.Where(o => result == command || o.Recursive))
                {
                    yield return option.Name;
                    foreach (string alias in option.Aliases)
                    {
                        yield return alias;
                    }
                }
            }
        }
    }

    /// <summary>
    /// System.CommandLine hands a token that looks like an option but is none (<c>--bogus</c>) to an argument that
    /// takes strings, so <c>import --bogus</c> would import a file of that name. Before <c>--</c>, it is a mistake.
    /// </summary>
    private static string? OptionTakenAsArgument(ParseResult parse)
    {
        var afterDoubleDash = new HashSet<Token>(ReferenceEqualityComparer.Instance);
        bool seen = false;
        foreach (var token in parse.Tokens)
        {
            if (seen)
            {
                afterDoubleDash.Add(token);
            }

            seen |= token.Type == TokenType.DoubleDash;
        }

        for (SymbolResult? result = parse.CommandResult; result is not null; result = result.Parent)
        {
            if (result is not CommandResult command)
            {
                continue;
            }

            foreach (var argument in command.Children.OfType<ArgumentResult>())
            {
                var suspicious = argument.Tokens.FirstOrDefault(t => t.Value.Length > 1 && t.Value[0] == '-' && !afterDoubleDash.Contains(t));
                if (suspicious is not null)
                {
                    return UnknownOption(parse, suspicious.Value, takenAsArgument: true);
                }
            }
        }

        return null;
    }

    private static string BadOptionValue(Option option, IReadOnlyList<Token> tokens, string parserMessage)
    {
        string name = option.Name;
        string expected = option.HelpName ?? "VALUE";
        if (tokens.Count == 0)
        {
            return $"{name} needs a value ({expected})";
        }

        string value = tokens[^1].Value;
        string[] choices = [.. option.GetCompletions(CompletionContext.Empty).Select(c => c.Label)];
        if (choices.Length > 0 && !choices.Contains(value))
        {
            return $"{name}: {ToolText.Quote(value)} is not one of {string.Join(", ", choices)}{Suggest(value, choices)}";
        }

        // A value of the right type that a validator refused: its message says why.
        return NotA(option.ValueType) is { } kind && !Converts(option.ValueType, value)
            ? $"{name}: {ToolText.Quote(value)} is not {kind} ({expected})"
            : Clean(parserMessage);
    }

    private static string BadArgument(Command command, Argument argument, IReadOnlyList<Token> tokens, string parserMessage)
    {
        if (tokens.Count == 0)
        {
            return $"'{command.Name}' needs {argument.Name}";
        }

        string value = tokens[^1].Value;
        return NotA(argument.ValueType) is { } kind
            ? $"{argument.Name}: {ToolText.Quote(value)} is not {kind}"
            : Clean(parserMessage);
    }

    /// <summary>A required option or sub-command that is not there.</summary>
    private static string? Missing(ParseResult parse)
    {
        var command = parse.CommandResult.Command;
        if (command.Options.FirstOrDefault(o => o.Required && parse.GetResult(o) is not OptionResult { IdentifierToken: not null }) is { } option)
        {
            return $"'{command.Name}' needs {option.Name} {option.HelpName ?? "VALUE"}";
        }

        if (command.Subcommands.Count > 0 && command.Action is null)
        {
            return $"no command given; the commands are {string.Join(", ", command.Subcommands.Where(c => !c.Hidden).Select(c => c.Name))}";
        }

        return null;
    }

    private static bool Converts(Type type, string value) => (Nullable.GetUnderlyingType(type) ?? type) switch
    {
        var t when t == typeof(int) => int.TryParse(value, System.Globalization.CultureInfo.InvariantCulture, out _),
        var t when t == typeof(long) || t == typeof(uint) || t == typeof(ulong) => long.TryParse(value, System.Globalization.CultureInfo.InvariantCulture, out _),
        var t when t == typeof(double) || t == typeof(float) || t == typeof(decimal) => double.TryParse(value, System.Globalization.CultureInfo.InvariantCulture, out _),
        var t when t == typeof(bool) => bool.TryParse(value, out _),
        _ => true,
    };

    private static string? NotA(Type type) => (Nullable.GetUnderlyingType(type) ?? type) switch
    {
        var t when t == typeof(int) || t == typeof(long) || t == typeof(uint) || t == typeof(ulong) => "a whole number",
        var t when t == typeof(double) || t == typeof(float) || t == typeof(decimal) => "a number",
        var t when t == typeof(bool) => "true or false",
        _ => null,
    };

    /// <summary>Names that differ from <paramref name="typed"/> by a typo or two, as " (did you mean 'x'?)".</summary>
    internal static string Suggest(string typed, IEnumerable<string> names)
    {
        if (typed.TrimStart('-').Length < 2)
        {
            return "";
        }

        var close = names
            .Where(n => n.TrimStart('-').Length >= 2)
            .Distinct()
            .Select(n => (Name: n, Distance: Distance(typed, n)))
            .Where(c => c.Distance <= Math.Max(1, Math.Min(3, c.Name.Length / 3)) ||
                        (typed.Length >= 3 && c.Name.StartsWith(typed, StringComparison.Ordinal)))
            .OrderBy(c => c.Distance)
            .ThenBy(c => c.Name, StringComparer.Ordinal)
            .Take(3)
            .Select(c => $"'{c.Name}'")
            .ToList();
        return close.Count == 0 ? "" : $" (did you mean {string.Join(" or ", close)}?)";
    }

    /// <summary>Optimal string alignment distance (Levenshtein with adjacent transpositions).</summary>
    private static int Distance(string a, string b)
    {
        if (a.Length > 64 || b.Length > 64)
        {
            return int.MaxValue;
        }

        var d = new int[a.Length + 1, b.Length + 1];
        for (int i = 0; i <= a.Length; i++)
        {
            d[i, 0] = i;
        }

        for (int j = 0; j <= b.Length; j++)
        {
            d[0, j] = j;
        }

        for (int i = 1; i <= a.Length; i++)
        {
            for (int j = 1; j <= b.Length; j++)
            {
                int cost = a[i - 1] == b[j - 1] ? 0 : 1;
                d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + cost);
                if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
                {
                    d[i, j] = Math.Min(d[i, j], d[i - 2, j - 2] + 1);
                }
            }
        }

        return d[a.Length, b.Length];
    }

    /// <summary>A parser message we have no better words for: one line, no .NET type names, long values elided.</summary>
    private static string Clean(string message)
    {
        string text = TypeName().Replace(message.ReplaceLineEndings(" ").Replace('\t', ' '), "a value");
        text = Quoted().Replace(text, m => ToolText.Quote(m.Groups[1].Value));
        return text.TrimEnd('.');
    }

    [GeneratedRegex(@"'?System\.[A-Za-z0-9_.`\[\]]+'?")]
    private static partial Regex TypeName();

    [GeneratedRegex("'([^']*)'")]
    private static partial Regex Quoted();
}
