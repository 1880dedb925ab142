using System.Text;
using TvixFuseBuild.Build.Refscan;

namespace TvixFuseBuild.Build.Tests.Refscan;

internal static class RefscanTestData
{
    public sealed record Case(string Name, byte[][] Needles, byte[] Haystack, int[] Found);

    public static IReadOnlyList<Case> VectorCases()
    {
        var cases = Vectors.Load("refscan.json").GetProperty("cases").EnumerateArray()
            .Select(c => new Case(
                c.GetProperty("case").GetString()!,
                [.. c.GetProperty("needles").EnumerateArray().Select(n => Encoding.UTF8.GetBytes(n.GetString()!))],
                Encoding.UTF8.GetBytes(c.GetProperty("haystack").GetString()!),
                [.. c.GetProperty("found").EnumerateArray().Select(f => f.GetInt32())]))
            .ToList();
        Assert.True(cases.Count >= 7, "refscan.json has fewer cases than expected");
        return cases;
    }

    /// <summary>Every engine that applies to <paramref name="needles"/>: the general one always, the Nix one when every needle is a Nix hash.</summary>
    public static IEnumerable<NeedleSet> Engines(byte[][] needles)
    {
        yield return NeedleSet.Create(needles, RefscanEngine.General);
        if (needles.Length > 0 && needles.All(n => NeedleSet.IsNixHash(n)))
        {
            yield return NeedleSet.Create(needles, RefscanEngine.NixHash);
        }
    }

    /// <summary>The answer by brute force.</summary>
    public static int[] Naive(byte[][] needles, params byte[][] objects) =>
        [.. Enumerable.Range(0, needles.Length).Where(i => objects.Any(o => o.AsSpan().IndexOf(needles[i]) >= 0))];

    public static byte[] RandomNixHash(Random random)
    {
        var bytes = new byte[NeedleSet.NixHashLength];
        for (int i = 0; i < bytes.Length; i++)
        {
            bytes[i] = (byte)NeedleSet.NixBase32Alphabet[random.Next(32)];
        }

        return bytes;
    }

    public static string TempDir() => Directory.CreateTempSubdirectory("tvix-fuse-build-test-").FullName;
}
