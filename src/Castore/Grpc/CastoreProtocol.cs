namespace TvixFuseBuild.Castore.Grpc;

/// <summary>Which package the castore services are called under: <c>tvix.castore.v1</c> or <c>snix.castore.v1</c>.</summary>
public enum CastoreProtocol
{
    Tvix,
    Snix,
}
