using System.CommandLine;
using System.Runtime.InteropServices;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Fuse;

namespace TvixFuseBuild.Tool.Commands;

/// <summary><c>mount MOUNTPOINT (--directory DIGEST | --nodes FILE)</c>: serves a castore tree until Ctrl-C or SIGTERM.</summary>
internal static class MountCommand
{
    public const string ReadyPrefix = "mounted ";

    public static Command Create()
    {
        var mountpoint = new Argument<string>("MOUNTPOINT") { Description = "An existing directory to mount the tree at." };
        var directory = new Option<string?>("--directory")
        {
            Description = "Mount the entries of this directory (blake3-<base64> or 64 hex characters).",
            HelpName = "DIGEST",
        };
        var nodes = new Option<string?>("--nodes")
        {
            Description = "Mount these nodes at the root, each under its name. FILE ('-' for stdin) holds what 'import' prints: " +
                          "one node per line, NAME<TAB>KIND<TAB>DIGEST<TAB>SIZE (KIND: directory, file, executable) or " +
                          "NAME<TAB>symlink<TAB>-> TARGET; or, as 'import --json' prints, a JSON array of tvix.castore.v1.Node.",
            HelpName = "FILE",
        };
        var threads = new Option<int?>("--threads")
        {
            Description = "The most worker threads answering the kernel; one starts, more while all are busy (default: 4 per core, 8 to 32).",
            HelpName = "N",
        };
        var allowOther = new Option<bool>("--allow-other")
        {
            Description = "Let other users in (as a user, needs user_allow_other in /etc/fuse.conf).",
        };
        var noRootListing = new Option<bool>("--no-root-listing")
        {
            Description = "Refuse listing the root (EPERM); its entries can still be opened by name.",
        };
        var passthrough = new Option<bool>("--passthrough")
        {
            Description = "Let the kernel read blobs stored as whole local files itself (FUSE passthrough; root, kernel 6.9+; " +
                          "falls back to serving reads when refused).",
        };
        var perFileOpen = new Option<bool>("--per-file-open")
        {
            Description = "Have every open of a file answered by this process (an OPEN and a RELEASE message each), instead of " +
                          "letting the kernel open files itself; slower re-reads from the page cache.",
        };

        // Was the opt-in before zero-message open became the default; still accepted.
        var zeroMessageOpen = new Option<bool>("--zero-message-open") { Hidden = true };
        var command = new Command(
            "mount",
            "Mount a castore tree read-only with FUSE; nothing is read from the store until it is looked at. Serves in the " +
            $"foreground until Ctrl-C or SIGTERM, then unmounts. Prints '{ReadyPrefix}MOUNTPOINT' once the mount is ready. " +
            "If this process dies (even by SIGKILL), a watchdog process it started detaches the mount, so nothing is left " +
            "mounted and new opens fail.")
        {
            mountpoint,
            directory,
            nodes,
            threads,
            allowOther,
            noRootListing,
            passthrough,
            perFileOpen,
            zeroMessageOpen,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            string? digestText = parse.GetValue(directory);
            string? nodesFile = parse.GetValue(nodes);
            if ((digestText is null) == (nodesFile is null))
            {
                throw new UsageException("mount needs exactly one of --directory DIGEST and --nodes FILE");
            }

            if (parse.GetValue(perFileOpen) && parse.GetValue(zeroMessageOpen))
            {
                throw new UsageException("--per-file-open and --zero-message-open contradict each other");
            }

            int? threadCount = parse.GetValue(threads);
            if (threadCount is < 1 or > 256)
            {
                throw new UsageException("--threads must be between 1 and 256");
            }

            var root = digestText is not null ? (B3Digest?)ParseDigest(digestText) : null;
            var rootNodes = nodesFile is not null ? ReadNodes(nodesFile) : null;
            var defaults = new CastoreMountOptions();
            var options = defaults with
            {
                Threads = threadCount ?? defaults.Threads,
                AllowOther = parse.GetValue(allowOther),
                ListRoot = !parse.GetValue(noRootListing),
                Passthrough = parse.GetValue(passthrough),
                ZeroMessageOpen = !parse.GetValue(perFileOpen),
                WatchdogCommand = HiddenEntryPoints.Self(HiddenEntryPoints.MountWatchdog),
                Log = line => Console.Error.WriteLine($"{ToolConsole.Name}: mount: {line}"),
            };

            await using var store = StoreSelection.Open(parse);

            // While mounted, the tree is in use: a garbage collection of the store keeps it.
            using var tempRoots = store.CreateTempRoots();
            await (root is { } rootDigest ? tempRoots.AddAsync(rootDigest, cancellationToken) : tempRoots.AddAsync(rootNodes!, cancellationToken));
            string path = Path.GetFullPath(parse.GetValue(mountpoint)!);
            await using var mount = root is { } digest
                ? await CastoreMount.MountDirectoryAsync(path, digest, store.Blobs, store.Directories, options, cancellationToken)
                : await CastoreMount.MountAsync(path, rootNodes!, store.Blobs, store.Directories, options, cancellationToken);

            // Ctrl-C and SIGTERM cancel the token; SIGHUP (a closed terminal) ends the mount the same way.
            using var hangup = new CancellationTokenSource();
            using var onHangup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, context =>
            {
                context.Cancel = true;
                hangup.Cancel();
            });
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, hangup.Token);
            Console.Out.WriteLine($"{ReadyPrefix}{mount.Mountpoint}");
            Console.Out.Flush();
            await Task.WhenAny(mount.Completion, Task.Delay(Timeout.Infinite, stop.Token));
            if (mount.Completion.IsCompleted && !stop.IsCancellationRequested)
            {
                Console.Error.WriteLine($"{ToolConsole.Name}: {mount.Mountpoint} was unmounted");
            }

