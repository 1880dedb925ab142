using TvixFuseBuild.Native;

namespace TvixFuseBuild.Sandbox;

/// <summary>
/// A test hook, not a feature: with <c>TVIX_FUSE_BUILD_KILL_AT=POINT</c> in its environment (read once), the process
/// sends itself SIGKILL when a build reaches POINT, one of <see cref="Points"/>. The tests use it to check that a kill at
/// any point of a build leaves nothing behind once the next build has swept. Unset, reaching a point costs one test.
/// </summary>
internal static class KillPoint
{
    public const string Variable = "TVIX_FUSE_BUILD_KILL_AT";

    public const string AfterUidClaimed = "after-uid-claimed";
    public const string AfterBuildDirCreated = "after-build-dir-created";
    public const string AfterInputsMounted = "after-inputs-mounted";
    public const string AfterCgroupCreated = "after-cgroup-created";
    public const string AfterSandboxStarted = "after-sandbox-started";
    public const string WhileCommandRuns = "while-command-runs";
    public const string AfterCommandExited = "after-command-exited";
    public const string DuringIngest = "during-ingest";
    public const string AfterResultCacheWritten = "after-result-cache-written";
    public const string DuringTeardown = "during-teardown";

    /// <summary>Every point, in the order a build reaches them.</summary>
    public static readonly string[] Points =
    [
        AfterUidClaimed, AfterBuildDirCreated, AfterInputsMounted, AfterCgroupCreated, AfterSandboxStarted,
        WhileCommandRuns, AfterCommandExited, DuringIngest, AfterResultCacheWritten, DuringTeardown,
    ];

    private static readonly string? s_at = Environment.GetEnvironmentVariable(Variable);

    /// <summary>Dies here, by SIGKILL, when <paramref name="point"/> is the one named in the environment.</summary>
    public static void Reach(string point)
    {
        if (s_at is not null && string.Equals(s_at, point, StringComparison.Ordinal))
        {
            Libc.kill(Environment.ProcessId, Libc.SIGKILL);
            Thread.Sleep(Timeout.Infinite); // the signal is on its way to every thread
        }
    }
}
