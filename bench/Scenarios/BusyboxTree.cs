using System.Text.Json;
using TvixFuseBuild.Sandbox;

namespace TvixFuseBuild.Bench.Scenarios;

/// <summary>
/// A benchmark input tree: a static busybox plus N-1 small inputs, with the host directories a sandbox, bwrap and a
/// runc bundle need to run <c>busybox true</c> over them the same way.
/// </summary>
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
internal sealed class BusyboxTree
{
    public const string BusyboxName = "0000000000000000000000000000000b-busybox";

    private BusyboxTree(string root, List<string> names)
    {
        Root = root;
        Names = names;
    }

    public string Root { get; }

    public List<string> Names { get; }

    public string Inputs => Path.Combine(Root, "inputs");

    public string Store => Path.Combine(Root, "store");

    public string Build => Path.Combine(Root, "build");

    public static BusyboxTree Create(string root, int n)
    {
        Directory.CreateDirectory(Path.Combine(root, "inputs", BusyboxName, "bin"));
        File.Copy("/bin/busybox", Path.Combine(root, "inputs", BusyboxName, "bin", "busybox"));
        var names = new List<string> { BusyboxName };
        for (int i = 1; i < n; i++)
        {
            string name = $"{i:D32}-input";
            Directory.CreateDirectory(Path.Combine(root, "inputs", name));
            File.WriteAllText(Path.Combine(root, "inputs", name, "file"), name);
            names.Add(name);
        }

        Directory.CreateDirectory(Path.Combine(root, "store"));
        Directory.CreateDirectory(Path.Combine(root, "build"));
        Directory.CreateDirectory(Path.Combine(root, "rootfs"));
        Directory.CreateDirectory(Path.Combine(root, "runc-store"));
        Directory.CreateDirectory(Path.Combine(root, "runc-build"));
        return new BusyboxTree(root, names);
    }

    public SandboxSpec Spec() => new()
    {
        Command = [$"/nix/store/{BusyboxName}/bin/busybox", "true"],
        Environment = new Dictionary<string, string> { ["PATH"] = "/path-not-set" },
        WorkingDirectory = "/build",
        ScratchPaths = new Dictionary<string, string> { ["nix/store"] = Store, ["build"] = Build },
        InputsHostDirectory = Inputs,
        InputsDir = "nix/store",
        InputNames = Names,
    };

    public List<string> BwrapArgumentList()
    {
        var args = new List<string>
        {
            "--unshare-all", "--uid", "1000", "--gid", "100", "--hostname", "localhost", "--die-with-parent",
            "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--clearenv", "--setenv", "PATH", "/path-not-set",
            "--bind", Store, "/nix/store",
        };
        foreach (var name in Names)
        {
            args.Add("--ro-bind");
            args.Add(Path.Combine(Inputs, name));
            args.Add("/nix/store/" + name);
        }

        args.AddRange(["--bind", Build, "/build", "--chdir", "/build", "--", $"/nix/store/{BusyboxName}/bin/busybox", "true"]);
        return args;
    }

    /// <summary>An OCI bundle: uid 1000/gid 100, no capabilities, per-input read-only binds into a writable nix/store.</summary>
    public string RuncBundle()
    {
        string bundle = Root;
        var mounts = new List<object>
        {
            new { destination = "/proc", type = "proc", source = "proc", options = new[] { "nosuid", "noexec", "nodev" } },
            new { destination = "/dev", type = "tmpfs", source = "tmpfs", options = new[] { "nosuid", "strictatime", "mode=755", "size=65536k" } },
            new { destination = "/dev/pts", type = "devpts", source = "devpts", options = new[] { "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620" } },
            new { destination = "/dev/shm", type = "tmpfs", source = "shm", options = new[] { "nosuid", "noexec", "nodev", "mode=1777", "size=65536k" } },
            new { destination = "/tmp", type = "tmpfs", source = "tmpfs", options = new[] { "nosuid", "nodev", "mode=1777" } },
            new { destination = "/nix/store", type = "bind", source = Path.Combine(Root, "runc-store"), options = new[] { "rbind", "nosuid", "nodev" } },
        };
        foreach (var name in Names)
        {
            mounts.Add(new { destination = "/nix/store/" + name, type = "bind", source = Path.Combine(Inputs, name), options = new[] { "rbind", "ro", "nosuid", "nodev" } });
        }

        mounts.Add(new { destination = "/build", type = "bind", source = Path.Combine(Root, "runc-build"), options = new[] { "rbind", "nosuid", "nodev" } });
        var config = new Dictionary<string, object>
        {
            ["ociVersion"] = "1.0.2",
            ["process"] = new
            {
                terminal = false,
                user = new { uid = 1000, gid = 100 },
                args = new[] { $"/nix/store/{BusyboxName}/bin/busybox", "true" },
                env = new[] { "PATH=/path-not-set" },
                cwd = "/build",
                noNewPrivileges = true,
                capabilities = new { bounding = Array.Empty<string>(), effective = Array.Empty<string>(), permitted = Array.Empty<string>() },
            },
            ["root"] = new { path = Path.Combine(Root, "rootfs"), @readonly = true },
            ["hostname"] = "localhost",
            ["mounts"] = mounts,
            ["linux"] = new
            {
                // No user namespace: runc 1.1 passes the bind sources of a user-namespaced container in one netlink
                // message, which cannot hold 1,000 of them ("cannot serialize bytemsg ... larger than UINT16_MAX").
                // Rootful runc also skips the user namespace setup, so it is the faster peer.
                namespaces = new[] { "pid", "network", "ipc", "uts", "mount" }.Select(t => new { type = t }).ToArray(),
                maskedPaths = new[] { "/proc/kcore", "/proc/keys", "/proc/timer_list" },
                readonlyPaths = new[] { "/proc/sys", "/proc/sysrq-trigger" },
            },
        };
        File.WriteAllText(Path.Combine(bundle, "config.json"), JsonSerializer.Serialize(config));
        foreach (var dir in new[] { "proc", "dev", "tmp", "nix/store", "build" })
        {
            Directory.CreateDirectory(Path.Combine(Root, "rootfs", dir));
        }

        foreach (var dir in new[] { "runc-store", "runc-build" })
        {
            Measure.Process("chown", ["1000:100", Path.Combine(Root, dir)]);
        }

        return bundle;
    }
}
