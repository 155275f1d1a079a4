using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;

namespace HandoffDapr.Core.Handoff;

/// <summary>A person's stop or follow-up of one agent: sent outside the owner's turn, recorded in a new one.</summary>
public sealed partial class HandoffEngine
{
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
            || state.LaunchOfAgent(agentId) is not { } launch)
        {
            return new AgentCommandOutcome(AgentCommandStatus.UnknownAgent);
        }

        // Its integration taken out of the settings since: "no such agent" would contradict the run, which shows it.
        if (integrations.Find(launch.IntegrationId) is not { } integration)
        {
            return new AgentCommandOutcome(AgentCommandStatus.UnknownIntegration, agent);
        }

        var operation = stop ? "stop" : "follow-up";
        var sent = new AgentCommandSent(
            state.RunId, agentId, stop, CommandId: Guid.NewGuid().ToString("N"),
            FollowupSeen: FollowedUpAt(state, agentId));
        // Stopped before anything was sent (shutdown past its grace): the caller may send it again, elsewhere.
        cancellationToken.ThrowIfCancellationRequested();
        var result = await SendCommandAsync(state.RunId, operation, integration.Provider, command, cancellationToken);
        if (result.Failure is { RequestSent: true, OutcomeUnknown: true } unknown)
        {
            return await RecordOutcomeUnknownAsync(
                sent with { OutcomeUnknown = true }, operation, agent, unknown.FailureType, recorder);
        }

        if (!result.IsSuccess)
        {
            LogCommandRefused(state.RunId, operation, agentId, launch.Repository, result.Failure!.FailureType);
            return new AgentCommandOutcome(AgentCommandStatus.ProviderFailed, agent, result.Failure.FailureType);
        }

        return await RecordCommandTakenAsync(sent, operation, launch.Repository, agent, recorder);
    }

    /// <summary>Sends the command: a fault, or a cancellation while at the provider, is an unknown outcome.</summary>
    private async Task<ProviderResult<bool>> SendCommandAsync(
        long runId,
        string operation,
        ICodingAgentProvider provider,
        Func<ICodingAgentProvider, CancellationToken, Task<ProviderResult<bool>>> command,
        CancellationToken cancellationToken)
    {
        try
        {
            return await command(provider, cancellationToken);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Stopped while at the provider, which may have it: "try again" could send a follow-up twice. An unknown
            // outcome, as for a launch its round stopped.
            return ProviderResult<bool>.Failed(ProviderFailureClassifier.Unanswered);
        }
        catch (Exception exception)
        {
            // A fault in a provider client (a cancellation the caller did not ask for included: its own time-out, say)
            // is the provider's answer not understood, not the service failing (not a 500).
            // The request may be out, as for a launch that faulted: "not carried out" could make the caller send a
            // follow-up twice, so its outcome is unknown.
            LogProviderFaulted(runId, operation, exception.GetType().Name);
            return ProviderResult<bool>.Failed(ProviderFailureClassifier.UnusableAnswer);
        }
    }

    /// <summary>
    /// Sent, and no answer says whether it was carried out (a time-out, a 500 mid-request, a gateway's 502 or 504):
    /// "not carried out" could make the caller send a follow-up twice. A follow-up that may have run is recorded so
    /// the agent is watched again. A stop that may have taken leaves the agent as it is (the poll, which reads it on,
    /// learns whether it took), and moves an agent awaiting a follow-up's pull request to the given-up watch as an
    /// answered stop does.
    /// </summary>
    private async Task<AgentCommandOutcome> RecordOutcomeUnknownAsync(
        AgentCommandSent sent, string operation, CodingAgentState agent, string failureType, IRoundRecorder recorder)
    {
        LogCommandOutcomeUnknown(sent.RunId, operation, sent.AgentId, failureType);
        try
        {
            await recorder.RecordCommandAsync(sent);
        }
        catch (Exception exception) when (exception is not OperationCanceledException)
        {
            LogCommandOutcomeNotRecorded(sent.RunId, operation, sent.AgentId, exception.GetType().Name);
        }

        return new AgentCommandOutcome(AgentCommandStatus.OutcomeUnknown, agent, failureType);
    }

    /// <summary>
    /// A command the provider took, recorded in the owner's turn: done for the caller even where it is not recorded.
    /// </summary>
    private async Task<AgentCommandOutcome> RecordCommandTakenAsync(
        AgentCommandSent sent, string operation, string repository, CodingAgentState agent, IRoundRecorder recorder)
    {
        // A person's action at the provider: the log says it happened even where the timeline's entry is not saved.
        LogCommandTaken(sent.RunId, operation, sent.AgentId, repository);
        try
        {
            var recorded = await recorder.RecordCommandAsync(sent);
            if (recorded.Status != AgentCommandStatus.UnknownAgent)
            {
                return recorded;
            }

            // Retention deleted the run between the check and the record (a settled run's agent, followed up): the
            // provider has taken the command all the same, so the caller is not told the agent is unknown.
            LogCommandRunDeleted(sent.RunId, operation, sent.AgentId);
        }
        catch (Exception exception) when (exception is not OperationCanceledException)
        {
            // The provider has taken the command: "try again" would send a follow-up twice. The caller is told it was
            // done; the timeline misses the entry, and a stopped agent's end is learnt by the next poll. A follow-up to
            // an agent that ended is not watched either (nothing saved says so): what it does is learnt from a webhook
            // only.
            LogCommandNotRecorded(sent.RunId, operation, sent.AgentId, exception.GetType().Name);
        }

        return new AgentCommandOutcome(
            AgentCommandStatus.Done,
            sent.Stop && !agent.Status.IsFinal() ? agent with { Status = CodingAgentStatus.Failed } : agent);
    }

    /// <summary>Records a command the provider accepted (or one that may have been carried out), in the run's current state.</summary>
    public async Task<AgentCommandOutcome> RecordCommandAsync(RunHandoffState? state, AgentCommandSent sent, IRunStateWriter writer)
    {
        if (state is null || state.RunId != sent.RunId || !state.CodingAgents.TryGetValue(sent.AgentId, out var agent)
            || state.LaunchOfAgent(sent.AgentId) is not { } launch)
        {
            return new AgentCommandOutcome(AgentCommandStatus.UnknownAgent);
        }

        var now = timeProvider.GetUtcNow();
        // When a follow-up is recorded: in the timeline too, so that a later one can be kept later than it.
        var followedUpAt = now;
        if (!sent.Stop && !IsCompletedWithPullRequest(agent))
        {
            (state, followedUpAt) = WatchFollowedUpAgent(state, sent.AgentId, now);
        }

        if (sent.Stop)
        {
            state = MoveStoppedFollowupToGivenUp(state, sent, now);
        }

        var counted = new TurnMeasurements();
        if (sent.Stop && !sent.OutcomeUnknown && !agent.Status.IsFinal())
        {
            (state, agent) = FailStoppedAgent(state, agent, sent.AgentId, counted, now);
        }

        state = state.WithTimeline([new TimelineEntry(
            followedUpAt, sent.Stop ? TimelineEvents.Stopped : TimelineEvents.FollowupSent, launch.Repository, sent.AgentId, sent.OutcomeUnknown ? "outcome unknown" : null)]);
        await writer.SaveAsync(state, CancellationToken.None);
        counted.Publish();
        return new AgentCommandOutcome(AgentCommandStatus.Done, agent);
    }

    /// <summary>
    /// The poll's schedule after a follow-up of an agent not completed with its pull request: the agent watched as
    /// awaiting one, from this follow-up's time (returned, for the timeline).
    /// </summary>
    private (RunHandoffState State, DateTimeOffset FollowedUpAt) WatchFollowedUpAgent(
        RunHandoffState state, string agentId, DateTimeOffset now)
    {
        // A follow-up sets an agent that ended short of its pull request to work again: a finished one maybe on the
        // pull request it did not open, a stopped, failed or timed-out one on whatever it was asked, its watch perhaps
        // over. Read it on until it completes with a pull request, counting the watch from this follow-up, so that pull
        // request is learnt without a webhook too. One the run still shows at work may have ended unseen (its webhook
        // lost, or none, and the poll's interval up to PollMaxInterval): the next read may show that end, before it
        // resumes, and must not end its watch either.
        var soon = now + options.PollInterval;
        var poll = state.Poll ?? new PollSchedule(soon, 0);
        // Kept later than the agent's follow-up recorded before, even on a coarse clock: a stop tells by it which
        // follow-up it saw. The schedule keeps that one's time while the agent is watched, and no read's end ends that
        // watch: only its pull request, or twice the maximum age.
        var followedUpAt = FollowedUpAt(state, agentId) is { } previous && previous >= now ? previous.AddTicks(1) : now;

        state = state with
        {
            Poll = poll with
            {
                NextPollAt = poll.NextPollAt < soon ? poll.NextPollAt : soon,
                QuietPolls = 0,
                // Watched as awaiting now: on the given-up watch, a read that shows it at work would have it stopped
                // again.
                GivenUp = Without(poll.GivenUp, [agentId]),
                AwaitingPullRequest = [.. (poll.AwaitingPullRequest ?? []).Union([agentId])],
                FollowedUpAt = With(poll.FollowedUpAt, agentId, followedUpAt),
            },
        };
        return (state, followedUpAt);
    }

    /// <summary>
    /// A stop of an agent awaiting a follow-up's pull request, the stop having seen that follow-up: the agent moved to
    /// the given-up watch.
    /// </summary>
    private RunHandoffState MoveStoppedFollowupToGivenUp(
        RunHandoffState state, AgentCommandSent stop, DateTimeOffset now)
    {
        // A stop checked against the run before its latest follow-up was recorded crossed that follow-up: the provider
        // may have taken the follow-up last, and set the agent to work again. Its wait for a pull request goes on
        // (ending it wrongly loses the pull request; keeping it costs reads until the watch runs out).
        var crossedFollowup = FollowedUpAt(state, stop.AgentId) is { } latestFollowup
            && latestFollowup != stop.FollowupSeen;
        if (!crossedFollowup && state.Poll is { AwaitingPullRequest: { } awaited } stopped
            && awaited.Contains(stop.AgentId))
        {
            // A person stopped the work a follow-up started. Read on as an agent given up on (stopped again if a read
            // shows it at work after this stop took), until it completes with a pull request or its watch runs out: a
            // finish the stop raced, or the follow-up's finish where the stop did not take, is still learnt.
            state = state with
            {
                Poll = WatchingGivenUp(stopped, [stop.AgentId], now) with
                {
                    AwaitingPullRequest = Without(awaited, [stop.AgentId]),
                },
            };
        }

        return state;
    }

    /// <summary>A stop the provider took, of an agent not yet ended: the agent failed (counted), and read on.</summary>
    private (RunHandoffState State, CodingAgentState Agent) FailStoppedAgent(
        RunHandoffState state, CodingAgentState agent, string agentId, TurnMeasurements counted, DateTimeOffset now)
    {
        agent = agent with { Status = CodingAgentStatus.Failed };
        counted.Count(HandoffTelemetry.AgentStatusChanges, Tag("status", CodingAgentStatus.Failed.WireName()));
        // Our own verdict, like a time-out: the agent is read on, so a finish the stop raced is learnt without a
        // webhook. One still awaiting a pull request (the stop crossed its follow-up) is read on as that, never
        // stopped again.
        state = state.WithAgent(agent);
        if (state.Poll?.AwaitingPullRequest?.Contains(agentId) != true)
        {
            state = state with { Poll = WatchingGivenUp(state.Poll, [agentId], now) };
        }

        return (state, agent);
    }
}
