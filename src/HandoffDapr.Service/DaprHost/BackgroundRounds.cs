using System.Collections.Concurrent;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Service.Hosting;

namespace HandoffDapr.Service.DaprHost;

/// <summary>
/// Launch rounds and status polls started by a reminder's turn, and the calls a turn hands over when it saved and then
/// failed at the reminder (a trigger's or event's round, a poll's stops: see <c>HandoffRunActor.TurnAsync</c>). The turn
/// saves them as under way and ends; the provider calls run here, and the answers go back to the run's actor in a new
/// turn, so the actor answers other calls meanwhile.
/// If the answers cannot be delivered (the process stops, the sidecar is gone), the saved deadline (a launch's, or the
/// poll's lease) wakes the actor to reconcile or poll again.
/// </summary>
public sealed partial class BackgroundRounds(
    HandoffEngine engine,
    IRoundRecorder recorder,
    RequestDrain drain,
    ProviderCallCutoff cutoff,
    ILogger<BackgroundRounds> logger)
{
    private readonly ConcurrentDictionary<long, Task> running = new();
    private long started;

    /// <summary>
    /// Starts a wake-up's calls (or a handed-over trigger's or event's round, passed as one) without waiting for them;
    /// counted by the shutdown drain from this moment.
    /// </summary>
    public void Start(WakeOutcome woken) => Start(woken.State.RunId, token => engine.FinishWakeAsync(woken, recorder, token));

    /// <summary>
    /// Stops the agents a poll gave up on, for a poll whose recording turn saved and then failed: the repeat of that turn
    /// finds them given up on already and names none, so the poll's own caller would stop none.
    /// </summary>
    public void StartStops(long runId, PollVerdict verdict) => Start(runId, token => engine.StopGivenUpAsync(runId, verdict, token));

    private void Start(long runId, Func<CancellationToken, Task> calls)
    {
        var id = Interlocked.Increment(ref started);
        var call = drain.Enter();
        // Listed before it can run, so its own removal always comes after.
        var listed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        running[id] = Task.Run(async () =>
        {
            await listed.Task;
            await RunAsync(id, runId, calls, call);
        });
        listed.SetResult();
    }

    /// <summary>For tests: waits for the rounds started so far.</summary>
    internal Task WhenIdleAsync() => Task.WhenAll(running.Values);

    private async Task RunAsync(long id, long runId, Func<CancellationToken, Task> calls, IDisposable call)
    {
        try
        {
            // Shutdown stops the calls not answered within its grace; their answers (unknown) are still delivered while the sidecar is up.
            await calls(cutoff.Token);
        }
        catch (OperationCanceledException) when (cutoff.Token.IsCancellationRequested)
        {
            // Shutdown: the answers were recorded before the cancellation was passed on.
        }
        catch (Exception exception)
        {
            // Nobody awaits this task: whatever failed is logged (by type), and the deadline covers the launches.
            LogRoundNotRecorded(runId, (exception as RunOwnerUnavailableException)?.InnerException?.GetType().Name ?? exception.GetType().Name);
        }
        finally
        {
            call.Dispose();
            running.TryRemove(id, out _);
        }
    }

    [LoggerMessage(EventId = 4003, EventName = "LaunchRoundNotRecorded", Level = LogLevel.Warning,
        Message = "Run {RunId}: the answers of a launch round or poll made outside the actor's turn (a reminder's, or one a turn that failed at its reminder handed over) could not be recorded ({ExceptionType}); its launches are reconciled at their deadline, its poll made again")]
    private partial void LogRoundNotRecorded(long runId, string exceptionType);
}
