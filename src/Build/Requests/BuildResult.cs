using System.Collections.Immutable;
using TvixFuseBuild.Castore;
using SnixBuild = Snix.Build.V1;
using TvixBuild = Tvix.Build.V1;

namespace TvixFuseBuild.Build.Requests;

/// <summary>
/// One produced output: its castore node (its name does not matter here: the replies name it) and the indexes of the
/// refscan needles found in it, ascending.
/// </summary>
public sealed record BuildOutput(Node Node, ImmutableArray<int> Needles)
{
    public ImmutableArray<int> Needles { get; init; } = Needles.IsDefault ? [] : Needles;

    public bool Equals(BuildOutput? other) =>
        other is not null && Node.WithName(PathComponent.Empty) == other.Node.WithName(PathComponent.Empty) && Needles.SequenceEqual(other.Needles);

    public override int GetHashCode() => HashCode.Combine(Node.WithName(PathComponent.Empty), Needles.Length);
}

/// <summary>
/// What a successful build produced, whatever protocol asked for it: one <see cref="BuildOutput"/> per requested
/// output, in the request's order. Turned into tvix's <c>Build</c> or snix's <c>BuildResponse</c> by
/// <see cref="ToTvixBuild"/> / <see cref="ToSnixResponse"/> (or <see cref="BuildMessages.FormatReply"/>).
/// </summary>
public sealed record BuildResult(ImmutableArray<BuildOutput> Outputs)
{
    public ImmutableArray<BuildOutput> Outputs { get; init; } = Outputs.IsDefault ? [] : Outputs;

    public bool Equals(BuildResult? other) => other is not null && Outputs.SequenceEqual(other.Outputs);

    public override int GetHashCode() => Outputs.Length;

    /// <summary>
    /// tvix's reply: the request echoed, each output node named by the last component of its output path, and the
    /// needles found per output. Throws <see cref="ArgumentException"/> when the result does not fit the request
    /// (output count, needle indexes out of range or not ascending).
    /// </summary>
    public TvixBuild.Build ToTvixBuild(BuildSpec request)
    {
        ArgumentNullException.ThrowIfNull(request);
        CheckFits(request);
        var build = new TvixBuild.Build { BuildRequest = request.ToTvix() };
        for (int i = 0; i < Outputs.Length; i++)
        {
            var name = PathComponent.Create(CleanPath.LastSegment(request.Outputs[i]));
            build.Outputs.Add(Outputs[i].Node.WithName(name).ToTvixProto());
            var needles = new TvixBuild.Build.Types.OutputNeedles();
            foreach (int n in Outputs[i].Needles)
            {
                needles.Needles.Add((ulong)n);
            }

            build.OutputsNeedles.Add(needles);
        }

        return build;
    }

    /// <summary>snix's reply: the outputs in request order, each an entry with an empty name plus its needles.</summary>
    public SnixBuild.BuildResponse ToSnixResponse(BuildSpec request)
    {
        ArgumentNullException.ThrowIfNull(request);
        CheckFits(request);
        var response = new SnixBuild.BuildResponse();
        foreach (var output in Outputs)
        {
            var item = new SnixBuild.BuildResponse.Types.Output { Output_ = output.Node.WithName(PathComponent.Empty).ToSnixProto() };
            foreach (int n in output.Needles)
            {
                item.Needles.Add((ulong)n);
            }

            response.Outputs.Add(item);
        }

        return response;
    }

    /// <summary>Reads tvix's reply (the echoed request is <c>build.BuildRequest</c>); throws <see cref="BuildMessageFormatException"/> when it is inconsistent.</summary>
    public static BuildResult FromTvixBuild(TvixBuild.Build build)
    {
        ArgumentNullException.ThrowIfNull(build);
        if (build.Outputs.Count != build.OutputsNeedles.Count)
        {
            throw new BuildMessageFormatException($"Build has {build.Outputs.Count} outputs but {build.OutputsNeedles.Count} outputs_needles");
        }

        var outputs = ImmutableArray.CreateBuilder<BuildOutput>(build.Outputs.Count);
        for (int i = 0; i < build.Outputs.Count; i++)
        {
            Node node;
            try
            {
                node = build.Outputs[i].ToModel();
            }
            catch (CastoreException e)
            {
                throw new BuildMessageFormatException($"Build output at position {i} is invalid: {e.Message}", e);
            }

            outputs.Add(new BuildOutput(node, ReadNeedles(build.OutputsNeedles[i].Needles, $"outputs_needles[{i}]")));
        }

        return new BuildResult(outputs.MoveToImmutable());
    }

    /// <summary>Reads snix's reply; throws <see cref="BuildMessageFormatException"/> when it is inconsistent.</summary>
    public static BuildResult FromSnixResponse(SnixBuild.BuildResponse response)
    {
        ArgumentNullException.ThrowIfNull(response);
        var outputs = ImmutableArray.CreateBuilder<BuildOutput>(response.Outputs.Count);
        for (int i = 0; i < response.Outputs.Count; i++)
        {
            var item = response.Outputs[i];
            if (item.Output_ is null)
            {
                throw new BuildMessageFormatException($"BuildResponse output at position {i} has no entry");
            }

            Node node;
            try
            {
                node = item.Output_.ToModel(allowEmptyName: true);
            }
            catch (CastoreException e)
            {
                throw new BuildMessageFormatException($"BuildResponse output at position {i} is invalid: {e.Message}", e);
            }

            outputs.Add(new BuildOutput(node, ReadNeedles(item.Needles, $"outputs[{i}].needles")));
        }

        return new BuildResult(outputs.MoveToImmutable());
    }

    private void CheckFits(BuildSpec request)
    {
        if (Outputs.Length != request.Outputs.Length)
        {
            throw new ArgumentException($"the result has {Outputs.Length} outputs, the request asks for {request.Outputs.Length}");
        }

        for (int i = 0; i < Outputs.Length; i++)
        {
            var needles = Outputs[i].Needles;
            for (int j = 0; j < needles.Length; j++)
            {
                if ((uint)needles[j] >= (uint)request.RefscanNeedles.Length || (j > 0 && needles[j] <= needles[j - 1]))
                {
                    throw new ArgumentException(
                        $"output {i}: needle indexes must be ascending and below {request.RefscanNeedles.Length}, got [{string.Join(", ", needles)}]");
                }
            }
        }
    }

    private static ImmutableArray<int> ReadNeedles(IReadOnlyList<ulong> needles, string field)
    {
        var result = ImmutableArray.CreateBuilder<int>(needles.Count);
        for (int j = 0; j < needles.Count; j++)
        {
            if (needles[j] > int.MaxValue || (j > 0 && needles[j] <= needles[j - 1]))
            {
                throw new BuildMessageFormatException($"{field}: needle indexes must be ascending, got [{string.Join(", ", needles)}]");
            }

            result.Add((int)needles[j]);
        }

        return result.MoveToImmutable();
    }
}
