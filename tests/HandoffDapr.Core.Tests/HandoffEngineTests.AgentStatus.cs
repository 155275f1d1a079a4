using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Logging.Testing;

namespace HandoffDapr.Core.Tests;

// Following agents (HandoffEngine.AgentStatus.cs): reports from webhooks and polls, the poll's schedule and lease, timeouts by age, the provider text and links kept.
public sealed partial class HandoffEngineTests
{
    [Fact]
    public async Task An_agent_timed_out_by_a_poll_recorded_after_its_lease_is_still_watched_as_given_up()
    {
        provider.CannotStop = true;
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromHours(6) + TimeSpan.FromMinutes(5));
        var slow = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll!;
        var holding = new HoldingRecorder();
        await engine.FinishPollAsync(slow, holding, CancellationToken.None);
        // Its reports come back after its lease (a slow record: a lock or actor turn busy): the poll was made again meanwhile.
        time.Advance(TimeSpan.FromMinutes(3));
        var again = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll!;
        Assert.Contains(again.Agents, agent => agent.AgentId == "bc-1");
        await engine.CompletePollAsync(writer.Saved.Last(), holding.Poll!, writer);
        Assert.Equal(CodingAgentStatus.Failed, writer.Saved.Last().CodingAgents["bc-1"].Status);
        await engine.FinishPollAsync(again, new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);

