using System.Diagnostics;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Prompts;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Repositories;
using Microsoft.Extensions.Logging;

namespace HandoffDapr.Core.Handoff;

/// <summary>
/// The handoff's decisions, for both hosts. A host owns one run at a time (actor turn or in-process lock),
/// loads its state, calls one method here, and lets the engine save through <see cref="IRunStateWriter"/>:
/// once to record the intent before any provider call (so a crash leaves a trace to reconcile from),
/// once with the outcome.
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

        // A redelivered snapshot identical to the stored one keeps the stored instance: nothing to write.
        var snapshot = trigger.Snapshot is { } given && stored?.Snapshot is { } kept && RunSnapshot.SameContent(given, kept) ? kept : trigger.Snapshot ?? stored?.Snapshot;
        if (snapshot is null || snapshot.GroupId != trigger.GroupId)
        {
            LogUnknownRun(runId, trigger.GroupId);
            return TriggerOutcome.Rejected(TriggerStatus.UnknownRun);
        }

        if (integrations.Find(trigger.IntegrationId) is not { } integration)
        {
            return TriggerOutcome.Rejected(TriggerStatus.UnknownIntegration);
        }

        var state = (stored ?? RunHandoffState.New(runId)) with { Snapshot = snapshot };
        var now = timeProvider.GetUtcNow();
        var autoCreatePr = trigger.AutoCreatePr ?? integration.AutoCreatePrDefault;
        var (plan, toLaunch) = Plan(state, snapshot, integration, trigger.Instruction, autoCreatePr, relaunchFailed, now);
        // These are in the trigger's answer but not in the stored state; for an event this line is all an operator gets.
        // Written once the turn is saved (or found nothing to save), so a turn decided again writes them once.
        var refusals = new TurnMeasurements();
        foreach (var refused in plan.Select(line => line.Refused).OfType<LaunchFailure>())
        {
            refusals.Log(() => LogRepositoryNotLaunched(runId, refused.RepoName ?? "(none)", refused.FailureType));
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

        var (started, round) = await StartRoundAsync(state, toLaunch, plan, writer, cancellationToken);
        refusals.Publish();
        return new TriggerOutcome(TriggerStatus.Accepted, Summarize(started, plan)) { Round = round };
    }

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

        // Out of order: the root cause's event after the solution's. Its verdict still counts (the root cause completing is
        // what hands off), but the stored snapshot, which knows more, is kept and used.
        var current = stored?.Snapshot is { } known && AutomationGate.IsEarlierStep(snapshot, known) ? known : snapshot;
        RunHandoffState KeepingSnapshot() => (stored ?? RunHandoffState.New(snapshot.RunId)) with { Snapshot = current };
        var verdict = AutomationGate.Evaluate(snapshot);
        if (verdict != GateVerdict.Launch)
        {
            if (stored?.Snapshot is not { } kept || !RunSnapshot.SameContent(kept, current))
            {
                await writer.SaveAsync(KeepingSnapshot(), cancellationToken);
            }

            return new CompletionOutcome(CompletionStatus.Stored, verdict.ToString(), HandoffResult.Empty);
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
            return new CompletionOutcome(CompletionStatus.Stored, "target does not match the integration", HandoffResult.Empty);
        }

        var trigger = new HandoffTrigger(groupId, handoff.IntegrationId!.Value, Instruction: null, AutoCreatePr: handoff.AutoCreatePr ?? false, Snapshot: current);
        var outcome = await TriggerAsync(snapshot.RunId, stored, trigger, writer, timing, relaunchFailed: false, cancellationToken);
        if (outcome.Status == TriggerStatus.UnknownIntegration)
        {
            // Not the event's fault: keep the snapshot so a manual trigger can still hand it off.
            warned.Log(() => LogUnknownIntegration(snapshot.RunId, handoff.IntegrationId.Value));
            await writer.SaveAsync(KeepingSnapshot(), cancellationToken);
            warned.Publish();
            return new CompletionOutcome(CompletionStatus.Stored, "unknown integration", HandoffResult.Empty);
        }

        return new CompletionOutcome(CompletionStatus.HandedOff, verdict.ToString(), outcome.Result) { Round = outcome.Round };
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
            counted.Log(() => LogRepositoryNotLaunched(state.RunId, launch.Repository, failureType!));
            state = state.WithLaunch(launch with { Phase = LaunchPhase.Failed, FailureType = failureType, NextAttemptAt = null, UpdatedAt = now })
                .WithTimeline([new TimelineEntry(now, TimelineEvents.LaunchFailed, launch.Repository, Detail: failureType)]);
        }

        due = due.Except(ended.Select(ending => ending.Launch)).ToList();
        // An integration taken out of the settings: failed, counted and in the timeline as when it goes missing during a round.
        var missing = due.Where(launch => integrations.Find(launch.IntegrationId) is null).ToList();
        foreach (var launch in missing)
        {
            counted.Log(() => LogUnknownIntegration(state.RunId, launch.IntegrationId));
            state = state.WithLaunch(launch with { Phase = LaunchPhase.Failed, FailureType = FailureTypes.InvalidRequest, NextAttemptAt = null, UpdatedAt = now })
                .WithTimeline([new TimelineEntry(now, TimelineEvents.LaunchFailed, launch.Repository, Detail: FailureTypes.InvalidRequest)]);
            counted.Count(HandoffTelemetry.Launches, Tag("outcome", "failed"), Tag("failure_type", FailureTypes.InvalidRequest));
        }

        var (started, round) = await StartRoundAsync(state, due.Except(missing).ToList(), [], writer, cancellationToken);
        counted.Publish();
        return new WakeOutcome(started, round, poll);
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

    /// <summary>
    /// Starts the status poll, the fallback for webhooks that never came: every pending or running agent, and those
    /// given up on whose end the provider has not shown yet. Until its reports are recorded the poll's next time is its
    /// lease, so a poll whose reports never come back is made again then.
    /// </summary>
    private (RunHandoffState State, PollRound Poll) StartPoll(RunHandoffState state, DateTimeOffset now)
    {
        // Agents past their maximum age are read too: one may have finished in time with its webhook lost.
        var agents = state.AgentsToPoll
            .Select(agent => state.LaunchOfAgent(agent.Id) is { } launch ? new AgentRef(agent.Id, launch.IntegrationId) : null)
            .OfType<AgentRef>()
            .ToList();
        var lease = now + options.InFlightTimeout;
        var poll = state.Poll ?? new PollSchedule(lease, 0);
        return (state with { Poll = poll with { NextPollAt = lease } }, new PollRound(state.RunId, now, lease, agents));
    }

    /// <summary>
    /// Reads the poll's agents outside the owner's turn, records the reports in a new turn, then stops the agents it
    /// gave up on. A caller that gives up stops the reads; what was read is still recorded before its cancellation is thrown.
    /// </summary>
    public async Task FinishPollAsync(PollRound poll, IRoundRecorder recorder, CancellationToken cancellationToken)
    {
        var reports = await ReadAgentsAsync(poll, cancellationToken);
        var verdict = await recorder.RecordPollAsync(new PollAnswers(poll, reports) { Interrupted = cancellationToken.IsCancellationRequested });
        // After the save: the verdict stands whatever the provider answers to the stop.
        await StopAgentsAsync(poll.RunId, verdict.ToStop, cancellationToken);
        cancellationToken.ThrowIfCancellationRequested();
    }

    private async Task<ProviderAgent?[]> ReadAgentsAsync(PollRound poll, CancellationToken cancellationToken)
    {
        using var scope = BeginRunScope(poll.RunId);
        var reports = new ProviderAgent?[poll.Agents.Count];
        using var budget = new RoundBudget(poll.StartedAt, options.InFlightTimeout, timeProvider, cancellationToken);
        await Parallel.ForEachAsync(
            Enumerable.Range(0, reports.Length),
            new ParallelOptions { MaxDegreeOfParallelism = options.MaxParallelLaunches },
            async (index, _) =>
            {
                var agent = poll.Agents[index];
                if (budget.IsCancellationRequested || integrations.Find(agent.IntegrationId) is not { } integration)
                {
                    return;
                }

                try
                {
                    reports[index] = (await integration.Provider.GetAgentAsync(agent.AgentId, budget.Token)).Value;
                }
                catch (OperationCanceledException) when (budget.IsCancellationRequested)
                {
                    // Unanswered in time: a failed read, which says nothing about the agent.
                }
                catch (Exception exception) when (exception is not OperationCanceledException)
                {
                    // A fault in a provider client is a failed read of this agent, not of the whole poll.
                    LogProviderFaulted(poll.RunId, "read", exception.GetType().Name);
                }
            });
        return reports;
    }

    /// <summary>
    /// Records a poll's reports in the run's current state, in a new turn of its owner. The interval doubles while nothing
    /// changes; an agent older than the maximum age is given up on, and read on until the provider shows it ended
    /// (<see cref="PollSchedule.GivenUp"/>). Reports are facts and always applied; the schedule is this poll's to set only
    /// while it still holds the lease (a poll made again after a lost one owns it then).
    /// </summary>
    public async Task<PollVerdict> CompletePollAsync(RunHandoffState? current, PollAnswers answers, IRunStateWriter writer)
    {
        var poll = answers.Round;
        if (current is null || current.RunId != poll.RunId || answers.Reports.Count != poll.Agents.Count)
        {
            LogRoundDropped(poll.RunId);
            return new PollVerdict([]);
        }

        var state = current;
        var now = timeProvider.GetUtcNow();
        var counted = new TurnMeasurements();
        var reports = new Dictionary<string, ProviderAgent>();
        for (var i = 0; i < poll.Agents.Count; i++)
        {
            // A read that names another repository than the agent's launch is not applied: a failed read, as far as the
            // agent is concerned (its time-out waits for a read that can be used).
            if (answers.Reports[i] is { } report && report.Id == poll.Agents[i].AgentId && !IsOfAnotherRepository(state, report, "poll", counted))
            {
                reports[report.Id] = report;
            }
        }

        var givenUp = state.Poll?.GivenUp ?? [];
        var awaiting = state.Poll?.AwaitingPullRequest ?? [];
        var active = state.AgentsToPoll.ToList();
        // How long a given-up agent stays watched, and how long a time-out waits for a read that keeps failing.
        var watchLimit = options.AgentMaxAge * 2;
        var changed = false;
        var timedOut = new List<AgentRef>();
        var stillWatched = new List<string>();
        var stillAwaiting = new List<string>();
        // An agent this poll read that something else ended while the reads were out (a webhook that finished it without
        // its pull request) is not to be read on, but the read is still a fact: it may carry the pull request.
        foreach (var report in reports.Values.Where(report => !active.Any(agent => agent.Id == report.Id)))
        {
            var updated = ApplyAgentReport(state, report, counted);
            changed |= !ReferenceEquals(updated, state);
            state = updated;
        }

        foreach (var agent in active)
        {
            var report = reports.GetValueOrDefault(agent.Id);
            if (report is not null)
            {
                var updated = ApplyAgentReport(state, report, counted);
                changed |= !ReferenceEquals(updated, state);
                state = updated;
            }

            var latest = state.CodingAgents[agent.Id];
            var age = Age(state, latest, now);
            if (awaiting.Contains(agent.Id))
            {
                // Not ended by a read that shows it finished or stopped: the agent may not have resumed yet. Only a pull
                // request, or the time since its last follow-up, ends it.
                var watchedFor = state.Poll?.FollowedUpAt?.GetValueOrDefault(agent.Id) is { } followedUp ? now - followedUp : age;
                if (IsEndedWithoutPullRequest(latest) && watchedFor <= watchLimit)
                {
                    stillAwaiting.Add(agent.Id);
                }
            }
            else if (givenUp.Contains(agent.Id))
            {
                // Watched until the provider shows an end (or says FINISHED, applied above), or for twice the maximum age
                // (from its last follow-up, for one stopped after a follow-up). Such an agent may be "completed" without a
                // pull request: it is watched all the same.
                var watchedFor = state.Poll?.FollowedUpAt?.GetValueOrDefault(agent.Id) is { } followedUp ? now - followedUp : age;
                if (report?.Status is not (ProviderAgentStatus.Finished or ProviderAgentStatus.Error or ProviderAgentStatus.Expired or ProviderAgentStatus.Stopped)
                    && IsEndedWithoutPullRequest(latest) && watchedFor <= watchLimit)
                {
                    stillWatched.Add(agent.Id);
                }
            }
            // A read that failed says nothing about the agent: its time-out waits for an answer, up to twice the maximum age.
            else if (!latest.Status.IsFinal() && age > options.AgentMaxAge && (report is not null || age > watchLimit))
            {
                state = TimeOut(state, latest, now, counted);
                if (state.LaunchOfAgent(agent.Id) is { } launch)
                {
                    timedOut.Add(new AgentRef(agent.Id, launch.IntegrationId));
                }

                changed = true;
                if (age <= watchLimit)
                {
                    stillWatched.Add(agent.Id);
                }
            }
        }

        if (state.Poll?.NextPollAt == poll.LeaseUntil)
        {
            // A poll cut short (shutdown) read little or nothing: it is no quiet poll, and the next comes at the first interval.
            var quietPolls = changed ? 0 : answers.Interrupted ? state.Poll.QuietPolls : state.Poll.QuietPolls + 1;
            var interval = answers.Interrupted && !changed ? options.PollInterval
                : TimeSpan.FromTicks(Math.Min(options.PollMaxInterval.Ticks, options.PollInterval.Ticks * (1L << Math.Min(quietPolls, 20))));
            var watched = stillWatched.Count > 0 ? stillWatched : null;
            var awaited = stillAwaiting.Count > 0 ? stillAwaiting : null;
            var followedUp = state.Poll.FollowedUpAt?.Where(entry => stillAwaiting.Contains(entry.Key) || stillWatched.Contains(entry.Key)).ToDictionary() is { Count: > 0 } kept ? kept : null;
            state = state with
            {
                Poll = state.HasActiveAgents || watched is not null || awaited is not null ? new PollSchedule(now + interval, quietPolls, watched, awaited, followedUp) : null,
            };
        }
        else if (timedOut.Count > 0)
        {
            // The newer poll holds the schedule, but the agents this one gave up on must still be watched.
            state = state with { Poll = WatchingGivenUp(state.Poll, timedOut.Select(agent => agent.AgentId).Where(stillWatched.Contains), now) };
        }

        await writer.SaveAsync(state, CancellationToken.None);
        counted.Publish();
        return new PollVerdict(timedOut);
    }

    /// <summary>
    /// Stops agents we gave up on, so that one still working cannot open a pull request nobody follows beside a later
    /// retry's agent. Best effort: the agent is failed in our state either way, and a provider without stop says so.
    /// </summary>
    private async Task StopAgentsAsync(long runId, IReadOnlyList<AgentRef> agents, CancellationToken cancellationToken)
    {
        using var scope = BeginRunScope(runId);
        await Parallel.ForEachAsync(
            agents,
            new ParallelOptions { MaxDegreeOfParallelism = options.MaxParallelLaunches },
            async (agent, _) =>
            {
                try
                {
                    if (!cancellationToken.IsCancellationRequested && integrations.Find(agent.IntegrationId) is { } integration)
                    {
                        await integration.Provider.StopAsync(agent.AgentId, cancellationToken);
                    }
                }
                catch (Exception exception) when (exception is not OperationCanceledException)
                {
                    LogProviderFaulted(runId, "stop", exception.GetType().Name);
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    // Shutdown or a caller gone: the agent stays failed in our state; the next poll still watches it.
                }
            });
    }

    /// <summary>Age by our own clock (when we launched), not the provider's <c>createdAt</c>, which we do not control.</summary>
    private static TimeSpan Age(RunHandoffState state, CodingAgentState agent, DateTimeOffset now) =>
        now - (state.LaunchOfAgent(agent.Id)?.AttemptStartedAt ?? agent.StartedAt);

    private RunHandoffState TimeOut(RunHandoffState state, CodingAgentState agent, DateTimeOffset now, TurnMeasurements counted)
    {
        var launch = state.LaunchOfAgent(agent.Id);
        counted.Log(() => LogAgentTimedOut(state.RunId, agent.Id, options.AgentMaxAge));
        // The agent enters failed as surely as one the provider reports failed (and a later finish is counted as completed).
        counted.Count(HandoffTelemetry.AgentStatusChanges, Tag("status", CodingAgentStatus.Failed.WireName()));
        state = state.WithAgent(agent with { Status = CodingAgentStatus.Failed })
            .WithTimeline([new TimelineEntry(now, TimelineEvents.TimedOut, launch?.Repository, agent.Id)]);
        return launch is null ? state : state.WithLaunch(launch with { FailureType = FailureTypes.TimedOut, UpdatedAt = now });
    }

    /// <summary>
    /// A webhook's report, through the run's owner. Idempotent: a repeated or stale report changes nothing. Only the
    /// integration that launched an agent may report on it: another integration's secret proves nothing about it. A
    /// report that names another repository than the agent's launch is not applied either.
    /// </summary>
    public async Task<AgentReportStatus> ApplyAgentReportAsync(RunHandoffState? state, AgentReport signed, IRunStateWriter writer, CancellationToken cancellationToken)
    {
        // A host of an earlier release puts the repository on the report only.
        var report = signed.Agent.Repository is null && signed.Repository is { } named ? signed.Agent with { Repository = named } : signed.Agent;
        if (state is null)
        {
            return AgentReportStatus.UnknownAgent;
        }

        if (!state.CodingAgents.ContainsKey(report.Id))
        {
            // An agent on the branch of a launch that has none: an attempt whose answer was lost created it. Adopt it, as
            // reconciling would, rather than let it run unseen (after the last attempt nothing else would look for it).
            if (report.BranchName is not { Length: > 0 } branch
                || signed.Repository is not { Length: > 0 } repository
                || state.Launches.LastOrDefault(launch => launch.AgentId is null && launch.BranchName == branch && launch.IntegrationId == signed.IntegrationId
                    && string.Equals(launch.Repository, repository, StringComparison.OrdinalIgnoreCase)) is not { } orphaned)
            {
                return AgentReportStatus.UnknownAgent;
            }

            var now = timeProvider.GetUtcNow();
            var adoptedCount = new TurnMeasurements();
            adoptedCount.Log(() => LogReconciled(state.RunId, orphaned.Repository, report.Id));
            var adopted = WithAgentOf(state, orphaned, report, now, adoptedCount)
                .WithTimeline([new TimelineEntry(now, TimelineEvents.Reconciled, orphaned.Repository, report.Id, "reported by webhook")]);
            await writer.SaveAsync(PollingIfActive(adopted, now), CancellationToken.None);
            adoptedCount.Publish();
            return AgentReportStatus.Changed;
        }

        if (state.LaunchOfAgent(report.Id)?.IntegrationId != signed.IntegrationId)
        {
            return AgentReportStatus.UnknownAgent;
        }

        var counted = new TurnMeasurements();
        if (IsOfAnotherRepository(state, report, "webhook", counted))
        {
            // Nothing to save: what was logged goes out now.
            counted.Publish();
            return AgentReportStatus.OtherRepository;
        }

        var updated = ApplyAgentReport(state, report, counted);
        if (ReferenceEquals(updated, state))
        {
            // Nothing to save: what the report's reading logged goes out now (nothing was counted).
            counted.Publish();
            return AgentReportStatus.Unchanged;
        }

        await writer.SaveAsync(WithoutIdlePoll(updated), CancellationToken.None);
        counted.Publish();
        return AgentReportStatus.Changed;
    }

    /// <summary>
    /// A person's stop, made like a launch round: checked against the run's state (read without holding the run), sent
    /// to the provider, then recorded in the owner's turn (<see cref="RecordCommandAsync"/>).
    /// </summary>
    public Task<AgentCommandOutcome> StopAgentAsync(RunHandoffState? state, string agentId, IRoundRecorder recorder, CancellationToken cancellationToken) =>
        AgentCommandAsync(state, agentId, stop: true, recorder, (provider, token) => provider.StopAsync(agentId, token), cancellationToken);

    /// <summary>A person's follow-up instruction, sent and recorded as <see cref="StopAgentAsync"/> is.</summary>
    public Task<AgentCommandOutcome> AddFollowupAsync(RunHandoffState? state, AgentFollowup followup, IRoundRecorder recorder, CancellationToken cancellationToken) =>
        AgentCommandAsync(state, followup.AgentId, stop: false, recorder, (provider, token) => provider.AddFollowupAsync(followup.AgentId, followup.Text, token), cancellationToken);

    private async Task<AgentCommandOutcome> AgentCommandAsync(
        RunHandoffState? state,
        string agentId,
        bool stop,
        IRoundRecorder recorder,
        Func<ICodingAgentProvider, CancellationToken, Task<ProviderResult<bool>>> command,
        CancellationToken cancellationToken)
    {
        using var scope = state is null ? null : BeginRunScope(state.RunId);
        // An agent answers only to its own run.
        if (state is null || !state.CodingAgents.TryGetValue(agentId, out var agent)
            || state.LaunchOfAgent(agentId) is not { } launch
            || integrations.Find(launch.IntegrationId) is not { } integration)
        {
            return new AgentCommandOutcome(AgentCommandStatus.UnknownAgent);
        }

        var operation = stop ? "stop" : "follow-up";
        // Stopped before anything was sent (shutdown past its grace): the caller may send it again, elsewhere.
        cancellationToken.ThrowIfCancellationRequested();
        ProviderResult<bool> result;
        try
        {
            result = await command(integration.Provider, cancellationToken);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Stopped while at the provider, which may have it: "try again" could send a follow-up twice. An unknown
            // outcome, as for a launch its round stopped.
            result = ProviderResult<bool>.Failed(new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true));
        }
        catch (Exception exception) when (exception is not OperationCanceledException)
        {
            // A fault in a provider client is the provider's answer not understood, not the service failing (a 502, not a 500).
            LogProviderFaulted(state.RunId, operation, exception.GetType().Name);
            return new AgentCommandOutcome(AgentCommandStatus.ProviderFailed, agent, FailureTypes.InvalidResponse);
        }

        if (result.Failure is { RequestSent: true, OutcomeUnknown: true } unknown)
        {
            // Sent, and no answer says whether it was carried out (a time-out, a 500 mid-request, a gateway's 502 or 504):
            // "not carried out" could make the caller send a follow-up twice. A follow-up that may have run is recorded so
            // the agent is watched again; a stop that may have taken is learnt by the poll, which reads an agent at work.
            LogCommandOutcomeUnknown(state.RunId, operation, agentId, unknown.FailureType);
            if (!stop)
            {
                try
                {
                    await recorder.RecordCommandAsync(new AgentCommandSent(state.RunId, agentId, Stop: false, OutcomeUnknown: true));
                }
                catch (Exception exception) when (exception is not OperationCanceledException)
                {
                    LogCommandOutcomeNotRecorded(state.RunId, operation, agentId, exception.GetType().Name);
                }
            }

            return new AgentCommandOutcome(AgentCommandStatus.OutcomeUnknown, agent, unknown.FailureType);
        }

        if (!result.IsSuccess)
        {
            return new AgentCommandOutcome(AgentCommandStatus.ProviderFailed, agent, result.Failure!.FailureType);
        }

        try
        {
            return await recorder.RecordCommandAsync(new AgentCommandSent(state.RunId, agentId, stop));
        }
        catch (Exception exception) when (exception is not OperationCanceledException)
        {
            // The provider has taken the command: "try again" would send a follow-up twice. The caller is told it was
            // done; the timeline misses the entry, and a stopped agent's end is learnt by the next poll.
            LogCommandNotRecorded(state.RunId, operation, agentId, exception.GetType().Name);
            return new AgentCommandOutcome(AgentCommandStatus.Done, stop && !agent.Status.IsFinal() ? agent with { Status = CodingAgentStatus.Failed } : agent);
        }
    }

    /// <summary>Records a command the provider accepted (or a follow-up that may have run), in the run's current state.</summary>
    public async Task<AgentCommandOutcome> RecordCommandAsync(RunHandoffState? state, AgentCommandSent sent, IRunStateWriter writer)
    {
        if (state is null || state.RunId != sent.RunId || !state.CodingAgents.TryGetValue(sent.AgentId, out var agent)
            || state.LaunchOfAgent(sent.AgentId) is not { } launch)
        {
            return new AgentCommandOutcome(AgentCommandStatus.UnknownAgent);
        }

        var now = timeProvider.GetUtcNow();
        if (!sent.Stop && IsEndedWithoutPullRequest(agent))
        {
            // A follow-up sets an agent that ended without a pull request to work again: a finished one maybe on the pull
            // request it did not open, a stopped, failed or timed-out one on whatever it was asked, its watch perhaps over.
            // Read it on until a pull request shows, counting the watch from this follow-up, so that pull request is learnt
            // without a webhook too. An agent still at work is still watched: nothing changes for it.
            var soon = now + options.PollInterval;
            var poll = state.Poll ?? new PollSchedule(soon, 0);
            state = state with
            {
                Poll = poll with
                {
                    NextPollAt = poll.NextPollAt < soon ? poll.NextPollAt : soon,
                    QuietPolls = 0,
                    // Watched as awaiting now: the given-up watch would end at the first read that shows it stopped.
                    GivenUp = poll.GivenUp?.Where(id => id != sent.AgentId).ToList() is { Count: > 0 } givenUp ? givenUp : null,
                    AwaitingPullRequest = [.. (poll.AwaitingPullRequest ?? []).Union([sent.AgentId])],
                    FollowedUpAt = new Dictionary<string, DateTimeOffset>(poll.FollowedUpAt ?? new Dictionary<string, DateTimeOffset>()) { [sent.AgentId] = now },
                },
            };
        }

        if (sent.Stop && state.Poll is { AwaitingPullRequest: { } awaited } stopped && awaited.Contains(sent.AgentId))
        {
            // A person stopped the work a follow-up started: no pull request is awaited any more (a read that shows it
            // stopped would not end that watch, which went on for hours). Read on as an agent given up on, until the
            // provider shows it ended, so a finish the stop raced is still learnt.
            state = state with
            {
                Poll = WatchingGivenUp(stopped, [sent.AgentId], now) with
                {
                    AwaitingPullRequest = awaited.Where(id => id != sent.AgentId).ToList() is { Count: > 0 } rest ? rest : null,
                },
            };
        }

        var counted = new TurnMeasurements();
        if (sent.Stop && !agent.Status.IsFinal())
        {
            agent = agent with { Status = CodingAgentStatus.Failed };
            counted.Count(HandoffTelemetry.AgentStatusChanges, Tag("status", CodingAgentStatus.Failed.WireName()));
            // Our own verdict, like a time-out: the agent is read on, so a finish the stop raced is learnt without a webhook.
            state = state.WithAgent(agent) with { Poll = WatchingGivenUp(state.Poll, [sent.AgentId], now) };
        }

        state = state.WithTimeline([new TimelineEntry(
            now, sent.Stop ? TimelineEvents.Stopped : TimelineEvents.FollowupSent, launch.Repository, sent.AgentId, sent.OutcomeUnknown ? "outcome unknown" : null)]);
        await writer.SaveAsync(state, CancellationToken.None);
        counted.Publish();
        return new AgentCommandOutcome(AgentCommandStatus.Done, agent);
    }

    /// <summary>The poll's schedule (or one starting an interval from now) with these agents read on as given up.</summary>
    private PollSchedule WatchingGivenUp(PollSchedule? poll, IEnumerable<string> agentIds, DateTimeOffset now)
    {
        var schedule = poll ?? new PollSchedule(now + options.PollInterval, 0);
        return schedule with { GivenUp = [.. (schedule.GivenUp ?? []).Union(agentIds)] };
    }

    /// <summary>
    /// A report that names a repository other than the one the agent was launched on (a provider's mix-up, or a signed
    /// webhook about work elsewhere) says nothing about the launch: logged, not applied. One that names no repository
    /// (GitHub's tasks, a Cursor answer without its source) is applied; its pull request is still checked
    /// (<see cref="PullRequestOf"/>). The branch is not compared: GitHub names a task's branch itself, and Cursor may too.
    /// </summary>
    private bool IsOfAnotherRepository(RunHandoffState state, ProviderAgent report, string source, TurnMeasurements counted) =>
        state.LaunchOfAgent(report.Id) is { } launch && IsOfAnotherRepository(state.RunId, report, launch, source, counted);

    /// <summary>The same check against a given launch: the agent a launch's answer (or lookup) names is not yet the launch's.</summary>
    /// <remarks>Logged with the turn's decisions once it is saved (<paramref name="counted"/>).</remarks>
    private bool IsOfAnotherRepository(long runId, ProviderAgent report, RepositoryLaunch launch, string source, TurnMeasurements counted)
    {
        if (report.Repository is not { } named || !RepositoryName.TryParse(launch.Repository, out var repository) || repository.Value.IsNamedBy(named))
        {
            return false;
        }

        var reported = RepositoryName.DescribeRejected(named);
        counted.Log(() => LogReportOfAnotherRepository(runId, source, report.Id, reported, launch.Repository));
        return true;
    }

    /// <summary>
    /// The report's pull request, as its canonical link, if it is one of the launch's repository; any other is logged and
    /// never recorded as the agent's.
    /// </summary>
    private string? PullRequestOf(long runId, ProviderAgent report, RepositoryLaunch launch, TurnMeasurements counted)
    {
        if (report.PrUrl is null)
        {
            return null;
        }

        if (RepositoryName.TryParse(launch.Repository, out var repository) && repository.Value.PullRequestLinkedBy(report.PrUrl) is { } pullRequest)
        {
            return pullRequest;
        }

        counted.Log(() => LogPullRequestOfAnotherRepository(runId, report.Id, launch.Repository));
        return null;
    }

    /// <summary>The preference names the agent it wants: an integration of another kind would hand off somewhere unexpected.</summary>
    private static bool NamesAnotherProvider(AutomationHandoff handoff, Integration integration) =>
        handoff.Target is { Length: > 0 } target && !string.Equals(target, integration.Provider.ProviderName, StringComparison.OrdinalIgnoreCase);

    /// <summary>Completed without a pull request, or failed (stopped, timed out, or the agent's own error): what a follow-up can still change.</summary>
    private static bool IsEndedWithoutPullRequest(CodingAgentState agent) =>
        agent.Status.IsFinal() && !agent.Results.Any(result => result.PrUrl is not null);

    /// <summary>
    /// Applies what a provider says about an agent (webhook or poll). Status never moves backwards, and only a pull
    /// request of the launch's repository is recorded.
    /// </summary>
    internal RunHandoffState ApplyAgentReport(RunHandoffState state, ProviderAgent report, TurnMeasurements counted)
    {
        report = WithSafeText(report);
        if (!state.CodingAgents.TryGetValue(report.Id, out var agent))
        {
            return state;
        }

        var launch = state.LaunchOfAgent(report.Id);
        report = report with { PrUrl = launch is null ? null : PullRequestOf(state.RunId, report, launch, counted) };
        var status = ToAgentStatus(report.Status);
        // Our own "failed" can be a guess (the maximum age ran out, a stop raced the finish); the provider saying the
        // agent finished is the truth, and its pull request must not be lost.
        var finishedAfterAll = agent.Status == CodingAgentStatus.Failed && status == CodingAgentStatus.Completed;
        // An agent that finished without a pull request and finished again with one (a follow-up asked for it): the
        // status stays, the pull request is learnt.
        var pullRequestLearnt = agent.Status == CodingAgentStatus.Completed && status == CodingAgentStatus.Completed
            && report.PrUrl is { Length: > 0 } && agent.Results.All(result => result.PrUrl is null);
        if (status is null || !(agent.Status.CanMoveTo(status.Value) || finishedAfterAll || pullRequestLearnt))
        {
            return state;
        }

        var results = launch is null ? agent.Results : ResultsOf(report, status.Value, launch, agent.Results);

        var now = timeProvider.GetUtcNow();
        var (runId, from, to) = (state.RunId, agent.Status, status.Value);
        counted.Log(() => LogAgentStatusChanged(runId, report.Id, from, to));
        counted.Count(HandoffTelemetry.AgentStatusChanges, Tag("status", status.Value.WireName()));
        state = state
            .WithAgent(agent with { Status = status.Value, AgentUrl = report.AgentUrl ?? agent.AgentUrl, Results = results })
            .WithTimeline([new TimelineEntry(now, TimelineEvents.StatusChanged, launch?.Repository, report.Id, status.Value.WireName())]);
        return launch is null ? state
            : status == CodingAgentStatus.Failed ? state.WithLaunch(launch with { FailureType = FailureTypes.AgentFailed, UpdatedAt = now })
            : finishedAfterAll ? state.WithLaunch(launch with { FailureType = null, UpdatedAt = now })
            : state;
    }

    /// <summary>A completed agent's result for its repository (branch and pull request); other statuses keep what was there.</summary>
    private static IReadOnlyList<CodingAgentResult> ResultsOf(ProviderAgent report, CodingAgentStatus status, RepositoryLaunch launch, IReadOnlyList<CodingAgentResult> current) =>
        status == CodingAgentStatus.Completed
            ? [new CodingAgentResult(report.Summary, launch.RepoProvider, launch.Repository, report.BranchName ?? launch.BranchName, report.PrUrl)]
            : current;

    /// <summary>The only repository host either provider works on; a run's <c>provider</c> names it.</summary>
    private const string GitHubHost = "github";

    /// <summary>The trigger's answer, line by line, and the launches to make for it.</summary>
    private (List<PlanLine> Plan, List<RepositoryLaunch> ToLaunch) Plan(
        RunHandoffState state, RunSnapshot snapshot, Integration integration, string? instruction, bool autoCreatePr, bool relaunchFailed, DateTimeOffset now)
    {
        var repositories = snapshot.Preferences?.Repositories?.Where(repo => repo is not null).ToList() ?? [];
        if (repositories.Count == 0)
        {
            return ([Refused(new LaunchFailure(null, FailureMessages.NoRepositories, FailureTypes.NoRepositories))], []);
        }

        instruction = string.IsNullOrWhiteSpace(instruction) ? null : instruction.Trim();
        var plan = new List<PlanLine>(repositories.Count);
        var toLaunch = new List<RepositoryLaunch>();
        var seen = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        // The cap is per run: repositories launched by earlier triggers or events count toward it.
        var runRepositories = state.Launches.Select(launch => launch.Repository).ToHashSet(StringComparer.OrdinalIgnoreCase);
        foreach (var preference in repositories)
        {
            var rawName = $"{preference!.Owner}/{preference.Name}";
            // A blank base branch means "the repository's default", as a missing one does.
            var baseRef = string.IsNullOrWhiteSpace(preference.BranchName) ? null : preference.BranchName;
            if (!RepositoryName.TryParse(rawName, out var repository))
            {
                plan.Add(Refused(new LaunchFailure(
                    RepositoryName.DescribeRejected(rawName),
                    FailureMessages.InvalidRepositoryPrefix + RepositoryName.DescribeRejected(rawName),
                    FailureTypes.InvalidRepository)));
                continue;
            }

            // Both providers work on GitHub only; a GitLab or Bitbucket owner/name would be launched on GitHub's namesake.
            var onGitHub = string.IsNullOrWhiteSpace(preference.Provider) || string.Equals(preference.Provider, GitHubHost, StringComparison.OrdinalIgnoreCase);
            var reason = !onGitHub ? FailureMessages.UnsupportedRepositoryHost
                : baseRef is not null && !GitRefName.IsValidBranch(baseRef) ? FailureMessages.InvalidBaseBranch
                : null;
            if (reason is not null)
            {
                plan.Add(Refused(new LaunchFailure(repository.Value.FullName, reason, FailureTypes.InvalidRepository)));
                continue;
            }

            var fullName = repository.Value.FullName;
            if (!seen.Add(fullName))
            {
                continue;
            }

            // Past the cap each repository is reported, not dropped: the caller sees what was left out. One the run
            // already has is never refused.
            if (runRepositories.Add(fullName) && runRepositories.Count > options.MaxRepositories)
            {
                plan.Add(Refused(new LaunchFailure(
                    fullName, FailureMessages.TooManyRepositoriesPrefix + options.MaxRepositories, FailureTypes.TooManyRepositories)));
                continue;
            }

            // An earlier generation whose agent is not failed (it finished after all) still holds the repository.
            var existing = state.LaunchWithLiveAgent(fullName, integration.Id) ?? state.FindLaunch(fullName, integration.Id);
            if (existing is not null && !(relaunchFailed && IsFinishedUnsuccessfully(state, existing)))
            {
                plan.Add(LineOf(existing));
                continue;
            }

            // A launch that failed without an agent is tried again on its own branch, looking there first: its last
            // attempt may have created an agent whose answer was lost, and a new branch would hide it.
            if (existing is { Phase: LaunchPhase.Failed, AgentId: null })
            {
                toLaunch.Add(existing with
                {
                    Phase = existing.Attempts > 0 ? LaunchPhase.OutcomeUnknown : LaunchPhase.RetryScheduled,
                    Attempts = 0,
                    BaseRef = baseRef,
                    AutoCreatePr = autoCreatePr,
                    Instruction = instruction,
                    NextAttemptAt = now,
                    FailureType = null,
                    UpdatedAt = now,
                });
                plan.Add(LineOf(existing));
                continue;
            }

            // A repository launched before (by any integration) gets a new generation, hence a new branch.
            var generation = state.Launches
                .Where(launch => string.Equals(launch.Repository, fullName, StringComparison.OrdinalIgnoreCase))
                .Select(launch => launch.Generation)
                .DefaultIfEmpty(0)
                .Max() + 1;
            var launch = new RepositoryLaunch(
                fullName,
                GitHubHost,
                integration.Id,
                integration.Provider.ProviderName,
                generation,
                BranchNamer.Create(snapshot.Group?.Title, snapshot.RunId, fullName, generation),
                baseRef,
                autoCreatePr,
                instruction,
                LaunchPhase.RetryScheduled,
                Attempts: 0,
                AttemptStartedAt: null,
                NextAttemptAt: now,
                AgentId: null,
                FailureType: null,
                UpdatedAt: now);
            toLaunch.Add(launch);
            plan.Add(LineOf(launch));
        }

        return (plan, toLaunch);
    }

    private static PlanLine Refused(LaunchFailure failure) => new(failure.RepoName, 0, 0, failure);

    private static PlanLine LineOf(RepositoryLaunch launch) => new(launch.Repository, launch.IntegrationId, launch.Generation);

    /// <summary>Failed repositories are launched again by a person's trigger; pending, running and completed ones are not.</summary>
    private static bool IsFinishedUnsuccessfully(RunHandoffState state, RepositoryLaunch launch) =>
        launch.Phase == LaunchPhase.Failed
        || (launch.Phase == LaunchPhase.Launched && launch.AgentId is { } id
            && state.CodingAgents.TryGetValue(id, out var agent) && agent.Status == CodingAgentStatus.Failed);

    /// <summary>
    /// A launch whose earlier attempt may have created an agent, that must not be sent again if none is found: a relaunch
    /// whose agent it replaces finished after all (a second agent would open a second pull request), or a launch whose
    /// process died during every attempt (a crash never records a failure, so the attempt limit is enforced here).
    /// </summary>
    private string? LookOnly(RunHandoffState state, RepositoryLaunch launch) =>
        !launch.NeedsReconciliation ? null
        : state.LaunchWithLiveAgent(launch.Repository, launch.IntegrationId) is { } live && live.Generation < launch.Generation ? FailureTypes.Superseded
        : launch.Attempts >= retryPolicy.Options.MaxAttempts ? FailureTypes.RetriesExhausted
        : null;

    /// <summary>
    /// Persists the intent of a round: a crash from here on leaves in-flight launches that the next wake-up reconciles.
    /// The calls must be over before the saved deadline (now + InFlightTimeout): past it, an owner that finds the intent
    /// takes it for a crash. So their own deadline starts now, before the save, which may be slow too.
    /// </summary>
    private async Task<(RunHandoffState State, LaunchRound? Round)> StartRoundAsync(
        RunHandoffState state, List<RepositoryLaunch> launches, IReadOnlyList<PlanLine> plan, IRunStateWriter writer, CancellationToken cancellationToken)
    {
        if (launches.Count == 0)
        {
            await writer.SaveAsync(state, cancellationToken);
            return (state, null);
        }

        var now = timeProvider.GetUtcNow();
        var inFlight = launches
            .Select(launch => new RoundLaunch(
                launch with
                {
                    Phase = LaunchPhase.InFlight,
                    Attempts = launch.Attempts + 1,
                    AttemptStartedAt = now,
                    // Only a launch never attempted knows it is starting now: one stored before this field was kept stays unknown.
                    FirstAttemptAt = launch.FirstAttemptAt ?? (launch.AttemptStartedAt is null ? now : null),
                    NextAttemptAt = now + options.InFlightTimeout,
                    UpdatedAt = now,
                },
                ReconcileFirst: launch.NeedsReconciliation,
                IfNotFound: LookOnly(state, launch)))
            .ToList();
        state = inFlight.Aggregate(state, (current, sent) => current.WithLaunch(sent.Launch))
            .WithTimeline(inFlight.Select(sent => new TimelineEntry(now, TimelineEvents.LaunchStarted, sent.Launch.Repository, Detail: $"attempt {sent.Launch.Attempts}")));
        await writer.SaveAsync(state, cancellationToken);
        return (state, new LaunchRound(state.RunId, state.Snapshot!, now, inFlight, plan));
    }

    /// <summary>
    /// The second half of a round, for its owner once it has let go of the run: the provider calls, then
    /// <paramref name="complete"/>, which gives the answers to <see cref="CompleteRoundAsync"/> in a new turn. A caller
    /// that gives up (a client gone, shutdown) stops the calls not yet answered, whose outcome is then unknown; the
    /// answers are still completed before its cancellation is thrown, as agents may exist that must not be forgotten.
    /// </summary>
    public async Task<HandoffResult> FinishRoundAsync(LaunchRound round, IRoundRecorder recorder, CancellationToken cancellationToken)
    {
        var attempts = await CallProvidersAsync(round, cancellationToken);
        var result = await recorder.RecordLaunchesAsync(new LaunchRoundAnswers(round, attempts));
        cancellationToken.ThrowIfCancellationRequested();
        return result;
    }

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

    /// <summary>Calls the provider for every repository of the round at once (bounded); answers keep the round's order. Never throws for a cancellation.</summary>
    private async Task<LaunchAttempt[]> CallProvidersAsync(LaunchRound round, CancellationToken cancellationToken)
    {
        using var scope = BeginRunScope(round.RunId);
        var attempts = new LaunchAttempt[round.Launches.Count];
        using var budget = new RoundBudget(round.StartedAt, options.InFlightTimeout, timeProvider, cancellationToken);
        HandoffTelemetry.HandoffsInFlight.Add(1);
        try
        {
            await Parallel.ForEachAsync(
                Enumerable.Range(0, attempts.Length),
                new ParallelOptions { MaxDegreeOfParallelism = options.MaxParallelLaunches },
                async (index, _) =>
                {
                    var (launch, reconcileFirst, ifNotFound) = round.Launches[index];
                    if (budget.IsCancellationRequested)
                    {
                        // Its turn came too late (more repositories than parallel calls, or the caller gave up): nothing was
                        // sent, no attempt spent, and an earlier attempt's agent, if one may exist, must still be looked for first.
                        attempts[index] = new LaunchAttempt(
                            null, new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: reconcileFirst, RequestSent: false, Attempted: false), Reconciled: false);
                        return;
                    }

                    attempts[index] = await AttemptAsync(round, launch, reconcileFirst, ifNotFound, budget.Token);
                });
        }
        finally
        {
            HandoffTelemetry.HandoffsInFlight.Add(-1);
        }

        return attempts;
    }

    /// <summary>
    /// Records a round's answers in the run's current state, in a new turn of its owner, and gives the trigger's answer
    /// from it. Not cancellable: agents now exist at the provider and must not be forgotten.
    /// </summary>
    public async Task<HandoffResult> CompleteRoundAsync(RunHandoffState? current, LaunchRoundAnswers answers, IRunStateWriter writer)
    {
        var round = answers.Round;
        if (current is null || current.RunId != round.RunId || answers.Attempts.Count != round.Launches.Count)
        {
            LogRoundDropped(round.RunId);
            return HandoffResult.Empty;
        }

        var counted = new TurnMeasurements();
        var state = Apply(current, round.Launches, answers.Attempts, counted);
        await writer.SaveAsync(state, CancellationToken.None);
        counted.Publish();
        return Summarize(state, round.Plan);
    }

    private async Task<LaunchAttempt> AttemptAsync(LaunchRound round, RepositoryLaunch launch, bool reconcileFirst, string? ifNotFound, CancellationToken cancellationToken)
    {
        using var activity = HandoffTelemetry.StartLaunchAttempt(round.RunId, launch.Repository, launch.IntegrationId, launch.Attempts);
        var started = timeProvider.GetTimestamp();
        LaunchAttempt outcome;
        // Caught here, not by the round, so the attempt's span and duration say what became of it.
        try
        {
            outcome = await CallProviderAsync(round, launch, reconcileFirst, ifNotFound, cancellationToken);
        }
        catch (Exception exception) when (exception is not OperationCanceledException)
        {
            // A fault in a provider client must not lose the other repositories' answers: this one's outcome
            // is unknown (the request may be out), so its next attempt looks for an agent first.
            LogProviderFaulted(round.RunId, "launch", exception.GetType().Name);
            outcome = new LaunchAttempt(null, new ProviderFailure(FailureTypes.InvalidResponse, Retryable: true, OutcomeUnknown: true), Reconciled: false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Unanswered in time, or the caller gave up: the request may be out, so the next attempt reconciles first.
            outcome = new LaunchAttempt(null, new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true), Reconciled: false);
        }

        HandoffTelemetry.LaunchDuration.Record(timeProvider.GetElapsedTime(started).TotalSeconds, new KeyValuePair<string, object?>("handoff.integration_id", launch.IntegrationId));
        activity?.SetTag("handoff.outcome", outcome.Agent is not null ? (outcome.Reconciled ? "reconciled" : "launched") : outcome.Failure!.FailureType);
        if (outcome.Failure is not null)
        {
            activity?.SetStatus(ActivityStatusCode.Error, outcome.Failure.FailureType);
        }

        return outcome;
    }

    private async Task<LaunchAttempt> CallProviderAsync(LaunchRound round, RepositoryLaunch launch, bool reconcileFirst, string? ifNotFound, CancellationToken cancellationToken)
    {
        // An integration removed from the settings since the round started: nothing can be sent.
        if (integrations.Find(launch.IntegrationId) is not { } integration)
        {
            return new LaunchAttempt(null, new ProviderFailure(FailureTypes.InvalidRequest, Retryable: false, OutcomeUnknown: reconcileFirst, RequestSent: false, Attempted: false), Reconciled: false);
        }

        RepositoryName.TryParse(launch.Repository, out var repository);

        if (reconcileFirst)
        {
            var found = await integration.Provider.FindAgentByBranchAsync(repository!.Value, launch.BranchName, launch.FirstAttemptAt, cancellationToken);
            if (!found.IsSuccess)
            {
                // Still not known whether an agent exists: the next attempt must look again.
                return new LaunchAttempt(null, found.Failure! with { OutcomeUnknown = true }, Reconciled: false);
            }

            if (found.Value is { } existing)
            {
                LogReconciled(round.RunId, launch.Repository, existing.Id);
                return new LaunchAttempt(existing, null, Reconciled: true);
            }

            if (ifNotFound is not null)
            {
                return new LaunchAttempt(null, new ProviderFailure(ifNotFound, Retryable: false, RequestSent: false), Reconciled: false);
            }
        }

        // Room is left for what the provider adds (Copilot: the handoff reference line).
        var promptCap = integration.PromptMaxLength - integration.Provider.PromptReserve;
        var prompt = PromptBuilder.Build(round.Snapshot, launch.Instruction, launch.AutoCreatePr, promptCap);
        if (prompt.Length > promptCap)
        {
            // Only the opening and the instruction are left, and they do not fit: the instruction was accepted under a
            // larger cap (the settings were lowered since). It is never cut, so the launch cannot be made.
            LogPromptOverCap(round.RunId, launch.Repository, prompt.Length, promptCap);
            return new LaunchAttempt(null, new ProviderFailure(FailureTypes.InvalidRequest, Retryable: false, RequestSent: false, Attempted: false), Reconciled: false);
        }

        // The run id rides on the webhook URL so the report reaches the run's owner without an index; the signature still decides trust.
        var webhook = integration.Webhook is { } hook ? hook with { Url = new Uri($"{hook.Url.AbsoluteUri}?run_id={round.RunId}") } : null;
        var request = new AgentLaunchRequest(prompt, repository!.Value, launch.BaseRef, launch.BranchName, launch.AutoCreatePr, webhook);
        var result = await integration.Provider.LaunchAsync(request, cancellationToken);
        return new LaunchAttempt(result.Value, result.Failure, Reconciled: false);
    }

    private RunHandoffState Apply(RunHandoffState state, IReadOnlyList<RoundLaunch> sent, IReadOnlyList<LaunchAttempt> attempts, TurnMeasurements counted)
    {
        var now = timeProvider.GetUtcNow();
        var timeline = new List<TimelineEntry>(sent.Count);
        for (var i = 0; i < sent.Count; i++)
        {
            var outcome = attempts[i];
            var launch = state.Launches.FirstOrDefault(stored => stored.IntegrationId == sent[i].Launch.IntegrationId && stored.Generation == sent[i].Launch.Generation
                && string.Equals(stored.Repository, sent[i].Launch.Repository, StringComparison.OrdinalIgnoreCase));
            if (launch is not { Phase: LaunchPhase.InFlight } || launch.Attempts != sent[i].Launch.Attempts || launch.AttemptStartedAt != sent[i].Launch.AttemptStartedAt)
            {
                state = ApplyLate(state, sent[i].Launch, launch, outcome, now, timeline, counted);
                continue;
            }

            if (outcome.Agent is { } answered && FollowedByAnother(state, launch, answered.Id) is { } other)
            {
                // One agent cannot be two repositories' (a provider answering garbage): not an answer for this launch,
                // which may have created its own agent, so it is looked for first at its next attempt.
                counted.Log(() => LogAgentOfAnotherLaunch(state.RunId, launch.Repository, answered.Id, other.Repository));
                outcome = new LaunchAttempt(null, new ProviderFailure(FailureTypes.InvalidResponse, Retryable: true, OutcomeUnknown: true), Reconciled: false);
            }

            if (outcome.Agent is { } named && IsOfAnotherRepository(state.RunId, named, launch, outcome.Reconciled ? "reconcile" : "launch", counted))
            {
                // An agent of another repository is no answer for this launch (a provider answering garbage): taken as its
                // agent, every later report of it would be refused, and the agent the launch may have created never
                // followed. The launch's own agent is looked for first at its next attempt.
                outcome = new LaunchAttempt(null, new ProviderFailure(FailureTypes.InvalidResponse, Retryable: true, OutcomeUnknown: true), Reconciled: false);
            }

            if (outcome.Agent is { } agent)
            {
                state = WithAgentOf(state, launch, agent, now, counted);
                timeline.Add(new TimelineEntry(now, outcome.Reconciled ? TimelineEvents.Reconciled : TimelineEvents.Launched, launch.Repository, agent.Id));
                counted.Log(() => LogLaunched(state.RunId, launch.Repository, agent.Id, launch.Attempts));
                counted.Count(HandoffTelemetry.Launches, Tag("outcome", outcome.Reconciled ? "reconciled" : "launched"), Tag("failure_type", "none"));
                continue;
            }

            var failure = outcome.Failure!;
            // No call was made (open circuit, a turn that came too late): the attempt does not count against the limit.
            // A refused connection does: otherwise an unreachable provider would be retried forever at the first delay.
            var attemptsMade = failure.Attempted ? launch.Attempts : launch.Attempts - 1;
            if (retryPolicy.CanRetry(failure, attemptsMade))
            {
                // A round that sent nothing (an open circuit, a turn too late, shutdown) waits the first delay: the back-off
                // its earlier failures reached (up to RetryMaxDelay) is for a provider that failed, not for one never asked.
                var retryAt = now + retryPolicy.DelayAfter(failure.Attempted ? Math.Max(1, attemptsMade) : 1, failure.RetryAfter);
                var phase = failure.OutcomeUnknown ? LaunchPhase.OutcomeUnknown : LaunchPhase.RetryScheduled;
                state = state.WithLaunch(launch with { Phase = phase, Attempts = attemptsMade, NextAttemptAt = retryAt, FailureType = failure.FailureType, UpdatedAt = now });
                timeline.Add(new TimelineEntry(now, TimelineEvents.RetryScheduled, launch.Repository, Detail: $"{failure.FailureType}; next attempt at {retryAt:O}"));
                counted.Log(() => LogRetryScheduled(state.RunId, launch.Repository, failure.FailureType, attemptsMade, retryAt));
                counted.Count(HandoffTelemetry.Launches, Tag("outcome", "retry_scheduled"), Tag("failure_type", failure.FailureType));
                counted.Count(HandoffTelemetry.RetriesScheduled, Tag("failure_type", failure.FailureType));
                continue;
            }

            var failureType = failure.Retryable ? FailureTypes.RetriesExhausted : failure.FailureType;
            state = state.WithLaunch(launch with { Phase = LaunchPhase.Failed, Attempts = attemptsMade, NextAttemptAt = null, FailureType = failureType, UpdatedAt = now });
            timeline.Add(new TimelineEntry(now, TimelineEvents.LaunchFailed, launch.Repository, Detail: failureType));
            counted.Log(() => LogLaunchFailed(state.RunId, launch.Repository, failureType, attemptsMade));
            counted.Count(HandoffTelemetry.Launches, Tag("outcome", "failed"), Tag("failure_type", failureType));
        }

        return PollingIfActive(state.WithTimeline(timeline), now);
    }

    /// <summary>
    /// An answer that came back after the launch moved on: past its deadline a wake-up took the attempt for a crash and
    /// made another. A failure then says nothing the launch does not know; an agent it has no agent for is adopted, as
    /// reconciling would have; a different agent than the one it has is a second agent on the repository, only logged.
    /// </summary>
    private RunHandoffState ApplyLate(
        RunHandoffState state, RepositoryLaunch sent, RepositoryLaunch? launch, LaunchAttempt outcome, DateTimeOffset now, List<TimelineEntry> timeline, TurnMeasurements counted)
    {
        if (outcome.Agent is not { } agent || launch?.AgentId == agent.Id)
        {
            counted.Log(() => LogLateAnswer(state.RunId, sent.Repository, sent.Attempts));
            return state;
        }

        if (launch is not null && FollowedByAnother(state, launch, agent.Id) is { } other)
        {
            counted.Log(() => LogAgentOfAnotherLaunch(state.RunId, launch.Repository, agent.Id, other.Repository));
            return state;
        }

        if (launch is not null && IsOfAnotherRepository(state.RunId, agent, launch, "launch", counted))
        {
            return state;
        }

        if (launch is { AgentId: null })
        {
            counted.Log(() => LogReconciled(state.RunId, launch.Repository, agent.Id));
            timeline.Add(new TimelineEntry(now, TimelineEvents.Reconciled, launch.Repository, agent.Id, "answered after its deadline"));
            return WithAgentOf(state, launch, agent, now, counted);
        }

        counted.Log(() => LogAgentNotFollowed(state.RunId, sent.Repository, agent.Id));
        return state;
    }

    /// <summary>The other launch of the run that already follows <paramref name="agentId"/>, if one does.</summary>
    private static RepositoryLaunch? FollowedByAnother(RunHandoffState state, RepositoryLaunch launch, string agentId) =>
        state.LaunchOfAgent(agentId) is { } owner
            && !(owner.IntegrationId == launch.IntegrationId && owner.Generation == launch.Generation
                && string.Equals(owner.Repository, launch.Repository, StringComparison.OrdinalIgnoreCase))
            ? owner
            : null;

    /// <summary>
    /// A report that left nothing to read ends the poll's schedule, as the poll itself would: kept, its time and its
    /// back-off (perhaps the longest interval) would be taken over by the next agent the run launches.
    /// </summary>
    private static RunHandoffState WithoutIdlePoll(RunHandoffState state) =>
        state.Poll is not null && !state.HasAgentsToPoll ? state with { Poll = null } : state;

    /// <summary>Agents still at work are polled (the fallback for lost webhooks); a poll already scheduled is kept.</summary>
    private RunHandoffState PollingIfActive(RunHandoffState state, DateTimeOffset now) =>
        state.HasActiveAgents && state.Poll is null ? state with { Poll = new PollSchedule(now + options.PollInterval, 0) } : state;

    /// <summary>
    /// Provider URLs are shown as links by whatever reads the API: only absolute http(s) URLs are kept, never a
    /// <c>javascript:</c> or <c>data:</c> one a compromised provider or a leaked webhook secret could plant; nor one
    /// that could pose as another where it is shown as text (user-info, <c>https://github.com@elsewhere</c>; a bidi or
    /// invisible character); nor one longer than any real link. What is kept is the URL in its escaped form, so quotes
    /// and angle brackets cannot break out of an <c>href</c> that a reader writes without escaping. The agent's name and
    /// summary are bounded, and a branch name is kept only if it is a valid one.
    /// </summary>
    private static ProviderAgent WithSafeText(ProviderAgent agent) => agent with
    {
        AgentUrl = WebLinkOrNull(agent.AgentUrl),
        PrUrl = WebLinkOrNull(agent.PrUrl),
        Name = BoundedOrNull(agent.Name, MaxAgentNameLength),
        Summary = BoundedOrNull(agent.Summary, MaxSummaryLength),
        BranchName = GitRefName.IsValidBranch(agent.BranchName) ? agent.BranchName : null,
    };

    /// <summary>
    /// A provider's own text (an agent's name, its summary) is stored in the run and served to every reader of it: a
    /// compromised provider or a leaked webhook secret must not make it megabytes long. Longer text is cut.
    /// </summary>
    public const int MaxAgentNameLength = 200;

    public const int MaxSummaryLength = 4096;

    private static string? BoundedOrNull(string? text, int maxLength)
    {
        if (text is null || text.Length <= maxLength)
        {
            return text;
        }

        // Never split a surrogate pair: the JSON serializer would have to replace the half character.
        var keep = char.IsHighSurrogate(text[maxLength - 1]) ? maxLength - 1 : maxLength;
        return string.Concat(text.AsSpan(0, keep), "…");
    }

    private const int MaxLinkLength = 2048;

    private static string? WebLinkOrNull(string? url) =>
        url is { Length: <= MaxLinkLength }
            && !url.Any(c => char.IsControl(c) || char.IsWhiteSpace(c) || char.GetUnicodeCategory(c) == System.Globalization.UnicodeCategory.Format)
            && Uri.TryCreate(url, UriKind.Absolute, out var uri) && (uri.Scheme == Uri.UriSchemeHttps || uri.Scheme == Uri.UriSchemeHttp)
            && uri.UserInfo.Length == 0
            ? uri.AbsoluteUri
            : null;

    /// <summary>The launch now has <paramref name="agent"/>, launched or found; an agent found may have finished already: keep what it produced.</summary>
    private RunHandoffState WithAgentOf(RunHandoffState state, RepositoryLaunch launch, ProviderAgent agent, DateTimeOffset now, TurnMeasurements counted)
    {
        agent = WithSafeText(agent);
        agent = agent with { PrUrl = PullRequestOf(state.RunId, agent, launch, counted) };
        var status = ToAgentStatus(agent.Status) ?? CodingAgentStatus.Pending;
        var agentState = new CodingAgentState(
            agent.Id,
            status,
            agent.AgentUrl,
            launch.Provider,
            string.IsNullOrWhiteSpace(agent.Name) ? launch.Repository : $"{launch.Repository}: {agent.Name}",
            agent.CreatedAt ?? now,
            ResultsOf(agent, status, launch, []));
        counted.Count(HandoffTelemetry.AgentStatusChanges, Tag("status", status.WireName()));
        return state.WithAgent(agentState).WithLaunch(launch with
        {
            Phase = LaunchPhase.Launched,
            AgentId = agent.Id,
            FailureType = status == CodingAgentStatus.Failed ? FailureTypes.AgentFailed : null,
            NextAttemptAt = null,
            UpdatedAt = now,
        });
    }

    private static HandoffResult Summarize(RunHandoffState state, IReadOnlyList<PlanLine> plan)
    {
        var successes = new List<LaunchSuccess>();
        var failures = new List<LaunchFailure>();
        var retries = new List<ScheduledRetry>();
        foreach (var line in plan)
        {
            if (line.Refused is { } refused)
            {
                failures.Add(refused);
            }
            else if (state.Launches.FirstOrDefault(launch => launch.IntegrationId == line.IntegrationId && launch.Generation == line.Generation
                && string.Equals(launch.Repository, line.Repository, StringComparison.OrdinalIgnoreCase)) is { } launch)
            {
                Describe(state, launch, successes, failures, retries);
            }
        }

        return new HandoffResult(successes, failures, retries);
    }

    private static void Describe(RunHandoffState state, RepositoryLaunch launch, List<LaunchSuccess> successes, List<LaunchFailure> failures, List<ScheduledRetry> retries)
    {
        if (launch.Phase == LaunchPhase.Launched && launch.AgentId is { } id && state.CodingAgents.TryGetValue(id, out var agent))
        {
            successes.Add(new LaunchSuccess(launch.Repository, agent));
        }
        else if (launch.IsAwaitingWork)
        {
            // A launch under way (another round is at the provider) reports its attempt and its deadline.
            var attempt = launch.Phase == LaunchPhase.InFlight ? launch.Attempts : launch.Attempts + 1;
            retries.Add(new ScheduledRetry(launch.Repository, launch.NextAttemptAt!.Value, attempt, launch.FailureType));
        }
        else
        {
            failures.Add(new LaunchFailure(launch.Repository, FailureMessages.LaunchFailed, launch.FailureType ?? FailureTypes.InvalidRequest));
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

    [LoggerMessage(EventId = 1001, EventName = "HandoffUnknownRun", Level = LogLevel.Information, Message = "Run {RunId} is unknown to group {GroupId}: nothing launched")]
    private partial void LogUnknownRun(long runId, long groupId);

    [LoggerMessage(EventId = 1002, EventName = "HandoffGroupMismatch", Level = LogLevel.Warning, Message = "Run {RunId} was asked for by group {GroupId}, which it does not belong to")]
    private partial void LogGroupMismatch(long runId, long groupId);

    [LoggerMessage(EventId = 1003, EventName = "HandoffLaunched", Level = LogLevel.Information, Message = "Run {RunId}: agent {AgentId} launched for {Repository} (attempt {Attempt})")]
    private partial void LogLaunched(long runId, string repository, string agentId, int attempt);

    [LoggerMessage(EventId = 1004, EventName = "HandoffRetryScheduled", Level = LogLevel.Warning, Message = "Run {RunId}: launch for {Repository} failed ({FailureType}) after {Attempt} attempt(s); retry at {RetryAt:O}")]
    private partial void LogRetryScheduled(long runId, string repository, string failureType, int attempt, DateTimeOffset retryAt);

    [LoggerMessage(EventId = 1005, EventName = "HandoffLaunchFailed", Level = LogLevel.Warning, Message = "Run {RunId}: launch for {Repository} failed for good ({FailureType}) after {Attempt} attempt(s)")]
    private partial void LogLaunchFailed(long runId, string repository, string failureType, int attempt);

    [LoggerMessage(EventId = 1006, EventName = "HandoffReconciled", Level = LogLevel.Information, Message = "Run {RunId}: found agent {AgentId} for {Repository} at the provider; adopted it instead of launching again")]
    private partial void LogReconciled(long runId, string repository, string agentId);

    [LoggerMessage(EventId = 1007, EventName = "HandoffUnknownIntegration", Level = LogLevel.Warning, Message = "Run {RunId} asks for integration {IntegrationId}, which is not configured")]
    private partial void LogUnknownIntegration(long runId, long integrationId);

    [LoggerMessage(EventId = 1009, EventName = "AgentTimedOut", Level = LogLevel.Warning, Message = "Run {RunId}: agent {AgentId} still unfinished after {MaxAge}; marked failed (timed_out)")]
    private partial void LogAgentTimedOut(long runId, string agentId, TimeSpan maxAge);

    [LoggerMessage(EventId = 1008, EventName = "AgentStatusChanged", Level = LogLevel.Information, Message = "Run {RunId}: agent {AgentId} moved from {From} to {To}")]
    private partial void LogAgentStatusChanged(long runId, string agentId, CodingAgentStatus from, CodingAgentStatus to);

    [LoggerMessage(EventId = 1013, EventName = "PromptOverCap", Level = LogLevel.Warning,
        Message = "Run {RunId}: {Repository} not launched: its prompt without any analysis is {Length} characters, over the integration's cap of {Cap}")]
    private partial void LogPromptOverCap(long runId, string repository, int length, int cap);

    // The exception's type only: its message may carry a provider's text.
    [LoggerMessage(EventId = 1012, EventName = "ProviderClientFaulted", Level = LogLevel.Error,
        Message = "Run {RunId}: the provider client failed unexpectedly during {Operation} ({ExceptionType}); a launch's outcome is then unknown, a read failed, a stop or follow-up failed")]
    private partial void LogProviderFaulted(long runId, string operation, string exceptionType);

    [LoggerMessage(EventId = 1014, EventName = "LaunchRoundDropped", Level = LogLevel.Error,
        Message = "Run {RunId}: the answers of a launch round do not fit the run's state and were not applied; its launches are reconciled at their deadline")]
    private partial void LogRoundDropped(long runId);

    [LoggerMessage(EventId = 1015, EventName = "LaunchAnswerLate", Level = LogLevel.Information,
        Message = "Run {RunId}: the answer to attempt {Attempt} for {Repository} came after the launch moved on; nothing to apply")]
    private partial void LogLateAnswer(long runId, string repository, int attempt);

    [LoggerMessage(EventId = 1018, EventName = "AgentOfAnotherLaunch", Level = LogLevel.Warning,
        Message = "Run {RunId}: the provider answered the launch for {Repository} with agent {AgentId}, which the run follows for {OtherRepository}; taken as an unreadable answer")]
    private partial void LogAgentOfAnotherLaunch(long runId, string repository, string agentId, string otherRepository);

    [LoggerMessage(EventId = 1016, EventName = "AgentNotFollowed", Level = LogLevel.Warning,
        Message = "Run {RunId}: a late answer names agent {AgentId} for {Repository}, which already has another agent; it is not followed and may need stopping")]
    private partial void LogAgentNotFollowed(long runId, string repository, string agentId);

    [LoggerMessage(EventId = 1017, EventName = "AgentCommandNotRecorded", Level = LogLevel.Warning,
        Message = "Run {RunId}: the provider accepted the {Command} for agent {AgentId}, but it could not be recorded ({ExceptionType}); answered as done")]
    private partial void LogCommandNotRecorded(long runId, string command, string agentId, string exceptionType);

    [LoggerMessage(EventId = 1021, EventName = "AgentCommandOutcomeUnknown", Level = LogLevel.Warning,
        Message = "Run {RunId}: the {Command} for agent {AgentId} reached the provider, but no answer said whether it was carried out ({FailureType}); answered as unknown")]
    private partial void LogCommandOutcomeUnknown(long runId, string command, string agentId, string failureType);

    [LoggerMessage(EventId = 1022, EventName = "AgentCommandOutcomeNotRecorded", Level = LogLevel.Warning,
        Message = "Run {RunId}: the {Command} for agent {AgentId}, whose outcome is unknown, could not be recorded ({ExceptionType}); the agent may not be watched again")]
    private partial void LogCommandOutcomeNotRecorded(long runId, string command, string agentId, string exceptionType);

    [LoggerMessage(EventId = 1019, EventName = "AgentReportOfAnotherRepository", Level = LogLevel.Warning,
        Message = "Run {RunId}: a {Source} report about agent {AgentId} names the repository {ReportedRepository}, not {Repository} it was launched on; not applied")]
    private partial void LogReportOfAnotherRepository(long runId, string source, string agentId, string reportedRepository, string repository);

    [LoggerMessage(EventId = 1020, EventName = "PullRequestOfAnotherRepository", Level = LogLevel.Warning,
        Message = "Run {RunId}: agent {AgentId} reported a pull request that is not one of {Repository}; not recorded as its pull request")]
    private partial void LogPullRequestOfAnotherRepository(long runId, string agentId, string repository);

    [LoggerMessage(EventId = 1011, EventName = "HandoffRepositoryNotLaunched", Level = LogLevel.Warning, Message = "Run {RunId}: {Repository} not launched ({FailureType})")]
    private partial void LogRepositoryNotLaunched(long runId, string repository, string failureType);

    [LoggerMessage(EventId = 1010, EventName = "AutomationTargetMismatch", Level = LogLevel.Warning,
        Message = "Run {RunId} asks for {Target} through integration {IntegrationId}, which is {Provider}: not handed off automatically")]
    private partial void LogTargetMismatch(long runId, long integrationId, string target, string provider);
}
