using Google.Protobuf;
using static TvixFuseBuild.Build.Requests.FieldSchema;
using SnixBuild = Snix.Build.V1;
using SnixCastore = Snix.Castore.V1;
using TvixBuild = Tvix.Build.V1;
using TvixCastore = Tvix.Castore.V1;

namespace TvixFuseBuild.Build.Requests;

/// <summary>
/// The request and reply messages of both protocols and every message they hold, as in proto/*/build/protos/build.proto
/// and proto/*/castore/protos/castore.proto (snix renames the castore node types only). Types come before the
/// messages that hold them.
/// </summary>
internal static class MessageSchemas
{
    public static MessageSchema TvixBuildRequest => Tvix.BuildRequest;

    public static MessageSchema TvixBuildReply => Tvix.Build;

    public static MessageSchema SnixBuildRequest => Snix.BuildRequest;

    public static MessageSchema SnixBuildResponse => Snix.BuildResponse;

    /// <summary>Every message type of both protocols, for the tests that compare them with the descriptors.</summary>
    public static IReadOnlyList<MessageSchema> All => [.. Tvix.All, .. Snix.All];

    // One class per protocol: a request builds the schemas (and runs the generated classes' static constructors) of its own protocol only.
    private static class Tvix
    {
        public static readonly MessageSchema DirectoryNode = MessageSchema.Create(
            "tvix.castore.v1.DirectoryNode",
            TvixCastore.DirectoryNode.Parser,
            Bytes<TvixCastore.DirectoryNode>("name", 1, m => m.Name, (m, v) => m.Name = v),
            Bytes<TvixCastore.DirectoryNode>("digest", 2, m => m.Digest, (m, v) => m.Digest = v),
            UInt64<TvixCastore.DirectoryNode>("size", 3, m => m.Size, (m, v) => m.Size = v));

        public static readonly MessageSchema FileNode = MessageSchema.Create(
            "tvix.castore.v1.FileNode",
            TvixCastore.FileNode.Parser,
            Bytes<TvixCastore.FileNode>("name", 1, m => m.Name, (m, v) => m.Name = v),
            Bytes<TvixCastore.FileNode>("digest", 2, m => m.Digest, (m, v) => m.Digest = v),
            UInt64<TvixCastore.FileNode>("size", 3, m => m.Size, (m, v) => m.Size = v),
            Bool<TvixCastore.FileNode>("executable", 4, m => m.Executable, (m, v) => m.Executable = v));

        public static readonly MessageSchema SymlinkNode = MessageSchema.Create(
            "tvix.castore.v1.SymlinkNode",
            TvixCastore.SymlinkNode.Parser,
            Bytes<TvixCastore.SymlinkNode>("name", 1, m => m.Name, (m, v) => m.Name = v),
            Bytes<TvixCastore.SymlinkNode>("target", 2, m => m.Target, (m, v) => m.Target = v));

        public static readonly MessageSchema Node = MessageSchema.Create(
            "tvix.castore.v1.Node",
            TvixCastore.Node.Parser,
            Message<TvixCastore.Node, TvixCastore.DirectoryNode>("directory", 1, DirectoryNode, m => m.Directory, (m, v) => m.Directory = v, "node"),
            Message<TvixCastore.Node, TvixCastore.FileNode>("file", 2, FileNode, m => m.File, (m, v) => m.File = v, "node"),
            Message<TvixCastore.Node, TvixCastore.SymlinkNode>("symlink", 3, SymlinkNode, m => m.Symlink, (m, v) => m.Symlink = v, "node"));

        public static readonly MessageSchema EnvVar = MessageSchema.Create(
            "tvix.build.v1.BuildRequest.EnvVar",
            TvixBuild.BuildRequest.Types.EnvVar.Parser,
            Scalar<TvixBuild.BuildRequest.Types.EnvVar>("key", 1, FieldKind.String, m => m.Key, (m, v) => m.Key = v),
            Bytes<TvixBuild.BuildRequest.Types.EnvVar>("value", 2, m => m.Value, (m, v) => m.Value = v));

