using TvixFuseBuild.Build.Requests;

namespace TvixFuseBuild.Build.Tests.Requests;

public sealed class CleanPathTests
{
    public static IEnumerable<object[]> IsCleanCases() => Load("is_clean_path");

    public static IEnumerable<object[]> IsCleanRelativeCases() => Load("is_clean_relative_path");

    [Theory]
    [MemberData(nameof(IsCleanCases))]
    public void IsCleanMatchesTheVectors(string path, bool clean) => Assert.Equal(clean, CleanPath.IsClean(path));

    [Theory]
    [MemberData(nameof(IsCleanRelativeCases))]
    public void IsCleanRelativeMatchesTheVectors(string path, bool clean) => Assert.Equal(clean, CleanPath.IsCleanRelative(path));

    [Theory]
    [InlineData(".", false)]
    [InlineData("..", false)]
    [InlineData("a/.", false)]
    [InlineData("a/..", false)]
    [InlineData("/.", false)]
    [InlineData("a/.b/..c", true)]
    [InlineData("a//", false)]
    [InlineData("...", true)]
    public void MoreCleanPaths(string path, bool clean) => Assert.Equal(clean, CleanPath.IsClean(path));

    [Theory]
    [InlineData("/", true)]
    [InlineData("/dev/kvm", true)]
    [InlineData("dev/kvm", false)]
    [InlineData("", false)]
    [InlineData("//dev", false)]
    public void IsCleanAbsolute(string path, bool clean) => Assert.Equal(clean, CleanPath.IsCleanAbsolute(path));

    [Theory]
    [InlineData("a/b", "a", true)]
    [InlineData("a", "a", true)]
    [InlineData("ab", "a", false)]
    [InlineData("a", "a/b", false)]
    [InlineData("anything", "", true)]
    [InlineData("", "", true)]
    public void IsAtOrUnder(string path, string directory, bool expected) => Assert.Equal(expected, CleanPath.IsAtOrUnder(path, directory));

    private static IEnumerable<object[]> Load(string name)
    {
        var cases = Vectors.Load("buildrequest.json").GetProperty("clean_paths").GetProperty(name).EnumerateArray()
            .Select(c => new object[] { c[0].GetString()!, c[1].GetBoolean() })
            .ToList();
        Assert.NotEmpty(cases);
        return cases;
    }
}