        // Never stopped (the provider cannot), it works on and opens its pull request; no webhook tells us.
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/13";
        var state = writer.Saved.Last();
        Assert.True(state.Poll?.GivenUp?.Contains("bc-1") == true, $"poll {state.Poll}, next wake-up {state.NextWakeAt()}");
        state = await WakeWhenDueAsync(state);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
    }

    [Fact]
    public async Task A_poll_cut_short_by_shutdown_before_any_read_does_not_back_the_schedule_off()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(1));
        await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        var before = writer.Saved.Last().Poll!;
        var reads = provider.Reads;
        time.Advance(before.NextPollAt - time.GetUtcNow());
        var woken = await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None);
        using var stopping = new CancellationTokenSource();
        stopping.Cancel();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => engine.FinishWakeAsync(woken, new EngineRoundTrips.Recorder(engine, writer), stopping.Token));

        // Nothing was read: the poll says nothing about the agents, and must not count as a quiet one.
        Assert.Equal(reads, provider.Reads);
        var after = writer.Saved.Last().Poll!;
        Assert.True(before.QuietPolls == after.QuietPolls, $"quiet polls {before.QuietPolls} -> {after.QuietPolls}, next poll at {after.NextPollAt:O}, now {time.GetUtcNow():O}");
        Assert.True(after.NextPollAt <= time.GetUtcNow() + TimeSpan.FromMinutes(1), $"next poll at {after.NextPollAt:O}, now {time.GetUtcNow():O}");
    }

    [Fact]
    public async Task A_poll_is_saved_as_under_way_and_not_started_again_before_its_reports_or_its_lease_run_out()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(1));

        var woken = await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None);

        var poll = Assert.IsType<PollRound>(woken.Poll);
        Assert.Equal(0, provider.Reads);
        Assert.Equal(poll.LeaseUntil, writer.Saved.Last().Poll!.NextPollAt);
        Assert.Equal(poll.LeaseUntil, writer.Saved.Last().NextWakeAt());
        Assert.Null((await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll);

        await engine.FinishPollAsync(poll, new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);

        // The read saw the agent move (pending → running): the interval starts over.
        Assert.Equal(1, provider.Reads);
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromMinutes(1), writer.Saved.Last().Poll!.NextPollAt);
    }

    [Fact]
    public async Task Reports_of_a_poll_made_again_after_its_lease_are_applied_but_leave_the_schedule_to_the_newer_poll()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(1));
        var lost = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll!;
        // It reads the agent at work (it was pending): a change, applied, which leaves the agent to read.
        var holding = new HoldingRecorder();
        await engine.FinishPollAsync(lost, holding, CancellationToken.None);
        // Its reports come back after its lease: the poll was made again meanwhile.
        time.Advance(TimeSpan.FromMinutes(3));
        var again = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll!;

        await engine.CompletePollAsync(writer.Saved.Last(), holding.Poll!, writer);

        var state = writer.Saved.Last();
        Assert.Equal(CodingAgentStatus.Running, Assert.Single(state.CodingAgents.Values).Status);
        Assert.Equal(again.LeaseUntil, state.Poll?.NextPollAt);
    }

    /// <summary>
    /// A poll recorded after its lease whose reports leave nothing to read ends the schedule, as a webhook's report would:
    /// the newer poll holding it may be lost, and the schedule, kept with nothing to read, would pass its time (long past)
    /// and its back-off to the next agent the run launches.
    /// </summary>
    [Fact]
    public async Task A_poll_recorded_after_its_lease_that_leaves_nothing_to_read_ends_the_schedule_and_the_next_agent_starts_a_fresh_one()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(1));
        var late = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll!;
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/9";
        var holding = new HoldingRecorder();
        await engine.FinishPollAsync(late, holding, CancellationToken.None);
        // Made again after the lease; that poll is lost (its process dies), and the late one's reports come back.
        time.Advance(TimeSpan.FromMinutes(3));
        Assert.NotNull((await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll);

        await engine.CompletePollAsync(writer.Saved.Last(), holding.Poll!, writer);

        var state = writer.Saved.Last();
        Assert.Equal(CodingAgentStatus.Completed, Assert.Single(state.CodingAgents.Values).Status);
        Assert.Null(state.Poll);
        Assert.Null(state.NextWakeAt());

        // Hours later a person hands over another repository: its agent is first read a poll interval after its launch.
        time.Advance(TimeSpan.FromHours(2));
        provider.ReadStatus = ProviderAgentStatus.Running;
        provider.ReadPrUrl = null;
        await engine.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/web"), writer, CancellationToken.None);
        var poll = writer.Saved.Last().Poll!;
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromMinutes(1), poll.NextPollAt);
        Assert.Equal(0, poll.QuietPolls);
    }

    [Fact]
    public async Task A_late_poll_that_read_an_agent_ended_before_its_follow_up_does_not_end_it_after_a_newer_read_showed_it_at_work()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(1));
        var lost = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll!;
        // The lost poll reads the agent finished without a pull request; its answers are recorded only much later.
        provider.ReadStatus = ProviderAgentStatus.Finished;
        var holding = new HoldingRecorder();
        await engine.FinishPollAsync(lost, holding, CancellationToken.None);
        // A person's follow-up sets it to work again, and the poll made again after the lease reads it at work.
        time.Advance(TimeSpan.FromMinutes(3));
        await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Open the pull request"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        provider.ReadStatus = ProviderAgentStatus.Running;
        time.Advance(TimeSpan.FromMinutes(1));
        var again = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll!;
        await engine.FinishPollAsync(again, new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        Assert.Contains(writer.Saved.Last().AgentsToPoll, agent => agent.Id == "bc-1");

        await engine.CompletePollAsync(writer.Saved.Last(), holding.Poll!, writer);

        // Still read on: the pull request the follow-up's work opens is learnt without a webhook.
        Assert.Contains(writer.Saved.Last().AgentsToPoll, agent => agent.Id == "bc-1");
    }

    [Fact]
    public async Task A_poll_that_read_an_agent_at_work_before_its_follow_up_does_not_end_the_follow_ups_wait_for_its_pull_request()
    {
        await engine.TriggerAndFinishAsync(1, null, TriggerWithoutPullRequest("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(1));
        var poll = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll!;
        // The poll reads the agent at work; its answers are recorded late, after its lease ran out with no wake-up.
        provider.ReadStatus = ProviderAgentStatus.Running;
        var holding = new HoldingRecorder();
        await engine.FinishPollAsync(poll, holding, CancellationToken.None);
        // Meanwhile the agent finished without a pull request, unseen, and a person asks for one: the follow-up leaves
        // the overdue poll time as it is, so the late poll still holds the schedule when its answers are recorded.
        time.Advance(TimeSpan.FromMinutes(5));
        await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Open the pull request"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        await engine.CompletePollAsync(writer.Saved.Last(), holding.Poll!, writer);
        // Then the webhook of the end before the follow-up arrives.
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);
        Assert.Equal(CodingAgentStatus.Completed, writer.Saved.Last().CodingAgents["bc-1"].Status);

        // Still read on: the read at work was made before the follow-up, and says nothing of the work it started.
        Assert.Contains(writer.Saved.Last().AgentsToPoll, agent => agent.Id == "bc-1");
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/31";
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.Equal("https://github.com/acme/shop/pull/31", state.CodingAgents["bc-1"].Results.Single().PrUrl);
    }

    [Fact]
    public async Task An_end_a_poll_read_while_a_follow_up_moved_its_schedule_is_learnt_by_the_next_poll()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        var shop = writer.Saved.Last().Launches.Single(launch => launch.Repository == "acme/shop").AgentId!;
        var web = writer.Saved.Last().Launches.Single(launch => launch.Repository == "acme/web").AgentId!;
        time.Advance(TimeSpan.FromMinutes(1));
        var poll = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll!;
        // The poll reads both agents finished without a pull request; before its answers are recorded, a person's
        // follow-up to acme/shop's agent brings the next poll forward, so this poll no longer holds the schedule.
        provider.ReadStatus = ProviderAgentStatus.Finished;
        var holding = new HoldingRecorder();
        await engine.FinishPollAsync(poll, holding, CancellationToken.None);
        await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup(shop, "Open the pull request"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        await engine.CompletePollAsync(writer.Saved.Last(), holding.Poll!, writer);

        // The end of acme/web's agent waits for a read made after the follow-up, at most one interval away: not lost.
        var state = writer.Saved.Last();
        Assert.False(state.CodingAgents[web].Status.IsFinal());
        Assert.True(state.NextWakeAt() <= time.GetUtcNow() + new HandoffEngineOptions().PollInterval);
        state = await WakeWhenDueAsync(state);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents[web].Status);
        Assert.DoesNotContain(state.AgentsToPoll, agent => agent.Id == web);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Provider_client_fault_reading_one_agent_does_not_stop_the_poll_of_the_others(bool unaskedCancellation)
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        var state = writer.Saved.Last();
        var broken = state.Launches.Single(launch => launch.Repository == "acme/web").AgentId!;
        provider.OnRead = agentId =>
        {
            if (agentId == broken)
            {
                throw ClientFault(unaskedCancellation);
            }
        };
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/3";

        time.Advance(state.Poll!.NextPollAt - time.GetUtcNow());
        state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);

        var shop = state.Launches.Single(launch => launch.Repository == "acme/shop").AgentId!;
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents[shop].Status);
        Assert.False(state.CodingAgents[broken].Status.IsFinal());
        Assert.NotNull(state.Poll);
    }

    [Fact]
    public async Task Provider_report_that_an_agent_finished_overrides_a_timeout_we_decided_ourselves()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromHours(7));
        var timedOut = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(CodingAgentStatus.Failed, timedOut.CodingAgents["bc-1"].Status);

        var applied = await engine.ApplyAgentReportAsync(
            timedOut, new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/8")), writer);

        Assert.Equal(AgentReportStatus.Changed, applied);
        var agent = writer.Saved.Last().CodingAgents["bc-1"];
        Assert.Equal(CodingAgentStatus.Completed, agent.Status);
        Assert.Equal("https://github.com/acme/shop/pull/8", Assert.Single(agent.Results).PrUrl);
        Assert.Null(writer.Saved.Last().Launches[0].FailureType);
    }

    [Fact]
    public async Task Agent_replaced_by_a_manual_retry_can_still_be_stopped_and_still_reports_its_pull_request()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Error)), writer);
        var retried = await engine.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/shop"), writer, CancellationToken.None);
        Assert.Equal("bc-2", Assert.Single(retried.Result.Successes).CodingAgentState.Id);

        var stop = await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        await engine.ApplyAgentReportAsync(
            writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/9")), writer);

        Assert.Equal(AgentCommandStatus.Done, stop.Status);
        var state = writer.Saved.Last();
        Assert.Equal("acme/shop", Assert.Single(state.CodingAgents["bc-1"].Results).RepoFullName);
        Assert.Equal(["bc-1", "bc-2"], state.Launches.Select(launch => launch.AgentId));
        Assert.Equal("bc-2", state.FindLaunch("acme/shop", 42)!.AgentId);
    }

    [Fact]
    public async Task Webhook_from_an_agent_on_the_branch_of_an_exhausted_launch_is_adopted_and_followed()
    {
        await LaunchUntilRetriesRunOut(new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, StatusCode: 504));

        var branch = writer.Saved.Last().Launches[0].BranchName;

        const string shop = "acme/shop", other = "acme/other";
        var stranger = await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-other", ProviderAgentStatus.Running, BranchName: "someone-elses-branch"), shop), writer);
        var otherRepository = await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-elsewhere", ProviderAgentStatus.Running, BranchName: branch), other), writer);
        var noRepository = await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-unnamed", ProviderAgentStatus.Running, BranchName: branch)), writer);
        var lost = await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-lost", ProviderAgentStatus.Running, BranchName: branch), shop), writer);

        Assert.Equal(AgentReportStatus.UnknownAgent, stranger);
        Assert.Equal(AgentReportStatus.UnknownAgent, otherRepository);
        Assert.Equal(AgentReportStatus.UnknownAgent, noRepository);
        Assert.Equal(AgentReportStatus.Changed, lost);
        var state = writer.Saved.Last();
        Assert.Equal(CodingAgentStatus.Running, state.CodingAgents["bc-lost"].Status);
        Assert.Equal(["bc-lost"], state.CodingAgents.Keys);
        var launch = Assert.Single(state.Launches);
        Assert.Equal(("bc-lost", LaunchPhase.Launched, (string?)null), (launch.AgentId, launch.Phase, launch.FailureType));
        Assert.NotNull(state.Poll);
        Assert.Equal(5, provider.Launches.Count);
    }

    [Fact]
    public async Task Report_through_another_integration_than_the_one_that_launched_the_agent_changes_nothing()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var launched = writer.Saved.Last();
        var branch = launched.Launches[0].BranchName;

        var foreign = await engine.ApplyAgentReportAsync(launched, new AgentReport(43, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/1")), writer);
        var own = await engine.ApplyAgentReportAsync(launched, new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Running, BranchName: branch)), writer);

        Assert.Equal(AgentReportStatus.UnknownAgent, foreign);
        Assert.Equal(AgentReportStatus.Changed, own);
        Assert.Equal(CodingAgentStatus.Running, writer.Saved.Last().CodingAgents["bc-1"].Status);
    }

    [Fact]
    public async Task Report_naming_another_repository_than_the_launchs_changes_nothing()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var launched = writer.Saved.Last();
        var saves = writer.Saved.Count;

        var other = await engine.ApplyAgentReportAsync(
            launched, new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, PrUrl: "https://github.com/evil/other/pull/1"), "evil/other"), writer);

        Assert.Equal(AgentReportStatus.OtherRepository, other);
        Assert.Equal(saves, writer.Saved.Count);
        Assert.Equal(CodingAgentStatus.Pending, writer.Saved.Last().CodingAgents["bc-1"].Status);
    }

    [Fact]
    public async Task Poll_report_naming_another_repository_than_the_launchs_is_not_applied_and_the_agent_is_read_on()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/evil/other/pull/1";
        provider.ReadRepository = "evil/other";

        var state = await WakeWhenDueAsync(writer.Saved.Last());

        Assert.Equal(CodingAgentStatus.Pending, state.CodingAgents["bc-1"].Status);
        Assert.NotNull(state.NextWakeAt());
    }

    [Fact]
    public async Task Poll_report_without_a_repository_is_applied_but_a_pull_request_of_another_repository_is_not_recorded()
    {
        // GitHub's tasks name no repository: their reports count, but only the launch's own pull requests are kept.
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/evil/other/pull/1";

        var state = await WakeWhenDueAsync(writer.Saved.Last());

        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Null(state.CodingAgents["bc-1"].Results.Single().PrUrl);
    }

    [Fact]
    public async Task Agent_is_timed_out_only_once_it_is_older_than_its_maximum_age_not_when_it_reaches_it()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);

        // Read at work by a poll exactly six hours after its launch: not older than its maximum age yet.
        time.Advance(TimeSpan.FromHours(6));
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(CodingAgentStatus.Running, state.CodingAgents["bc-1"].Status);
        Assert.Null(state.Launches[0].FailureType);

        // The next poll finds it past it.
        state = await WakeWhenDueAsync(state);
        Assert.Equal(CodingAgentStatus.Failed, state.CodingAgents["bc-1"].Status);
        Assert.Equal(FailureTypes.TimedOut, state.Launches[0].FailureType);
    }

    [Fact]
    public async Task Agent_that_finished_before_its_maximum_age_ran_out_is_not_timed_out_by_a_late_poll()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        // The agent finished just in time, but its FINISHED webhook was lost: only the poll can learn it.
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/10";

        time.Advance(TimeSpan.FromHours(6) + TimeSpan.FromMinutes(5));
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        var agent = state.CodingAgents["bc-1"];
        Assert.Equal(CodingAgentStatus.Completed, agent.Status);
        Assert.Equal("https://github.com/acme/shop/pull/10", Assert.Single(agent.Results).PrUrl);
    }

    [Fact]
    public async Task Agent_given_up_for_age_that_the_provider_could_not_stop_is_still_read_and_keeps_the_pull_request_it_opens_later()
    {
        provider.CannotStop = true;
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromHours(6) + TimeSpan.FromMinutes(5));
        Assert.Equal(CodingAgentStatus.Failed, (await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None)).CodingAgents["bc-1"].Status);

        // Never stopped, it works on and opens its pull request; no webhook tells us.
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/11";
        var state = await WakeWhenDueAsync(writer.Saved.Last());

        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Equal("https://github.com/acme/shop/pull/11", Assert.Single(state.CodingAgents["bc-1"].Results).PrUrl);
        Assert.Null(state.NextWakeAt());
    }

    [Fact]
    public async Task Agent_given_up_for_age_whose_stop_did_not_take_is_stopped_again_while_reads_show_it_at_work()
    {
        provider.StopFailure = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, StatusCode: 503);
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromHours(6) + TimeSpan.FromMinutes(5));
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(CodingAgentStatus.Failed, state.CodingAgents["bc-1"].Status);
        Assert.Equal("bc-1", Assert.Single(provider.Stops));

        // The provider was out of reach for the stop, and the next read shows the agent still at work.
        provider.StopFailure = null;
        state = await WakeWhenDueAsync(state);
        Assert.Equal(["bc-1", "bc-1"], provider.Stops);

        // Once a read shows it stopped, neither the stops nor the watch go on.
        provider.ReadStatus = ProviderAgentStatus.Stopped;
        state = await WakeWhenDueAsync(state);
        Assert.Equal(2, provider.Stops.Count);
        Assert.Null(state.NextWakeAt());
        Assert.Equal(CodingAgentStatus.Failed, state.CodingAgents["bc-1"].Status);
    }

    [Fact]
    public async Task Agent_given_up_for_age_at_a_provider_that_cannot_stop_is_not_sent_a_stop_at_every_read()
    {
        provider.CannotStop = true;
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromHours(6) + TimeSpan.FromMinutes(5));
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Single(provider.Stops);

        for (var poll = 0; poll < 3; poll++)
        {
            state = await WakeWhenDueAsync(state);
        }

        // Read at work three more times, and still watched; the one stop that said "not supported" is not repeated.
        Assert.Single(provider.Stops);
        Assert.True(provider.Reads >= 4, $"reads {provider.Reads}");
        Assert.NotNull(state.NextWakeAt());
    }

    [Fact]
    public async Task A_poll_recorded_again_after_its_answer_was_lost_still_names_the_stop_of_the_agent_it_timed_out()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromHours(6) + TimeSpan.FromMinutes(5));
        var poll = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll!;
        var holding = new HoldingRecorder();
        await engine.FinishPollAsync(poll, holding, CancellationToken.None);
        var first = await engine.CompletePollAsync(writer.Saved.Last(), holding.Poll!, writer);
        Assert.Equal("bc-1", Assert.Single(first.ToStop).AgentId);

        // Dapr mode: daprd gave up on the actor call after the turn saved, and makes it again. The run already shows the
        // agent failed; the stop its caller never got must still be named.
        var again = await engine.CompletePollAsync(writer.Saved.Last(), holding.Poll!, writer);

        Assert.Equal("bc-1", Assert.Single(again.ToStop).AgentId);
        Assert.Equal(CodingAgentStatus.Failed, writer.Saved.Last().CodingAgents["bc-1"].Status);
    }

    [Fact]
    public async Task Agent_given_up_for_age_and_then_sent_a_follow_up_is_not_stopped_by_a_read_that_shows_it_at_work()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromHours(6) + TimeSpan.FromMinutes(5));
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal("bc-1", Assert.Single(provider.Stops));

        // A person resumes it: its work is wanted again, whatever the run gave up on.
        var followup = await engine.AddFollowupAsync(state, new AgentFollowup("bc-1", "Finish it"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        Assert.Equal(AgentCommandStatus.Done, followup.Status);
        state = writer.Saved.Last();
        state = await WakeWhenDueAsync(state);

        Assert.Equal("bc-1", Assert.Single(provider.Stops));
        Assert.NotNull(state.NextWakeAt());
    }

    [Fact]
    public async Task Agent_whose_read_fails_when_its_maximum_age_runs_out_is_not_timed_out_on_that_poll()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        provider.ReadFailure = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, StatusCode: 503);
        time.Advance(TimeSpan.FromHours(6) + TimeSpan.FromMinutes(5));

        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.False(state.CodingAgents["bc-1"].Status.IsFinal());
        provider.ReadFailure = null;
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/12";
        time.Advance(state.NextWakeAt()!.Value - time.GetUtcNow());
        state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
    }

    [Fact]
    public async Task Agent_given_up_for_age_is_watched_only_until_the_provider_shows_it_ended_or_twice_its_maximum_age()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await engine.TriggerAndFinishAsync(2, null, Trigger("acme/api") with { Snapshot = Trigger("acme/api").Snapshot! with { RunId = 2 } }, writer, CancellationToken.None);
        var stopped = writer.Saved.Last(state => state.RunId == 1);
        var running = writer.Saved.Last(state => state.RunId == 2);
        time.Advance(TimeSpan.FromHours(6) + TimeSpan.FromMinutes(5));
        stopped = await engine.WakeAndFinishAsync(stopped, writer, CancellationToken.None);
        running = await engine.WakeAndFinishAsync(running, writer, CancellationToken.None);

        // Run 1: the stop took; the next read shows it, and the watch ends.
        provider.ReadStatus = ProviderAgentStatus.Stopped;
        time.Advance(stopped.NextWakeAt()!.Value - time.GetUtcNow());
        stopped = await engine.WakeAndFinishAsync(stopped, writer, CancellationToken.None);
        Assert.Null(stopped.NextWakeAt());
        Assert.Equal(CodingAgentStatus.Failed, stopped.CodingAgents.Values.Single().Status);

        // Run 2: the provider says it is still running, for ever; the watch ends at twice the maximum age.
        provider.ReadStatus = ProviderAgentStatus.Running;
        for (var i = 0; i < 100 && running.NextWakeAt() is { } next; i++)
        {
            time.Advance(next - time.GetUtcNow());
            running = await engine.WakeAndFinishAsync(running, writer, CancellationToken.None);
        }

        Assert.Null(running.NextWakeAt());
        Assert.InRange(time.GetUtcNow() - running.Launches.Single().AttemptStartedAt!.Value, TimeSpan.FromHours(12), TimeSpan.FromHours(12.5));
        Assert.Equal(CodingAgentStatus.Failed, running.CodingAgents.Values.Single().Status);
    }

    [Fact]
    public void Agent_reports_move_status_forward_only_and_record_the_pull_request_when_completed()
    {
        var state = OneLaunchedAgent(CodingAgentStatus.Pending);

        var running = engine.ApplyAgentReport(state, new ProviderAgent("bc-1", ProviderAgentStatus.Running, PrUrl: "https://github.com/acme/shop/pull/1"), new TurnMeasurements());
        var done = engine.ApplyAgentReport(running, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/1", Summary: "fixed"), new TurnMeasurements());
        var late = engine.ApplyAgentReport(done, new ProviderAgent("bc-1", ProviderAgentStatus.Running), new TurnMeasurements());
        var unknown = engine.ApplyAgentReport(done, new ProviderAgent("bc-other", ProviderAgentStatus.Error), new TurnMeasurements());

        Assert.Empty(running.CodingAgents["bc-1"].Results);
        Assert.Equal(CodingAgentStatus.Completed, done.CodingAgents["bc-1"].Status);
        Assert.Equal("https://github.com/acme/shop/pull/1", done.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Same(done, late);
        Assert.Same(done, unknown);
    }

    [Theory]
    [InlineData("https://github.com/acme/shop/pull/1", "https://github.com/acme/shop/pull/1", true)]
    [InlineData("http://localhost:5090/agents/bc-1", "http://localhost:5090/agents/bc-1", false)]
    [InlineData("javascript:alert(1)//https://github.com/acme/shop/pull/1", null, false)]
    [InlineData("data:text/html,<script>alert(1)</script>", null, false)]
    [InlineData("https://github.com@evil.example/acme/shop/pull/3", null, false)]
    [InlineData("https://evil.example/#\u202Emoc.buhtig//:sptth", null, false)]
    [InlineData("https://github.com/acme/shop/pull/1 javascript:alert(1)", null, false)]
    [InlineData("https://github.com/acme/shop/pull/1\"><svg/onload=alert(8)>", "https://github.com/acme/shop/pull/1%22%3E%3Csvg/onload=alert(8)%3E", false)]
    // A single quote ends an href written in single quotes as a double quote ends one in double quotes.
    [InlineData("https://cursor.com/agents/bc-1'onmouseover='alert(8)", "https://cursor.com/agents/bc-1%27onmouseover=%27alert(8)", false)]
    [InlineData("/acme/shop/pull/1", null, false)]
    // A host of look-alike letters (a Cyrillic "с") is kept in its ASCII form, which shows it is not cursor.com.
    [InlineData("https://\u0441ursor.com/agents/bc-1", "https://xn--ursor-0ye.com/agents/bc-1", false)]
    [InlineData("https://b\u00FCcher.example:8443/a?b=1#c", "https://xn--bcher-kva.example:8443/a?b=1#c", false)]
    public void Provider_links_are_kept_only_as_escaped_absolute_web_urls_that_cannot_pose_as_another(string link, string? kept, bool pullRequestOfTheRepository)
    {
        var state = OneLaunchedAgent(CodingAgentStatus.Running);

        var done = engine.ApplyAgentReport(state, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, AgentUrl: link, PrUrl: link), new TurnMeasurements());

        Assert.Equal(kept, done.CodingAgents["bc-1"].AgentUrl);
        // A link kept as the agent's page is its pull request only if it is one of the launch's repository.
        Assert.Equal(pullRequestOfTheRepository ? kept : null, done.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.True(engine.ApplyAgentReport(state, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, PrUrl: new string('a', 3000).Insert(0, "https://github.com/")), new TurnMeasurements())
            .CodingAgents["bc-1"].Results.Single().PrUrl is null, "a link longer than any real one is kept");
    }

    [Fact]
    public async Task Provider_text_kept_for_an_agent_is_bounded_and_its_branch_a_valid_one()
    {
        // A compromised provider, or a leaked webhook secret, answers with megabytes of text: it must not be stored in the
        // run's state and served to every reader of the run (a webhook may carry 256 KiB, a provider answer 4 MiB).
        provider.AnswerName = new string('n', 1_000_000);
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var launched = writer.Saved.Last();
        var agentId = Assert.Single(launched.CodingAgents.Keys);
        var branch = launched.Launches.Single().BranchName;

        var done = engine.ApplyAgentReport(launched, new ProviderAgent(
            agentId,
            ProviderAgentStatus.Finished,
            BranchName: "x\n" + new string('b', 1_000_000),
            PrUrl: "https://github.com/acme/shop/pull/1",
            Summary: new string('s', 1_000_000)), new TurnMeasurements());

        Assert.InRange(launched.CodingAgents[agentId].Name.Length, 1, 300);
        var result = done.CodingAgents[agentId].Results.Single();
        Assert.InRange(result.Description!.Length, 1, 4_100);
        Assert.Equal(branch, result.BranchName);
        Assert.Equal("https://github.com/acme/shop/pull/1", result.PrUrl);
        var blank = engine.ApplyAgentReport(launched, new ProviderAgent(agentId, ProviderAgentStatus.Finished, Summary: new string(' ', 1_000_000)), new TurnMeasurements());
        Assert.InRange(blank.CodingAgents[agentId].Results.Single().Description!.Length, 0, 4_100);
    }

    /// <summary>
    /// A provider's name or summary with bidi overrides or isolates would show reordered wherever it is shown (the status
    /// page, a pull request description a UI builds from it): they go, the rest stays as sent.
    /// </summary>
    [Fact]
    public async Task Provider_text_is_stored_without_bidi_overrides_and_isolates_and_keeps_its_line_breaks()
    {
        provider.AnswerName = "Fix \u202Elooc\u202C pool \u2066x\u2069 👩‍💻";
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var launched = writer.Saved.Last();
        var agentId = Assert.Single(launched.CodingAgents.Keys);

        var done = engine.ApplyAgentReport(launched, new ProviderAgent(
            agentId, ProviderAgentStatus.Finished, Summary: "Bounded\nthe \u202Dpool\u202C\u2067.\u2069"), new TurnMeasurements());

        Assert.Equal("acme/shop: Fix looc pool x 👩‍💻", launched.CodingAgents[agentId].Name);
        Assert.Equal("Bounded\nthe pool.", done.CodingAgents[agentId].Results.Single().Description);
    }

    [Fact]
    public async Task Provider_text_cut_to_its_bound_never_splits_a_surrogate_pair()
    {
        // An emoji straddling the cut: half of it kept would be a lone surrogate in the stored state, which the JSON
        // serializer replaces (the reader sees U+FFFD) or a strict UTF-8 reader refuses.
        provider.AnswerName = new string('n', HandoffEngine.MaxAgentNameLength - 1) + "😀 and more";
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var launched = writer.Saved.Last();
        var agentId = Assert.Single(launched.CodingAgents.Keys);

        var done = engine.ApplyAgentReport(launched, new ProviderAgent(
            agentId, ProviderAgentStatus.Finished, Summary: new string('s', HandoffEngine.MaxSummaryLength - 1) + "😀 and more"), new TurnMeasurements());

        Assert.Equal("acme/shop: " + new string('n', HandoffEngine.MaxAgentNameLength - 1) + "…", launched.CodingAgents[agentId].Name);
        Assert.Equal(new string('s', HandoffEngine.MaxSummaryLength - 1) + "…", done.CodingAgents[agentId].Results.Single().Description);
    }

    [Fact]
    public async Task A_poll_report_with_the_pull_request_is_applied_even_if_a_webhook_finished_the_agent_without_one_while_the_poll_was_out()
    {
        await engine.TriggerAndFinishAsync(1, null, TriggerWithoutPullRequest("acme/shop"), writer, CancellationToken.None);
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        var woken = await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None);
        // The poll reads the agent finished with its pull request; its reports are not recorded yet.
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/5";
        var holding = new HoldingRecorder();
        await engine.FinishPollAsync(woken.Poll!, holding, CancellationToken.None);
        // Meanwhile an earlier FINISHED webhook, sent before the pull request was there, is recorded.
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);
        Assert.Equal(CodingAgentStatus.Completed, writer.Saved.Last().CodingAgents["bc-1"].Status);

        await engine.CompletePollAsync(writer.Saved.Last(), holding.Poll!, writer);

        // The poll's report is a fact: the pull request it carries is learnt (nothing else reads the agent again).
        var state = writer.Saved.Last();
        Assert.Equal("https://github.com/acme/shop/pull/5", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
    }

    [Fact]
    public async Task An_agent_launched_after_the_runs_other_agents_ended_is_polled_from_the_first_interval_not_the_ended_agents_backoff()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        // bc-1 works on quietly: the poll backs off to its longest interval.
        for (var i = 0; i < 6; i++)
        {
            await WakeWhenDueAsync(writer.Saved.Last());
        }

        Assert.Equal(TimeSpan.FromMinutes(15), writer.Saved.Last().Poll!.NextPollAt - time.GetUtcNow());
        // Its webhook says it finished: nothing is left to poll.
        time.Advance(TimeSpan.FromMinutes(1));
        await engine.ApplyAgentReportAsync(writer.Saved.Last(),
            new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/1")), writer);
        Assert.Null(writer.Saved.Last().NextWakeAt());

        // Later, another repository is handed off: its agent's first poll comes at the first interval, as bc-1's did.
        time.Advance(TimeSpan.FromMinutes(3));
        await engine.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        var state = writer.Saved.Last();
        Assert.Equal(CodingAgentStatus.Pending, state.CodingAgents["bc-2"].Status);
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromMinutes(1), state.NextWakeAt());

        // And a quiet first read backs off from there, not from the ended agent's longest interval.
        provider.ReadStatus = ProviderAgentStatus.Creating;
        state = await WakeWhenDueAsync(state);
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromMinutes(2), state.NextWakeAt());
    }

    [Fact]
    public async Task A_repeated_report_of_an_agent_completed_with_its_pull_request_changes_nothing_and_keeps_that_pull_request()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var finished = new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/8"));
        Assert.Equal(AgentReportStatus.Changed, await engine.ApplyAgentReportAsync(writer.Saved.Last(), finished, writer));
        var completed = writer.Saved.Last();

        // Cursor sends a webhook again when its delivery got no 2xx; a later report may name another pull request.
        var again = await engine.ApplyAgentReportAsync(completed, finished, writer);
        var another = await engine.ApplyAgentReportAsync(completed, finished with { Agent = finished.Agent with { PrUrl = "https://github.com/acme/shop/pull/9" } }, writer);

        Assert.Equal((AgentReportStatus.Unchanged, AgentReportStatus.Unchanged), (again, another));
        Assert.Same(completed, writer.Saved.Last());
        Assert.Equal("https://github.com/acme/shop/pull/8", Assert.Single(completed.CodingAgents["bc-1"].Results).PrUrl);
    }

    [Theory]
    [InlineData(ProviderAgentStatus.Error)]
    [InlineData(ProviderAgentStatus.Expired)]
    [InlineData(ProviderAgentStatus.Stopped)]
    public async Task An_agent_at_work_the_provider_reports_ended_without_finishing_is_failed_and_its_launch_says_agent_failed(ProviderAgentStatus reported)
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);

        var applied = await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", reported)), writer);

        Assert.Equal(AgentReportStatus.Changed, applied);
        Assert.Equal(CodingAgentStatus.Failed, writer.Saved.Last().CodingAgents["bc-1"].Status);
        Assert.Equal(FailureTypes.AgentFailed, writer.Saved.Last().Launches.Single().FailureType);
    }

    [Fact]
    public async Task An_agent_at_work_the_provider_reports_ended_in_an_error_with_a_pull_request_is_failed_and_keeps_that_pull_request()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);

        // It opened its pull request, then its work ended in an error: the pull request is there all the same.
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Error, PrUrl: "https://github.com/acme/shop/pull/28")), writer);

        var agent = writer.Saved.Last().CodingAgents["bc-1"];
        Assert.Equal(CodingAgentStatus.Failed, agent.Status);
        Assert.Equal("https://github.com/acme/shop/pull/28", agent.Results.Single().PrUrl);
        Assert.Equal(FailureTypes.AgentFailed, writer.Saved.Last().Launches.Single().FailureType);
    }

    [Fact]
    public async Task An_agent_a_person_stopped_learns_the_pull_request_a_read_shows_after_its_end_and_a_stale_finish_does_not_drop_it()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        Assert.Equal(AgentCommandStatus.Done, (await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None)).Status);
        Assert.Equal(CodingAgentStatus.Failed, writer.Saved.Last().CodingAgents["bc-1"].Status);

        // The stop raced its work: it had opened its pull request, and the provider shows it ended in an error with it.
        provider.ReadStatus = ProviderAgentStatus.Error;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/29";
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.Equal(CodingAgentStatus.Failed, state.CodingAgents["bc-1"].Status);
        Assert.Equal("https://github.com/acme/shop/pull/29", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());

        // A late webhook of an earlier finish, without the pull request: completed, and the pull request stays.
        await engine.ApplyAgentReportAsync(state, new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, Summary: "Fixed the pool")), writer);
        var agent = writer.Saved.Last().CodingAgents["bc-1"];
        Assert.Equal(CodingAgentStatus.Completed, agent.Status);
        Assert.Equal("https://github.com/acme/shop/pull/29", agent.Results.Single().PrUrl);
        Assert.Equal("Fixed the pool", agent.Results.Single().Description);
    }

    [Fact]
    public async Task An_agent_failed_with_its_pull_request_and_sent_a_follow_up_is_read_on_until_it_completes()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Error, PrUrl: "https://github.com/acme/shop/pull/31")), writer);
        Assert.Null(writer.Saved.Last().NextWakeAt());

        // Asked to finish the work: read on while it works, and its completion is learnt without a webhook.
        Assert.Equal(AgentCommandStatus.Done, (await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Finish the fix"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None)).Status);
        provider.ReadStatus = ProviderAgentStatus.Running;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/31";
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.NotNull(state.NextWakeAt());

        provider.ReadStatus = ProviderAgentStatus.Finished;
        state = await WakeWhenDueAsync(state);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Equal("https://github.com/acme/shop/pull/31", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
    }

    [Fact]
    public async Task An_agent_failed_with_its_pull_request_sent_a_follow_up_then_stopped_is_stopped_again_and_read_on_while_a_read_shows_it_at_work()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Error, PrUrl: "https://github.com/acme/shop/pull/35")), writer);
        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        Assert.Equal(AgentCommandStatus.Done, (await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Finish the fix"), recorder, CancellationToken.None)).Status);
        time.Advance(TimeSpan.FromSeconds(20));
        Assert.Equal(AgentCommandStatus.Done, (await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", recorder, CancellationToken.None)).Status);
        var stops = provider.Stops.Count;

        // The stop did not take: the follow-up's work goes on. Failed with a pull request is not completed with one: it is
        // stopped again, and read on.
        provider.ReadStatus = ProviderAgentStatus.Running;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/35";
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.Equal(stops + 1, provider.Stops.Count);
        Assert.Contains("bc-1", state.Poll?.GivenUp ?? []);

        // It finishes after all: learnt without a webhook.
        provider.ReadStatus = ProviderAgentStatus.Finished;
        state = await WakeWhenDueAsync(state);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Null(state.NextWakeAt());
    }

    [Fact]
    public async Task A_stale_finish_without_a_pull_request_keeps_the_summary_and_branch_that_came_with_the_pull_request()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        // It ends in an error with its pull request, on a branch it named itself.
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent(
            "bc-1", ProviderAgentStatus.Error, BranchName: "cursor/fix-pool", PrUrl: "https://github.com/acme/shop/pull/36", Summary: "Fixed the pool")), writer);

        // A late webhook of an earlier finish carries none of them: completed, and the result stays whole.
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);

        var agent = writer.Saved.Last().CodingAgents["bc-1"];
        Assert.Equal(CodingAgentStatus.Completed, agent.Status);
        Assert.Equal(("Fixed the pool", "cursor/fix-pool", "https://github.com/acme/shop/pull/36"), (agent.Results.Single().Description, agent.Results.Single().BranchName, agent.Results.Single().PrUrl));
    }

    [Fact]
    public async Task An_agent_given_up_on_that_a_read_shows_at_work_with_a_pull_request_is_still_stopped_again_and_read_on()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        Assert.Equal(AgentCommandStatus.Done, (await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None)).Status);
        var stops = provider.Stops.Count;

        // The stop did not take: the agent is at work, its pull request open. Not its end: stopped again, read on.
        provider.ReadStatus = ProviderAgentStatus.Running;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/30";
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.Equal(stops + 1, provider.Stops.Count);
        Assert.Contains("bc-1", state.Poll!.GivenUp!);
        Assert.DoesNotContain(state.CodingAgents["bc-1"].Results, result => result.PrUrl is not null);

        // Its end shows, with the pull request: kept.
        provider.ReadStatus = ProviderAgentStatus.Stopped;
        state = await WakeWhenDueAsync(state);
        Assert.Equal("https://github.com/acme/shop/pull/30", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
    }

    [Fact]
    public async Task An_agents_age_counts_from_our_launch_not_from_the_creation_time_the_provider_reports()
    {
        // The provider's answer puts the agent's creation seven hours back (its clock, or a mistake): past the maximum age.
        provider.AnswerWith = new ProviderAgent("bc-7", ProviderAgentStatus.Creating, CreatedAt: time.GetUtcNow() - TimeSpan.FromHours(7));
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());

        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.Equal(CodingAgentStatus.Running, state.CodingAgents["bc-7"].Status);
        // Six hours after our launch, by our own clock, it is given up on.
        time.Advance(TimeSpan.FromHours(6));
        state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(CodingAgentStatus.Failed, state.CodingAgents["bc-7"].Status);
    }

    [Fact]
    public async Task An_agent_whose_reads_failed_until_twice_its_maximum_age_is_timed_out_and_not_read_again()
    {
        provider.CannotStop = true;
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        provider.ReadFailure = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, StatusCode: 503);
        time.Advance(TimeSpan.FromHours(12) + TimeSpan.FromMinutes(5));

        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.Equal(CodingAgentStatus.Failed, state.CodingAgents["bc-1"].Status);
        // Its watch is over as it is timed out: no poll is left for the run.
        Assert.Null(state.Poll);
        Assert.Null(state.NextWakeAt());
    }

    [Fact]
    public async Task Webhook_signed_by_another_integration_is_not_adopted_on_the_branch_of_a_launch_without_an_agent()
    {
        await LaunchUntilRetriesRunOut(new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, StatusCode: 504));
        var exhausted = writer.Saved.Last();
        var branch = exhausted.Launches[0].BranchName;

        // Integration 43's secret proves nothing about integration 42's launch, whose branch name is derived from public ids.
        var planted = await engine.ApplyAgentReportAsync(
            exhausted, new AgentReport(43, new ProviderAgent("bc-planted", ProviderAgentStatus.Finished, BranchName: branch, PrUrl: "https://github.com/acme/shop/pull/66"), "acme/shop"), writer);

        Assert.Equal(AgentReportStatus.UnknownAgent, planted);
        Assert.Same(exhausted, writer.Saved.Last());
        Assert.Empty(exhausted.CodingAgents);
    }

    [Fact]
    public async Task A_webhook_finish_without_the_pull_request_the_agent_was_asked_for_is_read_at_once_and_the_read_carries_it()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var launched = writer.Saved.Last();
        Assert.True(launched.Launches.Single().AutoCreatePr);

        // Cursor's webhooks can leave target.prUrl out: the end is not taken from this one.
        var applied = await engine.ApplyAgentReportAsync(
            launched, new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, Summary: "Fixed the pool")), writer);

        Assert.Equal(AgentReportStatus.Changed, applied);
        var held = writer.Saved.Last();
        Assert.Equal(CodingAgentStatus.Running, held.CodingAgents["bc-1"].Status);
        Assert.Empty(held.CodingAgents["bc-1"].Results);
        Assert.Equal(time.GetUtcNow(), held.NextWakeAt());
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/7";
        var state = await WakeWhenDueAsync(held);
        Assert.Equal(1, provider.Reads);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Equal("https://github.com/acme/shop/pull/7", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
    }

    [Fact]
    public async Task A_read_that_confirms_a_webhook_finish_without_a_pull_request_completes_the_agent_without_one()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);

        provider.ReadStatus = ProviderAgentStatus.Finished;
        var state = await WakeWhenDueAsync(writer.Saved.Last());

        // The read's answer stands: the agent finished without a pull request, and is not read again.
        Assert.Equal(1, provider.Reads);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Null(state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
    }

    [Fact]
    public async Task A_webhook_finish_no_read_can_confirm_until_the_agents_time_out_completes_it_rather_than_failing_it()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);
        Assert.Single(writer.Saved.Last().Timeline, entry => entry.Event == TimelineEvents.FinishReported && entry.AgentId == "bc-1");
        // Every read fails from here (the key revoked, the provider's API down, the agent deleted).
        provider.ReadFailure = new ProviderFailure(FailureTypes.InvalidCredentials, Retryable: false, StatusCode: 401);

        var state = writer.Saved.Last();
        for (var polls = 0; state.NextWakeAt() is not null && polls < 500; polls++)
        {
            state = await WakeWhenDueAsync(state);
        }

        // The webhook's word ends it, not the time-out: completed, without the pull request no read could tell, not stopped.
        Assert.Null(state.NextWakeAt());
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Null(state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.Launches.Single().FailureType);
        Assert.Empty(provider.Stops);
        Assert.DoesNotContain(state.Timeline, entry => entry.Event == TimelineEvents.TimedOut);
    }

    [Fact]
    public async Task A_webhook_finish_no_read_can_confirm_still_completes_the_agent_after_a_busy_run_filled_its_timeline()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        var shop = writer.Saved.Last().Launches.Single(launch => launch.Repository == "acme/shop").AgentId!;
        var web = writer.Saved.Last().Launches.Single(launch => launch.Repository == "acme/web").AgentId!;
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent(shop, ProviderAgentStatus.Finished)), writer);
        provider.ReadFailure = new ProviderFailure(FailureTypes.InvalidCredentials, Retryable: false, StatusCode: 401);

        // The other agent is followed up more times than the timeline holds entries.
        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        for (var i = 0; i < RunHandoffState.MaxTimelineEntries; i++)
        {
            await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup(web, "Also add a test"), recorder, CancellationToken.None);
        }

        var state = writer.Saved.Last();
        for (var polls = 0; state.NextWakeAt() is not null && polls < 500; polls++)
        {
            state = await WakeWhenDueAsync(state);
        }

        // The held finish was still known at acme/shop's time-out: the webhook's word ends it, completed, not stopped.
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents[shop].Status);
        Assert.Null(state.LaunchOfAgent(shop)!.FailureType);
        Assert.DoesNotContain(shop, provider.Stops);
    }

    [Fact]
    public async Task A_webhook_finish_from_before_a_follow_up_does_not_end_the_agent_once_that_follow_ups_watch_is_over()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);
        // Read at work, sent a follow-up, then a stop whose outcome is unknown: still at work, on the given-up watch.
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        Assert.Equal(AgentCommandStatus.Done, (await engine.AddFollowupAsync(state, new AgentFollowup("bc-1", "Also add a test"), recorder, CancellationToken.None)).Status);
        time.Advance(TimeSpan.FromSeconds(20));
        provider.StopFailure = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, RequestSent: true);
        Assert.Equal(AgentCommandStatus.OutcomeUnknown, (await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", recorder, CancellationToken.None)).Status);
        Assert.Equal(CodingAgentStatus.Running, writer.Saved.Last().CodingAgents["bc-1"].Status);
        provider.ReadFailure = new ProviderFailure(FailureTypes.InvalidCredentials, Retryable: false, StatusCode: 401);

        state = writer.Saved.Last();
        for (var polls = 0; state.NextWakeAt() is not null && polls < 500; polls++)
        {
            state = await WakeWhenDueAsync(state);
        }

        // The webhook's finish came before the follow-up: the follow-up's work never ended as far as anyone saw.
        Assert.Equal(CodingAgentStatus.Failed, state.CodingAgents["bc-1"].Status);
        Assert.Contains(state.Timeline, entry => entry.Event == TimelineEvents.TimedOut);
    }

    [Fact]
    public async Task A_webhook_finish_that_reads_show_at_work_until_the_agents_age_runs_out_is_timed_out_as_any()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);

        // The provider's reads show it at work all along: they are the newer word.
        var state = writer.Saved.Last();
        for (var polls = 0; !state.CodingAgents["bc-1"].Status.IsFinal() && polls < 500; polls++)
        {
            state = await WakeWhenDueAsync(state);
        }

        Assert.Equal(CodingAgentStatus.Failed, state.CodingAgents["bc-1"].Status);
        Assert.Equal(FailureTypes.TimedOut, state.Launches.Single().FailureType);
        Assert.Contains("bc-1", provider.Stops);
    }

    [Fact]
    public async Task A_webhook_finish_delivered_again_after_a_read_showed_the_agent_at_work_is_kept_once_in_the_timeline()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var finished = new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished));
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), finished, writer);
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.Equal(CodingAgentStatus.Running, state.CodingAgents["bc-1"].Status);

        // Read at work, the agent's next read is an interval away: the redelivery brings it forward again.
        await engine.ApplyAgentReportAsync(state, finished, writer);

        Assert.Equal(time.GetUtcNow(), writer.Saved.Last().NextWakeAt());
        Assert.Single(writer.Saved.Last().Timeline, entry => entry.Event == TimelineEvents.FinishReported);
    }

    [Fact]
    public async Task A_webhook_finish_with_the_pull_request_asked_for_is_taken_at_once()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);

        await engine.ApplyAgentReportAsync(
            writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/8")), writer);

        Assert.Equal(CodingAgentStatus.Completed, writer.Saved.Last().CodingAgents["bc-1"].Status);
        Assert.Null(writer.Saved.Last().NextWakeAt());
    }

    [Fact]
    public async Task A_webhook_finish_without_a_pull_request_of_an_agent_not_asked_for_one_is_taken_at_once()
    {
        await engine.TriggerAndFinishAsync(1, null, TriggerWithoutPullRequest("acme/shop"), writer, CancellationToken.None);

        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);

        Assert.Equal(CodingAgentStatus.Completed, writer.Saved.Last().CodingAgents["bc-1"].Status);
        Assert.Null(writer.Saved.Last().NextWakeAt());
    }

    [Fact]
    public async Task A_webhook_finish_with_a_pull_request_of_another_repository_is_read_at_once_too()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);

        await engine.ApplyAgentReportAsync(
            writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/web/pull/8")), writer);

        Assert.Equal(CodingAgentStatus.Running, writer.Saved.Last().CodingAgents["bc-1"].Status);
        Assert.Equal(time.GetUtcNow(), writer.Saved.Last().NextWakeAt());
    }

    [Fact]
    public async Task A_webhook_finish_delivered_again_while_its_read_is_due_saves_nothing()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var finished = new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished));
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), finished, writer);
        var saves = writer.Saved.Count;

        var again = await engine.ApplyAgentReportAsync(writer.Saved.Last(), finished, writer);

        Assert.Equal(AgentReportStatus.Unchanged, again);
        Assert.Equal(saves, writer.Saved.Count);
    }

    [Fact]
    public async Task A_webhook_finish_without_its_pull_request_while_a_poll_is_out_has_the_agent_read_again_after_it()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        var poll = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll!;
        // The poll out reads the agent finished, its pull request not there yet; meanwhile the webhook says so too.
        provider.ReadStatus = ProviderAgentStatus.Finished;
        var holding = new HoldingRecorder();
        await engine.FinishPollAsync(poll, holding, CancellationToken.None);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);
        await engine.CompletePollAsync(writer.Saved.Last(), holding.Poll!, writer);

        // The read brought forward owns the schedule: the older poll's end without a pull request does not end the agent.
        Assert.Equal(CodingAgentStatus.Running, writer.Saved.Last().CodingAgents["bc-1"].Status);
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/9";
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.Equal("https://github.com/acme/shop/pull/9", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Equal(2, provider.Reads);
    }

    [Fact]
    public async Task A_webhook_finish_without_its_pull_request_from_an_agent_on_an_exhausted_launchs_branch_is_adopted_at_work_and_read()
    {
        await LaunchUntilRetriesRunOut(new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, StatusCode: 504));
        var branch = writer.Saved.Last().Launches[0].BranchName;

        var adopted = await engine.ApplyAgentReportAsync(
            writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-lost", ProviderAgentStatus.Finished, BranchName: branch), "acme/shop"), writer);

        Assert.Equal(AgentReportStatus.Changed, adopted);
        var state = writer.Saved.Last();
        Assert.Equal(CodingAgentStatus.Running, state.CodingAgents["bc-lost"].Status);
        Assert.Equal(time.GetUtcNow(), state.NextWakeAt());
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/10";
        state = await WakeWhenDueAsync(state);
        Assert.Equal("https://github.com/acme/shop/pull/10", state.CodingAgents["bc-lost"].Results.Single().PrUrl);
    }

    [Fact]
    public async Task An_agent_adopted_past_twice_its_age_while_a_poll_is_out_is_read_by_the_next_not_ended_by_that_one()
    {
        // acme/shop's launch ran out of retries, its last attempt's agent unknown; acme/web's agent is at work.
        await LaunchUntilRetriesRunOut(new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, StatusCode: 504));
        var branch = writer.Saved.Last().Launches[0].BranchName;
        provider.Always = null;
        await engine.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/web"), writer, CancellationToken.None);
        var web = writer.Saved.Last().FindLaunch("acme/web", 42)!.AgentId!;
        time.Advance(TimeSpan.FromHours(13));
        var poll = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll!;
        Assert.Equal([web], poll.Agents.Select(agent => agent.AgentId));

        // While acme/web's poll is out, the lost attempt's agent tells it finished, without its pull request; every read fails.
        provider.ReadFailure = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, StatusCode: 503);
        var holding = new HoldingRecorder();
        await engine.FinishPollAsync(poll, holding, CancellationToken.None);
        await engine.ApplyAgentReportAsync(
            writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-lost", ProviderAgentStatus.Finished, BranchName: branch), "acme/shop"), writer);
        await engine.CompletePollAsync(writer.Saved.Last(), holding.Poll!, writer);

        // That poll never tried to read it: it is still to be read, now, and the next read learns its pull request.
        Assert.Equal(time.GetUtcNow(), writer.Saved.Last().NextWakeAt());
        await AssertStillAtWorkUntilAReadLearnsItsPullRequestAsync("bc-lost", "https://github.com/acme/shop/pull/11");
    }

    [Fact]
    public async Task A_held_finish_past_twice_the_agents_age_is_not_taken_unread_by_a_poll_cut_short_before_its_read()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);
        // The owner was down past twice the agent's maximum age; the first poll after is cut short by a shutdown at once.
        time.Advance(TimeSpan.FromHours(13));
        var poll = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll!;
        var holding = new HoldingRecorder();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => engine.FinishPollAsync(poll, holding, new CancellationToken(canceled: true)));
        Assert.True(holding.Poll!.Interrupted);
        Assert.Equal(0, provider.Reads);

        await engine.CompletePollAsync(writer.Saved.Last(), holding.Poll!, writer);

        // No read was made: the finish still waits for one, which learns the pull request.
        await AssertStillAtWorkUntilAReadLearnsItsPullRequestAsync("bc-1", "https://github.com/acme/shop/pull/12");
    }

    /// <summary>A held finish not taken: the agent is shown at work, and the next read, which answers, learns its pull request.</summary>
    private async Task AssertStillAtWorkUntilAReadLearnsItsPullRequestAsync(string agentId, string prUrl)
    {
        Assert.Equal(CodingAgentStatus.Running, writer.Saved.Last().CodingAgents[agentId].Status);
        provider.ReadFailure = null;
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = prUrl;
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.Equal(prUrl, state.CodingAgents[agentId].Results.Single().PrUrl);
    }

    [Fact]
    public async Task A_webhook_finish_without_its_pull_request_of_an_agent_the_provider_had_failed_completes_it_and_a_read_learns_the_pull_request()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Error)), writer);
        Assert.Null(writer.Saved.Last().NextWakeAt());

        // A follow-up sent elsewhere (Cursor's own page) resumed it; its finish is told without target.prUrl.
        var applied = await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);

        Assert.Equal(AgentReportStatus.Changed, applied);
        var finished = writer.Saved.Last();
        Assert.Equal(CodingAgentStatus.Completed, finished.CodingAgents["bc-1"].Status);
        Assert.Equal(time.GetUtcNow(), finished.NextWakeAt());
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/11";
        var state = await WakeWhenDueAsync(finished);
        Assert.Equal(1, provider.Reads);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Equal("https://github.com/acme/shop/pull/11", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
    }

    [Fact]
    public async Task A_webhook_finish_without_its_pull_request_of_an_agent_no_longer_read_is_read_on_while_at_work_and_never_stopped()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Error)), writer);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);

        // Reads show it at work (resumed again since), then an end of another kind, which may be older than the finish.
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        provider.ReadStatus = ProviderAgentStatus.Error;
        state = await WakeWhenDueAsync(state);
        Assert.NotNull(state.NextWakeAt());
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/12";
        state = await WakeWhenDueAsync(state);

        Assert.Equal(3, provider.Reads);
        Assert.Empty(provider.Stops);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Equal("https://github.com/acme/shop/pull/12", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
    }

    [Fact]
    public async Task A_webhook_finish_without_its_pull_request_of_an_agent_no_longer_read_is_read_for_twice_the_maximum_age_from_the_webhook_at_most()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Error)), writer);
        // Long after its launch: the watch counts from the webhook, not from the launch.
        time.Advance(TimeSpan.FromDays(3));
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);
        var reportedAt = time.GetUtcNow();
        provider.ReadFailure = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, StatusCode: 503);
        DateTimeOffset? lastRead = null;
        provider.OnRead = _ => lastRead = time.GetUtcNow();

        var state = writer.Saved.Last();
        for (var polls = 0; state.NextWakeAt() is not null && polls < 500; polls++)
        {
            state = await WakeWhenDueAsync(state);
        }

        Assert.Null(state.NextWakeAt());
        Assert.True(provider.Reads > 1);
        var defaults = new HandoffEngineOptions();
        Assert.InRange(lastRead!.Value - reportedAt, defaults.AgentMaxAge, 2 * defaults.AgentMaxAge + defaults.PollMaxInterval);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Empty(provider.Stops);
    }

    [Fact]
    public async Task A_webhook_finish_without_its_pull_request_of_an_agent_given_up_for_age_moves_it_to_a_watch_that_never_stops_it()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromHours(6) + TimeSpan.FromMinutes(5));
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(CodingAgentStatus.Failed, state.CodingAgents["bc-1"].Status);
        Assert.Equal("bc-1", Assert.Single(provider.Stops));
        // Half an hour before its given-up watch (twice the maximum age from its launch) would end, a webhook says it
        // finished, without its pull request.
        time.Advance(TimeSpan.FromHours(12) - TimeSpan.FromMinutes(35) - TimeSpan.FromHours(6));
        await engine.ApplyAgentReportAsync(state, new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);
        Assert.Equal(CodingAgentStatus.Completed, writer.Saved.Last().CodingAgents["bc-1"].Status);
        Assert.True(writer.Saved.Last().NextWakeAt() <= time.GetUtcNow());

        // Reads show it at work (resumed since) past the end of the watch it was on: not stopped, read on.
        state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        while (time.GetUtcNow() < state.Launches.Single().AttemptStartedAt + TimeSpan.FromHours(13))
        {
            state = await WakeWhenDueAsync(state);
        }

        Assert.Equal("bc-1", Assert.Single(provider.Stops));
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/14";
        state = await WakeWhenDueAsync(state);
        Assert.Equal("https://github.com/acme/shop/pull/14", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_webhook_finish_without_its_pull_request_of_an_agent_given_up_on_after_a_follow_up_leaves_it_on_its_watch(bool storedWithoutItsTime)
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        Assert.Equal(AgentCommandStatus.Done, (await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Also add a test"), recorder, CancellationToken.None)).Status);
        Assert.Equal(AgentCommandStatus.Done, (await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", recorder, CancellationToken.None)).Status);
        Assert.Contains("bc-1", writer.Saved.Last().Poll!.GivenUp!);
        // As a release before FollowedUpAt was kept stored it: the follow-up is in the timeline only.
        var stored = storedWithoutItsTime ? writer.Saved.Last() with { Poll = writer.Saved.Last().Poll! with { FollowedUpAt = null } } : writer.Saved.Last();

        // The finish may be from before the follow-up: the agent stays on the watch of the follow-up's work.
        await engine.ApplyAgentReportAsync(stored, new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);

        Assert.Contains("bc-1", writer.Saved.Last().Poll!.GivenUp!);
        Assert.Null(writer.Saved.Last().Poll!.FinishesToConfirm);
    }

    [Fact]
    public async Task A_webhook_finish_without_its_pull_request_delivered_again_while_the_ended_agents_read_is_due_saves_nothing()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Error)), writer);
        var finished = new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished));
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), finished, writer);
        var saves = writer.Saved.Count;

        Assert.Equal(AgentReportStatus.Unchanged, await engine.ApplyAgentReportAsync(writer.Saved.Last(), finished, writer));
        Assert.Equal(saves, writer.Saved.Count);
    }

    [Fact]
    public async Task A_webhook_finish_without_a_pull_request_of_an_ended_agent_not_asked_for_one_is_not_read()
    {
        await engine.TriggerAndFinishAsync(1, null, TriggerWithoutPullRequest("acme/shop"), writer, CancellationToken.None);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Error)), writer);

        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);

        Assert.Equal(CodingAgentStatus.Completed, writer.Saved.Last().CodingAgents["bc-1"].Status);
        Assert.Null(writer.Saved.Last().NextWakeAt());
    }

    [Fact]
    public async Task A_poll_report_of_an_agent_ended_while_the_poll_was_out_is_applied_though_other_agents_are_still_read()
    {
        await engine.TriggerAndFinishAsync(1, null, TriggerWithoutPullRequest("acme/shop", "acme/web", "acme/api"), writer, CancellationToken.None);
        var agents = writer.Saved.Last().Launches.ToDictionary(launch => launch.Repository, launch => launch.AgentId!);
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        var poll = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll!;
        // While the reads are out, webhooks sent before the pull requests were there finish two of the agents without one.
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent(agents["acme/shop"], ProviderAgentStatus.Finished)), writer);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent(agents["acme/web"], ProviderAgentStatus.Finished)), writer);
        // The poll read them finished with their pull requests, and acme/api still creating (nothing new of it).
        var reports = poll.Agents.Select(agent => agent.AgentId == agents["acme/api"]
            ? new ProviderAgent(agent.AgentId, ProviderAgentStatus.Creating)
            : new ProviderAgent(agent.AgentId, ProviderAgentStatus.Finished, PrUrl: agent.AgentId == agents["acme/shop"] ? "https://github.com/acme/shop/pull/5" : "https://github.com/acme/web/pull/6")).ToList();

        await engine.CompletePollAsync(writer.Saved.Last(), new PollAnswers(poll, reports), writer);

        // The reports are facts, whatever agent is still read: the pull requests are learnt (nothing reads these agents again).
        var state = writer.Saved.Last();
        Assert.Equal("https://github.com/acme/shop/pull/5", state.CodingAgents[agents["acme/shop"]].Results.Single().PrUrl);
        Assert.Equal("https://github.com/acme/web/pull/6", state.CodingAgents[agents["acme/web"]].Results.Single().PrUrl);
        // Learning them is a change: no quiet poll, the next read of acme/api comes at the first interval.
        Assert.Equal(0, state.Poll!.QuietPolls);
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromMinutes(1), state.Poll.NextPollAt);
    }

    [Fact]
    public async Task A_poll_that_moves_several_agents_is_no_quiet_poll()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());

        // Both agents are read running (they were pending): two changes, still a change.
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.All(state.CodingAgents.Values, agent => Assert.Equal(CodingAgentStatus.Running, agent.Status));
        Assert.Equal(0, state.Poll!.QuietPolls);
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromMinutes(1), state.Poll.NextPollAt);
    }

    [Fact]
    public async Task An_agent_timed_out_that_learns_its_pull_request_from_a_read_of_its_error_stays_timed_out()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(1));
        await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromHours(6) + TimeSpan.FromMinutes(5));

        // The read shows it running, as the last one did; its time-out is the poll's change, so the poll is no quiet one.
        var timedOut = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(FailureTypes.TimedOut, timedOut.Launches.Single().FailureType);
        Assert.Equal(0, timedOut.Poll!.QuietPolls);
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromMinutes(1), timedOut.Poll.NextPollAt);

        // Its end, an error, with the pull request it opened before the stop took.
        var learnt = engine.ApplyAgentReport(timedOut, new ProviderAgent("bc-1", ProviderAgentStatus.Error, PrUrl: "https://github.com/acme/shop/pull/7"), new TurnMeasurements());

        Assert.Equal("https://github.com/acme/shop/pull/7", learnt.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Equal(CodingAgentStatus.Failed, learnt.CodingAgents["bc-1"].Status);
        Assert.Equal(FailureTypes.TimedOut, learnt.Launches.Single().FailureType);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A_provider_client_fault_stopping_an_agent_the_poll_gave_up_on_fails_neither_the_poll_nor_its_record(bool unaskedCancellation)
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        provider.CommandsFault = true;
        provider.CommandFault = () => ClientFault(unaskedCancellation);
        time.Advance(TimeSpan.FromHours(6) + TimeSpan.FromMinutes(5));

        var state = await logged.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.Equal("bc-1", Assert.Single(provider.Stops));
        Assert.Equal(CodingAgentStatus.Failed, state.CodingAgents["bc-1"].Status);
        Assert.Contains("bc-1", state.Poll!.GivenUp!);
        var faulted = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "ProviderClientFaulted");
        Assert.Equal("stop", faulted.StructuredState!.Single(pair => pair.Key == "Operation").Value);
        Assert.Contains(unaskedCancellation ? nameof(TaskCanceledException) : nameof(InvalidOperationException), faulted.Message);
    }

    [Fact]
    public async Task A_poll_cut_short_after_quiet_polls_keeps_their_count_and_comes_again_at_the_first_interval()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var state = writer.Saved.Last();
        // Read running, then twice more so: two quiet polls, the interval doubled twice.
        for (var i = 0; i < 3; i++)
        {
            state = await WakeWhenDueAsync(state);
        }

        Assert.Equal(2, state.Poll!.QuietPolls);
        time.Advance(state.Poll.NextPollAt - time.GetUtcNow());
        var woken = await engine.WakeAsync(state, writer, CancellationToken.None);
        using var stopping = new CancellationTokenSource();
        stopping.Cancel();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => engine.FinishWakeAsync(woken, new EngineRoundTrips.Recorder(engine, writer), stopping.Token));

        var after = writer.Saved.Last().Poll!;
        Assert.Equal(2, after.QuietPolls);
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromMinutes(1), after.NextPollAt);
    }

    [Fact]
    public void A_report_with_the_agents_page_replaces_the_one_known_and_a_report_without_one_keeps_it()
    {
        var state = OneLaunchedAgent(CodingAgentStatus.Pending);
        var running = engine.ApplyAgentReport(state, new ProviderAgent("bc-1", ProviderAgentStatus.Running, AgentUrl: "https://cursor.com/agents/bc-1"), new TurnMeasurements());

        var moved = engine.ApplyAgentReport(running, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, AgentUrl: "https://cursor.com/agents/bc-1?v=2"), new TurnMeasurements());
        var kept = engine.ApplyAgentReport(running, new ProviderAgent("bc-1", ProviderAgentStatus.Finished), new TurnMeasurements());

        Assert.Equal("https://cursor.com/agents/bc-1", running.CodingAgents["bc-1"].AgentUrl);
        Assert.Equal("https://cursor.com/agents/bc-1?v=2", moved.CodingAgents["bc-1"].AgentUrl);
        Assert.Equal("https://cursor.com/agents/bc-1", kept.CodingAgents["bc-1"].AgentUrl);
    }

    [Fact]
    public void Provider_text_and_links_at_their_bound_are_kept_whole_and_text_past_it_is_cut_at_the_bound()
    {
        var state = OneLaunchedAgent(CodingAgentStatus.Running);
        var link = "https://cursor.com/agents/" + new string('a', 2048 - "https://cursor.com/agents/".Length);
        var atBound = new string('s', HandoffEngine.MaxSummaryLength);

        var whole = engine.ApplyAgentReport(state, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, AgentUrl: link, Summary: atBound), new TurnMeasurements());
        var cut = engine.ApplyAgentReport(state, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, AgentUrl: link + "a", Summary: atBound + "t"), new TurnMeasurements());

        Assert.Equal(link, whole.CodingAgents["bc-1"].AgentUrl);
        Assert.Equal(atBound, whole.CodingAgents["bc-1"].Results.Single().Description);
        Assert.Null(cut.CodingAgents["bc-1"].AgentUrl);
        Assert.Equal(atBound + "…", cut.CodingAgents["bc-1"].Results.Single().Description);
    }

    /// <summary>
    /// Twice the maximum age is the last moment of a watch, and of a time-out's wait for a read that keeps failing: an
    /// agent read at exactly that age is still given up on and watched (or, given up on already, watched on), and one
    /// whose read fails then is not timed out yet.
    /// </summary>
    [Fact]
    public async Task Watch_limit_of_twice_the_maximum_age_includes_its_last_moment()
    {
        var runs = new Dictionary<long, RunHandoffState>();
        foreach (var run in new long[] { 1, 2, 3 })
        {
            await engine.TriggerAndFinishAsync(run, null, Trigger("acme/shop") with { Snapshot = Trigger("acme/shop").Snapshot! with { RunId = run } }, writer, CancellationToken.None);
            runs[run] = writer.Saved.Last(state => state.RunId == run);
        }

        var launchedAt = time.GetUtcNow();
        // Run 3 is given up on for age first, and its reads show it at work from then on.
        time.Advance(TimeSpan.FromHours(6) + TimeSpan.FromMinutes(5));
        runs[3] = await engine.WakeAndFinishAsync(runs[3], writer, CancellationToken.None);
        Assert.Contains(runs[3].CodingAgents.Keys.Single(), runs[3].Poll!.GivenUp!);
        time.Advance(launchedAt + TimeSpan.FromHours(12) - time.GetUtcNow());

        provider.ReadFailure = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, StatusCode: 503);
        var unread = await engine.WakeAndFinishAsync(runs[1], writer, CancellationToken.None);
        provider.ReadFailure = null;
        var timedOut = await engine.WakeAndFinishAsync(runs[2], writer, CancellationToken.None);
        var watched = await engine.WakeAndFinishAsync(runs[3], writer, CancellationToken.None);

        Assert.False(unread.CodingAgents.Values.Single().Status.IsFinal());
        Assert.Equal(CodingAgentStatus.Failed, timedOut.CodingAgents.Values.Single().Status);
        Assert.Contains(timedOut.CodingAgents.Keys.Single(), timedOut.Poll?.GivenUp ?? []);
        Assert.Contains(watched.CodingAgents.Keys.Single(), watched.Poll?.GivenUp ?? []);
    }

    [Fact]
    public async Task Watch_limit_of_an_agent_awaiting_its_pull_request_after_a_follow_up_includes_its_last_moment()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Error, PrUrl: "https://github.com/acme/shop/pull/31")), writer);
        Assert.Equal(AgentCommandStatus.Done, (await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Finish the fix"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None)).Status);
        var followedUpAt = time.GetUtcNow();
        Assert.Contains("bc-1", writer.Saved.Last().Poll?.AwaitingPullRequest ?? []);

        // Read at work, exactly twice the maximum age after the follow-up: still awaited; a moment later, no longer.
        time.Advance(followedUpAt + TimeSpan.FromHours(12) - time.GetUtcNow());
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Contains("bc-1", state.Poll?.AwaitingPullRequest ?? []);

        time.Advance(state.NextWakeAt()!.Value - time.GetUtcNow());
        state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
        Assert.Null(state.NextWakeAt());
    }

    /// <summary>A run whose one launch, of acme/shop, holds agent bc-1 in <paramref name="status"/>, both as of now.</summary>
    private RunHandoffState OneLaunchedAgent(CodingAgentStatus status) => RunHandoffState.New(1) with
    {
        CodingAgents = new Dictionary<string, CodingAgentState> { ["bc-1"] = new("bc-1", status, null, "cursor_background_agent", "acme/shop", time.GetUtcNow(), []) },
        Launches = [new RepositoryLaunch("acme/shop", "github", 42, "cursor_background_agent", 1, "b-abc123", null, true, null, LaunchPhase.Launched, 1, time.GetUtcNow(), null, "bc-1", null, time.GetUtcNow())],
    };

    [Fact]
    public async Task Webhook_adopting_an_agent_that_finished_with_its_pull_request_records_it_completed_with_it()
    {
        await LaunchUntilRetriesRunOut(new ProviderFailure(
            FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, StatusCode: 504));
        var branch = writer.Saved.Last().Launches[0].BranchName;

        // Only a finish without its pull request is held for a read; this one has it, and is taken as it comes.
        var finished = new ProviderAgent(
            "bc-lost", ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/21", BranchName: branch);
        var adopted = await engine.ApplyAgentReportAsync(
            writer.Saved.Last(), new AgentReport(42, finished, "acme/shop"), writer);

        Assert.Equal(AgentReportStatus.Changed, adopted);
        var state = writer.Saved.Last();
        var agent = state.CodingAgents["bc-lost"];
        Assert.Equal(CodingAgentStatus.Completed, agent.Status);
        Assert.Equal("https://github.com/acme/shop/pull/21", Assert.Single(agent.Results).PrUrl);
        Assert.Contains(state.Timeline, entry => entry.AgentId == "bc-lost" && entry.Detail == "reported by webhook");
    }

    [Fact]
    public async Task Webhook_finish_without_a_pull_request_of_an_agent_completed_with_one_changes_nothing()
    {
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/22";
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        var saves = writer.Saved.Count;

        // A late webhook that left out the pull request: nothing to confirm, the pull request is known.
        var late = await engine.ApplyAgentReportAsync(
            state, new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);

        Assert.Equal(AgentReportStatus.Unchanged, late);
        Assert.Equal(saves, writer.Saved.Count);
    }

    [Fact]
    public async Task Webhook_finish_of_a_timed_out_agent_not_followed_up_is_read_on_unstopped_until_a_read_shows_it()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromHours(6) + TimeSpan.FromMinutes(5));
        await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(["bc-1", "bc-2"], provider.Stops.Order());
        // The other agent is sent a follow-up: it awaits its pull request, so that list is not empty.
        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        var followup = new AgentFollowup("bc-2", "Open the pull request");
        Assert.Equal(AgentCommandStatus.Done,
            (await engine.AddFollowupAsync(writer.Saved.Last(), followup, recorder, CancellationToken.None)).Status);

        // bc-1 had finished after all, its webhook without the pull request: completed, and read on for it.
        Assert.Equal(AgentReportStatus.Changed, await engine.ApplyAgentReportAsync(
            writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer));
        var state = writer.Saved.Last();
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.DoesNotContain("bc-1", state.Poll!.GivenUp ?? []);
        Assert.True(state.Poll.FinishesToConfirm?.ContainsKey("bc-1") == true, $"poll {state.Poll}");
        Assert.Contains(state.Timeline, entry => (entry.Event, entry.AgentId, entry.Detail)
            == (TimelineEvents.FinishReported, "bc-1", "without its pull request; read to confirm"));

        // A read at work is work resumed since that finish (a follow-up sent elsewhere): not stopped again.
        state = await WakeWhenDueAsync(state);
        Assert.Equal(["bc-1", "bc-2"], provider.Stops.Order());
        Assert.True(state.Poll?.FinishesToConfirm?.ContainsKey("bc-1") == true, $"poll {state.Poll}");

        // A read that shows it finished, without a pull request, ends its reads: there is none to learn.
        provider.ReadStatus = ProviderAgentStatus.Finished;
        state = await WakeWhenDueAsync(state);
        Assert.False(state.Poll?.FinishesToConfirm?.ContainsKey("bc-1") == true, $"poll {state.Poll}");
    }

    [Fact]
    public async Task A_held_finish_taken_at_the_time_out_is_a_change_that_starts_the_poll_interval_over()
    {
        provider.ReadFailure = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, StatusCode: 503);
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        Assert.Equal(AgentReportStatus.Changed, await engine.ApplyAgentReportAsync(
            writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer));
        // A younger agent keeps the poll going after bc-1's end; every read fails, so only that end is a change.
        time.Advance(TimeSpan.FromHours(1));
        await engine.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/web"), writer, CancellationToken.None);
        var state = writer.Saved.Last();
        while (!state.CodingAgents["bc-1"].Status.IsFinal())
        {
            // The read bc-1's finish brought forward is due already.
            state = await WakeNowOrWhenDueAsync(state);
        }

        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.False(state.CodingAgents["bc-2"].Status.IsFinal());
        Assert.Equal((time.GetUtcNow() + TimeSpan.FromMinutes(1), 0), (state.Poll!.NextPollAt, state.Poll.QuietPolls));
    }

    [Fact]
    public async Task A_polls_reads_and_the_stops_of_its_verdict_are_made_no_more_at_once_than_allowed()
    {
        var serial = new HandoffEngine(
            new SingleIntegrationCatalog(new Integration(42, provider)),
            new HandoffEngineOptions { MaxParallelLaunches = 1 },
            new RetryPolicy(new RetryOptions(), () => 0.5), time, NullLogger<HandoffEngine>.Instance);
        await serial.TriggerAndFinishAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        // Each call holds its thread a while, so calls let run together overlap. Unbounded, Parallel.ForEachAsync runs
        // as many as the runtime sees processors: this bites only where it sees two or more.
        int calls = 0, mostReads = 0, mostStops = 0;
        void Hold(ref int most)
        {
            var now = Interlocked.Increment(ref calls);
            InterlockedMax(ref most, now);
            Thread.Sleep(100);
            Interlocked.Decrement(ref calls);
        }

        provider.OnRead = _ => Hold(ref mostReads);
        provider.OnStop = () => Hold(ref mostStops);
        time.Advance(TimeSpan.FromHours(6) + TimeSpan.FromMinutes(5));

        await serial.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.Equal(2, provider.Reads);
        Assert.Equal(2, provider.Stops.Count);
        Assert.Equal((1, 1), (mostReads, mostStops));
    }

    private static void InterlockedMax(ref int most, int value)
    {
        for (var seen = Volatile.Read(ref most); seen < value; seen = Volatile.Read(ref most))
        {
            if (Interlocked.CompareExchange(ref most, value, seen) == seen)
            {
                return;
            }
        }
    }

    [Fact]
    public async Task An_agents_move_to_running_or_completed_leaves_its_launchs_updated_time_alone()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var launched = writer.Saved.Last().Launches[0].UpdatedAt;

        // The launch itself does not change: only a failure (its type) or a finish after one (cleared) touches it.
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.Equal(CodingAgentStatus.Running, state.CodingAgents["bc-1"].Status);
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/23";
        state = await WakeWhenDueAsync(state);

        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Equal(launched, state.Launches[0].UpdatedAt);
    }

    [Fact]
    public async Task A_finish_after_a_failure_with_a_pull_request_keeps_it_and_takes_the_finishs_summary()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        const string pullRequest = "https://github.com/acme/shop/pull/24";
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent(
            "bc-1", ProviderAgentStatus.Error, PrUrl: pullRequest, Summary: "tests failed")), writer);
        Assert.Equal(CodingAgentStatus.Failed, writer.Saved.Last().CodingAgents["bc-1"].Status);

        // It finished after all; the webhook leaves out the pull request it already told of.
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent(
            "bc-1", ProviderAgentStatus.Finished, Summary: "fixed the pool timeout")), writer);

        var agent = writer.Saved.Last().CodingAgents["bc-1"];
        Assert.Equal(CodingAgentStatus.Completed, agent.Status);
        var result = Assert.Single(agent.Results);
        Assert.Equal((pullRequest, "fixed the pool timeout"), (result.PrUrl, result.Description));
    }

    [Fact]
    public async Task A_finish_to_confirm_is_read_on_through_twice_the_maximum_age_from_its_webhook_not_past_it()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromHours(6) + TimeSpan.FromMinutes(5));
        await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(AgentReportStatus.Changed, await engine.ApplyAgentReportAsync(
            writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer));
        var watchEnds = time.GetUtcNow() + TimeSpan.FromHours(12);
        provider.ReadFailure = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, StatusCode: 503);
        var state = writer.Saved.Last();
        // Polled as due until the last one before the watch's end, which is made late, at that end.
        while (state.NextWakeAt() is { } next && next + new HandoffEngineOptions().PollMaxInterval < watchEnds)
        {
            state = await WakeNowOrWhenDueAsync(state);
        }

        // A poll made at the very end of its watch still keeps it; the next, past it, does not.
        Assert.True(state.NextWakeAt() <= watchEnds, $"next wake-up {state.NextWakeAt():O}");
        time.Advance(watchEnds - time.GetUtcNow());
        state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
        Assert.True(state.Poll?.FinishesToConfirm?.ContainsKey("bc-1") == true, $"poll {state.Poll}");
        state = await WakeWhenDueAsync(state);
        Assert.Null(state.Poll);
    }

    [Fact]
    public async Task A_report_of_the_same_pull_request_without_a_summary_keeps_the_summary_and_branch_told_with_it()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        const string pullRequest = "https://github.com/acme/shop/pull/25";
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent(
            "bc-1", ProviderAgentStatus.Error, BranchName: "fix-pool", PrUrl: pullRequest, Summary: "tests failed")), writer);

        // It finished after all; this report names the same pull request and nothing else.
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent(
            "bc-1", ProviderAgentStatus.Finished, PrUrl: pullRequest)), writer);

        var result = Assert.Single(writer.Saved.Last().CodingAgents["bc-1"].Results);
        Assert.Equal((pullRequest, "tests failed", "fix-pool"), (result.PrUrl, result.Description, result.BranchName));
    }

    [Fact]
    public async Task A_report_of_another_pull_request_without_a_summary_does_not_take_the_earlier_ones_summary()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent(
            "bc-1", ProviderAgentStatus.Error, PrUrl: "https://github.com/acme/shop/pull/25", Summary: "tests failed")), writer);

        const string another = "https://github.com/acme/shop/pull/26";
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent(
            "bc-1", ProviderAgentStatus.Finished, PrUrl: another)), writer);

        var result = Assert.Single(writer.Saved.Last().CodingAgents["bc-1"].Results);
        Assert.Equal((another, null), (result.PrUrl, result.Description));
    }
}
