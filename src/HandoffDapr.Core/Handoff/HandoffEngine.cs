using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Repositories;
using Microsoft.Extensions.Logging;

namespace HandoffDapr.Core.Handoff;

/// <summary>
/// The handoff's decisions, for both hosts. A host owns one run at a time (actor turn or in-process lock), loads its
/// state, calls one method here, and lets the engine save through <see cref="IRunStateWriter"/>. Launches and polls
/// are saved as under way before any provider call (so a crash leaves a trace to reconcile from) and handed back as a
/// <see cref="LaunchRound"/> or <see cref="PollRound"/>: the host makes the calls once it has let go of the run
/// (<see cref="FinishRoundAsync"/>, <see cref="FinishPollAsync"/>), and gives the answers back in a turn of their own
/// (<see cref="CompleteRoundAsync"/>, <see cref="CompletePollAsync"/>), which saves the outcome.
/// <para>
/// This file holds the entry points a host calls for a trigger, a completion event and a wake-up; the rest of the class
/// is split by concern: <c>HandoffEngine.Launches.cs</c> (plans and launch rounds), <c>HandoffEngine.AgentStatus.cs</c>
/// (polls, webhooks, maximum age), <c>HandoffEngine.AgentCommands.cs</c> (stop, follow-up) and
/// <c>HandoffEngine.Logging.cs</c>.
/// </para>
/// </summary>
public sealed partial class HandoffEngine(
    IIntegrationCatalog integrations,
    HandoffEngineOptions options,
    RetryPolicy retryPolicy,
    TimeProvider timeProvider,
    ILogger<HandoffEngine> logger)
{
    public Task<TriggerOutcome> TriggerAsync(long runId, RunHandoffState? stored, HandoffTrigger trigger, IRunStateWriter writer, CancellationToken cancellationToken) =>
        TriggerAsync(runId, stored, trigger, writer, LaunchTiming.Now, relaunchFailed: true, cancellationToken);

    /// <param name="relaunchFailed">
    /// A person's trigger launches failed repositories again; a completion event does not, because a redelivery of the
    /// same event (pub/sub delivers at least once, sometimes minutes later) would otherwise start a second agent.
    /// </param>
    private async Task<TriggerOutcome> TriggerAsync(
        long runId, RunHandoffState? stored, HandoffTrigger trigger, IRunStateWriter writer, LaunchTiming timing, bool relaunchFailed,
        CancellationToken cancellationToken)
    {
        // A run answers only to its own group: another group's request gets the same answer as an unknown run.
        if (stored?.GroupId is { } storedGroup && storedGroup != trigger.GroupId)
        {
            LogGroupMismatch(runId, trigger.GroupId);
            return TriggerOutcome.Rejected(TriggerStatus.UnknownRun);
        }

        if (trigger.Snapshot is { } fresh && fresh.RunId != runId)
        {
            return TriggerOutcome.Rejected(TriggerStatus.SnapshotMismatch);
        }

        var snapshot = trigger.Snapshot is { } given ? SnapshotToKeep(given, stored, redelivery: false) : stored?.Snapshot;
        if (snapshot is null || snapshot.GroupId != trigger.GroupId)
        {
            LogUnknownRun(runId, trigger.GroupId);
            return TriggerOutcome.Rejected(TriggerStatus.UnknownRun);
        }

        if (integrations.Find(trigger.IntegrationId) is not { } integration)
        {
            return TriggerOutcome.Rejected(TriggerStatus.UnknownIntegration);
        }

        var state = (stored ?? RunHandoffState.New(runId)).WithSnapshot(snapshot);
        var now = timeProvider.GetUtcNow();
        var autoCreatePr = trigger.AutoCreatePr ?? integration.AutoCreatePrDefault;
        var (plan, toLaunch) = Plan(state, snapshot, integration, trigger.Instruction, autoCreatePr, relaunchFailed, now);
        // These are in the trigger's answer but not in the stored state; for an event this line is all an operator gets.
        // Written once the turn is saved (or found nothing to save), so a turn decided again writes them once.
        var refusals = new TurnMeasurements();
        foreach (var refused in plan.Select(line => line.Refused).OfType<LaunchFailure>())
        {
            // The refusal's own message says which part was refused (name, host, base branch): an event stores nothing else.
            refusals.Log(() => LogRepositoryNotLaunched(runId, refused.RepoName ?? "(none)", refused.FailureType, refused.ErrorMessage));
        }

        if (toLaunch.Count == 0)
        {
            if (stored is null || !ReferenceEquals(stored.Snapshot, snapshot))
            {
                await writer.SaveAsync(state, cancellationToken);
            }

            refusals.Publish();
            return new TriggerOutcome(TriggerStatus.Accepted, Summarize(state, plan));
        }

        if (timing == LaunchTiming.OnNextWake || state.HasRoundInFlight(now))
        {
            // Saved as due now: the owner's next wake-up launches them, and a crash before then loses nothing. While
            // another round is at the provider they wait for it: one round in flight per run.
            state = toLaunch.Aggregate(state, (current, launch) => current.WithLaunch(launch))
                .WithTimeline(toLaunch.Select(launch => new TimelineEntry(now, TimelineEvents.LaunchScheduled, launch.Repository)));
            await writer.SaveAsync(state, cancellationToken);
            refusals.Publish();
            return new TriggerOutcome(TriggerStatus.Accepted, Summarize(state, plan));
        }

        // A relaunch still within the Retry-After of its last attempt waits for it, saved for the wake-up then.
        var later = toLaunch.Where(launch => launch.NextAttemptAt > now).ToList();
        state = later.Aggregate(state, (current, launch) => current.WithLaunch(launch))
            .WithTimeline(later.Select(launch => new TimelineEntry(now, TimelineEvents.LaunchScheduled, launch.Repository)));
        var (started, round) = await StartRoundAsync(state, toLaunch.Except(later).ToList(), plan, writer, cancellationToken);
        refusals.Publish();
        return new TriggerOutcome(TriggerStatus.Accepted, Summarize(started, plan)) { Round = round };
    }

    /// <summary>
    /// The snapshot a run keeps when given <paramref name="incoming"/> (an event's, or a trigger's <c>run</c>): the stored
    /// one when it says the same (nothing to write), or when incoming is of an earlier step (the root cause's, after the
    /// solution's: an event out of order, or a caller's copy from before the solution's event). And, for an event that
    /// may be a redelivery, when the run held incoming before and replaced it: events carry no order, so it is a late
    /// one. A person's trigger is not redelivered: what its caller sends of the same step is the run as it is now.
    /// </summary>
    private static RunSnapshot SnapshotToKeep(RunSnapshot incoming, RunHandoffState? stored, bool redelivery) =>
        stored?.Snapshot is { } known
            && (RunSnapshot.SameContent(incoming, known) || AutomationGate.IsEarlierStep(incoming, known) || (redelivery && stored.Replaced(incoming)))
            ? known
            : incoming;

    /// <summary>A "run completed" event: keep its snapshot, and hand off when the automation gate says so.</summary>
    /// <param name="timing">
    /// <see cref="LaunchTiming.OnNextWake"/> answers once the launches are saved as due, and leaves the provider calls to
    /// the owner's wake-up: the event's sender does not wait for the provider.
    /// </param>
    public async Task<CompletionOutcome> AcceptCompletedRunAsync(
        RunHandoffState? stored, RunSnapshot snapshot, IRunStateWriter writer, LaunchTiming timing, CancellationToken cancellationToken)
    {
        if (snapshot.GroupId is not { } groupId)
        {
            return new CompletionOutcome(CompletionStatus.Rejected, "the run has no group", HandoffResult.Empty);
        }

        if (stored?.GroupId is { } storedGroup && storedGroup != groupId)
        {
            return new CompletionOutcome(CompletionStatus.Rejected, "the run belongs to another group", HandoffResult.Empty);
        }

        // Out of order (the root cause's event after the solution's, or a late redelivery of an event the run has moved
        // past): its verdict still counts (the root cause completing is what hands off), but the stored snapshot is kept.
        var current = SnapshotToKeep(snapshot, stored, redelivery: true);
        RunHandoffState KeepingSnapshot() => (stored ?? RunHandoffState.New(snapshot.RunId)).WithSnapshot(current);
        var verdict = AutomationGate.Evaluate(snapshot);
        if (verdict != GateVerdict.Launch)
        {
            if (stored?.Snapshot is not { } kept || !RunSnapshot.SameContent(kept, current))
            {
                await writer.SaveAsync(KeepingSnapshot(), cancellationToken);
            }

            return new CompletionOutcome(CompletionStatus.Stored, AutomationGate.Describe(verdict), HandoffResult.Empty);
        }

        var handoff = snapshot.Preferences!.AutomationHandoff!;
        // Written once the snapshot is saved, so an event decided again warns once.
        var warned = new TurnMeasurements();
        if (integrations.Find(handoff.IntegrationId!.Value) is { } integration && NamesAnotherProvider(handoff, integration))
        {
            var target = RepositoryName.DescribeRejected(handoff.Target!);
            warned.Log(() => LogTargetMismatch(snapshot.RunId, handoff.IntegrationId.Value, target, integration.Provider.ProviderName));
            await writer.SaveAsync(KeepingSnapshot(), cancellationToken);
            warned.Publish();
            return new CompletionOutcome(CompletionStatus.Stored, "automation_handoff.target is not the integration's provider", HandoffResult.Empty);
        }

        var trigger = new HandoffTrigger(groupId, handoff.IntegrationId!.Value, Instruction: null, AutoCreatePr: handoff.AutoCreatePr ?? false, Snapshot: current);
        var outcome = await TriggerAsync(snapshot.RunId, stored, trigger, writer, timing, relaunchFailed: false, cancellationToken);
        if (outcome.Status == TriggerStatus.UnknownIntegration)
        {
            // Not the event's fault: keep the snapshot so a manual trigger can still hand it off.
            warned.Log(() => LogUnknownIntegration(snapshot.RunId, handoff.IntegrationId.Value));
            await writer.SaveAsync(KeepingSnapshot(), cancellationToken);
            warned.Publish();
            return new CompletionOutcome(CompletionStatus.Stored, "automation_handoff.integration_id is not configured", HandoffResult.Empty);
        }

        return new CompletionOutcome(CompletionStatus.HandedOff, AutomationGate.Describe(verdict), outcome.Result) { Round = outcome.Round };
    }

    /// <summary>
    /// Whether a completion event carrying <paramref name="state"/>'s own snapshot again would change nothing: no save,
    /// no launch (<see cref="AcceptCompletedRunAsync"/> would take the same branches). A host may then answer such a
    /// redelivery without loading the run. It holds for this process's settings only (the integrations and the
    /// repository cap decide it too), and only until the state changes.
    /// </summary>
    public bool WouldIgnoreRedelivery(RunHandoffState state)
    {
        if (state.Snapshot is not { GroupId: not null } snapshot)
        {
            return false;
        }

        // The gate says no: an identical snapshot is not saved again.
        if (AutomationGate.Evaluate(snapshot) != GateVerdict.Launch)
        {
            return true;
        }

        // An unknown integration or a mismatched target saves and warns on every delivery.
        var handoff = snapshot.Preferences!.AutomationHandoff!;
        if (integrations.Find(handoff.IntegrationId!.Value) is not { } integration || NamesAnotherProvider(handoff, integration))
        {
            return false;
        }

        var (_, toLaunch) = Plan(state, snapshot, integration, instruction: null, handoff.AutoCreatePr ?? false, relaunchFailed: false, timeProvider.GetUtcNow());
        return toLaunch.Count == 0;
    }

    /// <summary>
    /// The owner's wake-up (reminder or schedule): retries and reconciliations that are due, and the status poll. Both
    /// are saved as under way and returned for the owner to finish outside its turn (<see cref="FinishWakeAsync"/>).
    /// Due launches wait while another launch round is in flight.
    /// </summary>
    public async Task<WakeOutcome> WakeAsync(RunHandoffState state, IRunStateWriter writer, CancellationToken cancellationToken)
    {
        var now = timeProvider.GetUtcNow();
        PollRound? poll = null;
        if (state.HasAgentsToPoll && state.Poll?.NextPollAt <= now)
        {
            (state, poll) = StartPoll(state, now);
        }

        var due = state.HasRoundInFlight(now) ? [] : state.Launches.Where(launch => launch.IsAwaitingWork && launch.NextAttemptAt <= now).ToList();
        if (due.Count == 0)
        {
            // With nothing due (a reminder fired early or twice) the save makes sure the next wake-up is still scheduled.
            await writer.SaveAsync(state, cancellationToken);
            return new WakeOutcome(state, null, poll);
        }

        // A relaunch still waiting for its first answer whose earlier agent has since finished after all: launching
        // it would put a second agent, and a second pull request, on the repository. And a launch whose process died
        // during every attempt, its last lookup included (see LookOnly): no call is left to make.
        var ended = due.Select(launch => (Launch: launch, FailureType: IsSuperseded(state, launch) ? FailureTypes.Superseded
                : launch.NeedsReconciliation && launch.Attempts > retryPolicy.Options.MaxAttempts ? FailureTypes.RetriesExhausted
                : null))
            .Where(ending => ending.FailureType is not null)
            .ToList();
        // Written once the wake-up is saved, so a wake-up decided again writes them once.
        var counted = new TurnMeasurements();
        foreach (var (launch, failureType) in ended)
        {
            counted.Log(() => LogRepositoryNotLaunched(state.RunId, launch.Repository, failureType!,
                failureType == FailureTypes.Superseded ? "the agent it was to replace finished after all" : "its attempts are used up and no agent of it was found"));
            state = FailedWithoutCall(state, launch, failureType!, now, counted);
        }

        due = due.Except(ended.Select(ending => ending.Launch)).ToList();
        // An integration taken out of the settings: failed, counted and in the timeline as when it goes missing during a round.
        var missing = due.Where(launch => integrations.Find(launch.IntegrationId) is null).ToList();
        foreach (var launch in missing)
        {
            counted.Log(() => LogUnknownIntegration(state.RunId, launch.IntegrationId));
            state = FailedWithoutCall(state, launch, FailureTypes.InvalidRequest, now, counted);
        }

        var (started, round) = await StartRoundAsync(state, due.Except(missing).ToList(), [], writer, cancellationToken);
        counted.Publish();
        return new WakeOutcome(started, round, poll);
    }

    /// <summary>
    /// A launch a wake-up ends without calling the provider: failed, in the timeline and counted as when a round ends it
    /// (see LookOnly). An agent may exist if the launch was still to be reconciled, which a manual relaunch then looks for.
    /// </summary>
    private static RunHandoffState FailedWithoutCall(RunHandoffState state, RepositoryLaunch launch, string failureType, DateTimeOffset now, TurnMeasurements counted)
    {
        counted.Count(HandoffTelemetry.Launches, Tag("outcome", "failed"), Tag("failure_type", failureType));
        return state.WithLaunch(launch with { Phase = LaunchPhase.Failed, FailureType = failureType, NextAttemptAt = null, UpdatedAt = now, OutcomeUnknown = launch.NeedsReconciliation })
            .WithTimeline([new TimelineEntry(now, TimelineEvents.LaunchFailed, launch.Repository, Detail: failureType)]);
    }

    /// <summary>The second half of a wake-up, outside the owner's turn: its launch round and its poll, side by side.</summary>
    public async Task FinishWakeAsync(WakeOutcome woken, IRoundRecorder recorder, CancellationToken cancellationToken)
    {
        var launches = woken.Round is { } round ? FinishRoundAsync(round, recorder, cancellationToken) : Task.CompletedTask;
        var poll = woken.Poll is { } reads ? FinishPollAsync(reads, recorder, cancellationToken) : Task.CompletedTask;
        await Task.WhenAll(launches, poll);
    }

    /// <summary>
    /// Every log line written while the run's provider calls are under way (the provider clients' own included)
    /// carries its <c>RunId</c> as a scope, so a provider's error answer can be traced to its run.
    /// </summary>
    // A message template, not a dictionary: a scope is also written as text (the JSON console's Scopes[].Message, the
    // plain console with scopes on), and a dictionary's text is its type name.
    private IDisposable? BeginRunScope(long runId) => logger.BeginScope("Run {RunId}", runId);

    /// <summary>
    /// A later generation that has no agent and cannot have one (nothing sent may have created it), while an earlier
    /// generation's agent for the same repository and integration is no longer failed.
    /// </summary>
    private static bool IsSuperseded(RunHandoffState state, RepositoryLaunch launch) =>
        launch is { AgentId: null, NeedsReconciliation: false }
        && state.LaunchWithLiveAgent(launch.Repository, launch.IntegrationId) is { } live
        && live.Generation < launch.Generation;

    /// <summary>The preference names the agent it wants: an integration of another kind would hand off somewhere unexpected.</summary>
    private static bool NamesAnotherProvider(AutomationHandoff handoff, Integration integration) =>
        handoff.Target is { Length: > 0 } target && !string.Equals(target, integration.Provider.ProviderName, StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// A round's time, from the moment its intent was saved: its answers must be recorded before the saved deadline
    /// (90 % of the in-flight timeout leaves room for that), or an owner that finds the intent takes it for a crash.
    /// Also ends when the caller gives up.
    /// </summary>
    private sealed class RoundBudget : IDisposable
    {
        private readonly CancellationTokenSource deadline;
        private readonly CancellationTokenSource linked;

        public RoundBudget(DateTimeOffset startedAt, TimeSpan inFlightTimeout, TimeProvider timeProvider, CancellationToken cancellationToken)
        {
            // The start was read on the clock of whoever saved the intent (in Dapr mode maybe another replica): a clock
            // behind it must not stretch the time, so the budget never exceeds 90 % of the timeout from now.
            var now = timeProvider.GetUtcNow();
            var remaining = (startedAt < now ? startedAt : now) + inFlightTimeout * 0.9 - now;
            // On the app's clock, so tests with a fake clock see the same deadline.
            deadline = remaining > TimeSpan.Zero ? new CancellationTokenSource(remaining, timeProvider) : new CancellationTokenSource();
            if (remaining <= TimeSpan.Zero)
            {
                deadline.Cancel();
            }

            linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, deadline.Token);
        }

        public CancellationToken Token => linked.Token;

        public bool IsCancellationRequested => linked.IsCancellationRequested;

        public void Dispose()
        {
            linked.Dispose();
            deadline.Dispose();
        }
    }

    private static KeyValuePair<string, object?> Tag(string name, object? value) => new($"handoff.{name}", value);

    internal static CodingAgentStatus? ToAgentStatus(ProviderAgentStatus status) => status switch
    {
        ProviderAgentStatus.Creating => CodingAgentStatus.Pending,
        ProviderAgentStatus.Running => CodingAgentStatus.Running,
        ProviderAgentStatus.Finished => CodingAgentStatus.Completed,
        ProviderAgentStatus.Error or ProviderAgentStatus.Expired or ProviderAgentStatus.Stopped => CodingAgentStatus.Failed,
        _ => null,
    };
}