            return ToolConsole.Ok;
        });
        return command;
    }

    private static B3Digest ParseDigest(string text) =>
        B3Digest.TryParse(text, out var digest, out var error) ? digest : throw new UsageException($"--directory: {error}");

    /// <summary>Reads a nodes file: the JSON 'import --json' prints, or the lines 'import' prints.</summary>
    internal static IReadOnlyList<Node> ReadNodes(string file)
    {
        string text = ToolInput.ReadAllText(file, "nodes file");
        string source = ToolInput.Display(file);
        string trimmed = text.TrimStart();
        if (trimmed.StartsWith('[') || trimmed.StartsWith('{'))
        {
            return NodeText.ParseJson(text, source);
        }

        var result = new List<Node>();
        string[] lines = text.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            string line = lines[i].TrimEnd('\r');
            if (line.Length == 0 || line.StartsWith('#'))
            {
                continue;
            }

            try
            {
                result.Add(ParseLine(line));
            }
            catch (Exception e) when (e is CastoreException or FormatException)
            {
                throw new UsageException($"{source}:{i + 1}: {e.Message}");
            }
        }

        return result;
    }

    private static Node ParseLine(string line)
    {
        string[] fields = line.Split('\t');
        if (fields.Length == 3 && fields[1] == "symlink" && fields[2].StartsWith("-> ", StringComparison.Ordinal))
        {
            return new SymlinkNode(PathComponent.Create(fields[0]), SymlinkTarget.Create(fields[2]["-> ".Length..]));
        }

        if (fields.Length != 4 || !ulong.TryParse(fields[3], out ulong size))
        {
            throw new FormatException("expected NAME<TAB>KIND<TAB>DIGEST<TAB>SIZE or NAME<TAB>symlink<TAB>-> TARGET");
        }

        var name = PathComponent.Create(fields[0]);
        var digest = B3Digest.Parse(fields[2]);
        return fields[1] switch
        {
            "directory" => new DirectoryNode(name, digest, size),
            "file" => new FileNode(name, digest, size, false),
            "executable" => new FileNode(name, digest, size, true),
            _ => throw new FormatException($"unknown kind '{fields[1]}' (directory, file, executable or symlink)"),
        };
    }
}
