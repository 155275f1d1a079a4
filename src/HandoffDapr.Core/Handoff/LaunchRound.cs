using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;

namespace HandoffDapr.Core.Handoff;

/// <summary>
/// Launches saved as in flight whose provider calls are still to be made. The run's owner makes the calls
/// (<see cref="HandoffEngine.FinishRoundAsync"/>) after it has let go of the run — its lock, or its actor turn — so a
/// slow provider never holds up a read, a webhook or a redelivery for the run; the answers come back to the engine in a
/// new turn (<see cref="HandoffEngine.CompleteRoundAsync"/>). A run has one round in flight at a time. If the answers
/// never come back (the process died), the launches' saved deadline makes the next wake-up reconcile them.
/// Crosses the actor boundary as JSON.
/// </summary>
/// <param name="Snapshot">The run as the prompt is built from it.</param>
/// <param name="StartedAt">Before the intent was saved: the calls must end by 90 % of the in-flight timeout from here.</param>
/// <param name="Plan">The trigger's answer, line by line, given again from the state after the round.</param>
public sealed record LaunchRound(
    long RunId,
    RunSnapshot Snapshot,
    DateTimeOffset StartedAt,
    IReadOnlyList<RoundLaunch> Launches,
    IReadOnlyList<PlanLine> Plan);

/// <param name="Launch">The launch as saved in flight; its answer is applied only while the saved one is still this attempt.</param>
/// <param name="ReconcileFirst">An earlier attempt may have created an agent: look for it before launching.</param>
/// <param name="IfNotFound">Set when only the lookup may be made: no agent found ends the launch with this failure type.</param>
public sealed record RoundLaunch(RepositoryLaunch Launch, bool ReconcileFirst, string? IfNotFound = null);

/// <summary>One repository's answer in a round: the agent launched or found, or why there is none.</summary>
public sealed record LaunchAttempt(ProviderAgent? Agent, ProviderFailure? Failure, bool Reconciled);

/// <summary>A round and its answers, in the round's order: one argument, as actor calls take.</summary>
public sealed record LaunchRoundAnswers(LaunchRound Round, IReadOnlyList<LaunchAttempt> Attempts);

/// <summary>
/// One line of a trigger's answer: a repository refused before any launch (<see cref="Refused"/>), or the launch whose
/// state the line reports (repository, integration and generation).
/// </summary>
public sealed record PlanLine(string? Repository, long IntegrationId, int Generation, LaunchFailure? Refused = null);

/// <summary>
/// A status poll taken out of the owner's turn, as a launch round is: the wake-up saves the poll as under way (its next
/// time moved to <see cref="LeaseUntil"/>, so a lost poll is made again then), the owner reads the agents, and the
/// reports are recorded in a new turn (<see cref="HandoffEngine.CompletePollAsync"/>).
/// </summary>
public sealed record PollRound(long RunId, DateTimeOffset StartedAt, DateTimeOffset LeaseUntil, IReadOnlyList<AgentRef> Agents);

/// <summary>An agent and the integration that launched it: enough to call its provider.</summary>
public sealed record AgentRef(string AgentId, long IntegrationId);

/// <summary>A poll and what the provider said of each agent, in the poll's order; null where the read failed.</summary>
public sealed record PollAnswers(PollRound Round, IReadOnlyList<ProviderAgent?> Reports)
{
    /// <summary>The reads were cut short by the caller (shutdown): not a quiet poll.</summary>
    public bool Interrupted { get; init; }
}

/// <summary>What the owner does after recording a poll: stop the agents it gave up on (best effort).</summary>
public sealed record PollVerdict(IReadOnlyList<AgentRef> ToStop);

/// <summary>
/// How a run's owner records, in a new turn (its lock taken again, or a new actor call), answers gathered after it let
/// go of the run.
/// </summary>
public interface IRoundRecorder
{
    Task<HandoffResult> RecordLaunchesAsync(LaunchRoundAnswers answers);

    Task<PollVerdict> RecordPollAsync(PollAnswers answers);

    Task<AgentCommandOutcome> RecordCommandAsync(AgentCommandSent sent);
}

/// <summary>
/// A stop (<see cref="Stop"/>) or a follow-up the provider accepted, to record in the run's turn; or, with
/// <see cref="OutcomeUnknown"/>, one that reached the provider without an answer saying whether it was carried out.
/// </summary>
/// <param name="CommandId">
/// Names this one command, so that a host whose record call may be made twice (daprd repeats a failed actor call, also
/// one whose turn had saved before it failed) records it once. Absent from a caller of an earlier release.
/// </param>
/// <param name="FollowupSeen">
/// When the run the command was checked against had last recorded a follow-up of the agent (null: none). A stop whose
/// run has recorded a later one since crossed that follow-up: which of the two the provider took last is unknown.
/// Absent from a caller of an earlier release, which is taken as having seen none.
/// </param>
public sealed record AgentCommandSent(long RunId, string AgentId, bool Stop, bool OutcomeUnknown = false, string? CommandId = null, DateTimeOffset? FollowupSeen = null);
