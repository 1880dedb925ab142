using System.Diagnostics;

namespace TvixFuseBuild.Sandbox.Tests;

/// <summary>The syscall filter, as Nix's: no setuid or setgid bits by chmod in any of its forms, no extended attributes.</summary>
[Collection("sandbox")]
public sealed class SeccompTests
{
    private const string B = SandboxTree.Busybox;
    private const string Tools = "/nix/store/7777777777777777777777777777777t-tools";

    [Fact]
    public async Task SetuidAndSetgidBitsCannotBeSetByChmod()
    {
        using var tree = new SandboxTree();
        string output = await Run.Ok(tree.Sh(
            $"echo x > f; {B} chmod 4755 f; {B} chmod g+s f; {B} chmod u+s f; {B} chmod 6755 f; {B} chmod 2755 f; " +
            $"{B} chmod 750 f && {B} stat -c %a f; {B} mkdir d; {B} chmod g+s d; {B} stat -c %a d; " +
            $"{B} chmod 4755 /tmp 2>&1 | {B} sed 's/^.*: //'; true"));
        Assert.Equal(
            "chmod: f: Operation not permitted\nchmod: f: Operation not permitted\nchmod: f: Operation not permitted\n" +
            "chmod: f: Operation not permitted\nchmod: f: Operation not permitted\n750\nchmod: d: Operation not permitted\n755\n" +
            "Operation not permitted\n", output);
    }

    [Fact]
    public async Task A32BitProgramCannotGoAroundTheFilter()
    {
        Assert.Contains("i686-linux", SandboxRunner.SupportedSystems); // this host runs i386 programs: the attempt is real
        using var tree = new SandboxTree();
        var spec = WithTools(tree, $"echo x > f; {Tools}/chmod32 /build/f; echo $?; {B} stat -c %a f");

        // On the host, the same program does set the bit.
        string hostFile = Path.Combine(tree.Root, "host-file");
        File.WriteAllText(hostFile, "x");
        Assert.Equal(0, RunHost(Path.Combine(tree.Inputs, "7777777777777777777777777777777t-tools", "chmod32"), hostFile));
        Assert.Equal((UnixFileMode)0x9ED, File.GetUnixFileMode(hostFile));

        Assert.Equal("1\n644\n", await Run.Ok(spec)); // EPERM
    }

    [Fact]
    public void TheHostSystemIsTheFirstSupportedOneWithoutTheProbe()
    {
        // HostSystem answers without the IA32 probe (a process start); it must agree with the probed list.
        Assert.Equal(
            System.Runtime.InteropServices.RuntimeInformation.OSArchitecture == System.Runtime.InteropServices.Architecture.X64 ? "x86_64-linux" : SandboxRunner.SupportedSystems[0],
            SandboxRunner.HostSystem);
        Assert.Equal(SandboxRunner.SupportedSystems[0], SandboxRunner.HostSystem);
    }

    [Fact]
    public async Task ExtendedAttributesCannotBeSet()
    {
        using var tree = new SandboxTree();
        string program = Path.Combine(tree.Inputs, "7777777777777777777777777777777t-tools", "setxattr");
        var spec = WithTools(tree,
            $"echo x > f; echo x > /tmp/f; for name in system.posix_acl_access security.capability user.comment trusted.x; do " +
            $"{Tools}/setxattr /build/f $name; echo \"$name $?\"; {Tools}/setxattr /tmp/f $name; echo \"tmp $name $?\"; " +
            $"{Tools}/setxattrat /tmp/f $name; echo \"at $name $?\"; done");

        // On the host, the same program sets an ACL on a file of a tmpfs (a real ACL, so the filter is what stops it).
        string hostDir = Path.Combine(tree.Root, "host-tmpfs");
        Directory.CreateDirectory(hostDir);
        Assert.Equal(0, RunHost("mount", "-t", "tmpfs", "tmpfs", hostDir));
        try
        {
            string hostFile = Path.Combine(hostDir, "f");
            File.WriteAllText(hostFile, "x");
            Assert.Equal(0, RunHost(program, hostFile, "system.posix_acl_access"));
            Assert.Equal(0, RunHost(program + "at", hostFile, "user.comment"));
        }
        finally
        {
            RunHost("umount", hostDir);
        }

        Assert.Equal(string.Concat(new[] { "system.posix_acl_access", "security.capability", "user.comment", "trusted.x" }
            .Select(n => $"{n} 95\ntmp {n} 95\nat {n} 95\n")), await Run.Ok(spec)); // ENOTSUP, as in Nix
    }

