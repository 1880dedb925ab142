using TvixFuseBuild.Bench;

using TvixFuseBuild.Bench.Scenarios;

// The mount scenario's cold case: one measured mount in a fresh process.
return args is [MountBench.OnceArgument, ..] ? await MountBench.OnceAsync(args[1..]) : BenchRunner.Run(args);
