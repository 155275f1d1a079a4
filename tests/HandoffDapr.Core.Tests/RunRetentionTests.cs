using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;

namespace HandoffDapr.Core.Tests;

/// <summary>Which runs retention may delete (only settled ones, nothing pending), and what a deleted run answers.</summary>
public sealed class RunRetentionTests
{
    private static readonly DateTimeOffset Now = new(2026, 11, 24, 10, 0, 0, TimeSpan.Zero);

    public static TheoryData<string> PendingRuns => new()
    {
        "launch due", "launch in flight", "launch to retry", "outcome unknown", "agent running", "agent pending", "agent given up on",
        "agent awaiting a pull request", "agent with a finish to confirm",
    };

    [Theory]
    [MemberData(nameof(PendingRuns))]
    public void A_run_with_anything_pending_is_not_settled_nor_due_however_old(string pending)
    {
        var state = Pending(pending);

        Assert.False(state.IsSettled);
        Assert.False(RunRetention.IsDue(state, Now - TimeSpan.FromDays(3650), TimeSpan.FromHours(1), Now));
    }

    [Fact]
    public void A_run_whose_launches_ended_and_agents_finished_is_settled_and_has_no_wake_up()
    {
        var state = Settled();

        Assert.True(state.IsSettled);
        Assert.Null(state.NextWakeAt());
    }

    [Fact]
    public void A_settled_run_whose_poll_schedule_was_left_behind_has_no_wake_up()
    {
        // Its agents all ended: the poll's next time is no reason to wake a run that has nothing to read.
        var state = Settled() with { Poll = new PollSchedule(Now + TimeSpan.FromMinutes(1), 0) };

        Assert.True(state.IsSettled);
        Assert.Null(state.NextWakeAt());
    }

    [Fact]
    public void A_run_wakes_up_for_the_earliest_of_its_launches_to_retry()
    {
        var later = Launch(LaunchPhase.RetryScheduled) with { NextAttemptAt = Now + TimeSpan.FromMinutes(30) };
        var sooner = Launch(LaunchPhase.RetryScheduled) with { Repository = "acme/web", NextAttemptAt = Now + TimeSpan.FromMinutes(2) };

        Assert.Equal(Now + TimeSpan.FromMinutes(2), (Run(later) with { Launches = [later, sooner] }).NextWakeAt());
    }

    [Fact]
    public void A_run_with_only_a_snapshot_is_settled()
    {
        Assert.True((RunHandoffState.New(7) with { Snapshot = new RunSnapshot(7, Group: new RunGroup(456)) }).IsSettled);
    }

    [Fact]
    public void A_settled_run_is_due_only_once_its_last_change_is_the_retention_old()
    {
        var retention = TimeSpan.FromDays(7);

        Assert.False(RunRetention.IsDue(Settled(), Now - retention + TimeSpan.FromSeconds(1), retention, Now));
        Assert.True(RunRetention.IsDue(Settled(), Now - retention, retention, Now));
    }

    [Fact]
    public void A_deleted_runs_tombstone_is_kept_the_thirty_days_the_api_documents()
    {
        // docs/api.md: a deleted run answers 404 run-deleted "for 30 days after"; the hosts' tests advance the clock by
        // this same value, so only this pins it to the documented one.
        Assert.Equal(TimeSpan.FromDays(30), RunRetention.TombstoneLifetime);
    }

    [Fact]
    public void Only_a_settled_run_with_the_commanded_agent_is_saved_before_a_stop_or_follow_up()
    {
        Assert.True(RunRetention.MustKeepForCommand(Settled(), "bc-1"));
        Assert.False(RunRetention.MustKeepForCommand(Settled(), "bc-9")); // not its agent: the command is refused anyway
        Assert.False(RunRetention.MustKeepForCommand(Pending("agent running"), "bc-1")); // never deleted while pending
        Assert.False(RunRetention.MustKeepForCommand(null, "bc-1"));
    }

