using HandoffDapr.Core.Handoff;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.Hosting;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Embedded;

/// <summary>
/// Embedded mode's retention (<see cref="HandoffOptions.RunRetention"/>, opt-in): every <see cref="Interval"/> deletes
/// the runs the core says are due (<see cref="RunRetention.IsDue"/>: settled, last changed a retention ago), in small
/// batches through the store's one writer, each leaving a tombstone; and drops tombstones past
/// <see cref="RunRetention.TombstoneLifetime"/>. A run this process holds is passed over, and a row deleted only at the
/// version it was read at with no wake-up, so a turn here or in another process on the file is never raced: its save
/// either comes first (the delete then finds another version) or meets the tombstone. With the setting unset nothing is
/// deleted; tombstones left from when it was set are still dropped after their lifetime (none there: nothing runs).
/// </summary>
public sealed partial class RetentionSweeper(
    SqliteRunStore store,
    RunLocks locks,
    IOptions<HandoffOptions> options,
    TimeProvider timeProvider,
    ILogger<RetentionSweeper> logger) : BackgroundService
{
    /// <summary>Between sweeps: a run goes at most this long after it is due, at a cost of one indexed read when none is.</summary>
    public static readonly TimeSpan Interval = TimeSpan.FromMinutes(10);

    /// <summary>Runs read and deleted per transaction: a batch holds the writer (every save waits behind it) only briefly.</summary>
    internal const int BatchSize = 100;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (options.Value.RunRetention is null && !MayHaveTombstones())
        {
            return; // unset, and no tombstone on this file (none ever, or all dropped): nothing to do, as before retention existed
        }

        await PeriodicWork.RunAsync(SweepAsync, token => Task.Delay(Interval, timeProvider, token), LogSweepFailed, stoppingToken);
    }

    // One sweep at a time (the schedule's and one asked for): a second would only find the first's runs held.
    private readonly SemaphoreSlim sweeping = new(1, 1);

    /// <summary>One sweep: every due run deleted, old tombstones dropped. Returns how many runs went.</summary>
    /// <remarks>
    /// With the setting unset (turned off after runs were deleted) no run is deleted, but the tombstones left are still
    /// dropped after <see cref="RunRetention.TombstoneLifetime"/>, as docs/runbook.md says and Dapr mode's expire.
    /// </remarks>
    public async Task<int> SweepAsync(CancellationToken cancellationToken)
    {
        var retention = options.Value.RunRetention;
        await sweeping.WaitAsync(cancellationToken);
        try
        {
            var now = timeProvider.GetUtcNow();
            var deleted = retention is { } kept ? await DeleteDueRunsAsync(kept, now, cancellationToken) : 0;
            var dropped = await DropTombstonesAsync(now, cancellationToken);
            // Information only when something went: a sweep every 10 minutes that finds nothing is not news.
            if (retention is null)
            {
                if (dropped > 0)
                {
                    LogTombstonesDropped(dropped);
                }
            }
            else if (deleted > 0 || dropped > 0)
            {
                LogSwept(deleted, retention.Value, dropped);
            }
            else
            {
                LogSweptNothing(retention.Value);
            }

            return deleted;
        }
        finally
        {
            sweeping.Release();
        }
    }

    /// <summary>Deletes every run due at <paramref name="now"/>, in batches; returns how many.</summary>
    private async Task<int> DeleteDueRunsAsync(TimeSpan retention, DateTimeOffset now, CancellationToken cancellationToken)
    {
        var deleted = 0;
        var after = (UpdatedAt: long.MinValue, RunId: long.MinValue);
        while (!cancellationToken.IsCancellationRequested)
        {
            var candidates = store.ListSweepCandidates(now - retention, after, BatchSize);
            if (candidates.Count == 0)
            {
                break;
            }

            after = (candidates[^1].UpdatedAt.ToUnixTimeMilliseconds(), candidates[^1].RunId);
            var held = new List<IDisposable>();
            try
            {
                var due = new List<SweepCandidate>();
                foreach (var candidate in candidates.Where(candidate => candidate.State is { } state && RunRetention.IsDue(state, candidate.UpdatedAt, retention, now)))
                {
                    // A run this process is working on is left for the next sweep.
                    if (locks.TryAcquire(candidate.RunId) is { } hold)
                    {
                        held.Add(hold);
                        due.Add(candidate);
                    }
                }

                deleted += due.Count == 0 ? 0 : await store.DeleteSettledAsync(due, now, cancellationToken);
            }
            finally
            {
                held.ForEach(hold => hold.Dispose());
            }

            if (candidates.Count < BatchSize)
            {
                break;
            }
        }

        return deleted;
    }

    /// <summary>Drops every tombstone older than <see cref="RunRetention.TombstoneLifetime"/>, in batches; returns how many.</summary>
    private async Task<int> DropTombstonesAsync(DateTimeOffset now, CancellationToken cancellationToken)
    {
        var dropped = 0;
        for (int batch; (batch = await store.DropTombstonesAsync(now - RunRetention.TombstoneLifetime, BatchSize, cancellationToken)) > 0; dropped += batch)
        {
        }

        return dropped;
    }

    /// <summary>The file holds tombstones (or could not be asked): with the setting unset, they must still be dropped in time.</summary>
    private bool MayHaveTombstones()
    {
        try
        {
            return store.HasTombstones();
        }
        catch (Exception exception) when (exception is Microsoft.Data.Sqlite.SqliteException or InvalidOperationException)
        {
            return true; // the loop tries, and logs a failed pass
        }
    }

    [LoggerMessage(EventId = 3005, EventName = "RunsSweptByRetention", Level = LogLevel.Information,
        Message = "Retention sweep: {Deleted} settled run(s) unchanged for {RunRetention} deleted; {TombstonesDropped} tombstone(s) of runs deleted over 30 days ago dropped")]
    private partial void LogSwept(int deleted, TimeSpan runRetention, int tombstonesDropped);

    [LoggerMessage(EventId = 3008, EventName = "RetentionSweepFoundNothing", Level = LogLevel.Debug,
        Message = "Retention sweep: no settled run unchanged for {RunRetention}, and no tombstone over 30 days old")]
    private partial void LogSweptNothing(TimeSpan runRetention);

    [LoggerMessage(EventId = 3007, EventName = "RetentionTombstonesDropped", Level = LogLevel.Information,
        Message = "Retention is off (Handoff:RunRetention unset): {TombstonesDropped} tombstone(s) of runs deleted over 30 days ago, while it was on, dropped")]
    private partial void LogTombstonesDropped(int tombstonesDropped);

    [LoggerMessage(EventId = 3006, EventName = "RetentionSweepFailed", Level = LogLevel.Warning,
        Message = "The retention sweep failed; runs due for deletion are kept until the next sweep succeeds")]
    private partial void LogSweepFailed(Exception exception);
}
