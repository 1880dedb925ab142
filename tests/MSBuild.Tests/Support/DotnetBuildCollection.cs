namespace TvixFuseBuild.MSBuild.Tests.Support;

/// <summary>
/// The tests that run real <c>dotnet build</c>s share one packed feed and run one after another (each build already
/// uses both cores).
/// </summary>
[CollectionDefinition(Name)]
public sealed class DotnetBuildCollection : ICollectionFixture<PackedFeed>
{
    public const string Name = "dotnet build";
}
