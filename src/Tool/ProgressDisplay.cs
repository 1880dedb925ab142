using Spectre.Console;

namespace TvixFuseBuild.Tool;

/// <summary>
/// A progress bar on stderr for long work, shown only on a terminal and only once the work has taken a while, so that
/// quick commands and scripts see nothing extra.
/// </summary>
internal static class ProgressDisplay
{
    private static readonly TimeSpan ShowAfter = TimeSpan.FromMilliseconds(500);

    public static bool Enabled =>
        !Console.IsErrorRedirected && Environment.GetEnvironmentVariable("CI") is not ("true" or "1") &&
        Environment.GetEnvironmentVariable("TERM") is not (null or "dumb");

    /// <summary>Runs <paramref name="work"/>; while it runs, <paramref name="describe"/> gives (text, done, total).</summary>
    public static async Task<T> RunAsync<T>(Task<T> work, Func<(string Text, double Done, double Total)> describe)
    {
        if (!Enabled || await Task.WhenAny(work, Task.Delay(ShowAfter)) == work)
        {
            return await work;
        }

        // Cleared when the work ends; when it failed or was interrupted, a line says where it was.
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        string? stoppedAt = null;
        await console.Progress()
            .AutoClear(true)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .StartAsync(async context =>
            {
                var task = context.AddTask("starting");
                while (!work.IsCompleted)
                {
                    var (text, done, total) = describe();
                    task.Description = Markup.Escape(ToolText.Escape(text));
                    task.MaxValue = Math.Max(total, 1);
                    task.Value = Math.Min(done, task.MaxValue);
                    await Task.WhenAny(work, Task.Delay(100));
                }

                if (work.IsCompletedSuccessfully)
                {
                    task.Value = task.MaxValue;
                }
                else
                {
                    var (text, done, total) = describe();
                    string how = ToolConsole.Stopping.IsCancellationRequested ? "interrupted" : "failed";
                    stoppedAt = $"[red]{how}[/] at {Math.Min(done, total) * 100 / Math.Max(total, 1):0}%: {Markup.Escape(ToolText.Escape(text))}";
                }
            });
        if (stoppedAt is not null)
        {
            console.MarkupLine(stoppedAt);
        }

        return await work;
    }

    public static string Bytes(double bytes) => bytes switch
    {
        >= 1 << 30 => $"{bytes / (1 << 30):0.0} GiB",
        >= 1 << 20 => $"{bytes / (1 << 20):0.0} MiB",
        >= 1 << 10 => $"{bytes / (1 << 10):0.0} KiB",
        _ => $"{bytes:0} B",
    };
}
