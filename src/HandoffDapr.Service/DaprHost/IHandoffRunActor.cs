using Dapr.Actors;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;

namespace HandoffDapr.Service.DaprHost;

/// <summary>One actor per autofix run (actor id = run id). Each method takes at most one argument: JSON actor calls allow no more.</summary>
public interface IHandoffRunActor : IActor
{
    Task<TriggerOutcome> TriggerAsync(HandoffTrigger trigger);

    Task<CompletionOutcome> AcceptCompletedRunAsync(RunSnapshot snapshot);

    Task<RunHandoffState?> GetStateAsync();

    /// <summary>
    /// The run a stop or follow-up to <paramref name="agent"/> (one word: the SDK sends the argument under its name, in the actor JSON's snake case) is checked against (sent by <see cref="ActorRunOwner"/>,
    /// outside any turn). With retention on, a settled run that has the agent is saved as it is first, so its keys' TTL
    /// starts again: it cannot expire while the provider has the command, whose record would find it deleted.
    /// </summary>
    Task<RunHandoffState?> GetStateForCommandAsync(string agent);

    /// <summary>The run's tombstone once retention deleted it (its deleted_at has passed, or its state expired); null otherwise.</summary>
    Task<DeletedRun?> GetDeletedAsync();

    Task<AgentReportStatus> ApplyAgentReportAsync(AgentReport report);

    /// <summary>Records a stop or follow-up the provider accepted (sent by <see cref="ActorRunOwner"/>, outside any turn).</summary>
    Task<AgentCommandOutcome> RecordAgentCommandAsync(AgentCommandSent sent);

    /// <summary>Records the answers of a launch round this actor started (see <see cref="LaunchRound"/>).</summary>
    Task<HandoffResult> CompleteLaunchRoundAsync(LaunchRoundAnswers answers);

    /// <summary>Records the reports of a status poll this actor started (see <see cref="PollRound"/>).</summary>
    Task<PollVerdict> CompletePollAsync(PollAnswers answers);
}
