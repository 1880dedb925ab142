using System.Diagnostics;

namespace TvixFuseBuild.Sandbox.Tests;

/// <summary>The same sandbox run by an unprivileged caller: a user the test creates and switches to with setpriv.</summary>
[Collection("sandbox")]
public sealed class UnprivilegedTests
{
    private const string B = SandboxTree.Busybox;

    [Fact]
    public async Task RunsForAnUnprivilegedCaller()
    {
        using var tree = new SandboxTree();
        using var account = new EscapeSuite.User();
        string user = account.Name;
        int uid = int.Parse(Exec("id", "-u", user).Trim());
        Exec("chown", "-R", $"{user}:{user}", tree.Store, tree.Build);

        string script =
            $"{B} id; echo out > /nix/store/4444444444444444444444444444444o-out; " +
            $"echo x 2>/dev/null > /nix/store/1111111111111111111111111111111d-data/file || echo input-read-only; " +
            $"{B} rm -rf /nix/store/1111111111111111111111111111111d-data 2>/dev/null || echo input-kept; " +
            $"{B} cat /etc/shadow 2>/dev/null || echo no-shadow; {B} hostname; {B} grep CapEff /proc/self/status";
        using var driver = Driver.Start(tree, script, "setpriv", $"--reuid={user}", $"--regid={user}", "--init-groups", "--");
        var stdout = driver.StandardOutput.ReadToEndAsync();
        var stderr = driver.StandardError.ReadToEndAsync();
        await driver.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(120));
        string output = await stdout;
        Assert.True(driver.ExitCode == 0, $"driver exited {driver.ExitCode}: {output}{await stderr}");
        Assert.Equal(
            "uid=1000(nixbld) gid=100(nixbld) groups=100(nixbld)\ninput-read-only\ninput-kept\nno-shadow\nlocalhost\nCapEff:\t0000000000000000\n" +
            "RESULT: exited with code 0\n", output.Replace("groups=100(nixbld),65534(nogroup)", "groups=100(nixbld)"));

        // The build's files belong to the caller on the host: the build ran with the caller's own uid.
        var stat = new FileInfo(Path.Combine(tree.Store, "4444444444444444444444444444444o-out"));
        Assert.Equal(uid.ToString(), Exec("stat", "-c", "%u", stat.FullName).Trim());
        Assert.True(File.Exists(Path.Combine(tree.Inputs, "1111111111111111111111111111111d-data", "file")));

        // Read-only paths are resolved without symlinks for an unprivileged caller too.
        string link = Path.Combine(tree.Root, "link-to-etc");
        File.CreateSymbolicLink(link, "/etc");
        using var refused = Driver.Start(tree, $"#ro {link}\necho ran", "setpriv", $"--reuid={user}", $"--regid={user}", "--init-groups", "--");
        string refusal = await refused.StandardOutput.ReadToEndAsync();
        await refused.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(120));
        Assert.Equal(
            $"ERROR: read-only path {link}: {link} is a symbolic link; read-only paths are never resolved through symlinks, name the target\n", refusal);
    }

    /// <summary>
    /// Without cgroups, RLIMIT_NPROC alone bounds the build: in its own user namespace the count is the sandbox's own
    /// tasks (Linux 5.14 and later), whatever else the caller's uid runs on the host.
    /// </summary>
    [Fact]
    public async Task TheProcessLimitHoldsForAnUnprivilegedCaller()
    {
        using var tree = new SandboxTree();
        using var account = new EscapeSuite.User();
        string user = account.Name;
        var others = new List<Process>();
        try
        {
            Exec("chown", "-R", $"{user}:{user}", tree.Store, tree.Build);

            // The caller's uid already runs 30 processes on the host: they do not count against the build's 20.
            for (int i = 0; i < 30; i++)
            {
                others.Add(Process.Start(new ProcessStartInfo("setpriv", [$"--reuid={user}", $"--regid={user}", "--init-groups", "sleep", "120"]))!);
            }

            string script =
                $"( while true; do {B} sleep 30 & echo $! >> /tmp/pids; done ) 2>/dev/null; " +
                "n=0; while read p; do n=$((n+1)); kill $p; done < /tmp/pids; echo $n";
            using var driver = Driver.Start(tree, script, 20, "setpriv", $"--reuid={user}", $"--regid={user}", "--init-groups", "--");
            var stdout = driver.StandardOutput.ReadToEndAsync();
            var stderr = driver.StandardError.ReadToEndAsync();
            await driver.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(120));
            string output = await stdout;
            Assert.True(driver.ExitCode == 0, $"driver exited {driver.ExitCode}: {output}{await stderr}");

            // 20 tasks: the shell, the subshell and 18 sleeps (give or take a thread the init's runtime starts or ends
            // meanwhile); no cgroup watched it, so no limit is reported as hit.
            var lines = output.Split('\n');
            Assert.InRange(int.Parse(lines[0], System.Globalization.CultureInfo.InvariantCulture), 16, 19);
            Assert.Equal("RESULT: exited with code 0", lines[1]);
        }
        finally
        {
            foreach (var p in others)
            {
                p.Kill();
                p.WaitForExit();
                p.Dispose();
            }
        }
    }

    private static string Exec(string file, params string[] args) => EscapeSuite.User.Exec(file, args);
}
