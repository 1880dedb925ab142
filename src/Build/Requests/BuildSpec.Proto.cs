using System.Collections.Immutable;
using Google.Protobuf;
using TvixFuseBuild.Castore;
using SnixBuild = Snix.Build.V1;
using TvixBuild = Tvix.Build.V1;

namespace TvixFuseBuild.Build.Requests;

// Conversions between the spec and the generated tvix.build.v1 / snix.build.v1 BuildRequest messages.
public sealed partial record BuildSpec
{
    /// <summary>
    /// Validates a tvix request as tvix does (see <see cref="BuildRequestValidator.Validate(BuildSpec, BuildProtocol)"/>)
    /// and converts it. Throws <see cref="BuildRequestValidationException"/> with tvix's message.
    /// </summary>
    public static BuildSpec FromTvix(TvixBuild.BuildRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return FromMessage(request, BuildProtocol.Tvix);
    }

    /// <summary>Validates a snix request as snix does (NUL is also refused in the environment) and converts it.</summary>
    public static BuildSpec FromSnix(SnixBuild.BuildRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);

        // The two messages have the same fields and numbers (snix renames the node types only).
        return FromMessage(TvixBuild.BuildRequest.Parser.ParseFrom(request.ToByteString()), BuildProtocol.Snix);
    }

    private static BuildSpec FromMessage(TvixBuild.BuildRequest request, BuildProtocol protocol)
    {
        var inputs = ConvertInputs(request.Inputs);
        var constraints = request.Constraints is { } c
            ? new BuildConstraints(c.System, c.MinMemory, [.. c.AvailableRoPaths], c.NetworkAccess, c.ProvideBinSh)
            : null;
        var spec = new BuildSpec
        {
            Inputs = inputs,
            CommandArgs = [.. request.CommandArgs],
            WorkingDir = request.WorkingDir,
            ScratchPaths = [.. request.ScratchPaths],
            InputsDir = request.InputsDir,
            Outputs = [.. request.Outputs],
            EnvironmentVars = [.. request.EnvironmentVars.Select(static e => new EnvironmentVariable(e.Key, e.Value.Memory))],
            Constraints = constraints,
            AdditionalFiles = [.. request.AdditionalFiles.Select(static f => new AdditionalFile(f.Path, f.Contents.Memory))],
            RefscanNeedles = [.. request.RefscanNeedles],
        };
        if (BuildRequestValidator.ValidateAfterInputs(spec, protocol) is { } error)
        {
            throw error.ToException();
        }

        return spec;
    }

    /// <summary>Converts from either protocol's message (a <see cref="TvixBuild.BuildRequest"/> or <see cref="SnixBuild.BuildRequest"/>).</summary>
    public static BuildSpec FromProto(IMessage request) => request switch
    {
        TvixBuild.BuildRequest tvix => FromTvix(tvix),
        SnixBuild.BuildRequest snix => FromSnix(snix),
        _ => throw new ArgumentException($"not a BuildRequest message: {request?.Descriptor.FullName}", nameof(request)),
    };

    /// <summary>The <c>tvix.build.v1.BuildRequest</c> message. Does not validate.</summary>
    public TvixBuild.BuildRequest ToTvix()
    {
        var request = new TvixBuild.BuildRequest
        {
            WorkingDir = WorkingDir,
            InputsDir = InputsDir,
        };
        foreach (var node in Inputs)
        {
            request.Inputs.Add(node.ToTvixProto());
        }

        request.CommandArgs.Add(CommandArgs);
        request.ScratchPaths.Add(ScratchPaths);
        request.Outputs.Add(Outputs);
        foreach (var env in EnvironmentVars)
        {
            request.EnvironmentVars.Add(new TvixBuild.BuildRequest.Types.EnvVar { Key = env.Key, Value = Bytes(env.Value) });
        }

        if (Constraints is { } c)
        {
            request.Constraints = new TvixBuild.BuildRequest.Types.BuildConstraints
            {
                System = c.System,
                MinMemory = c.MinMemory,
                NetworkAccess = c.NetworkAccess,
                ProvideBinSh = c.ProvideBinSh,
            };
            request.Constraints.AvailableRoPaths.Add(c.AvailableReadOnlyPaths);
        }

        foreach (var file in AdditionalFiles)
        {
            request.AdditionalFiles.Add(new TvixBuild.BuildRequest.Types.AdditionalFile { Path = file.Path, Contents = Bytes(file.Contents) });
        }

        request.RefscanNeedles.Add(RefscanNeedles);
        return request;
    }

    /// <summary>The <c>snix.build.v1.BuildRequest</c> message (same field numbers as tvix's). Does not validate.</summary>
    public SnixBuild.BuildRequest ToSnix() => SnixBuild.BuildRequest.Parser.ParseFrom(GetCanonicalEncoding());

    /// <summary>
    /// Step 1 of the validation, interleaved as tvix does it: node <c>i</c> is checked, then its order against node
    /// <c>i-1</c>, before node <c>i+1</c> is looked at.
    /// </summary>
    private static ImmutableArray<Node> ConvertInputs(IReadOnlyList<Tvix.Castore.V1.Node> nodes)
    {
        var inputs = ImmutableArray.CreateBuilder<Node>(nodes.Count);
        for (int i = 0; i < nodes.Count; i++)
        {
            Node node;
            try
            {
                node = nodes[i].ToModel();
            }
            catch (CastoreException e)
            {
                throw BuildRequestValidator.InvalidInputNode(i, e.Message).ToException();
            }

            if (i > 0 && node.Name <= inputs[i - 1].Name)
            {
                throw BuildRequestValidator.InputsNotSorted.ToException();
            }

            inputs.Add(node);
        }

        return inputs.MoveToImmutable();
    }

    private static ByteString Bytes(ReadOnlyMemory<byte> bytes) => bytes.IsEmpty ? ByteString.Empty : ByteString.CopyFrom(bytes.Span);
}
