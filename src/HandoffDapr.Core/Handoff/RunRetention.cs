using HandoffDapr.Core.Model;

namespace HandoffDapr.Core.Handoff;

/// <summary>
/// Deleting settled runs after <c>Handoff:RunRetention</c> (opt-in): which runs may go, and what is kept of one that went.
/// Both hosts ask here; embedded mode deletes rows by a sweep, Dapr mode gives a settled run's state keys a TTL.
/// </summary>
public static class RunRetention
{
    /// <summary>
    /// How long a <see cref="DeletedRun"/> is kept after its run went. A redelivery comes well within it: the pub/sub
    /// component keeps an undelivered event for a week (<c>streamTTL: 168h</c>), and a run goes at least an hour after
    /// it last changed, which the event's own handling did.
    /// </summary>
    public static readonly TimeSpan TombstoneLifetime = TimeSpan.FromDays(30);

    /// <summary>
    /// The run may be deleted: it is settled (<see cref="RunHandoffState.IsSettled"/>) and last changed at least
    /// <paramref name="retention"/> before <paramref name="now"/>.
    /// </summary>
    public static bool IsDue(RunHandoffState state, DateTimeOffset lastChangedAt, TimeSpan retention, DateTimeOffset now) =>
        state.IsSettled && lastChangedAt <= now - retention;

    /// <summary>
    /// A stop or follow-up to <paramref name="agentId"/> must save the run first (with retention on): the command goes to
    /// the provider outside the run's turn, and a settled run could be deleted meanwhile, its record then finding no run.
    /// Saved, the run counts as changed now. A run with something pending is never deleted, so it need not be saved.
    /// </summary>
    public static bool MustKeepForCommand([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] RunHandoffState? state, string agentId) =>
        state is { IsSettled: true } && state.CodingAgents.ContainsKey(agentId);
}

/// <summary>
/// What is kept of a run deleted by retention (a tombstone): its id, its group (so that another group's caller is
/// answered as for a run that never existed) and when it went. A later event, trigger or webhook for the run meets
/// it and launches nothing; it is itself dropped <see cref="RunRetention.TombstoneLifetime"/> after the run went.
/// </summary>
/// <param name="DeletedAt">When the run was deleted (Dapr mode: when its state keys expire).</param>
public sealed record DeletedRun(long RunId, long? GroupId, DateTimeOffset DeletedAt)
{
    /// <summary>A trigger for the run: refused as deleted, or as unknown when it names another group.</summary>
    public TriggerOutcome Answer(HandoffTrigger trigger) =>
        GroupId is { } group && group != trigger.GroupId
            ? TriggerOutcome.Rejected(TriggerStatus.UnknownRun)
            : TriggerOutcome.Rejected(TriggerStatus.RunDeleted) with { DeletedAt = DeletedAt };

    /// <summary>
    /// A completion event for the run (a late redelivery): ignored, never stored or launched; one of another group is
    /// rejected as it would be for a stored run.
    /// </summary>
    public CompletionOutcome Answer(RunSnapshot snapshot) =>
        GroupId is { } group && snapshot.GroupId is { } eventGroup && group != eventGroup
            ? new CompletionOutcome(CompletionStatus.Rejected, "the run belongs to another group", HandoffResult.Empty)
            : new CompletionOutcome(CompletionStatus.RunDeleted, "the run was deleted by retention", HandoffResult.Empty);
}