        public static readonly MessageSchema BuildConstraints = MessageSchema.Create(
            "tvix.build.v1.BuildRequest.BuildConstraints",
            TvixBuild.BuildRequest.Types.BuildConstraints.Parser,
            Scalar<TvixBuild.BuildRequest.Types.BuildConstraints>("system", 1, FieldKind.String, m => m.System, (m, v) => m.System = v),
            UInt64<TvixBuild.BuildRequest.Types.BuildConstraints>("min_memory", 2, m => m.MinMemory, (m, v) => m.MinMemory = v),
            Repeated<TvixBuild.BuildRequest.Types.BuildConstraints, string>("available_ro_paths", 3, FieldKind.String, m => m.AvailableRoPaths),
            Bool<TvixBuild.BuildRequest.Types.BuildConstraints>("network_access", 4, m => m.NetworkAccess, (m, v) => m.NetworkAccess = v),
            Bool<TvixBuild.BuildRequest.Types.BuildConstraints>("provide_bin_sh", 5, m => m.ProvideBinSh, (m, v) => m.ProvideBinSh = v));

        public static readonly MessageSchema AdditionalFile = MessageSchema.Create(
            "tvix.build.v1.BuildRequest.AdditionalFile",
            TvixBuild.BuildRequest.Types.AdditionalFile.Parser,
            Scalar<TvixBuild.BuildRequest.Types.AdditionalFile>("path", 1, FieldKind.String, m => m.Path, (m, v) => m.Path = v),
            Bytes<TvixBuild.BuildRequest.Types.AdditionalFile>("contents", 2, m => m.Contents, (m, v) => m.Contents = v));

        public static readonly MessageSchema BuildRequest = MessageSchema.Create(
            "tvix.build.v1.BuildRequest",
            TvixBuild.BuildRequest.Parser,
            RepeatedMessage<TvixBuild.BuildRequest, TvixCastore.Node>("inputs", 1, Node, m => m.Inputs),
            Repeated<TvixBuild.BuildRequest, string>("command_args", 2, FieldKind.String, m => m.CommandArgs),
            Scalar<TvixBuild.BuildRequest>("working_dir", 3, FieldKind.String, m => m.WorkingDir, (m, v) => m.WorkingDir = v),
            Repeated<TvixBuild.BuildRequest, string>("scratch_paths", 4, FieldKind.String, m => m.ScratchPaths),
            Scalar<TvixBuild.BuildRequest>("inputs_dir", 5, FieldKind.String, m => m.InputsDir, (m, v) => m.InputsDir = v),
            Repeated<TvixBuild.BuildRequest, string>("outputs", 6, FieldKind.String, m => m.Outputs),
            RepeatedMessage<TvixBuild.BuildRequest, TvixBuild.BuildRequest.Types.EnvVar>("environment_vars", 7, EnvVar, m => m.EnvironmentVars),
            Message<TvixBuild.BuildRequest, TvixBuild.BuildRequest.Types.BuildConstraints>("constraints", 8, BuildConstraints, m => m.Constraints, (m, v) => m.Constraints = v),
            RepeatedMessage<TvixBuild.BuildRequest, TvixBuild.BuildRequest.Types.AdditionalFile>("additional_files", 9, AdditionalFile, m => m.AdditionalFiles),
            Repeated<TvixBuild.BuildRequest, string>("refscan_needles", 10, FieldKind.String, m => m.RefscanNeedles));

        public static readonly MessageSchema OutputNeedles = MessageSchema.Create(
            "tvix.build.v1.Build.OutputNeedles",
            TvixBuild.Build.Types.OutputNeedles.Parser,
            Repeated<TvixBuild.Build.Types.OutputNeedles, ulong>("needles", 1, FieldKind.UInt64, m => m.Needles));

