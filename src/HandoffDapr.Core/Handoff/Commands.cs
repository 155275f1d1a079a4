using System.Text.Json.Serialization;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Serialization;

namespace HandoffDapr.Core.Handoff;

/// <summary>A request to hand a run to an integration's agents: the manual trigger, or the automatic one.</summary>
/// <param name="Snapshot">A fresher snapshot of the run; when null, the stored one is used.</param>
public sealed record HandoffTrigger(
    long GroupId,
    long IntegrationId,
    string? Instruction = null,
    bool? AutoCreatePr = null,
    RunSnapshot? Snapshot = null);

/// <summary>When the provider calls of a handoff are made.</summary>
public enum LaunchTiming
{
    /// <summary>
    /// Within the call: the answer carries the agents (a manual trigger; also a completion event in Dapr mode, and in
    /// embedded mode with <c>Handoff:Embedded:LaunchEventsInBackground</c> off).
    /// </summary>
    Now,

    /// <summary>
    /// Saved as due, made by the run owner's next wake-up (an embedded-mode completion event by default, whose sender
    /// needs no agents).
    /// </summary>
    OnNextWake,
}

[JsonConverter(typeof(SnakeCaseEnumConverter<TriggerStatus>))]
public enum TriggerStatus
{
    Accepted,
    UnknownRun,
    UnknownIntegration,
    SnapshotMismatch,

    /// <summary>The run was deleted by retention (<see cref="DeletedRun"/>): nothing is launched for it again.</summary>
    RunDeleted,
}

/// <param name="Result">The answer; while <see cref="Round"/> is set, its launches are still in flight.</param>
public sealed record TriggerOutcome(TriggerStatus Status, HandoffResult Result)
{
    public static TriggerOutcome Rejected(TriggerStatus status) => new(status, HandoffResult.Empty);

    /// <summary>Launches saved in flight, for the run's owner to make once it has let go of the run.</summary>
    public LaunchRound? Round { get; init; }

    /// <summary>With <see cref="TriggerStatus.RunDeleted"/>: when the run was deleted, from its tombstone (the caller is told).</summary>
    public DateTimeOffset? DeletedAt { get; init; }
}

[JsonConverter(typeof(SnakeCaseEnumConverter<CompletionStatus>))]
public enum CompletionStatus
{
    /// <summary>Snapshot stored; the gate said no automatic handoff.</summary>
    Stored,

    /// <summary>Snapshot stored and the handoff triggered.</summary>
    HandedOff,

    /// <summary>The event can never succeed (another group's run, no group): drop it.</summary>
    Rejected,

    /// <summary>
    /// The run was deleted by retention (<see cref="DeletedRun"/>): the event (a late redelivery) is taken and ignored,
    /// as a duplicate is; nothing is stored or launched.
    /// </summary>
    RunDeleted,
}

public sealed record CompletionOutcome(CompletionStatus Status, string Reason, HandoffResult Result)
{
    /// <summary>Launches saved in flight, for the run's owner to make once it has let go of the run.</summary>
    public LaunchRound? Round { get; init; }
}

/// <summary>A wake-up's result: the state it saved, and the launch round and poll it started, for the owner to finish.</summary>
public sealed record WakeOutcome(RunHandoffState State, LaunchRound? Round, PollRound? Poll = null);


/// <summary>Persists a run's state. Each host's writer also schedules the owner's next wake-up at <see cref="RunHandoffState.NextWakeAt"/>.</summary>
public interface IRunStateWriter
{
    Task SaveAsync(RunHandoffState state, CancellationToken cancellationToken);
}

[JsonConverter(typeof(SnakeCaseEnumConverter<AgentReportStatus>))]
public enum AgentReportStatus
{
    UnknownAgent,
    Unchanged,
    Changed,

    /// <summary>The report names another repository than the one the agent was launched on: not applied.</summary>
    OtherRepository,
}

[JsonConverter(typeof(SnakeCaseEnumConverter<AgentCommandStatus>))]
public enum AgentCommandStatus
{
    Done,
    UnknownAgent,

    /// <summary>The run has the agent, but the integration that launched it is no longer configured: nothing can reach it.</summary>
    UnknownIntegration,
    ProviderFailed,

    /// <summary>The command may have reached the provider, and no answer said whether it was carried out: it may have been.</summary>
    OutcomeUnknown,
}

/// <param name="FailureType">Set when the provider refused or failed; never provider text.</param>
public sealed record AgentCommandOutcome(AgentCommandStatus Status, CodingAgentState? Agent = null, string? FailureType = null);

/// <summary>
/// A follow-up instruction for an agent: one still at work, or one that ended short of completing with a pull request
/// (completed without one, or failed, perhaps with one): it is then read again until it completes with one.
/// </summary>
public sealed record AgentFollowup(string AgentId, string Text);

/// <summary>
/// A provider's word on an agent, as it arrived: <see cref="IntegrationId"/> is the integration whose secret signed it,
/// <see cref="Repository"/> the <c>owner/name</c> the report names (an agent we do not know yet is adopted only on a match).
/// Plain text, as it crosses the actor boundary as JSON.
/// </summary>
public sealed record AgentReport(long IntegrationId, Providers.ProviderAgent Agent, string? Repository = null);
