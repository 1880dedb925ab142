using TvixFuseBuild.Build.Requests;

namespace TvixFuseBuild.Build.Tests.Requests;

public sealed class RunnabilityTests
{
    [Fact]
    public void TheNixShapedRequestRuns()
    {
        var spec = TestSpecs.Nix with
        {
            AdditionalFiles = [TestSpecs.File("build/.attrs.json"), TestSpecs.File("build/.attrs.sh"), TestSpecs.File("etc/passwd"), TestSpecs.File("nix/store/new-file")],
        };
        Assert.Null(BuildRequestValidator.Validate(spec, BuildProtocol.Tvix));
        Assert.Null(BuildRequestValidator.CheckRunnable(spec));
        BuildRequestValidator.ThrowIfNotRunnable(spec);
    }

    [Fact]
    public void AnEmptyCommandCannotRun()
    {
        Assert.Equal("command_args is empty: there is no program to run", Check(TestSpecs.Nix with { CommandArgs = [] }, BuildRequestErrorKind.EmptyCommand));
        Check(TestSpecs.Nix with { CommandArgs = ["", "x"] }, BuildRequestErrorKind.EmptyCommand);
        var e = Assert.Throws<BuildRequestValidationException>(() => BuildRequestValidator.ThrowIfNotRunnable(TestSpecs.Nix with { CommandArgs = [] }));
        Assert.False(e.IsProtocolError);
    }

    [Fact]
    public void NulBytesCannotReachTheKernel()
    {
        Assert.Contains("command_args[1]", Check(TestSpecs.Nix with { CommandArgs = ["sh", "a\0b"] }, BuildRequestErrorKind.NulByte));
        Assert.Contains("output path at position 0", Check(TestSpecs.Nix with { Outputs = ["nix/store/a\0b"] }, BuildRequestErrorKind.NulByte));
        Assert.Contains("working_dir", Check(TestSpecs.Nix with { WorkingDir = "bu\0ild" }, BuildRequestErrorKind.NulByte));
        Assert.Contains("additional file path at position 0", Check(TestSpecs.Nix with { AdditionalFiles = [TestSpecs.File("build/\0")] }, BuildRequestErrorKind.NulByte));
    }

    [Fact]
    public void OutputsMustBeProducibleInAWritablePlace()
    {
        Assert.Contains("build root itself", Check(TestSpecs.Nix with { Outputs = [""] }, BuildRequestErrorKind.UnproducibleOutput));
        string message = Check(TestSpecs.Nix with { Outputs = ["nix/store/a", "out/x"] }, BuildRequestErrorKind.UnproducibleOutput);
        Assert.Equal("output path at position 1 (\"out/x\") lies under no scratch path, so the build cannot write it (scratch paths: \"build\", \"nix/store\")", message);
        Check(TestSpecs.Nix with { Outputs = ["nix/storeX"] }, BuildRequestErrorKind.UnproducibleOutput);

        // An output that is a scratch path, or inside one, or inside a directory input, is fine.
        Runs(TestSpecs.Nix with { Outputs = ["build", "nix/store"] });
        Runs(TestSpecs.Nix with { Outputs = ["build/deep/out"] });
        Runs(TestSpecs.Nix with { Outputs = ["nix/store/aaaa-busybox/bin"] });
        Runs(TestSpecs.Nix with { ScratchPaths = [""], Outputs = ["anywhere"] });

        // Inside a file input it cannot exist; inside a symlink input it would lead outside the build root.
        Assert.Contains("input \"bbbb-builder.sh\", which is a executable", Check(TestSpecs.Nix with { Outputs = ["nix/store/bbbb-builder.sh/x"] }, BuildRequestErrorKind.UnproducibleOutput));
        Assert.Contains("which is a symlink", Check(TestSpecs.Nix with { Outputs = ["nix/store/cccc-link/passwd"] }, BuildRequestErrorKind.UnproducibleOutput));
    }

    [Fact]
    public void AdditionalFilesMustBeWritable()
    {
        Check(With(""), BuildRequestErrorKind.UnwritableAdditionalFile);
        Assert.Contains("is the scratch path", Check(With("build"), BuildRequestErrorKind.UnwritableAdditionalFile));
        Assert.Contains("would have to be a directory to hold the scratch path \"nix/store\"", Check(With("nix"), BuildRequestErrorKind.UnwritableAdditionalFile));
        Assert.Contains("working_dir", Check(TestSpecs.Nix with { WorkingDir = "build/sub", AdditionalFiles = [TestSpecs.File("build/sub")] }, BuildRequestErrorKind.UnwritableAdditionalFile));
        Assert.Contains("inputs_dir", Check(TestSpecs.Nix with { InputsDir = "inputs", AdditionalFiles = [TestSpecs.File("inputs")] }, BuildRequestErrorKind.UnwritableAdditionalFile));
        Assert.Contains(
            "would have to be a directory to hold additional file at position 2 (\"build/a/b\")",
            Check(TestSpecs.Nix with { AdditionalFiles = [TestSpecs.File("build/a"), TestSpecs.File("build/a-b"), TestSpecs.File("build/a/b")] }, BuildRequestErrorKind.UnwritableAdditionalFile));
        Assert.Contains("collides with input \"aaaa-busybox\"", Check(With("nix/store/aaaa-busybox"), BuildRequestErrorKind.UnwritableAdditionalFile));
        Assert.Contains("collides with input \"aaaa-busybox\"", Check(With("nix/store/aaaa-busybox/bin/sh"), BuildRequestErrorKind.UnwritableAdditionalFile));
        Assert.Contains("collides with input \"cccc-link\"", Check(With("nix/store/cccc-link/passwd"), BuildRequestErrorKind.UnwritableAdditionalFile));
        Assert.Contains(
            "lies inside inputs_dir (\"inputs\"), which is read-only",
            Check(TestSpecs.Nix with { Inputs = [], InputsDir = "inputs", AdditionalFiles = [TestSpecs.File("inputs/x")] }, BuildRequestErrorKind.UnwritableAdditionalFile));

        // Duplicates (the later one wins), files outside every scratch path (the builder writes them into the root),
        // and files inside a writable inputs_dir are fine.
        Runs(TestSpecs.Nix with { AdditionalFiles = [TestSpecs.File("build/a"), TestSpecs.File("build/a")] });
        Runs(With("etc/hosts"));
        Runs(With("nix/store/zzzz-extra"));
        Runs(TestSpecs.Nix with { InputsDir = "inputs", ScratchPaths = ["build", "inputs/cache", "nix/store"], AdditionalFiles = [TestSpecs.File("inputs/cache/x")] });
    }

    private static BuildSpec With(string additionalFile) => TestSpecs.Nix with { AdditionalFiles = [TestSpecs.File(additionalFile)] };

    private static string Check(BuildSpec spec, BuildRequestErrorKind kind)
    {
        Assert.Null(BuildRequestValidator.Validate(spec, BuildProtocol.Tvix));
        var error = BuildRequestValidator.CheckRunnable(spec);
        Assert.NotNull(error);
        Assert.Equal(kind, error.Kind);
        Assert.DoesNotContain('\n', error.Message);
        return error.Message;
    }

    private static void Runs(BuildSpec spec)
    {
        Assert.Null(BuildRequestValidator.Validate(spec, BuildProtocol.Tvix));
        Assert.Null(BuildRequestValidator.CheckRunnable(spec));
    }
}