        public static readonly MessageSchema Build = MessageSchema.Create(
            "tvix.build.v1.Build",
            TvixBuild.Build.Parser,
            Message<TvixBuild.Build, TvixBuild.BuildRequest>("build_request", 1, BuildRequest, m => m.BuildRequest, (m, v) => m.BuildRequest = v),
            RepeatedMessage<TvixBuild.Build, TvixCastore.Node>("outputs", 2, Node, m => m.Outputs),
            RepeatedMessage<TvixBuild.Build, TvixBuild.Build.Types.OutputNeedles>("outputs_needles", 3, OutputNeedles, m => m.OutputsNeedles));

        public static readonly MessageSchema[] All = [DirectoryNode, FileNode, SymlinkNode, Node, EnvVar, BuildConstraints, AdditionalFile, BuildRequest, OutputNeedles, Build];
    }

    private static class Snix
    {
        public static readonly MessageSchema DirectoryEntry = MessageSchema.Create(
            "snix.castore.v1.DirectoryEntry",
            SnixCastore.DirectoryEntry.Parser,
            Bytes<SnixCastore.DirectoryEntry>("name", 1, m => m.Name, (m, v) => m.Name = v),
            Bytes<SnixCastore.DirectoryEntry>("digest", 2, m => m.Digest, (m, v) => m.Digest = v),
            UInt64<SnixCastore.DirectoryEntry>("size", 3, m => m.Size, (m, v) => m.Size = v));

        public static readonly MessageSchema FileEntry = MessageSchema.Create(
            "snix.castore.v1.FileEntry",
            SnixCastore.FileEntry.Parser,
            Bytes<SnixCastore.FileEntry>("name", 1, m => m.Name, (m, v) => m.Name = v),
            Bytes<SnixCastore.FileEntry>("digest", 2, m => m.Digest, (m, v) => m.Digest = v),
            UInt64<SnixCastore.FileEntry>("size", 3, m => m.Size, (m, v) => m.Size = v),
            Bool<SnixCastore.FileEntry>("executable", 4, m => m.Executable, (m, v) => m.Executable = v));

        public static readonly MessageSchema SymlinkEntry = MessageSchema.Create(
            "snix.castore.v1.SymlinkEntry",
            SnixCastore.SymlinkEntry.Parser,
            Bytes<SnixCastore.SymlinkEntry>("name", 1, m => m.Name, (m, v) => m.Name = v),
            Bytes<SnixCastore.SymlinkEntry>("target", 2, m => m.Target, (m, v) => m.Target = v));

        public static readonly MessageSchema Entry = MessageSchema.Create(
            "snix.castore.v1.Entry",
            SnixCastore.Entry.Parser,
            Message<SnixCastore.Entry, SnixCastore.DirectoryEntry>("directory", 1, DirectoryEntry, m => m.Directory, (m, v) => m.Directory = v, "node"),
            Message<SnixCastore.Entry, SnixCastore.FileEntry>("file", 2, FileEntry, m => m.File, (m, v) => m.File = v, "node"),
            Message<SnixCastore.Entry, SnixCastore.SymlinkEntry>("symlink", 3, SymlinkEntry, m => m.Symlink, (m, v) => m.Symlink = v, "node"));

        public static readonly MessageSchema EnvVar = MessageSchema.Create(
            "snix.build.v1.BuildRequest.EnvVar",
            SnixBuild.BuildRequest.Types.EnvVar.Parser,
            Scalar<SnixBuild.BuildRequest.Types.EnvVar>("key", 1, FieldKind.String, m => m.Key, (m, v) => m.Key = v),
            Bytes<SnixBuild.BuildRequest.Types.EnvVar>("value", 2, m => m.Value, (m, v) => m.Value = v));

