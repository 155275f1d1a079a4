using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Repositories;

namespace HandoffDapr.Core.Handoff;

/// <summary>Following agents: the status poll, signed webhook reports, maximum age, and what a provider's report of an agent changes.</summary>
public sealed partial class HandoffEngine
{
    /// <summary>
    /// Starts the status poll, the fallback for webhooks that never came: the agents of <see cref="RunHandoffState.AgentsToPoll"/>
    /// (every pending or running agent, those given up on whose end the provider has not shown yet, those awaiting a
    /// pull request after a follow-up, and ended ones a webhook then said finished without their pull request). Until
    /// its reports are recorded the poll's next time is its lease, so a poll whose reports never come back is made
    /// again then.
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
                catch (Exception exception)
                {
                    // A fault in a provider client (a cancellation the poll did not ask for included) is a failed read of
                    // this agent, not of the whole poll.
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
            LogPollDropped(poll.RunId);
            return new PollVerdict([]);
        }

        var completion = new PollCompletion(this, options, integrations, current, answers, timeProvider.GetUtcNow());
        completion.SelectReads();
        completion.ApplyReadsOfAgentsEndedMeanwhile();
        completion.WatchPolledAgents();
        completion.ScheduleNextPoll();
        // An overtaken poll that leaves nothing to read (its reads ended the agents, or it gave up on them past their
        // watch) ends the newer poll's schedule too: that poll may be lost, and the schedule would pass to the next
        // agent.
        await writer.SaveAsync(WithoutIdlePoll(completion.State), CancellationToken.None);
        completion.Counted.Publish();
        return completion.Verdict();
    }

    /// <summary>
    /// One poll's reports being recorded (<see cref="CompletePollAsync"/>), a step at a time: the reads to apply, those
    /// of agents ended meanwhile, each agent the poll was for watched by the kind of watch it is on, the next poll. Its
    /// fields gather what the steps decide: the state so far, whether it changed, the agents to stop, and those that
    /// stay on each watch.
    /// </summary>
    private sealed class PollCompletion
    {
        private readonly HandoffEngine engine;
        private readonly HandoffEngineOptions options;
        private readonly IIntegrationCatalog integrations;
        private readonly PollAnswers answers;
        private readonly PollRound poll;
        private readonly DateTimeOffset now;
        private readonly Dictionary<string, ProviderAgent> reports = new();
        // The watches and the agents to poll as the run stood before this poll's reports.
        private readonly IReadOnlyList<string> givenUp;
        private readonly IReadOnlyList<string> awaiting;
        private readonly IReadOnlyDictionary<string, DateTimeOffset> toConfirm;
        private readonly List<CodingAgentState> active;
        // How long a given-up agent stays watched, and how long a time-out waits for a read that keeps failing.
        private readonly TimeSpan watchLimit;
        private readonly List<AgentRef> timedOut = [];
        private readonly List<AgentRef> stillWorking = [];
        private readonly List<string> stillWatched = [];
        private readonly List<string> stillAwaiting = [];
        private readonly Dictionary<string, DateTimeOffset> stillConfirming = new();
        private RunHandoffState state;
        private bool changed;

        public PollCompletion(
            HandoffEngine engine, HandoffEngineOptions options, IIntegrationCatalog integrations,
            RunHandoffState current, PollAnswers answers, DateTimeOffset now)
        {
            this.engine = engine;
            this.options = options;
            this.integrations = integrations;
            this.answers = answers;
            poll = answers.Round;
            this.now = now;
            state = current;
            givenUp = current.Poll?.GivenUp ?? [];
            awaiting = current.Poll?.AwaitingPullRequest ?? [];
            toConfirm = current.Poll?.FinishesToConfirm ?? new Dictionary<string, DateTimeOffset>();
            active = current.AgentsToPoll.ToList();
            watchLimit = options.AgentMaxAge * 2;
        }

        public TurnMeasurements Counted { get; } = new();

        public RunHandoffState State => state;

        public PollVerdict Verdict() => new([.. timedOut, .. stillWorking]);

        public void SelectReads()
        {
            // A poll made again after this one's lease holds the schedule: its reads, made since, may be newer than
            // ours. (A follow-up that brought the next poll forward looks the same: the ends held back below then wait
            // one interval.)
            var overtaken = state.Poll?.NextPollAt != poll.LeaseUntil;
            for (var i = 0; i < poll.Agents.Count; i++)
            {
                // A read that names another repository than the agent's launch is not applied: a failed read, as far as
                // the agent is concerned (its time-out waits for a read that can be used).
                if (answers.Reports[i] is { } report && report.Id == poll.Agents[i].AgentId
                    && !engine.IsOfAnotherRepository(state, report, "poll", Counted))
                {
                    // Nor, from an overtaken poll, an end without a pull request of an agent the run shows at work: a
                    // newer read may have shown it at work again (a follow-up resumed it), and this old end would stop
                    // its watch, so the pull request it then opens would never be read. The newer poll reads it on and
                    // learns any end.
                    if (overtaken && report.PrUrl is null && report.Status.HasEnded()
                        && state.CodingAgents.TryGetValue(report.Id, out var known) && !known.Status.IsFinal())
                    {
                        continue;
                    }

                    reports[report.Id] = report;
                }
            }
        }

        public void ApplyReadsOfAgentsEndedMeanwhile()
        {
            // An agent this poll read that something else ended while the reads were out (a webhook that finished it
            // without its pull request) is not to be read on, but the read is still a fact: it may carry the pull
            // request.
            foreach (var report in reports.Values.Where(report => !active.Any(agent => agent.Id == report.Id)))
            {
                Apply(report);
            }
        }

        public void WatchPolledAgents()
        {
            foreach (var agent in active)
            {
                var report = reports.GetValueOrDefault(agent.Id);
                if (report is not null)
                {
                    Apply(report);
                }

                var latest = state.CodingAgents[agent.Id];
                var age = Age(state, latest, now);
                // An agent sent a follow-up is watched from then, whether it awaits its pull request or was given up
                // on since.
                var followedUpAt = FollowedUpAt(state, agent.Id);
                var watchedFor = followedUpAt is { } followedUp ? now - followedUp : age;
                if (awaiting.Contains(agent.Id))
                {
                    WatchAwaitingPullRequest(agent.Id, latest, watchedFor, report);
                }
                else if (givenUp.Contains(agent.Id))
                {
                    WatchGivenUp(agent.Id, latest, watchedFor, wasFollowedUp: followedUpAt is not null, report);
                }
                else if (toConfirm.TryGetValue(agent.Id, out var reportedAt))
                {
                    WatchFinishToConfirm(agent.Id, latest, reportedAt, report);
                }
                else if (IsOverAge(latest, age, report))
                {
                    TimeOutAndWatch(latest, age);
                }
            }
        }

        private void Apply(ProviderAgent report)
        {
            var updated = engine.ApplyAgentReport(state, report, Counted);
            changed |= !ReferenceEquals(updated, state);
            state = updated;
        }

        private void WatchAwaitingPullRequest(
            string agentId, CodingAgentState latest, TimeSpan watchedFor, ProviderAgent? report)
        {
            // Only its completion with a pull request, or the time since its last follow-up, ends the wait (one failed
            // with a pull request may still finish the follow-up's work). Not a read that shows it finished or stopped
            // (it may not have resumed yet), nor one that failed, nor one that shows it at work: a late webhook may yet
            // tell of an end before the follow-up, and nothing would read the pull request then.
            // One the run shows at work is timed out as any other, its age counted from that follow-up, whose work
            // it is.
            if (IsOverAge(latest, watchedFor, report))
            {
                TimeOutAndWatch(latest, watchedFor);
            }
            else if (!IsCompletedWithPullRequest(latest) && watchedFor <= watchLimit)
            {
                stillAwaiting.Add(agentId);
            }
        }

        private void WatchGivenUp(
            string agentId, CodingAgentState latest, TimeSpan watchedFor, bool wasFollowedUp, ProviderAgent? report)
        {
            // Watched until the provider shows an end (or says FINISHED: its read is applied before its watch), or for
            // twice the maximum age. Such an agent may be "completed" without a pull request: it is watched all the
            // same. One given up on after a follow-up (stopped or timed out since) is watched as one awaiting its pull
            // request is: until it completes with a pull request, for twice the maximum age from that follow-up. No
            // read's end ends it: a stale read may show the end from before the follow-up (STOPPED too, where it was
            // stopped then) while this stop has not taken (its outcome unknown, or a time-out's, best effort); and
            // while the run shows it at work, a late webhook may yet tell of that earlier end, which would take it off
            // every watch if it were polled as at work.
            var endShown = !wasFollowedUp && report?.Status.HasEnded() == true;
            if (!endShown && !IsCompletedWithPullRequest(latest) && watchedFor <= watchLimit)
            {
                stillWatched.Add(agentId);
            }

            // Shown at work, though given up on: its stop did not take or was never sent (the provider out of reach,
            // the process gone before it, or in Dapr mode a turn repeated after daprd lost its answer, which finds the
            // agent failed already). Stopped again, at each read that shows it so, where the provider can stop agents;
            // a follow-up would have taken it off this list.
            if (report?.Status is ProviderAgentStatus.Creating or ProviderAgentStatus.Running
                && IsEndedUnfinished(latest) && state.LaunchOfAgent(agentId) is { } launch
                && integrations.Find(launch.IntegrationId)?.Provider.CanStop == true)
            {
                Counted.Log(() => engine.LogGivenUpStillWorking(poll.RunId, agentId, launch.Repository));
                stillWorking.Add(new AgentRef(agentId, launch.IntegrationId));
            }
        }

        private void WatchFinishToConfirm(
            string agentId, CodingAgentState latest, DateTimeOffset reportedAt, ProviderAgent? report)
        {
            // Read until a read shows it finished (its pull request learnt, or none to learn) or with a pull request,
            // for twice the maximum age from the webhook at most. Not ended by a read of another end, which may be from
            // before the finish; never stopped: a read at work is work resumed since.
            if (report?.Status != ProviderAgentStatus.Finished && !HasPullRequest(latest)
                && now - reportedAt <= watchLimit)
            {
                stillConfirming[agentId] = reportedAt;
            }
        }

        /// <summary>
        /// A read that failed says nothing about the agent: its time-out waits for an answer, up to twice the maximum
        /// age. Past that, only at a poll that tried its read: one it did not (<see cref="ReadTried"/>) waits for the
        /// next.
        /// </summary>
        private bool IsOverAge(CodingAgentState agent, TimeSpan age, ProviderAgent? report) =>
            !agent.Status.IsFinal() && age > options.AgentMaxAge
            && (report is not null || (age > watchLimit && ReadTried(agent.Id)));

        /// <summary>
        /// Not for an agent adopted while the poll was out, nor for any of a poll cut short (shutdown), whose missing
        /// answers may be reads never made. Asked only past twice the maximum age, which is rare: no set built at every
        /// poll.
        /// </summary>
        private bool ReadTried(string agentId) =>
            !answers.Interrupted && poll.Agents.Any(read => read.AgentId == agentId);

        /// <summary>
        /// Failed, stopped after the save, and read on as given up until the provider shows it ended, within its watch.
        /// Not one whose finish a webhook reported (held back since its last follow-up) and whose read failed again at
        /// this time-out: the provider's word ends it, completed without the pull request no read could tell (a read
        /// that shows it at work past its age times it out as any).
        /// </summary>
        private void TimeOutAndWatch(CodingAgentState agent, TimeSpan age)
        {
            if (reports.GetValueOrDefault(agent.Id) is null && FinishReportedSince(state, agent.Id))
            {
                Counted.Log(() =>
                    engine.LogFinishTakenUnconfirmed(poll.RunId, agent.Id, state.LaunchOfAgent(agent.Id)?.Repository));
                var finished = new ProviderAgent(agent.Id, ProviderAgentStatus.Finished);
                state = engine.ApplyAgentReport(state, finished, Counted);
                changed = true;
                return;
            }

            state = engine.TimeOut(state, agent, now, Counted);
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

        /// <summary>
        /// The doubling interval and what stays watched, while this poll still holds the lease; else only the agents it
        /// timed out, added to the newer poll's watch.
        /// </summary>
        public void ScheduleNextPoll()
        {
            if (state.Poll?.NextPollAt == poll.LeaseUntil)
            {
                // A poll cut short (shutdown) read little or nothing: it is no quiet poll, and the next comes at the
                // first interval.
                var quietPolls = changed ? 0 : answers.Interrupted ? state.Poll.QuietPolls : state.Poll.QuietPolls + 1;
                var interval = answers.Interrupted && !changed ? options.PollInterval
                    : TimeSpan.FromTicks(Math.Min(
                        options.PollMaxInterval.Ticks, options.PollInterval.Ticks * (1L << Math.Min(quietPolls, 20))));
                var watched = stillWatched.Count > 0 ? stillWatched : null;
                var awaited = stillAwaiting.Count > 0 ? stillAwaiting : null;
                var followedUp = state.Poll.FollowedUpAt
                    ?.Where(entry => stillAwaiting.Contains(entry.Key) || stillWatched.Contains(entry.Key))
                    .ToDictionary() is { Count: > 0 } kept ? kept : null;
                var confirming = stillConfirming.Count > 0 ? stillConfirming : null;
                state = state with
                {
                    Poll = state.HasActiveAgents || watched is not null || awaited is not null || confirming is not null
                        ? new PollSchedule(now + interval, quietPolls, watched, awaited, followedUp, confirming) : null,
                };
            }
            else if (timedOut.Count > 0)
            {
                // The newer poll holds the schedule, but the agents this one gave up on must still be watched, as given
                // up (no longer awaiting a pull request, which would keep them from being stopped again).
                var timedOutIds = timedOut.Select(agent => agent.AgentId);
                var gaveUp = engine.WatchingGivenUp(state.Poll, timedOutIds.Where(stillWatched.Contains), now);
                state = state with
                {
                    Poll = gaveUp with { AwaitingPullRequest = Without(gaveUp.AwaitingPullRequest, [.. timedOutIds]) },
                };
            }
        }
    }

    /// <summary>
    /// When the agent was last sent a follow-up, if it has an entry. Not <c>GetValueOrDefault</c>: on a dictionary of
    /// <see cref="DateTimeOffset"/> that gives <see cref="DateTimeOffset.MinValue"/> for an agent without one (another agent
    /// of the run followed up), whose watch would then be over at once.
    /// </summary>
    private static DateTimeOffset? FollowedUpAt(RunHandoffState state, string agentId) =>
        state.Poll?.FollowedUpAt is { } followedUpAt && followedUpAt.TryGetValue(agentId, out var at) ? at : null;

    /// <summary>
    /// Stops the agents a poll's verdict gave up on (best effort), as <see cref="FinishPollAsync"/> does after recording it:
    /// for an owner that must make those calls itself, the verdict's caller having never received it.
    /// </summary>
    public Task StopGivenUpAsync(long runId, PollVerdict verdict, CancellationToken cancellationToken) =>
        StopAgentsAsync(runId, verdict.ToStop, cancellationToken);

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
                    if (!cancellationToken.IsCancellationRequested && integrations.Find(agent.IntegrationId) is { } integration
                        && (await integration.Provider.StopAsync(agent.AgentId, cancellationToken)).Failure is { } failure
                        && failure.FailureType != FailureTypes.NotSupported)
                    {
                        // Said, not retried here: the next read that shows the agent at work sends the stop again.
                        LogStopNotTaken(runId, agent.AgentId, failure.FailureType);
                    }
                }
                catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
                {
                    // Shutdown or a caller gone: the agent stays failed in our state; the next poll still watches it.
                }
                catch (Exception exception)
                {
                    // A cancellation not asked for included: the other agents' stops are still sent.
                    LogProviderFaulted(runId, "stop", exception.GetType().Name);
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
    /// report that names another repository than the agent's launch is not applied either. Not cancellable, as a round's
    /// answers are not: a report read is saved whether or not its sender still waits.
    /// </summary>
    public async Task<AgentReportStatus> ApplyAgentReportAsync(RunHandoffState? state, AgentReport signed, IRunStateWriter writer)
    {
        // A host of an earlier release puts the repository on the report only.
        var report = signed.Agent.Repository is null && signed.Repository is { } named ? signed.Agent with { Repository = named } : signed.Agent;
        if (state is null)
        {
            return AgentReportStatus.UnknownAgent;
        }

        if (!state.CodingAgents.ContainsKey(report.Id))
        {
            return await AdoptReportedAgentAsync(state, report, signed, writer);
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

        var updated = ApplyWebhookReport(state, report, counted);
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
    /// A webhook's report of an agent the run does not know: one on the branch of a launch that has none was created
    /// by an attempt whose answer was lost. Adopted, as reconciling would, rather than let it run unseen (after the
    /// last attempt nothing else would look for it); any other is an unknown agent.
    /// </summary>
    private async Task<AgentReportStatus> AdoptReportedAgentAsync(
        RunHandoffState state, ProviderAgent report, AgentReport signed, IRunStateWriter writer)
    {
        if (report.BranchName is not { Length: > 0 } branch
            || signed.Repository is not { Length: > 0 } repository
            || state.Launches.LastOrDefault(launch => launch.AgentId is null && launch.BranchName == branch
                    && launch.IntegrationId == signed.IntegrationId
                    && string.Equals(launch.Repository, repository, StringComparison.OrdinalIgnoreCase))
                is not { } orphaned)
        {
            return AgentReportStatus.UnknownAgent;
        }

        var now = timeProvider.GetUtcNow();
        var counted = new TurnMeasurements();
        counted.Log(() => LogReconciled(state.RunId, orphaned.Repository, report.Id, FoundByWebhook));
        var confirm = IsFinishToConfirm(report, orphaned, agent: null);
        var adopted = WithAgentOf(state, orphaned, confirm ? AtWork(report) : report, now, counted)
            .WithTimeline([new TimelineEntry(
                now, TimelineEvents.Reconciled, orphaned.Repository, report.Id, "reported by webhook")]);
        adopted = confirm ? HeldForARead(adopted, report.Id, now, counted) : PollingIfActive(adopted, now);
        await writer.SaveAsync(adopted, CancellationToken.None);
        counted.Publish();
        return AgentReportStatus.Changed;
    }

    /// <summary>
    /// A webhook's report of one of the run's agents, applied (<see cref="ApplyAgentReport"/>); a finish without its
    /// pull request held for a read (<see cref="IsFinishToConfirm"/>, <see cref="IsFinishOfEndedAgentToConfirm"/>).
    /// </summary>
    private RunHandoffState ApplyWebhookReport(RunHandoffState state, ProviderAgent report, TurnMeasurements counted)
    {
        var launch = state.LaunchOfAgent(report.Id)!;
        var known = state.CodingAgents[report.Id];
        var confirm = IsFinishToConfirm(report, launch, known);
        var confirmEnded = !confirm && IsFinishOfEndedAgentToConfirm(state, report, launch, known);
        var updated = ApplyAgentReport(state, confirm ? AtWork(report) : report, counted);
        if (!confirm && !confirmEnded)
        {
            return updated;
        }

        var now = timeProvider.GetUtcNow();
        updated = HeldForARead(updated, report.Id, now, counted);
        if (!confirmEnded)
        {
            return updated;
        }

        // Its finish is taken (a failed one is completed), and a read still looks for the pull request.
        var poll = updated.Poll!;
        return updated with
        {
            Poll = poll with
            {
                GivenUp = Without(poll.GivenUp, [report.Id]),
                FinishesToConfirm = With(poll.FinishesToConfirm, report.Id, now),
            },
        };
    }

    /// <summary>
    /// A webhook saying an agent asked to open a pull request finished, without one of its repository: Cursor's webhooks can
    /// leave out optional fields such as <c>target.prUrl</c> (superplanehq/superplane#4335), and an agent completed without
    /// a pull request is not read again, so the pull request would be lost. Its end is learnt from a read instead, made at
    /// once (<see cref="HeldForARead"/>), whose answer stands either way. Only for an agent the run shows at work, or one a
    /// webhook adopts: a final one is not reopened (a failed one is completed, and read on:
    /// <see cref="IsFinishOfEndedAgentToConfirm"/>, or watched already).
    /// </summary>
    private static bool IsFinishToConfirm(ProviderAgent report, RepositoryLaunch launch, CodingAgentState? agent) =>
        agent?.Status.IsFinal() != true && IsFinishWithoutItsPullRequest(report, launch);

    /// <summary>A report of a finish without a pull request of the launch's repository, for a launch that asked for one.</summary>
    private static bool IsFinishWithoutItsPullRequest(ProviderAgent report, RepositoryLaunch launch) =>
        report.Status == ProviderAgentStatus.Finished && launch.AutoCreatePr && PullRequestOfLaunch(WebLinkOrNull(report.PrUrl), launch) is null;

    /// <summary>
    /// The same webhook's finish of an agent the run shows ended (failed, or completed without a pull request): a
    /// follow-up sent elsewhere resumed it, or our failure was a guess. The finish is applied, and the agent read on for the
    /// pull request the webhook left out (<see cref="PollSchedule.FinishesToConfirm"/>). For one no longer read, which
    /// would never learn it; and for one given up on without a follow-up, whose watch counts from its launch and stops it
    /// when a read shows it at work, which is work resumed since it finished. Not for one awaiting a pull request after a
    /// follow-up, or given up on after one: that finish may be from before the follow-up, and their watches read it on.
    /// </summary>
    private static bool IsFinishOfEndedAgentToConfirm(RunHandoffState state, ProviderAgent report, RepositoryLaunch launch, CodingAgentState agent) =>
        agent.Status.IsFinal() && !HasPullRequest(agent) && IsFinishWithoutItsPullRequest(report, launch)
        && (!state.AgentsToPoll.Any(watched => watched.Id == agent.Id)
            || (state.Poll?.GivenUp?.Contains(agent.Id) == true && state.Poll.AwaitingPullRequest?.Contains(agent.Id) != true
                && FollowedUpAt(state, agent.Id) is null && !WasFollowedUp(state, agent.Id)));

    /// <summary>
    /// The timeline has a follow-up of the agent: a schedule stored before <see cref="PollSchedule.FollowedUpAt"/> was kept
    /// has none for one given up on after a follow-up.
    /// </summary>
    private static bool WasFollowedUp(RunHandoffState state, string agentId) =>
        state.Timeline.Any(entry => entry.AgentId == agentId && entry.Event == TimelineEvents.FollowupSent);

    /// <summary>A report's end held back for a read: applied as the agent at work (a pending one moves to running).</summary>
    private static ProviderAgent AtWork(ProviderAgent report) => report with { Status = ProviderAgentStatus.Running, Summary = null };

    /// <summary>Whether a webhook's finish of the agent was held back since its last follow-up (or ever, without one).</summary>
    /// <remarks>
    /// By the timeline's order, not the schedule's <see cref="PollSchedule.FollowedUpAt"/>: that goes once the agent's
    /// watch is over, while the agent may still be at work (a stop whose outcome is unknown), and a finish from before
    /// the follow-up would then end the follow-up's work. The bounded timeline keeps the agent's latest of each
    /// (<see cref="RunHandoffState.WithTimeline"/>); of a run stored before it did, a follow-up's entry trimmed off took
    /// the older ones with it.
    /// </remarks>
    private static bool FinishReportedSince(RunHandoffState state, string agentId)
    {
        for (var i = state.Timeline.Count - 1; i >= 0; i--)
        {
            if (state.Timeline[i] is { } entry && entry.AgentId == agentId
                && entry.Event is TimelineEvents.FinishReported or TimelineEvents.FollowupSent)
            {
                return entry.Event == TimelineEvents.FinishReported;
            }
        }

        return false;
    }

    /// <summary>
    /// A held-back finish: kept in the timeline, once since the agent's last follow-up (should every read fail until the
    /// agent's time-out, the webhook's word ends it: <see cref="FinishReportedSince"/>), and the next poll brought forward
    /// to now for the read that confirms it. A poll already due is left alone (a webhook delivered again changes nothing);
    /// one under way is overtaken, as a follow-up's is, and is made again.
    /// </summary>
    private RunHandoffState HeldForARead(RunHandoffState state, string agentId, DateTimeOffset now, TurnMeasurements counted)
    {
        if (!FinishReportedSince(state, agentId))
        {
            state = state.WithTimeline([new TimelineEntry(now, TimelineEvents.FinishReported, state.LaunchOfAgent(agentId)?.Repository, agentId, "without its pull request; read to confirm")]);
        }

        if (state.Poll is { } poll && poll.NextPollAt <= now)
        {
            return state;
        }

        counted.Log(() => LogFinishToConfirm(state.RunId, agentId, state.LaunchOfAgent(agentId)?.Repository));
        return state with { Poll = (state.Poll ?? new PollSchedule(now, 0)) with { NextPollAt = now, QuietPolls = 0 } };
    }

    /// <summary>The schedule's map of agents with this one's time set.</summary>
    private static Dictionary<string, DateTimeOffset> With(IReadOnlyDictionary<string, DateTimeOffset>? times, string agentId, DateTimeOffset at) =>
        new(times ?? new Dictionary<string, DateTimeOffset>()) { [agentId] = at };

    /// <summary>These agents taken off one of the schedule's lists; null once none is left, as the schedule stores "none".</summary>
    private static IReadOnlyList<string>? Without(IReadOnlyList<string>? agentIds, IReadOnlyCollection<string> removed) =>
        agentIds?.Where(id => !removed.Contains(id)).ToList() is { Count: > 0 } rest ? rest : null;

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

        if (PullRequestOfLaunch(report.PrUrl, launch) is { } pullRequest)
        {
            return pullRequest;
        }

        counted.Log(() => LogPullRequestOfAnotherRepository(runId, report.Id, launch.Repository));
        return null;
    }

    /// <summary>The canonical link of <paramref name="link"/>'s pull request if it is one of the launch's repository.</summary>
    private static string? PullRequestOfLaunch(string? link, RepositoryLaunch launch) =>
        link is not null && RepositoryName.TryParse(launch.Repository, out var repository) ? repository.Value.PullRequestLinkedBy(link) : null;

    /// <summary>
    /// Ended short of completing with a pull request: completed without one, or failed (stopped, timed out, or the
    /// agent's own error; perhaps after opening one): what a follow-up can still change, and a later read correct.
    /// </summary>
    private static bool IsEndedUnfinished(CodingAgentState agent) =>
        agent.Status.IsFinal() && !IsCompletedWithPullRequest(agent);

    /// <summary>Nothing more to learn of it: a follow-up's later work is not watched (its webhook still counts).</summary>
    private static bool IsCompletedWithPullRequest(CodingAgentState agent) =>
        agent.Status == CodingAgentStatus.Completed && HasPullRequest(agent);

    private static bool HasPullRequest(CodingAgentState agent) => PullRequestIn(agent.Results) is not null;

    private static string? PullRequestIn(IReadOnlyList<CodingAgentResult> results) => results.FirstOrDefault(result => result.PrUrl is not null)?.PrUrl;

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
        // An agent that ended without a pull request and shows one now: the status stays, the pull request is learnt.
        // For one completed, whatever the report's status: a follow-up's work may have opened it and then failed, or still
        // be at work; read only for FINISHED, such a pull request was never learnt, and the watch read it on until its end.
        // For one failed (its error, a stop or a time-out that raced the work), from a report of its end: one at work is
        // still stopped again and read on, and its end shows the pull request.
        var pullRequestLearnt = status is not null && report.PrUrl is { Length: > 0 } && !HasPullRequest(agent)
            && (agent.Status == CodingAgentStatus.Completed || (agent.Status == CodingAgentStatus.Failed && status == CodingAgentStatus.Failed));
        if (status is null || !(agent.Status.CanMoveTo(status.Value) || finishedAfterAll || pullRequestLearnt))
        {
            return state;
        }

        if (pullRequestLearnt && !finishedAfterAll)
        {
            // Final is final: completed or failed it stays.
            status = agent.Status;
        }

        var results = launch is null ? agent.Results : ResultsOf(report, status.Value, launch, agent.Results);

        var now = timeProvider.GetUtcNow();
        var (runId, from, to, repository) = (state.RunId, agent.Status, status.Value, launch?.Repository);
        // A pull request learnt for an agent already completed is no entry into a status: counted or logged as one, an
        // agent would have entered completed twice ("moved from completed to completed").
        if (from != to)
        {
            // In the API's and the metrics' names ("running", not "Running"), so one search finds a status everywhere.
            counted.Log(() => LogAgentStatusChanged(runId, report.Id, repository, from.WireName(), to.WireName()));
            counted.Count(HandoffTelemetry.AgentStatusChanges, Tag("status", status.Value.WireName()));
        }

        LogPullRequestOpened(counted, runId, report.Id, launch, results, agent.Results);

        state = state
            .WithAgent(agent with { Status = status.Value, AgentUrl = report.AgentUrl ?? agent.AgentUrl, Results = results })
            .WithTimeline([new TimelineEntry(now, TimelineEvents.StatusChanged, launch?.Repository, report.Id, status.Value.WireName())]);
        // A failed agent that only learns its pull request keeps its failure type (timed_out stays timed_out).
        return launch is null || from == to ? state
            : status == CodingAgentStatus.Failed ? state.WithLaunch(launch with { FailureType = FailureTypes.AgentFailed, UpdatedAt = now })
            : finishedAfterAll ? state.WithLaunch(launch with { FailureType = null, UpdatedAt = now })
            : state;
    }

    /// <summary>
    /// The pull request is what the handoff is for, so the log names it once: where an agent's results are made, when
    /// they hold one the agent's did not (an agent failed with its pull request keeps it, and may finish after all).
    /// </summary>
    private void LogPullRequestOpened(
        TurnMeasurements counted, long runId, string agentId, RepositoryLaunch? launch, IReadOnlyList<CodingAgentResult> results, IReadOnlyList<CodingAgentResult> before)
    {
        if (launch is not null && PullRequestIn(results) is { } pullRequest && pullRequest != PullRequestIn(before))
        {
            counted.Log(() => LogPullRequestLearnt(runId, agentId, pullRequest, launch.Repository));
        }
    }

    /// <summary>
    /// A completed agent's result for its repository (branch and pull request), and a failed one's that shows a pull
    /// request; other reports keep what was there. A pull request once learnt is kept: a later report without one (a
    /// stale finish, say) does not drop it, nor the summary that came with it; nor does one naming the same pull request
    /// without a summary or branch (a read after the webhook that told them).
    /// </summary>
    private static IReadOnlyList<CodingAgentResult> ResultsOf(ProviderAgent report, CodingAgentStatus status, RepositoryLaunch launch, IReadOnlyList<CodingAgentResult> current)
    {
        if (status != CodingAgentStatus.Completed && !(status == CodingAgentStatus.Failed && report.PrUrl is not null))
        {
            return current;
        }

        // What was told with the pull request learnt, unless the report names another (a follow-up's), which it does
        // not describe.
        var known = current.FirstOrDefault(
            result => result.PrUrl is not null && (report.PrUrl is null || result.PrUrl == report.PrUrl));

        return [new CodingAgentResult(
            report.Summary ?? known?.Description, launch.RepoProvider, launch.Repository, report.BranchName ?? known?.BranchName ?? launch.BranchName, report.PrUrl ?? known?.PrUrl)];
    }

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
        Name = BoundedOrNull(WithoutBidiControls(agent.Name), MaxAgentNameLength),
        Summary = BoundedOrNull(WithoutBidiControls(agent.Summary), MaxSummaryLength),
        BranchName = GitRefName.IsValidBranch(agent.BranchName) ? agent.BranchName : null,
    };

    /// <summary>
    /// A provider's own text (an agent's name, its summary) is stored in the run and served to every reader of it: a
    /// compromised provider or a leaked webhook secret must not make it megabytes long. Longer text is cut.
    /// </summary>
    public const int MaxAgentNameLength = 200;

    public const int MaxSummaryLength = 4096;

    /// <summary>
    /// The text without bidi embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): kept, they would show
    /// the rest of a name or summary reordered wherever it is shown, as a link's text or a pull request's description.
    /// Other characters stay (a summary's line breaks, an emoji's joiners).
    /// </summary>
    private static string? WithoutBidiControls(string? text) =>
        text is null || (text.AsSpan().IndexOfAnyInRange('\u202A', '\u202E') < 0 && text.AsSpan().IndexOfAnyInRange('\u2066', '\u2069') < 0)
            ? text
            : string.Concat(text.Where(c => c is not (>= '\u202A' and <= '\u202E') and not (>= '\u2066' and <= '\u2069')));

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
            // AbsoluteUri escapes double quotes and angle brackets but keeps the apostrophe (an RFC 3986 sub-delimiter),
            // which ends an href written in single quotes just as a double quote ends one in double quotes.
            ? AsciiHost(uri).AbsoluteUri.Replace("'", "%27", StringComparison.Ordinal)
            : null;

    /// <summary>
    /// An internationalized host in its ASCII (punycode) form: AbsoluteUri keeps the Unicode one, so a host spelled
    /// with look-alike letters (a Cyrillic "с" in cursor.com) would read as the real one wherever the link is shown.
    /// </summary>
    private static Uri AsciiHost(Uri uri) =>
        string.Equals(uri.Host, uri.IdnHost, StringComparison.Ordinal) ? uri : new UriBuilder(uri) { Host = uri.IdnHost }.Uri;

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
        LogPullRequestOpened(counted, state.RunId, agent.Id, launch, agentState.Results, []);
        return state.WithAgent(agentState).WithLaunch(launch with
        {
            Phase = LaunchPhase.Launched,
            AgentId = agent.Id,
            FailureType = status == CodingAgentStatus.Failed ? FailureTypes.AgentFailed : null,
            NextAttemptAt = null,
            UpdatedAt = now,
        });
    }
}
