using System.Collections;
using Microsoft.Build.Framework;

namespace TvixFuseBuild.MSBuild.Tests;

public sealed class ItemLocatorTests : IDisposable
{
    private readonly string _directory = Directory.CreateTempSubdirectory("tvix-item-locator-").FullName;

    [Fact]
    public void FindsTheElementNamingTheItem()
    {
        string project = Write("a.csproj", """
            <Project>
              <ItemGroup>
                <TvixBuildStep Include="one" />
                <TvixBuildStep Include="two;three" />
                  <TvixBuildStep Include="odd%3Bname" />
                <TvixBuildInput Include="tools/" Step="one" />
              </ItemGroup>
              <ItemGroup>
                <TvixBuildStep Include="one" />
              </ItemGroup>
            </Project>
            """);
        var locator = new ItemLocator();
        Assert.Equal(new ErrorLocation(project, 3, 5), locator.Find(Item("one", project), "TvixBuildStep"));
        Assert.Equal(new ErrorLocation(project, 9, 5), locator.Find(Item("one", project), "TvixBuildStep", occurrence: 1));
        Assert.Equal(new ErrorLocation(project, 4, 5), locator.Find(Item("three", project), "TvixBuildStep"));
        Assert.Equal(new ErrorLocation(project, 5, 7), locator.Find(Item("odd;name", project), "TvixBuildStep"));
        Assert.Equal(new ErrorLocation(project, 6, 5), locator.Find(Item("tools", project), "TvixBuildInput"));
    }

    [Fact]
    public void WithoutAMatchTheOnlyElementOrTheFileAlone()
    {
        string single = Write("single.targets", "<Project>\n  <ItemGroup>\n    <TvixBuildStep Include=\"$(Name)\" />\n  </ItemGroup>\n</Project>\n");
        string several = Write("several.targets", "<Project>\n  <ItemGroup>\n    <TvixBuildStep Include=\"$(A)\" />\n    <TvixBuildStep Include=\"$(B)\" />\n  </ItemGroup>\n</Project>\n");
        string broken = Write("broken.targets", "<Project><ItemGroup>");
        var locator = new ItemLocator();
        Assert.Equal(new ErrorLocation(single, 3, 5), locator.Find(Item("computed", single), "TvixBuildStep"));
        Assert.Equal(new ErrorLocation(several, 0, 0), locator.Find(Item("computed", several), "TvixBuildStep"));
        Assert.Equal(new ErrorLocation(broken, 0, 0), locator.Find(Item("x", broken), "TvixBuildStep"));
        string missing = Path.Combine(_directory, "missing.targets");
        Assert.Equal(new ErrorLocation(missing, 0, 0), locator.Find(Item("x", missing), "TvixBuildStep"));
        Assert.Null(locator.Find(Item("x", ""), "TvixBuildStep"));
    }

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    private string Write(string name, string contents)
    {
        string path = Path.Combine(_directory, name);
        File.WriteAllText(path, contents);
        return path;
    }

    private static ITaskItem Item(string spec, string definingProject) => new DefinedItem(spec, definingProject);

    /// <summary>An item as MSBuild hands it to a task: DefiningProjectFullPath is engine-set, so a TaskItem cannot carry it.</summary>
    private sealed class DefinedItem(string spec, string definingProject) : ITaskItem
    {
        public string ItemSpec { get; set; } = spec;

        public ICollection MetadataNames => new[] { "DefiningProjectFullPath" };

        public int MetadataCount => 1;

        public string GetMetadata(string metadataName) => metadataName == "DefiningProjectFullPath" ? definingProject : string.Empty;

        public void SetMetadata(string metadataName, string metadataValue) => throw new NotSupportedException();

        public void RemoveMetadata(string metadataName) => throw new NotSupportedException();

        public void CopyMetadataTo(ITaskItem destinationItem) => throw new NotSupportedException();

        public IDictionary CloneCustomMetadata() => new Hashtable();
    }
}
