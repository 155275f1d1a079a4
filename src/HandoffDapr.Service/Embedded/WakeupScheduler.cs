using System.Collections.Concurrent;
using System.Diagnostics;
using HandoffDapr.Service.Configuration;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Embedded;

/// <summary>
/// Embedded mode's replacement for actor reminders: polls the durable wake-up table, claims due rows with a
/// lease (so two processes on one file never run the same wake-up), and hands each run to its owner.
/// Runs overdue work right at start, so retries survive restarts, and at once when <see cref="WakeupSignal"/> says
/// work was just saved as due (a completion event's launches).
/// </summary>
public sealed partial class WakeupScheduler(
    SqliteRunStore store,
    EmbeddedRunOwner owner,
    WakeupSignal signal,
    Hosting.ProviderCallCutoff cutoff,
    IOptions<HandoffOptions> options,
    TimeProvider timeProvider,
    ILogger<WakeupScheduler> logger) : BackgroundService
{
    private const int BatchSize = 16;
    private readonly string leaseOwner = $"{Environment.MachineName}:{Environment.ProcessId}:{Guid.NewGuid():N}";
    // The runs this process is working on: their leases are renewed, and their count is the slots in use.
    private readonly ConcurrentDictionary<long, byte> working = new();

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var renewals = RenewLeasesAsync(stoppingToken);
        await PollAsync(stoppingToken);
        await renewals;
    }

    /// <summary>
    /// Stops claiming and waits for the runs in progress: their provider calls have the shutdown grace to answer
    /// (<see cref="EmbeddedOptions.ProviderCallGrace"/>), then a few seconds to record what they answered.
    /// </summary>
    public override async Task StopAsync(CancellationToken cancellationToken)
    {
        await base.StopAsync(cancellationToken);
        // Wall-clock, not the app's TimeProvider: shutdown is bounded in real time even under a test clock.
        var waited = Stopwatch.StartNew();
        var limit = options.Value.Embedded.ShutdownWait;
        while (!working.IsEmpty && waited.Elapsed < limit && !cancellationToken.IsCancellationRequested)
        {
            await Task.Delay(TimeSpan.FromMilliseconds(20), CancellationToken.None);
        }
    }

    /// <summary>
    /// Keeps the leases of the runs being worked on alive, so a lease can be short: when this process dies its
    /// claims lapse within one lease, and another process (or this one, restarted) takes the work over.
    /// </summary>
    private async Task RenewLeasesAsync(CancellationToken stoppingToken)
    {
        var lease = options.Value.Embedded.ScheduleLease;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(lease / 3, timeProvider, stoppingToken);
                if (!working.IsEmpty)
                {
                    await store.RenewLeasesAsync(leaseOwner, working.Keys.ToList(), timeProvider.GetUtcNow() + lease, stoppingToken);
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception exception)
            {
                LogSchedulerFailed(exception);
                // Whatever failed, do not retry in a tight loop.
                await Task.Delay(TimeSpan.FromSeconds(1), timeProvider, CancellationToken.None);
            }
        }
    }

    private async Task PollAsync(CancellationToken stoppingToken)
    {
        var interval = options.Value.Embedded.SchedulePollInterval;
        await PeriodicWork.RunAsync(DispatchDueAsync, token => signal.WaitAsync(interval, timeProvider, token), LogSchedulerFailed, stoppingToken);
    }

    /// <summary>
    /// Claims due wake-ups up to the free slots and starts each on its own, without waiting: a run whose provider is
    /// slow holds one slot, not the whole schedule. A run that finishes signals, so the next due ones are claimed.
    /// </summary>
    private async Task DispatchDueAsync(CancellationToken stoppingToken)
    {
        var capacity = options.Value.Embedded.MaxConcurrentWakeups;
        while (capacity - working.Count is var free and > 0)
        {
            var wanted = Math.Min(free, BatchSize);
            var claimed = await store.ClaimDueWakeupsAsync(leaseOwner, timeProvider.GetUtcNow(), options.Value.Embedded.ScheduleLease, wanted, stoppingToken, Busy());
            foreach (var runId in claimed)
            {
                // Taken before the run starts, so the next pass counts its slot.
                working.TryAdd(runId, 0);
                _ = Task.Run(async () =>
                {
                    await WakeClaimedAsync(runId, stoppingToken);
                    signal.Notify();
                }, CancellationToken.None);
            }

            if (claimed.Count < wanted)
            {
                return;
            }
        }
    }

    /// <summary>
    /// Runs not to claim: those this process is working on under an earlier claim, and those whose launch round a
    /// request started here is still out (<see cref="EmbeddedRunOwner.RunsWithRequestRounds"/>; they are signalled when it ends).
    /// </summary>
    private long[] Busy() => [.. working.Keys, .. owner.RunsWithRequestRounds];

    /// <summary>Runs every wake-up that is due now and waits for them; returns how many runs were woken.</summary>
    public async Task<int> RunDueAsync(CancellationToken cancellationToken)
    {
        var total = 0;
        while (true)
        {
            var claimed = await store.ClaimDueWakeupsAsync(leaseOwner, timeProvider.GetUtcNow(), options.Value.Embedded.ScheduleLease, BatchSize, cancellationToken, Busy());
            if (claimed.Count == 0)
            {
                return total;
            }

            await Task.WhenAll(claimed.Select(runId => WakeClaimedAsync(runId, cancellationToken)));
            total += claimed.Count;
        }
    }

    private async Task WakeClaimedAsync(long runId, CancellationToken cancellationToken)
    {
        working.TryAdd(runId, 0);
        var woken = false;
        try
        {
            await owner.WakeAsync(runId, cancellationToken);
            woken = true;
            await store.ReleaseWakeupAsync(runId, leaseOwner, CancellationToken.None);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested || cutoff.Token.IsCancellationRequested)
        {
            // Shutting down (the schedule stopped, or the provider calls' grace is over while requests still drain):
            // what was answered is recorded, and the lease lapses for whoever runs next to reconcile the rest.
        }
        catch (Exception exception) when (woken)
        {
            // What the wake-up did is saved; only its claim stays, so the next wake-up it saved waits for the claim to lapse.
            LogWakeupNotReleased(runId, exception);
        }
        catch (Exception exception)
        {
            // The lease is kept, no longer renewed: the run is tried again when it lapses, not on every poll.
            LogWakeFailed(runId, exception);
        }
        finally
        {
            working.TryRemove(runId, out _);
        }
    }

    [LoggerMessage(EventId = 3001, EventName = "WakeFailed", Level = LogLevel.Error, Message = "Wake-up of run {RunId} failed; it is tried again when its lease expires")]
    private partial void LogWakeFailed(long runId, Exception exception);

    [LoggerMessage(EventId = 3009, EventName = "WakeupNotReleased", Level = LogLevel.Warning, Message = "Run {RunId} was woken, but its claim on the wake-up could not be released; its next wake-up waits until the claim lapses")]
    private partial void LogWakeupNotReleased(long runId, Exception exception);

    [LoggerMessage(EventId = 3002, EventName = "SchedulerFailed", Level = LogLevel.Error, Message = "The wake-up schedule could not be read, or its leases renewed")]
    private partial void LogSchedulerFailed(Exception exception);
}
