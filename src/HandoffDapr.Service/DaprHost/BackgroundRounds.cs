using System.Collections.Concurrent;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Service.Hosting;

namespace HandoffDapr.Service.DaprHost;

/// <summary>
/// Launch rounds started by a reminder's turn. The turn saves the intent and ends; the provider calls run here, and the
/// answers go back to the run's actor in a new turn, so the actor answers other calls meanwhile. If the answers cannot
/// be delivered (the process stops, the sidecar is gone), the launches' saved deadline wakes the actor to reconcile them.
/// </summary>
public sealed partial class BackgroundRounds(
    HandoffEngine engine,
    Func<LaunchRoundAnswers, Task<HandoffResult>> complete,
    ActorCallDrain drain,
    IHostApplicationLifetime lifetime,
    ILogger<BackgroundRounds> logger)
{
    private readonly ConcurrentDictionary<long, Task> running = new();
    private long started;

    /// <summary>Starts the round's calls without waiting for them; counted by the shutdown drain from this moment.</summary>
    public void Start(LaunchRound round)
    {
        var id = Interlocked.Increment(ref started);
        var call = drain.Enter();
        var task = Task.Run(() => RunAsync(id, round, call));
        running[id] = task;
        if (task.IsCompleted)
        {
            running.TryRemove(id, out _);
        }
    }

    /// <summary>For tests: waits for the rounds started so far.</summary>
    internal Task WhenIdleAsync() => Task.WhenAll(running.Values);

    private async Task RunAsync(long id, LaunchRound round, IDisposable call)
    {
        try
        {
            // Shutdown stops the calls not yet answered; their answers (unknown) are still delivered while the sidecar is up.
            await engine.FinishRoundAsync(round, complete, lifetime.ApplicationStopping);
        }
        catch (OperationCanceledException) when (lifetime.ApplicationStopping.IsCancellationRequested)
        {
            // Shutdown: the answers were recorded before the cancellation was passed on.
        }
        catch (Exception exception)
        {
            // Nobody awaits this task: whatever failed is logged (by type), and the deadline covers the launches.
            LogRoundNotRecorded(round.RunId, (exception as RunOwnerUnavailableException)?.InnerException?.GetType().Name ?? exception.GetType().Name);
        }
        finally
        {
            call.Dispose();
            running.TryRemove(id, out _);
        }
    }

    [LoggerMessage(EventId = 4003, EventName = "LaunchRoundNotRecorded", Level = LogLevel.Warning,
        Message = "Run {RunId}: the answers of a launch round could not be recorded ({ExceptionType}); its launches are reconciled at their deadline")]
    private partial void LogRoundNotRecorded(long runId, string exceptionType);
}
