using HandoffDapr.Service.Configuration;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Embedded;

/// <summary>
/// Embedded mode's replacement for actor reminders: polls the durable wake-up table, claims due rows with a
/// lease (so two processes on one file never run the same wake-up), and hands each run to its owner.
/// Runs overdue work right at start, so retries survive restarts.
/// </summary>
public sealed partial class WakeupScheduler(
    SqliteRunStore store,
    EmbeddedRunOwner owner,
    IOptions<HandoffOptions> options,
    TimeProvider timeProvider,
    ILogger<WakeupScheduler> logger) : BackgroundService
{
    private const int BatchSize = 16;
    private readonly string leaseOwner = $"{Environment.MachineName}:{Environment.ProcessId}:{Guid.NewGuid():N}";

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var interval = options.Value.Embedded.SchedulePollInterval;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await RunDueAsync(stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception exception)
            {
                LogSchedulerFailed(exception);
            }

            try
            {
                await Task.Delay(interval, timeProvider, stoppingToken);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }
    }

    /// <summary>Runs every wake-up that is due now; returns how many runs were woken.</summary>
    public async Task<int> RunDueAsync(CancellationToken cancellationToken)
    {
        var total = 0;
        while (true)
        {
            var claimed = await store.ClaimDueWakeupsAsync(leaseOwner, timeProvider.GetUtcNow(), options.Value.Embedded.ScheduleLease, BatchSize, cancellationToken);
            if (claimed.Count == 0)
            {
                return total;
            }

            await Parallel.ForEachAsync(claimed, cancellationToken, async (runId, token) =>
            {
                try
                {
                    await owner.WakeAsync(runId, token);
                    await store.ReleaseWakeupAsync(runId, leaseOwner, CancellationToken.None);
                }
                catch (Exception exception) when (exception is not OperationCanceledException)
                {
                    // The lease is kept: the run is tried again when it expires, not on every poll.
                    LogWakeFailed(runId, exception);
                }
            });
            total += claimed.Count;
            if (claimed.Count < BatchSize)
            {
                return total;
            }
        }
    }

    [LoggerMessage(EventId = 3001, EventName = "WakeFailed", Level = LogLevel.Error, Message = "Wake-up of run {RunId} failed; it is tried again when its lease expires")]
    private partial void LogWakeFailed(long runId, Exception exception);

    [LoggerMessage(EventId = 3002, EventName = "SchedulerFailed", Level = LogLevel.Error, Message = "The wake-up schedule could not be read")]
    private partial void LogSchedulerFailed(Exception exception);
}
