using System.Diagnostics.CodeAnalysis;

namespace TvixFuseBuild.Castore.Grpc;

/// <summary>
/// Whether this executable has the gRPC client (remote stores and builders). On unless the runtime configuration turns
/// <see cref="Switch"/> off: the NativeAOT front executable does (src/Tool), so that the compiler leaves out the client
/// and the runtime data it brings; that executable hands command lines that need it to the full one before they get here.
/// </summary>
internal static class GrpcClientFeature
{
    public const string Switch = "TvixFuseBuild.GrpcClient.IsSupported";

    [FeatureSwitchDefinition(Switch)]
    public static bool IsSupported => !AppContext.TryGetSwitch(Switch, out bool on) || on;

    /// <summary>For code of an executable built without the client that reached it all the same (a bug: it should have handed over).</summary>
    public static InvalidOperationException Missing(string what) =>
        new($"{what} needs the gRPC client, which this executable was built without");
}
