using System.Text;

namespace TvixFuseBuild.MSBuild.Tests;

public sealed class OutputLinesTests
{
    [Fact]
    public async Task ChunksBecomeLinesWithoutTheirLineEnds()
    {
        var lines = new List<string>();
        var output = new OutputLines(lines.Add);
        await output.WriteAsync("one\r\ntw"u8.ToArray(), default);
        await output.WriteAsync("o\n\nthr"u8.ToArray(), default);
        Assert.Equal(["one", "two", ""], lines);
        output.Flush();
        Assert.Equal(["one", "two", "", "thr"], lines);
        output.Flush();
        Assert.Equal(4, lines.Count);
    }

    [Fact]
    public async Task LongLinesAreCutAndInvalidUtf8Replaced()
    {
        var lines = new List<string>();
        var output = new OutputLines(lines.Add);
        byte[] longLine = Encoding.ASCII.GetBytes(new string('x', OutputLines.MaxLineBytes + 10) + "\n");
        await output.WriteAsync(longLine, default);
        await output.WriteAsync(new byte[] { 0xff, 0xfe, (byte)'\n' }, default);
        Assert.Equal([OutputLines.MaxLineBytes, 10, 2], lines.Select(l => l.Length));
        Assert.Equal("\uFFFD\uFFFD", lines[2]);
    }
}

public sealed class StepParametersTests
{
    private static StepParameters Create(
        string command = "sh", string[]? outputs = null, (string, string?)[]? inputs = null, string[]? environment = null,
        int timeout = -1, string? builder = null, string? name = null) =>
        StepParameters.Create(
            name, command, ["-c", "true"], inputs ?? [], outputs ?? [], "out-dir", environment ?? [], network: false, [], store: null,
            builder, timeout, rebuild: false);

    [Fact]
    public void DefaultsAndResolvedPaths()
    {
        var step = Create(inputs: [("/bin/busybox", null), ("some/dir/", "tools")], environment: ["A=1", "B=x=y", "A=2"]);
        Assert.Equal(StepParameters.DefaultName, step.Name);
        Assert.Equal(["sh", "-c", "true"], step.Command);
        Assert.Equal(["out"], step.OutputNames);
        Assert.Equal(Path.GetFullPath("out-dir"), step.OutputDirectory);
        Assert.Equal([new StepInput("/bin/busybox", "busybox"), new StepInput(Path.GetFullPath("some/dir/"), "tools")], step.Inputs);
        Assert.Equal(new Dictionary<string, string> { ["A"] = "2", ["B"] = "x=y" }, step.Environment);
        Assert.Null(step.Timeout);
        Assert.Null(step.Builder);
    }

    [Theory]
    [InlineData("out;out", "the output 'out' is named twice")]
    [InlineData("a=b", "contains '='")]
    [InlineData("a/b", "is not valid as an output name")]
    public void BadOutputNamesAreInvalidRequests(string outputs, string message)
    {
        var e = Assert.Throws<TvixBuildException>(() => Create(outputs: outputs.Split(';')));
        Assert.Equal(TvixBuildError.InvalidRequest, e.Code);
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void OtherBadParametersAreInvalidRequests()
    {
        Assert.Contains("named 'x'", Invalid(() => Create(inputs: [("/a/x", null), ("/b/x", null)])), StringComparison.Ordinal);
        Assert.Contains("not KEY=VALUE", Invalid(() => Create(environment: ["=1"])), StringComparison.Ordinal);
        Assert.Contains("Timeout must be", Invalid(() => Create(timeout: 0)), StringComparison.Ordinal);
        Assert.Contains("Command is empty", Invalid(() => Create(command: "")), StringComparison.Ordinal);
        Assert.Contains("not a builder address", Invalid(() => Create(builder: "grpc+ftp://x")), StringComparison.Ordinal);
        Assert.Contains("is not valid as Name", Invalid(() => Create(name: "a/b")), StringComparison.Ordinal);
        Assert.Equal(TimeSpan.FromSeconds(2), Create(timeout: 2000).Timeout);
    }

    [Fact]
    public void LimitsAreParsedAndCheckedWithTheirPropertyNames()
    {
        var step = StepParameters.Create(
            null, "sh", [], [], [], "out-dir", [], network: false, [], store: null, builder: null, -1, rebuild: false,
            maxProcesses: "64", maxMemory: "2G", tmpSize: "512M");
        Assert.Equal(new Sandbox.SandboxLimits { MaxProcesses = 64, MaxMemory = 2L << 30, TmpSize = 512L << 20 }, step.Limits);
        Assert.Equal(Sandbox.SandboxLimits.Default, Create().Limits);
        Assert.Null(StepParameters.Create(null, "sh", [], [], [], "out", [], false, [], null, null, -1, false, maxMemory: "none").Limits.MaxMemory);

        Assert.Contains("MaxProcesses (TvixBuildMaxProcesses) must be a positive number, not 'x'",
            Invalid(() => StepParameters.Create(null, "sh", [], [], [], "out", [], false, [], null, null, -1, false, maxProcesses: "x")), StringComparison.Ordinal);
        Assert.Contains("TmpSize (TvixBuildTmpSize): '1X' is not a size",
            Invalid(() => StepParameters.Create(null, "sh", [], [], [], "out", [], false, [], null, null, -1, false, tmpSize: "1X")), StringComparison.Ordinal);
        Assert.Contains("the memory limit must be at least 32 MiB",
            Invalid(() => StepParameters.Create(null, "sh", [], [], [], "out", [], false, [], null, null, -1, false, maxMemory: "1M")), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("unix:/run/b.sock", "grpc+unix:///run/b.sock")]
    [InlineData("127.0.0.1:8000", "grpc+http://127.0.0.1:8000")]
    [InlineData("grpc+http://[::1]:9000", "grpc+http://[::1]:9000")]
    public void BuilderAddressesTakeTheServeAndStoreForms(string builder, string address) =>
        Assert.Equal(address, Build.Grpc.BuilderAddress.Parse(builder).StoreAddress);

    private static string Invalid(Action action)
    {
        var e = Assert.Throws<TvixBuildException>(action);
        Assert.Equal(TvixBuildError.InvalidRequest, e.Code);
        return e.Message;
    }
}
