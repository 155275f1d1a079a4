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

    Task<CompletionOutcome> AcceptCompletedRunAsync(RunSnapshot snapshot, CancellationToken cancellationToken);

    Task<RunHandoffState?> GetAsync(long runId, CancellationToken cancellationToken);

    Task<AgentReportStatus> ApplyAgentReportAsync(long runId, AgentReport report, CancellationToken cancellationToken);

    Task<AgentCommandOutcome> StopAgentAsync(long runId, string agentId, CancellationToken cancellationToken);

    Task<AgentCommandOutcome> AddFollowupAsync(long runId, AgentFollowup followup, CancellationToken cancellationToken);
}

/// <summary>The owner could not reach its state (store, sidecar): the caller may try again.</summary>
public sealed class RunOwnerUnavailableException(string message, Exception? inner = null) : Exception(message, inner);
