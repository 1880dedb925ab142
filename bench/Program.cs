using TvixFuseBuild.Bench;

return BenchRunner.Run(args);
