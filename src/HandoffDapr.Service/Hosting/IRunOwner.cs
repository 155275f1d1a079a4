using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;

namespace HandoffDapr.Service.Hosting;

/// <summary>
/// The one owner of each run: the Dapr actor in Dapr mode, a per-run lock over SQLite in embedded mode.
/// Endpoints talk only to this; every decision is the engine's.
/// </summary>
public interface IRunOwner
{
    Task<TriggerOutcome> TriggerAsync(long runId, HandoffTrigger trigger, CancellationToken cancellationToken);

    /// <summary>
    /// The run whose completion event had exactly these data bytes, when handling them again would change nothing (a
    /// redelivery); null when that is not known, and the event goes the long way. <paramref name="digest"/> goes with
    /// it, so that the run can remember the event. Embedded mode keeps such digests; the Dapr owner keeps none (always
    /// null), so every event goes to its actor.
    /// </summary>
    long? FindRepeatedEvent(ReadOnlySpan<byte> eventData, out byte[]? digest);

    /// <param name="eventDigest">From <see cref="FindRepeatedEvent"/>, when the owner keeps digests.</param>
    Task<CompletionOutcome> AcceptCompletedRunAsync(RunSnapshot snapshot, byte[]? eventDigest, CancellationToken cancellationToken);

    Task<RunHandoffState?> GetAsync(long runId, CancellationToken cancellationToken);

    /// <summary>For a run <see cref="GetAsync"/> does not find: its tombstone, when retention deleted it; else null.</summary>
    Task<DeletedRun?> FindDeletedAsync(long runId, CancellationToken cancellationToken);

    /// <summary>
    /// The run's view as stored with its latest state, ready to send; null when the owner keeps none for it (the caller
    /// then builds it from <see cref="GetAsync"/>). Embedded mode stores one with every save; the Dapr owner keeps none.
    /// </summary>
    Task<StoredView?> GetStoredViewAsync(long runId, CancellationToken cancellationToken);

    Task<AgentReportStatus> ApplyAgentReportAsync(long runId, AgentReport report, CancellationToken cancellationToken);

    Task<AgentCommandOutcome> StopAgentAsync(long runId, string agentId, CancellationToken cancellationToken);

    Task<AgentCommandOutcome> AddFollowupAsync(long runId, AgentFollowup followup, CancellationToken cancellationToken);
}

/// <summary>A run's view as stored with its latest state: the group it answers to, and the JSON the API sends.</summary>
public sealed record StoredView(long? GroupId, byte[] Json);

/// <summary>The owner could not reach its state (store, sidecar), or the service is stopping: the caller may try again.</summary>
public sealed class RunOwnerUnavailableException(string message, Exception? inner = null) : Exception(message, inner)
{
    /// <summary>The service is stopping (not a store or sidecar fault): the answer says so.</summary>
    public bool ShuttingDown { get; private init; }

    /// <summary>
    /// The run's stored state was read but cannot be used (damaged, or edited by hand): unlike a store out of reach,
    /// sending the request again does not help until an operator restores or deletes it, and the answer says so.
    /// </summary>
    public bool DamagedState { get; init; }

    /// <summary>
    /// Why, on one line, when the cause is a state the runbook describes rather than a fault (a damaged state, a
    /// shutdown): logged without a stack trace. Null for a fault, whose exception is logged.
    /// </summary>
    public string? KnownCause => this switch
    {
        { DamagedState: true, InnerException: UnreadableRunStateException damaged } =>
            $"its stored state cannot be used ({damaged.Reason}): refused until it is restored or deleted",
        // Dapr mode: the actor logged the reason (ActorTurnFailed); its answer carries none.
        { DamagedState: true } => "its stored state cannot be used (the actor's ActorTurnFailed line says why): refused until it is restored or deleted",
        { ShuttingDown: true } => "the service is shutting down",
        _ => null,
    };

    /// <summary>
    /// Runs provider calls that stop only for shutdown (<paramref name="stopping"/>), never because the caller went away
    /// (what was sent must be recorded): the caller may try again, elsewhere or later. A cancellation that does not come
    /// from <paramref name="stopping"/> is unexpected, and is reported as a fault, with its stack.
    /// </summary>
    public static async Task<T> WhenStoppedAsync<T>(Func<Task<T>> work, CancellationToken stopping)
    {
        try
        {
            return await work();
        }
        catch (OperationCanceledException exception)
        {
            var shuttingDown = stopping.IsCancellationRequested;
            throw new RunOwnerUnavailableException(shuttingDown ? "The service is shutting down." : "A provider call was cancelled, not by shutdown.", exception)
            {
                ShuttingDown = shuttingDown,
            };
        }
    }
}
