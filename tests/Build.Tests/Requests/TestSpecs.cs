using System.Text;
using TvixFuseBuild.Build.Requests;
using TvixFuseBuild.Castore;

namespace TvixFuseBuild.Build.Tests.Requests;

/// <summary>A Nix-shaped request to vary in tests.</summary>
internal static class TestSpecs
{
    public static readonly B3Digest SomeDigest = B3Digest.ParseHex("af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");

    public static BuildSpec Nix { get; } = new()
    {
        Inputs =
        [
            new DirectoryNode("aaaa-busybox", SomeDigest, 0),
            new FileNode("bbbb-builder.sh", SomeDigest, 0, Executable: true),
            new SymlinkNode("cccc-link", SymlinkTarget.Create("/etc")),
        ],
        CommandArgs = ["/nix/store/aaaa-busybox/bin/sh", "-c", "true"],
        WorkingDir = "build",
        ScratchPaths = ["build", "nix/store"],
        InputsDir = "nix/store",
        Outputs = ["nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo"],
        EnvironmentVars =
        [
            new EnvironmentVariable("HOME", "/homeless-shelter"),
            new EnvironmentVariable("out", "/nix/store/fhaj6gmwns62s6ypkcldbaj2ybvkhx3p-foo"),
        ],
        RefscanNeedles = ["fhaj6gmwns62s6ypkcldbaj2ybvkhx3p", "00000000000000000000000000000000"],
    };

    public static AdditionalFile File(string path, string contents = "x") => new(path, Encoding.UTF8.GetBytes(contents));
}
