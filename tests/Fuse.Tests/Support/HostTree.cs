using System.Text;
using TvixFuseBuild.Castore;
using TvixFuseBuild.Castore.Stores;

namespace TvixFuseBuild.Fuse.Tests.Support;

/// <summary>Generates host trees for the tests and imports them into a store (the test's own small importer).</summary>
internal static class HostTree
{
    /// <summary>
    /// A deterministic tree with what a real one has: nested directories, empty and large files, executables,
    /// duplicate contents (some executable, some not), duplicate directories, relative, absolute and dangling
    /// symlinks, names with spaces and non-ASCII characters. Files 0644/0755, directories 0755.
    /// </summary>
    public static void Generate(string root, int seed, int files)
    {
        var random = new Random(seed);
        Directory.CreateDirectory(root);
        var directories = new List<string> { root };
        for (int i = 0; i < files / 8; i++)
        {
            string parent = directories[random.Next(directories.Count)];
            string name = i % 7 == 3 ? $"dir with space {i}" : i % 11 == 5 ? $"répertoire-{i}" : $"d{i}";
            string path = Path.Combine(parent, name);
            Directory.CreateDirectory(path);
            directories.Add(path);
        }

        byte[] shared = new byte[70_000];
        random.NextBytes(shared);
        for (int i = 0; i < files; i++)
        {
            string directory = directories[random.Next(directories.Count)];
            string path = Path.Combine(directory, i % 13 == 0 ? $"file {i}.txt" : $"f{i}.bin");
            byte[] content = (i % 10) switch
            {
                0 => [],
                1 => shared,
                2 => new byte[random.Next(1, 5) * 1_000_000 + random.Next(4096)],
                _ => new byte[random.Next(0, 200_000)],
            };
            if (content != shared)
            {
                random.NextBytes(content);
            }

            File.WriteAllBytes(path, content);
            bool executable = i % 4 == 1;
            File.SetUnixFileMode(path, executable ? (UnixFileMode)0x1ED : (UnixFileMode)0x1A4);
        }

        // Two identical directories, deep inside.
        foreach (string copy in new[] { "twin-a", "twin-b" })
        {
            string twin = Path.Combine(directories[^1], copy, "inner");
            Directory.CreateDirectory(twin);
            File.WriteAllText(Path.Combine(twin, "same.txt"), "the same bytes\n");
            File.SetUnixFileMode(Path.Combine(twin, "same.txt"), (UnixFileMode)0x1A4);
        }

        for (int i = 0; i < files / 20; i++)
        {
            string directory = directories[random.Next(directories.Count)];
            string target = (i % 3) switch
            {
                0 => "f0.bin",
                1 => "/nix/store/somewhere-else",
                _ => $"../dangling-{i}",
            };
            File.CreateSymbolicLink(Path.Combine(directory, $"link{i}"), target);
        }

        foreach (string directory in directories.Append(root))
        {
            File.SetUnixFileMode(directory, (UnixFileMode)0x1ED);
        }
    }

    /// <summary>Imports a host path: files (executable = owner-exec), directories, symlinks as they are.</summary>
    public static async Task<Node> ImportAsync(string path, string name, IBlobService blobs, IDirectoryService directories)
    {
        var info = new FileInfo(path);
        if (info.LinkTarget is { } target)
        {
            return new SymlinkNode(name, SymlinkTarget.Create(Encoding.UTF8.GetBytes(target)));
        }

        if (Directory.Exists(path))
        {
            var children = new List<Node>();
            foreach (string child in Directory.EnumerateFileSystemEntries(path))
            {
                children.Add(await ImportAsync(child, Path.GetFileName(child), blobs, directories));
            }

            var directory = CastoreDirectory.FromNodes(children);
            await directories.PutAsync(directory);
            return new DirectoryNode(name, directory.Digest, directory.Size);
        }

        byte[] bytes = await File.ReadAllBytesAsync(path);
        await using var writer = blobs.OpenWrite();
        await writer.WriteAsync(bytes);
        var digest = await writer.CompleteAsync();
        bool executable = (File.GetUnixFileMode(path) & UnixFileMode.UserExecute) != 0;
        return new FileNode(name, digest, (ulong)bytes.Length, executable);
    }
}

/// <summary>Runs a program and captures its output; fails the test on a non-zero exit unless told otherwise.</summary>
internal static class Run
{
    public static (int ExitCode, string Stdout, string Stderr) Process(string file, params string[] arguments) =>
        ProcessIn(null, file, arguments);

    public static (int ExitCode, string Stdout, string Stderr) ProcessIn(string? workingDirectory, string file, params string[] arguments)
    {
        var start = new System.Diagnostics.ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        foreach (string argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using var process = System.Diagnostics.Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(120_000))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"{file} {string.Join(' ', arguments)} did not finish within 120 s");
        }

        return (process.ExitCode, stdout.Result, stderr.Result);
    }

    public static string Checked(string file, params string[] arguments) => CheckedIn(null, file, arguments);

    public static string CheckedIn(string? workingDirectory, string file, params string[] arguments)
    {
        var (code, stdout, stderr) = ProcessIn(workingDirectory, file, arguments);
        Assert.True(code == 0, $"{file} {string.Join(' ', arguments)} exited {code}: {stderr}");
        return stdout;
    }
}
