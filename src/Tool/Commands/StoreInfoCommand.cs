using System.CommandLine;
using System.Text.Json;
using TvixFuseBuild.Build.Pipeline;
using TvixFuseBuild.Castore.Stores.Local;

namespace TvixFuseBuild.Tool.Commands;

/// <summary><c>store info [--json]</c>: what a local store holds.</summary>
internal static class StoreInfoCommand
{
    public static Command Create()
    {
        var json = new Option<bool>("--json") { Description = "Print one JSON object (sizes in bytes)." };
        var info = new Command(
            "info",
            "Show what a local store holds: objects and their size, quarantined (corrupt) objects, explicit roots, result-cache " +
            "entries, and the processes using the store right now (temp roots).")
        {
            json,
        };
        info.SetAction(async parse =>
        {
            await using var store = StoreSelection.Open(parse);
            var local = GcCommand.RequireLocal(store, "store info");
            var stats = StoreStatistics.Of(local);
            var cache = ResultCache.Default;
            int entries = cache.Count();
            if (parse.GetValue(json))
            {
                using var stream = Console.OpenStandardOutput();
                using (var writer = new Utf8JsonWriter(stream))
                {
                    writer.WriteStartObject();
                    writer.WriteString("store", local.Root);
                    writer.WriteNumber("objects", stats.Objects);
                    writer.WriteNumber("bytes", stats.ObjectBytes);
                    writer.WriteNumber("blobs", stats.Blobs);
                    writer.WriteNumber("blobBytes", stats.BlobBytes);
                    writer.WriteNumber("directories", stats.Directories);
                    writer.WriteNumber("directoryBytes", stats.DirectoryBytes);
                    writer.WriteNumber("quarantined", stats.Quarantined);
                    writer.WriteNumber("quarantinedBytes", stats.QuarantinedBytes);
                    writer.WriteNumber("roots", stats.Roots);
                    writer.WriteString("resultCache", cache.Directory);
                    writer.WriteNumber("resultCacheEntries", entries);
                    writer.WriteNumber("tempRootProcesses", stats.TempRootProcesses);
                    writer.WriteNumber("tempRoots", stats.TempRoots);
                    writer.WriteEndObject();
                }

                stream.Write("\n"u8);
                return ToolConsole.Ok;
            }

            Console.WriteLine($"store         {local.Root}");
            Console.WriteLine(
                $"objects       {stats.Objects}, {ProgressDisplay.Bytes(stats.ObjectBytes)}: {GcCommand.Count(stats.Blobs, "blob")} " +
                $"({ProgressDisplay.Bytes(stats.BlobBytes)}), {GcCommand.Count(stats.Directories, "directory", "directories")} ({ProgressDisplay.Bytes(stats.DirectoryBytes)})");
            Console.WriteLine($"quarantine    {stats.Quarantined}, {ProgressDisplay.Bytes(stats.QuarantinedBytes)}" +
                              (stats.Quarantined > 0 ? $" (corrupt objects moved aside, in {Path.Combine(local.Root, "quarantine")})" : ""));
            Console.WriteLine($"roots         {stats.Roots} (see 'root list')");
            Console.WriteLine($"result cache  {GcCommand.Count(entries, "entry", "entries")} in {cache.Directory}" +
                              (GcCommand.BelongsTo(cache, local) ? "" : " (shared: it belongs to the default store)"));
            Console.WriteLine($"in use        {GcCommand.Count(stats.TempRootProcesses, "running process", "running processes")}, " +
                              $"{GcCommand.Count(stats.TempRoots, "temp root")}");
            return ToolConsole.Ok;
        });
        return new Command("store", "Inspect a local store.") { info };
    }
}