    [Fact]
    public void TheFilterCoversTheNativeAnd32BitArchitectures()
    {
        string pfc = Init.SeccompFilter.Describe();
        Assert.Contains("# filter for arch x86_64 (3221225534)", pfc);
        Assert.Contains("# filter for arch x86 (1073741827)", pfc);
        Assert.Contains("# filter for arch x32 (3221225534)", pfc); // x32 shares x86-64's audit arch; its numbers carry bit 30
        Assert.Contains("# filter for syscall \"chmod\" (1073741914)", pfc);
        Assert.Contains("# filter for syscall \"chmod\" (15)", pfc); // i386
        foreach (string call in new[] { "chmod", "fchmod", "fchmodat", "fchmodat2", "setxattr", "lsetxattr", "fsetxattr" })
        {
            Assert.Contains($"# filter for syscall \"{call}\"", pfc);
        }

        // Syscalls this libseccomp does not know go to the supplement filter, by number.
        if (!pfc.Contains("\"setxattrat\"", StringComparison.Ordinal))
        {
            Assert.Equal(2, CountPrograms(Init.SeccompFilter.Program));
        }
    }

    [Fact]
    public async Task WithoutLibseccompNothingRunsAndTheErrorNamesThePackage()
    {
        using var tree = new SandboxTree();
        string library = new FileInfo("/usr/lib/x86_64-linux-gnu/libseccomp.so.2").ResolveLinkTarget(returnFinalTarget: true)?.FullName
            ?? throw new InvalidOperationException("libseccomp2 is not installed: run scripts/setup");

        // A caller that sees an unloadable libseccomp (its own mount namespace, /dev/null over the library).
        using var driver = Driver.Start(tree, "echo RAN", "unshare", "-m", "sh", "-c", $"mount --bind /dev/null {library} && exec \"$@\"", "sh");
        string output = await driver.StandardOutput.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(60));
        await driver.WaitForExitAsync();
        Assert.Equal(
            "ERROR: cannot sandbox builds: libseccomp.so.2 was not found; install libseccomp (Debian and Ubuntu: libseccomp2, Fedora: libseccomp). " +
            "Builds never run without the filter that stops setuid files and extended attributes\n", output);
        Assert.Equal(1, driver.ExitCode);
    }

    private static int CountPrograms(byte[] programs)
    {
        int count = 0;
        for (int at = 0; at < programs.Length; at += 4 + BitConverter.ToInt32(programs, at))
        {
            count++;
        }

        return count;
    }

    private static SandboxSpec WithTools(SandboxTree tree, string script)
    {
        string dir = Path.Combine(tree.Inputs, "7777777777777777777777777777777t-tools");
        Directory.CreateDirectory(dir);
        File.WriteAllBytes(Path.Combine(dir, "setxattr"), TinyElf.SetXattr64());
        File.WriteAllBytes(Path.Combine(dir, "chmod32"), TinyElf.Chmod32());
        File.WriteAllBytes(Path.Combine(dir, "setxattrat"), TinyElf.SetXattrAt64());
        foreach (string file in Directory.EnumerateFiles(dir))
        {
            File.SetUnixFileMode(file, (UnixFileMode)0x1ED);
        }

        var spec = tree.Sh(script);
        return new SandboxSpec
        {
            Command = spec.Command, Environment = spec.Environment, WorkingDirectory = spec.WorkingDirectory,
            ScratchPaths = spec.ScratchPaths, InputsHostDirectory = spec.InputsHostDirectory,
            InputNames = [.. tree.InputNames, "7777777777777777777777777777777t-tools"], Timeout = spec.Timeout,
        };
    }

    private static int RunHost(string file, params string[] args)
    {
        using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardError = true })!;
        p.WaitForExit();
        return p.ExitCode;
    }
}