    [Fact]
    public void A_deleted_run_takes_a_late_event_of_its_group_and_ignores_it_and_rejects_another_groups()
    {
        var deleted = new DeletedRun(7, 456, Now);

        Assert.Equal(CompletionStatus.RunDeleted, deleted.Answer(new RunSnapshot(7, Group: new RunGroup(456))).Status);
        Assert.Equal(CompletionStatus.Rejected, deleted.Answer(new RunSnapshot(7, Group: new RunGroup(999))).Status);
        Assert.Empty(deleted.Answer(new RunSnapshot(7, Group: new RunGroup(456))).Result.Successes);
        // The runbook's CompletionEventDropped reason, a deleted run's tombstone included.
        Assert.Equal("the run belongs to another group", deleted.Answer(new RunSnapshot(7, Group: new RunGroup(999))).Reason);
    }

    [Fact]
    public void A_deleted_run_refuses_a_trigger_as_deleted_and_another_groups_as_unknown()
    {
        var deleted = new DeletedRun(7, 456, Now);

        Assert.Equal((TriggerStatus.RunDeleted, Now), (deleted.Answer(new HandoffTrigger(456, 42)).Status, deleted.Answer(new HandoffTrigger(456, 42)).DeletedAt));
        Assert.Equal((TriggerStatus.UnknownRun, (DateTimeOffset?)null), (deleted.Answer(new HandoffTrigger(999, 42)).Status, deleted.Answer(new HandoffTrigger(999, 42)).DeletedAt));
    }

    private static RepositoryLaunch Launch(LaunchPhase phase, string? agentId = null) => new(
        "acme/shop", "github", 42, "cursor_background_agent", 1, "fix-pool-abc123", null, false, null, phase,
        Attempts: 1, AttemptStartedAt: Now, NextAttemptAt: phase is LaunchPhase.Launched or LaunchPhase.Failed ? null : Now + TimeSpan.FromMinutes(1),
        agentId, phase == LaunchPhase.Failed ? "invalid_credentials" : null, Now);

    private static CodingAgentState Agent(CodingAgentStatus status) =>
        new("bc-1", status, null, "cursor_background_agent", "acme/shop: Fix", Now, []);

    private static RunHandoffState Run(RepositoryLaunch launch, CodingAgentState? agent = null, PollSchedule? poll = null) =>
        new(7, new RunSnapshot(7, Group: new RunGroup(456)),
            agent is null ? new Dictionary<string, CodingAgentState>() : new Dictionary<string, CodingAgentState> { [agent.Id] = agent },
            [launch], [])
        { Poll = poll };

    private static RunHandoffState Settled() => Run(Launch(LaunchPhase.Launched, "bc-1"), Agent(CodingAgentStatus.Completed))
        with { Launches = [Launch(LaunchPhase.Launched, "bc-1"), Launch(LaunchPhase.Failed) with { Generation = 2 }] };

    private static RunHandoffState Pending(string pending)
    {
        var poll = new PollSchedule(Now + TimeSpan.FromMinutes(1), 0);
        return pending switch
        {
            "launch due" => Run(Launch(LaunchPhase.RetryScheduled) with { Attempts = 0 }),
            "launch in flight" => Run(Launch(LaunchPhase.InFlight)),
            "launch to retry" => Run(Launch(LaunchPhase.RetryScheduled) with { FailureType = "rate_limited" }),
            "outcome unknown" => Run(Launch(LaunchPhase.OutcomeUnknown)),
            "agent running" => Run(Launch(LaunchPhase.Launched, "bc-1"), Agent(CodingAgentStatus.Running), poll),
            "agent pending" => Run(Launch(LaunchPhase.Launched, "bc-1"), Agent(CodingAgentStatus.Pending), poll),
            "agent given up on" => Run(Launch(LaunchPhase.Launched, "bc-1"), Agent(CodingAgentStatus.Failed), poll with { GivenUp = ["bc-1"] }),
            "agent awaiting a pull request" => Run(Launch(LaunchPhase.Launched, "bc-1"), Agent(CodingAgentStatus.Completed), poll with { AwaitingPullRequest = ["bc-1"] }),
            // Completed without its pull request, then a webhook's finish without it: read until a read shows the end.
            "agent with a finish to confirm" => Run(Launch(LaunchPhase.Launched, "bc-1"), Agent(CodingAgentStatus.Completed),
                poll with { FinishesToConfirm = new Dictionary<string, DateTimeOffset> { ["bc-1"] = Now } }),
            _ => throw new ArgumentOutOfRangeException(nameof(pending)),
        };
    }
}