        public static readonly MessageSchema BuildConstraints = MessageSchema.Create(
            "snix.build.v1.BuildRequest.BuildConstraints",
            SnixBuild.BuildRequest.Types.BuildConstraints.Parser,
            Scalar<SnixBuild.BuildRequest.Types.BuildConstraints>("system", 1, FieldKind.String, m => m.System, (m, v) => m.System = v),
            UInt64<SnixBuild.BuildRequest.Types.BuildConstraints>("min_memory", 2, m => m.MinMemory, (m, v) => m.MinMemory = v),
            Repeated<SnixBuild.BuildRequest.Types.BuildConstraints, string>("available_ro_paths", 3, FieldKind.String, m => m.AvailableRoPaths),
            Bool<SnixBuild.BuildRequest.Types.BuildConstraints>("network_access", 4, m => m.NetworkAccess, (m, v) => m.NetworkAccess = v),
            Bool<SnixBuild.BuildRequest.Types.BuildConstraints>("provide_bin_sh", 5, m => m.ProvideBinSh, (m, v) => m.ProvideBinSh = v));

        public static readonly MessageSchema AdditionalFile = MessageSchema.Create(
            "snix.build.v1.BuildRequest.AdditionalFile",
            SnixBuild.BuildRequest.Types.AdditionalFile.Parser,
            Scalar<SnixBuild.BuildRequest.Types.AdditionalFile>("path", 1, FieldKind.String, m => m.Path, (m, v) => m.Path = v),
            Bytes<SnixBuild.BuildRequest.Types.AdditionalFile>("contents", 2, m => m.Contents, (m, v) => m.Contents = v));

        public static readonly MessageSchema BuildRequest = MessageSchema.Create(
            "snix.build.v1.BuildRequest",
            SnixBuild.BuildRequest.Parser,
            RepeatedMessage<SnixBuild.BuildRequest, SnixCastore.Entry>("inputs", 1, Entry, m => m.Inputs),
            Repeated<SnixBuild.BuildRequest, string>("command_args", 2, FieldKind.String, m => m.CommandArgs),
            Scalar<SnixBuild.BuildRequest>("working_dir", 3, FieldKind.String, m => m.WorkingDir, (m, v) => m.WorkingDir = v),
            Repeated<SnixBuild.BuildRequest, string>("scratch_paths", 4, FieldKind.String, m => m.ScratchPaths),
            Scalar<SnixBuild.BuildRequest>("inputs_dir", 5, FieldKind.String, m => m.InputsDir, (m, v) => m.InputsDir = v),
            Repeated<SnixBuild.BuildRequest, string>("outputs", 6, FieldKind.String, m => m.Outputs),
            RepeatedMessage<SnixBuild.BuildRequest, SnixBuild.BuildRequest.Types.EnvVar>("environment_vars", 7, EnvVar, m => m.EnvironmentVars),
            Message<SnixBuild.BuildRequest, SnixBuild.BuildRequest.Types.BuildConstraints>("constraints", 8, BuildConstraints, m => m.Constraints, (m, v) => m.Constraints = v),
            RepeatedMessage<SnixBuild.BuildRequest, SnixBuild.BuildRequest.Types.AdditionalFile>("additional_files", 9, AdditionalFile, m => m.AdditionalFiles),
            Repeated<SnixBuild.BuildRequest, string>("refscan_needles", 10, FieldKind.String, m => m.RefscanNeedles));

        public static readonly MessageSchema Output = MessageSchema.Create(
            "snix.build.v1.BuildResponse.Output",
            SnixBuild.BuildResponse.Types.Output.Parser,
            Message<SnixBuild.BuildResponse.Types.Output, SnixCastore.Entry>("output", 1, Entry, m => m.Output_, (m, v) => m.Output_ = v),
            Repeated<SnixBuild.BuildResponse.Types.Output, ulong>("needles", 2, FieldKind.UInt64, m => m.Needles));

        public static readonly MessageSchema BuildResponse = MessageSchema.Create(
            "snix.build.v1.BuildResponse",
            SnixBuild.BuildResponse.Parser,
            RepeatedMessage<SnixBuild.BuildResponse, SnixBuild.BuildResponse.Types.Output>("outputs", 1, Output, m => m.Outputs));

        public static readonly MessageSchema[] All = [DirectoryEntry, FileEntry, SymlinkEntry, Entry, EnvVar, BuildConstraints, AdditionalFile, BuildRequest, Output, BuildResponse];
    }
}
