using TvixFuseBuild.Castore.Grpc;
using SnixBuild = Snix.Build.V1;
using TvixBuild = Tvix.Build.V1;

namespace TvixFuseBuild.Build.Grpc;

/// <summary>
/// The BuildService's one method under both packages: <c>/tvix.build.v1.BuildService/DoBuild</c> (BuildRequest →
/// Build) and <c>/snix.build.v1.BuildService/DoBuild</c> (BuildRequest → BuildResponse). Served by
/// <see cref="BuildGrpcService"/>; a client calls them with <see cref="GrpcChannel.UnaryAsync"/>.
/// </summary>
public static class BuildGrpcMethods
{
    public static GrpcMethod<TvixBuild.BuildRequest, TvixBuild.Build> TvixDoBuild { get; } = new(
        GrpcMethodType.Unary,
        "tvix.build.v1.BuildService",
        "DoBuild",
        GrpcMarshaller.ForProtobuf(TvixBuild.BuildRequest.Parser),
        GrpcMarshaller.ForProtobuf(TvixBuild.Build.Parser));

    public static GrpcMethod<SnixBuild.BuildRequest, SnixBuild.BuildResponse> SnixDoBuild { get; } = new(
        GrpcMethodType.Unary,
        "snix.build.v1.BuildService",
        "DoBuild",
        GrpcMarshaller.ForProtobuf(SnixBuild.BuildRequest.Parser),
        GrpcMarshaller.ForProtobuf(SnixBuild.BuildResponse.Parser));
}
