namespace TvixFuseBuild.Sandbox;

/// <summary>Checks a <see cref="SandboxSpec"/> and reduces it to the <see cref="InitPlan"/> the init executes.</summary>
internal static class SpecValidator
{
    public static InitPlan ToPlan(SandboxSpec spec)
    {
        if (spec.Command is null || spec.Command.Count == 0 || string.IsNullOrEmpty(spec.Command[0]))
        {
            Refuse("the command is empty");
        }

        foreach (var arg in spec.Command)
        {
            NoNul(arg, "a command argument");
        }

        var env = new List<string>(spec.Environment.Count);
        foreach (var (key, value) in spec.Environment)
        {
            if (key.Length == 0 || key.Contains('=') || key.Contains('\0'))
            {
                Refuse($"invalid environment variable name '{key}'");
            }

            NoNul(value, $"environment variable {key}");
            env.Add(key + "=" + value);
        }

        var plan = new InitPlan
        {
            Network = spec.Network,
            Argv = [.. spec.Command],
            Env = [.. env],
            WorkingDirectory = SandboxPath(spec.WorkingDirectory, "the working directory", allowRoot: true),
        };

        foreach (var (path, host) in spec.ScratchPaths)
        {
            string p = SandboxPath(path, "scratch path");
            ExistingHost(host, $"the host directory of scratch path {p}", directory: true);
            if (plan.Scratch.Exists(s => s.Path == p))
            {
                Refuse($"scratch path {p} is given twice");
            }

            plan.Scratch.Add((p, host));
            if (p == "/tmp")
            {
                plan.PrivateTmp = false;
            }
        }

        if (spec.InputsHostDirectory is { } inputsHost)
        {
            ExistingHost(inputsHost, "the inputs directory", directory: true);
            plan.InputsHost = inputsHost;
            plan.InputsPath = SandboxPath(spec.InputsDir, "inputs_dir");
            var names = new HashSet<string>(StringComparer.Ordinal);
            foreach (var name in spec.InputNames)
            {
                if (name.Length == 0 || name is "." or ".." || name.Contains('/') || name.Contains('\0'))
                {
                    Refuse($"invalid input name '{name}'");
                }

                if (!names.Add(name))
                {
                    Refuse($"input {name} is given twice");
                }
            }

            plan.InputNames = [.. spec.InputNames];
            plan.InputsPerEntry = plan.Scratch.Exists(s => IsSameOrUnder(plan.InputsPath, s.Path) || IsSameOrUnder(s.Path, plan.InputsPath));
        }
        else if (spec.InputNames.Count > 0)
        {
            Refuse("input names are given without an inputs directory");
        }

        foreach (var path in spec.ReadOnlyHostPaths)
        {
            string p = ReadOnlyPaths.Normalize(path);
            if (p == "/dev")
            {
                Refuse("read-only host path /dev would replace the sandbox's /dev; name the devices instead");
            }

            plan.ReadOnlyPaths.Add(p);
        }

        if (plan.ReadOnlyPaths.Count > 0)
        {
            // The build's own host directories are build directories too.
            var places = spec.ProtectedHostPaths.Concat(plan.Scratch.Select(s => s.Host));
            if (plan.InputsHost is not null)
            {
                places = places.Append(plan.InputsHost);
            }

            plan.ProtectedPaths.AddRange(places.Select(ReadOnlyPaths.Canonical).Distinct(StringComparer.Ordinal));
        }

        if (spec.BinSh is { } sh)
        {
            ExistingHost(sh, "the shell for /bin/sh", directory: false);
            plan.BinSh = sh;
        }

        foreach (var (path, content) in spec.AdditionalFiles)
        {
            plan.Files.Add((SandboxPath(path, "additional file"), content.ToArray()));
        }

        if (spec.Timeout is { } t && t <= TimeSpan.Zero)
        {
            Refuse("the timeout must be positive");
        }

        if (spec.SilenceTimeout is { } s && s <= TimeSpan.Zero)
        {
            Refuse("the silence timeout must be positive");
        }

        if (spec.LogLimit is < 0)
        {
            Refuse("the log limit must not be negative");
        }

        return plan;
    }

    /// <summary>Normalizes to an absolute sandbox path; refuses '.', '..' and paths the sandbox itself owns.</summary>
    internal static string SandboxPath(string path, string what, bool allowRoot = false)
    {
        if (path is null)
        {
            Refuse($"{what} is missing");
        }

        NoNul(path, what);
        var parts = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        foreach (var part in parts)
        {
            if (part is "." or "..")
            {
                Refuse($"{what} '{path}' contains '{part}'");
            }
        }

        string normalized = "/" + string.Join('/', parts);
        if (normalized == "/" && !allowRoot)
        {
            Refuse($"{what} cannot be the sandbox root");
        }

        if (IsSameOrUnder(normalized, "/proc") || IsSameOrUnder(normalized, "/dev"))
        {
            Refuse($"{what} '{path}' is inside /proc or /dev, which the sandbox provides");
        }

        return normalized;
    }

    private static void ExistingHost(string path, string what, bool directory)
    {
        if (string.IsNullOrEmpty(path) || !Path.IsPathRooted(path))
        {
            Refuse($"{what} '{path}' is not an absolute host path");
        }

        NoNul(path, what);
        if (directory ? !Directory.Exists(path) : !File.Exists(path))
        {
            Refuse($"{what} {path} does not exist{(directory ? " or is not a directory" : "")}");
        }
    }

    private static bool IsSameOrUnder(string path, string dir) =>
        path == dir || (path.Length > dir.Length && path.StartsWith(dir, StringComparison.Ordinal) && path[dir.Length] == '/');

    private static void NoNul(string value, string what)
    {
        if (value.Contains('\0'))
        {
            Refuse($"{what} contains a NUL byte");
        }
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    private static void Refuse(string message) => throw new SandboxRefusedException(message);
}
