using System.Collections.Concurrent;
using System.Text.Json;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Repositories;
using HandoffDapr.Core.Serialization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Core.Tests;

/// <summary>The run's decisions, with a scripted provider and an in-memory writer.</summary>
public sealed class HandoffEngineTests
{
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero));
    private readonly Provider provider = new();
    private readonly RecordingWriter writer = new();
    private readonly HandoffEngine engine;

    public HandoffEngineTests() => engine = LoggingTo(NullLogger<HandoffEngine>.Instance);

    /// <summary>The test's engine (integration 42, default options, the fake clock), writing its log lines to <paramref name="logger"/>.</summary>
    private HandoffEngine LoggingTo(ILogger<HandoffEngine> logger) =>
        new(new SingleIntegrationCatalog(new Integration(42, provider)), new HandoffEngineOptions(), new RetryPolicy(new RetryOptions(), () => 0.5), time, logger);

    [Fact]
    public async Task Intent_is_saved_in_flight_before_the_provider_is_called()
    {
        provider.OnLaunch = _ =>
        {
            var saved = writer.Saved.Last();
            Assert.Equal(LaunchPhase.InFlight, Assert.Single(saved.Launches).Phase);
            Assert.Equal(time.GetUtcNow() + TimeSpan.FromMinutes(2), saved.NextWakeAt());
        };

        var outcome = await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);

        Assert.Single(outcome.Result.Successes);
        Assert.Equal(LaunchPhase.Launched, writer.Saved.Last().Launches[0].Phase);
    }

    [Fact]
    public async Task A_trigger_saves_the_intent_and_leaves_the_provider_calls_to_its_owner()
    {
        var outcome = await engine.TriggerAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);

        Assert.Empty(provider.Launches);
        var round = Assert.IsType<LaunchRound>(outcome.Round);
        Assert.Equal(["acme/shop", "acme/web"], round.Launches.Select(sent => sent.Launch.Repository));
        Assert.All(writer.Saved.Last().Launches, launch => Assert.Equal(LaunchPhase.InFlight, launch.Phase));

        var result = await engine.FinishAsync(round, writer, CancellationToken.None);

        Assert.Equal(["acme/shop", "acme/web"], result.Successes.Select(success => success.RepoName));
        Assert.Equal(2, provider.Launches.Count);
    }

    [Fact]
    public async Task A_round_whose_start_was_read_on_a_clock_ahead_of_the_callers_gets_no_more_than_its_time_from_now()
    {
        var started = await engine.TriggerAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        // Dapr mode: the actor's replica saved the intent; this replica's clock is 30 s behind it.
        var skewed = started.Round! with { StartedAt = started.Round.StartedAt + TimeSpan.FromSeconds(30) };
        // The call takes 109 s (past 90 % of the 2-minute timeout), then would answer.
        provider.OnLaunch = _ => time.Advance(TimeSpan.FromSeconds(109));
        provider.Delay = _ => 5_000;

        await engine.FinishAsync(skewed, writer, CancellationToken.None);

        Assert.Equal(LaunchPhase.OutcomeUnknown, writer.Saved.Last().Launches[0].Phase);
    }

    [Fact]
    public async Task A_trigger_during_a_round_in_flight_queues_its_new_repositories_until_the_round_is_recorded()
    {
        var first = await engine.TriggerAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var deadline = time.GetUtcNow() + TimeSpan.FromMinutes(2);

        var second = await engine.TriggerAsync(1, writer.Saved.Last(), Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);

        Assert.Null(second.Round);
        var queued = writer.Saved.Last();
        Assert.Equal(LaunchPhase.RetryScheduled, queued.FindLaunch("acme/web", 42)!.Phase);
        Assert.Equal(["acme/shop", "acme/web"], second.Result.Retries.Select(retry => retry.RepoName));
        // acme/shop's first attempt is under way until its deadline; acme/web's first is still to come.
        Assert.Equal([(1, deadline), (1, time.GetUtcNow())], second.Result.Retries.Select(retry => (retry.Attempt, retry.RetryAt)));
        // The wake-up waits for the round's deadline, and a wake-up before the answers launches nothing.
        Assert.Equal(deadline, queued.NextWakeAt());
        Assert.Null((await engine.WakeAsync(queued, writer, CancellationToken.None)).Round);
        Assert.Empty(provider.Launches);

        await engine.FinishAsync(first.Round!, writer, CancellationToken.None);

        Assert.Equal(time.GetUtcNow(), writer.Saved.Last().NextWakeAt());
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(["shop", "web"], provider.Launches.Select(request => request.Repository.Name));
        Assert.All(state.Launches, launch => Assert.Equal(LaunchPhase.Launched, launch.Phase));
    }

    [Fact]
    public async Task A_crashed_attempt_waits_for_the_live_round_without_waking_the_run_meanwhile_then_is_reconciled()
    {
        // acme/shop's round never came back (its process died): in flight, past its deadline.
        await engine.TriggerAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(3));

        var live = await engine.TriggerAsync(1, writer.Saved.Last(), Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);

        Assert.Equal(["acme/web"], live.Round!.Launches.Select(sent => sent.Launch.Repository));
        // Not the leftover's past deadline, which would wake the run over and over while the round is out.
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromMinutes(2), writer.Saved.Last().NextWakeAt());

        await engine.FinishAsync(live.Round, writer, CancellationToken.None);
        Assert.True(writer.Saved.Last().NextWakeAt() <= time.GetUtcNow());
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.All(state.Launches, launch => Assert.Equal(LaunchPhase.Launched, launch.Phase));
        Assert.Equal(["web", "shop"], provider.Launches.Select(request => request.Repository.Name));
    }

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
        time.Advance(state.NextWakeAt()!.Value - time.GetUtcNow());
        state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
    }

    [Fact]
    public async Task Completed_agent_sent_a_follow_up_is_read_on_until_its_pull_request_shows_even_if_first_read_finished()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        provider.ReadStatus = ProviderAgentStatus.Finished;
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Null(state.NextWakeAt());

        // Asked for the pull request it did not open; the next read still sees FINISHED (it has not resumed yet).
        var followup = await engine.AddFollowupAsync(state, new AgentFollowup("bc-1", "Open the pull request"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        Assert.Equal(AgentCommandStatus.Done, followup.Status);
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.NotNull(state.NextWakeAt());

        // It resumes, and finishes again with the pull request: learnt by the poll, which then ends.
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/21";
        time.Advance(state.NextWakeAt()!.Value - time.GetUtcNow());
        state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
        Assert.Equal("https://github.com/acme/shop/pull/21", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
    }

    [Fact]
    public async Task Completed_agent_sent_a_follow_up_learns_the_pull_request_a_read_shows_even_when_the_follow_ups_work_failed()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        provider.ReadStatus = ProviderAgentStatus.Finished;
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);

        // Asked for the pull request, it opens it, but the follow-up's work then ends in an error (or it is still at work):
        // every read carries the pull request with a status other than FINISHED.
        var followup = await engine.AddFollowupAsync(state, new AgentFollowup("bc-1", "Open the pull request"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        Assert.Equal(AgentCommandStatus.Done, followup.Status);
        provider.ReadStatus = ProviderAgentStatus.Error;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/22";
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        // Final is final (still completed), but the pull request is learnt and the watch ends.
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Equal("https://github.com/acme/shop/pull/22", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
    }

    [Fact]
    public async Task Follow_up_to_an_agent_shown_running_is_still_awaited_after_a_poll_whose_read_of_it_failed()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        var poll = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll!;

        // Past the poll's lease (its owner slow, no wake-up since), a person asks the agent (shown at work; it had
        // finished unseen) for the pull request.
        time.Advance(TimeSpan.FromMinutes(3));
        var followup = await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Open the pull request"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        Assert.Equal(AgentCommandStatus.Done, followup.Status);
        // The poll's answers come back, still holding the schedule; its read of the agent failed, which says nothing.
        await engine.CompletePollAsync(writer.Saved.Last(), new PollAnswers(poll, [null]), writer);
        // A late webhook tells of the end before the follow-up: completed, without a pull request.
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);
        var state = writer.Saved.Last();
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);

        // Still read on: the follow-up's pull request is learnt without a webhook.
        Assert.NotNull(state.NextWakeAt());
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/25";
        time.Advance(state.NextWakeAt()!.Value - time.GetUtcNow());
        state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
        Assert.Equal("https://github.com/acme/shop/pull/25", state.CodingAgents["bc-1"].Results.Single().PrUrl);
    }

    [Fact]
    public async Task An_agent_stopped_without_a_follow_up_is_still_watched_while_another_agent_of_the_run_awaits_its_pull_request()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        // The two launches are made side by side: which answers first (and is named bc-1) is up to the scheduler.
        var shop = writer.Saved.Last().Launches.Single(launch => launch.Repository == "acme/shop").AgentId!;
        var web = writer.Saved.Last().Launches.Single(launch => launch.Repository == "acme/web").AgentId!;
        // acme/shop's agent finished without a pull request and is asked for one: watched, counting from that follow-up.
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent(shop, ProviderAgentStatus.Finished)), writer);
        Assert.Equal(AgentCommandStatus.Done, (await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup(shop, "Open the pull request"), recorder, CancellationToken.None)).Status);
        // acme/web's agent is stopped by a person: read on as given up until the provider shows it ended.
        Assert.Equal(AgentCommandStatus.Done, (await engine.StopAgentAsync(writer.Saved.Last(), web, recorder, CancellationToken.None)).Status);
        Assert.Contains(web, writer.Saved.Last().Poll!.GivenUp!);

        // The next read shows it still running (the stop has not taken yet): it is still watched.
        var state = writer.Saved.Last();
        time.Advance(state.NextWakeAt()!.Value - time.GetUtcNow());
        state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
        Assert.Contains(web, state.Poll?.GivenUp ?? []);

        // It finishes after all, with its pull request: learnt without a webhook.
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/web/pull/24";
        time.Advance(state.NextWakeAt()!.Value - time.GetUtcNow());
        state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents[web].Status);
        Assert.Equal("https://github.com/acme/web/pull/24", state.CodingAgents[web].Results.Single().PrUrl);
    }

    [Fact]
    public async Task Follow_up_to_an_agent_shown_running_that_had_ended_is_read_on_until_its_pull_request_shows()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(CodingAgentStatus.Running, state.CodingAgents["bc-1"].Status);

        // It finishes without a pull request; no webhook says so (none configured, or lost), so the run still shows it
        // running when a person asks for the pull request. The next read still sees FINISHED: it has not resumed yet.
        provider.ReadStatus = ProviderAgentStatus.Finished;
        var followup = await engine.AddFollowupAsync(state, new AgentFollowup("bc-1", "Open the pull request"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        Assert.Equal(AgentCommandStatus.Done, followup.Status);
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.NotNull(state.NextWakeAt());

        // It resumes, and finishes again with the pull request: learnt by the poll, which then ends.
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/23";
        time.Advance(state.NextWakeAt()!.Value - time.GetUtcNow());
        state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
        Assert.Equal("https://github.com/acme/shop/pull/23", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
    }

    [Fact]
    public async Task Follow_up_to_an_agent_timed_out_whose_watch_ended_puts_it_back_under_watch_until_its_pull_request_shows()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        // Past its maximum age it is timed out and stopped, then read until the provider shows the stop took.
        time.Advance(TimeSpan.FromHours(7));
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(CodingAgentStatus.Failed, state.CodingAgents["bc-1"].Status);
        provider.ReadStatus = ProviderAgentStatus.Stopped;
        time.Advance(state.NextWakeAt()!.Value - time.GetUtcNow());
        state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
        Assert.Null(state.NextWakeAt());

        var followup = await engine.AddFollowupAsync(state, new AgentFollowup("bc-1", "Go on and open the pull request"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);

        Assert.Equal(AgentCommandStatus.Done, followup.Status);
        state = writer.Saved.Last();
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromMinutes(1), state.NextWakeAt());
        // The next read still shows it stopped (it has not resumed yet): that does not end the watch.
        time.Advance(state.NextWakeAt()!.Value - time.GetUtcNow());
        state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
        Assert.NotNull(state.NextWakeAt());
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/22";
        time.Advance(state.NextWakeAt()!.Value - time.GetUtcNow());
        state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Equal("https://github.com/acme/shop/pull/22", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
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
    public void Poll_answers_and_verdict_round_trip_through_the_actor_json()
    {
        var json = HandoffDapr.Core.Serialization.HandoffJsonContext.CreateOptions();
        var round = new PollRound(7, time.GetUtcNow(), time.GetUtcNow().AddMinutes(2), [new AgentRef("bc-1", 42), new AgentRef("bc-2", 42)]);
        var answers = new PollAnswers(round, [new ProviderAgent("bc-1", ProviderAgentStatus.Finished, "n", "https://x", "b", "https://pr", "s", time.GetUtcNow()), null]);
        var text = System.Text.Json.JsonSerializer.Serialize(answers, json);
        var back = System.Text.Json.JsonSerializer.Deserialize<PollAnswers>(text, json)!;
        Assert.Equal(text, System.Text.Json.JsonSerializer.Serialize(back, json));
        Assert.Equal(round.LeaseUntil, back.Round.LeaseUntil);
        Assert.Null(back.Reports[1]);
        Assert.Equal(ProviderAgentStatus.Finished, back.Reports[0]!.Status);
        var verdict = new PollVerdict([new AgentRef("bc-1", 42)]);
        var verdictText = System.Text.Json.JsonSerializer.Serialize(verdict, json);
        Assert.Equal("bc-1", System.Text.Json.JsonSerializer.Deserialize<PollVerdict>(verdictText, json)!.ToStop.Single().AgentId);
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
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/9";
        var holding = new HoldingRecorder();
        await engine.FinishPollAsync(lost, holding, CancellationToken.None);
        // Its reports come back after its lease: the poll was made again meanwhile.
        time.Advance(TimeSpan.FromMinutes(3));
        var again = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll!;

        await engine.CompletePollAsync(writer.Saved.Last(), holding.Poll!, writer);

        var state = writer.Saved.Last();
        Assert.Equal(CodingAgentStatus.Completed, Assert.Single(state.CodingAgents.Values).Status);
        Assert.Equal(again.LeaseUntil, state.Poll?.NextPollAt);
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
        time.Advance(state.NextWakeAt()!.Value - time.GetUtcNow());
        state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents[web].Status);
        Assert.DoesNotContain(state.AgentsToPoll, agent => agent.Id == web);
    }

    [Fact]
    public async Task A_slow_poll_does_not_hold_up_the_launch_round_of_the_same_wake_up()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        provider.Next = new ProviderFailure(FailureTypes.RateLimited, Retryable: true);
        await engine.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        Assert.Equal(LaunchPhase.RetryScheduled, writer.Saved.Last().FindLaunch("acme/web", 42)!.Phase);
        time.Advance(TimeSpan.FromMinutes(10));
        // The poll's read of acme/shop's agent answers only once acme/web's retry has reached the provider.
        using var launched = new ManualResetEventSlim();
        var readWaitedForNothing = false;
        provider.OnLaunch = _ => launched.Set();
        provider.OnRead = _ => readWaitedForNothing = launched.Wait(TimeSpan.FromSeconds(5));

        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.True(readWaitedForNothing);
        Assert.Equal(LaunchPhase.Launched, state.FindLaunch("acme/web", 42)!.Phase);
        Assert.Equal(1, provider.Reads);
    }

    [Fact]
    public async Task An_agent_answered_after_the_deadline_is_adopted_once_by_the_launch_that_took_the_attempt_over()
    {
        var started = await engine.TriggerAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var late = await HoldAnswersAsync(started.Round!);
        time.Advance(TimeSpan.FromMinutes(3));
        // Past its deadline the attempt is taken for a crash: the wake-up's round looks for the agent first.
        var takeover = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Round!;
        Assert.True(Assert.Single(takeover.Launches).ReconcileFirst);

        await engine.CompleteRoundAsync(writer.Saved.Last(), late, writer);

        var adopted = writer.Saved.Last();
        var agentId = late.Attempts[0].Agent!.Id;
        Assert.Equal(agentId, adopted.Launches[0].AgentId);
        Assert.Equal(LaunchPhase.Launched, adopted.Launches[0].Phase);
        Assert.Contains(adopted.Timeline, entry => entry.Event == TimelineEvents.Reconciled && entry.AgentId == agentId);

        // The takeover finds the same agent on the branch; its answer changes nothing, and nothing was launched twice.
        provider.Existing = late.Attempts[0].Agent;
        await engine.FinishAsync(takeover, writer, CancellationToken.None);
        Assert.Equal(adopted.Launches, writer.Saved.Last().Launches);
        Assert.Single(writer.Saved.Last().CodingAgents);
        Assert.Single(provider.Launches);
    }

    [Fact]
    public async Task An_agent_answered_after_the_deadline_and_adopted_is_counted_as_a_reconciled_launch_once()
    {
        var started = await engine.TriggerAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var late = await HoldAnswersAsync(started.Round!);
        time.Advance(TimeSpan.FromMinutes(3));
        var takeover = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Round!;
        using var counted = new CountedMeasurements();

        // Adopted as reconciled (log line HandoffReconciled, timeline 'reconciled'): counted so too, as a lookup's find is.
        await engine.CompleteRoundAsync(writer.Saved.Last(), late, writer);
        Assert.Equal(1, counted["handoff.launches", "handoff.outcome", "reconciled"]);

        // The takeover finds the same agent: no second launch outcome for one agent.
        provider.Existing = late.Attempts[0].Agent;
        await engine.FinishAsync(takeover, writer, CancellationToken.None);
        Assert.Equal(1, counted["handoff.launches"]);
        Assert.Equal(1, counted["handoff.agents.status_changes"]);
    }

    [Fact]
    public async Task A_round_whose_save_fails_counts_nothing_and_the_round_decided_again_counts_each_launch_once()
    {
        using var counted = new CountedMeasurements();
        var started = await engine.TriggerAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        var answers = await HoldAnswersAsync(started.Round!);

        // As an embedded owner whose save met another process's: the turn is decided again on the state read anew.
        await Assert.ThrowsAsync<IOException>(() => engine.CompleteRoundAsync(writer.Saved.Last(), answers, new FailingWriter()));
        Assert.Equal(0, counted["handoff.launches"]);
        await engine.CompleteRoundAsync(writer.Saved.Last(), answers, writer);

        Assert.Equal(2, counted["handoff.launches"]);
        Assert.Equal(2, counted["handoff.agents.status_changes"]);
        Assert.All(writer.Saved.Last().Launches, launch => Assert.Equal(LaunchPhase.Launched, launch.Phase));
    }

    [Fact]
    public async Task A_round_whose_save_fails_and_is_decided_again_logs_each_launch_once()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        // One of the two launches is refused for now, the other launched.
        provider.Next = new ProviderFailure(FailureTypes.RateLimited, Retryable: true, StatusCode: 429);
        var started = await logged.TriggerAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        var holding = new HoldingRecorder();
        await logged.FinishRoundAsync(started.Round!, holding, CancellationToken.None);

        // As an embedded owner whose save met another process's: the turn is decided again on the state read anew.
        await Assert.ThrowsAsync<IOException>(() => logged.CompleteRoundAsync(writer.Saved.Last(), holding.Launches!, new FailingWriter()));
        await logged.CompleteRoundAsync(writer.Saved.Last(), holding.Launches!, writer);

        var records = logger.Collector.GetSnapshot();
        Assert.Single(records, record => record.Id.Name == "HandoffLaunched");
        Assert.Single(records, record => record.Id.Name == "HandoffRetryScheduled");
    }

    [Fact]
    public async Task A_retrys_time_is_logged_in_iso_8601_in_the_message_and_in_the_lines_state()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        provider.Next = new ProviderFailure(FailureTypes.RateLimited, Retryable: true, StatusCode: 429);
        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var retryAt = writer.Saved.Last().Launches.Single().NextAttemptAt!.Value.ToString("O", System.Globalization.CultureInfo.InvariantCulture);

        var line = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "HandoffRetryScheduled");
        // What a JSON log line's state carries: a query on the field reads it as a time.
        Assert.Equal(retryAt, line.GetStructuredStateValue("RetryAt"));
        Assert.EndsWith($"retry at {retryAt}", line.Message);
    }

    [Fact]
    public async Task A_persons_stops_and_follow_ups_are_logged_as_taken_or_refused_with_their_agent_repository_and_failure_type()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        var recorder = new EngineRoundTrips.Recorder(logged, writer);
        var shop = writer.Saved.Last().Launches.Single(launch => launch.Repository == "acme/shop").AgentId!;
        var web = writer.Saved.Last().Launches.Single(launch => launch.Repository == "acme/web").AgentId!;

        Assert.Equal(AgentCommandStatus.Done, (await logged.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup(shop, "Add a regression test"), recorder, CancellationToken.None)).Status);
        provider.FollowupFailure = new ProviderFailure(FailureTypes.RateLimited, Retryable: true, StatusCode: 429);
        Assert.Equal(AgentCommandStatus.ProviderFailed, (await logged.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup(web, "Add a regression test"), recorder, CancellationToken.None)).Status);
        provider.CannotStop = true;
        Assert.Equal(AgentCommandStatus.ProviderFailed, (await logged.StopAgentAsync(writer.Saved.Last(), web, recorder, CancellationToken.None)).Status);
        provider.CannotStop = false;
        Assert.Equal(AgentCommandStatus.Done, (await logged.StopAgentAsync(writer.Saved.Last(), shop, recorder, CancellationToken.None)).Status);

        var records = logger.Collector.GetSnapshot();
        Assert.Equal(
            [$"Run 1: the provider took the follow-up for agent {shop} on acme/shop", $"Run 1: the provider took the stop for agent {shop} on acme/shop"],
            records.Where(record => record.Id.Name == "AgentCommandTaken" && record.Level == LogLevel.Information).Select(record => record.Message));
        Assert.Equal(
            [$"Run 1: the provider did not carry out the follow-up for agent {web} on acme/web (rate_limited); nothing recorded",
             $"Run 1: the provider did not carry out the stop for agent {web} on acme/web (not_supported); nothing recorded"],
            records.Where(record => record.Id.Name == "AgentCommandRefused" && record.Level == LogLevel.Warning).Select(record => record.Message));
        // The instruction is the caller's text: never logged.
        Assert.DoesNotContain(records, record => record.Message.Contains("regression", StringComparison.Ordinal));
    }

    [Fact]
    public async Task An_agents_status_change_is_logged_in_the_status_names_the_api_shows()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var agentId = writer.Saved.Last().Launches.Single().AgentId!;

        await logged.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent(agentId, ProviderAgentStatus.Running)), writer);

        var line = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "AgentStatusChanged");
        Assert.Equal($"Run 1: agent {agentId} for acme/shop moved from pending to running", line.Message);
    }

    [Fact]
    public async Task The_pull_request_an_agent_finishes_with_is_logged_once_after_its_status_change()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        var agents = writer.Saved.Last().Launches.ToDictionary(launch => launch.Repository, launch => launch.AgentId!);
        logger.Collector.Clear();

        var finished = new AgentReport(42, new ProviderAgent(agents["acme/shop"], ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/5"));
        await logged.ApplyAgentReportAsync(writer.Saved.Last(), finished, writer);
        await logged.ApplyAgentReportAsync(writer.Saved.Last(), finished, writer);
        // Finished without one: nothing to name.
        await logged.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent(agents["acme/web"], ProviderAgentStatus.Finished)), writer);

        Assert.Equal(
            [
                $"Run 1: agent {agents["acme/shop"]} for acme/shop moved from pending to completed",
                $"Run 1: agent {agents["acme/shop"]} opened pull request https://github.com/acme/shop/pull/5 for acme/shop",
                $"Run 1: agent {agents["acme/web"]} for acme/web moved from pending to completed",
            ],
            logger.Collector.GetSnapshot().Where(record => record.Id.Name is "AgentStatusChanged" or "AgentPullRequestLearnt").Select(record => record.Message));
    }

    [Fact]
    public async Task A_launch_answered_by_an_agent_that_already_has_its_pull_request_logs_the_launch_then_the_pull_request()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        provider.AnswerWith = new ProviderAgent("bc-9", ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/12");

        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);

        Assert.Equal("https://github.com/acme/shop/pull/12", writer.Saved.Last().CodingAgents["bc-9"].Results.Single().PrUrl);
        Assert.Equal(
            ["Run 1: agent bc-9 launched for acme/shop (attempt 1)", "Run 1: agent bc-9 opened pull request https://github.com/acme/shop/pull/12 for acme/shop"],
            logger.Collector.GetSnapshot().Where(record => record.Id.Name is "HandoffLaunched" or "AgentPullRequestLearnt").Select(record => record.Message));
    }

    [Fact]
    public async Task A_round_whose_answers_are_recorded_again_after_they_were_saved_logs_no_late_answer()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        provider.Next = new ProviderFailure(FailureTypes.RateLimited, Retryable: true, StatusCode: 429);
        var started = await logged.TriggerAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        var holding = new HoldingRecorder();
        await logged.FinishRoundAsync(started.Round!, holding, CancellationToken.None);
        await logged.CompleteRoundAsync(writer.Saved.Last(), holding.Launches!, writer);

        // As daprd repeats the actor call whose turn saved them and then failed at the reminder.
        await logged.CompleteRoundAsync(writer.Saved.Last(), holding.Launches!, writer);

        Assert.DoesNotContain(logger.Collector.GetSnapshot(), record => record.Id.Name == "LaunchAnswerLate");
    }

    [Fact]
    public async Task A_pull_request_learnt_for_an_agent_already_completed_is_logged_as_such_not_as_a_status_change()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await logged.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);
        await logged.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Open the pull request"), new EngineRoundTrips.Recorder(logged, writer), CancellationToken.None);
        logger.Collector.Clear();

        await logged.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/26")), writer);

        Assert.Equal("https://github.com/acme/shop/pull/26", writer.Saved.Last().CodingAgents["bc-1"].Results.Single().PrUrl);
        var records = logger.Collector.GetSnapshot();
        Assert.DoesNotContain(records, record => record.Id.Name == "AgentStatusChanged");
        var learnt = Assert.Single(records, record => record.Id.Name == "AgentPullRequestLearnt");
        Assert.Equal("Run 1: agent bc-1 opened pull request https://github.com/acme/shop/pull/26 for acme/shop", learnt.Message);
    }

    [Fact]
    public async Task An_agent_adopted_from_a_late_answer_is_logged_as_found_there()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        var started = await logged.TriggerAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var late = await HoldAnswersAsync(started.Round!);
        time.Advance(TimeSpan.FromMinutes(3));
        await logged.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None);

        await logged.CompleteRoundAsync(writer.Saved.Last(), late, writer);

        var line = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "HandoffReconciled");
        Assert.Equal(
            $"Run 1: found agent {late.Attempts[0].Agent!.Id} for acme/shop in a launch's answer that came after its deadline; adopted it instead of launching again",
            line.Message);
    }

    [Fact]
    public async Task An_agent_adopted_from_a_lookup_that_answered_late_is_logged_as_found_by_it()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        provider.Next = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, StatusCode: 504);
        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var lost = writer.Saved.Last().Launches.Single();
        time.Advance(lost.NextAttemptAt!.Value - time.GetUtcNow());
        // The retry looks for the lost attempt's agent first, finds it, and its answer is held past the round's deadline.
        provider.Existing = new ProviderAgent("bc-found", ProviderAgentStatus.Running, BranchName: lost.BranchName);
        var lookup = (await logged.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Round!;
        var late = await HoldAnswersAsync(lookup);
        Assert.True(late.Attempts[0].Reconciled);
        time.Advance(TimeSpan.FromMinutes(3));
        await logged.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None);

        await logged.CompleteRoundAsync(writer.Saved.Last(), late, writer);

        var line = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "HandoffReconciled");
        Assert.Equal("Run 1: found agent bc-found for acme/shop by a lookup at the provider that answered after its deadline; adopted it instead of launching again", line.Message);
    }

    [Fact]
    public async Task An_agent_adopted_from_a_webhook_on_a_launchs_branch_is_logged_as_found_there()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        provider.Next = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, StatusCode: 504);
        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var branch = writer.Saved.Last().Launches.Single().BranchName;

        var adopted = await logged.ApplyAgentReportAsync(
            writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-lost", ProviderAgentStatus.Running, BranchName: branch), "acme/shop"), writer);

        Assert.Equal(AgentReportStatus.Changed, adopted);
        var line = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "HandoffReconciled");
        Assert.Equal("Run 1: found agent bc-lost for acme/shop in a webhook's report; adopted it instead of launching again", line.Message);
    }

    [Fact]
    public async Task A_polls_answers_that_no_longer_fit_the_run_are_logged_as_a_polls_not_as_a_launch_rounds()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        var poll = (await logged.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll!;

        // The run is gone meanwhile (deleted, or its state replaced).
        await logged.CompletePollAsync(null, new PollAnswers(poll, [null]), writer);

        var records = logger.Collector.GetSnapshot();
        Assert.DoesNotContain(records, record => record.Id.Name == "LaunchRoundDropped");
        var dropped = Assert.Single(records, record => record.Id.Name == "PollRoundDropped");
        Assert.DoesNotContain("launch", dropped.Message, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task A_trigger_whose_save_fails_and_is_decided_again_logs_a_refused_repository_once()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);

        // As an embedded owner whose save met another process's: the turn is decided again on the state read anew.
        await Assert.ThrowsAsync<IOException>(() => logged.TriggerAsync(1, null, Trigger("acme/shop", "acme/bad repo"), new FailingWriter(), CancellationToken.None));
        await logged.TriggerAsync(1, null, Trigger("acme/shop", "acme/bad repo"), writer, CancellationToken.None);

        Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "HandoffRepositoryNotLaunched");
    }

    [Fact]
    public async Task A_wake_up_whose_save_fails_and_is_decided_again_logs_a_launch_it_ends_once()
    {
        provider.Next = new ProviderFailure(FailureTypes.RateLimited, Retryable: true, StatusCode: 429);
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        // Restarted with integration 42 taken out of the settings.
        var logger = new FakeLogger<HandoffEngine>();
        var restarted = new HandoffEngine(
            new SingleIntegrationCatalog(new Integration(43, provider)), new HandoffEngineOptions(), new RetryPolicy(new RetryOptions(), () => 0.5), time, logger);
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());

        // As an embedded owner whose save met another process's: the turn is decided again on the state read anew.
        await Assert.ThrowsAsync<IOException>(() => restarted.WakeAsync(writer.Saved.Last(), new FailingWriter(), CancellationToken.None));
        await restarted.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.Equal(LaunchPhase.Failed, writer.Saved.Last().Launches[0].Phase);
        Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "HandoffUnknownIntegration");
    }

    [Fact]
    public async Task An_event_whose_save_fails_and_is_decided_again_logs_its_target_mismatch_once()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        var snapshot = Trigger("acme/shop").Snapshot! with { Metadata = new RunMetadata("open_pr") };
        snapshot = snapshot with { Preferences = snapshot.Preferences! with { AutomationHandoff = new AutomationHandoff("root_cause", "github_copilot_agent", 42) } };

        // As an embedded owner whose save met another process's: the turn is decided again on the state read anew.
        await Assert.ThrowsAsync<IOException>(() => logged.AcceptCompletedRunAsync(null, snapshot, new FailingWriter(), LaunchTiming.Now, CancellationToken.None));
        var outcome = await logged.AcceptCompletedRunAsync(null, snapshot, writer, LaunchTiming.Now, CancellationToken.None);

        Assert.Equal(CompletionStatus.Stored, outcome.Status);
        Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "AutomationTargetMismatch");
    }

    [Fact]
    public async Task A_launch_attempt_whose_provider_client_faults_ends_its_span_as_an_error_with_its_outcome()
    {
        var spans = new ConcurrentQueue<System.Diagnostics.Activity>();
        using var listener = new System.Diagnostics.ActivityListener
        {
            ShouldListenTo = source => source.Name == HandoffTelemetry.Name,
            Sample = (ref System.Diagnostics.ActivityCreationOptions<System.Diagnostics.ActivityContext> _) => System.Diagnostics.ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = spans.Enqueue,
        };
        System.Diagnostics.ActivitySource.AddActivityListener(listener);
        provider.OnLaunch = _ => throw new InvalidOperationException("A bug in the provider client.");

        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/faulty-client"), writer, CancellationToken.None);

        Assert.Equal(LaunchPhase.OutcomeUnknown, writer.Saved.Last().Launches[0].Phase);
        var span = Assert.Single(spans, span => span.OperationName == "handoff.launch_attempt" && Equals(span.GetTagItem("handoff.repository"), "acme/faulty-client"));
        Assert.Equal(System.Diagnostics.ActivityStatusCode.Error, span.Status);
        Assert.Equal(FailureTypes.InvalidResponse, span.GetTagItem("handoff.outcome"));
    }

    [Fact]
    public async Task A_report_whose_save_fails_counts_no_status_change()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        using var counted = new CountedMeasurements();
        var report = new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/3"));

        await Assert.ThrowsAsync<IOException>(() => engine.ApplyAgentReportAsync(writer.Saved.Last(), report, new FailingWriter()));
        Assert.Equal(0, counted["handoff.agents.status_changes"]);
        var applied = await engine.ApplyAgentReportAsync(writer.Saved.Last(), report, writer);

        Assert.Equal(AgentReportStatus.Changed, applied);
        Assert.Equal(1, counted["handoff.agents.status_changes"]);
    }

    [Fact]
    public async Task A_pull_request_learnt_for_an_agent_already_completed_counts_no_second_entry_into_completed()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        using var counted = new CountedMeasurements();
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);
        Assert.Equal(1, counted["handoff.agents.status_changes", "handoff.status", "completed"]);

        // A follow-up's pull request, reported later: learnt, but the agent entered completed once.
        var applied = await engine.ApplyAgentReportAsync(
            writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/3")), writer);

        Assert.Equal(AgentReportStatus.Changed, applied);
        Assert.Equal("https://github.com/acme/shop/pull/3", writer.Saved.Last().CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Equal(1, counted["handoff.agents.status_changes", "handoff.status", "completed"]);
        Assert.Equal(1, counted["handoff.agents.status_changes"]);
    }

    [Fact]
    public async Task An_agent_id_the_run_already_follows_for_another_repository_is_not_taken_as_this_repositorys_agent()
    {
        provider.AnswerAgentId = "bc-dup";

        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);

        var state = writer.Saved.Last();
        var owner = Assert.Single(state.Launches, launch => launch.AgentId == "bc-dup");
        var other = Assert.Single(state.Launches, launch => launch.AgentId is null);
        Assert.Equal(owner.Repository, Assert.Single(state.CodingAgents.Values).Name);
        // The other launch may have created its own agent: it is looked for before anything is launched again.
        Assert.Equal((LaunchPhase.OutcomeUnknown, FailureTypes.InvalidResponse), (other.Phase, other.FailureType));
    }

    [Fact]
    public async Task A_persons_relaunch_of_a_launch_whose_last_attempt_was_rate_limited_waits_for_its_retry_after()
    {
        provider.Always = new ProviderFailure(FailureTypes.RateLimited, Retryable: true, RetryAfter: TimeSpan.FromMinutes(30), StatusCode: 429);
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        // Bounded: a wake-up that leaves its launch due would otherwise loop here for good, saving without end.
        for (var wakes = 0; writer.Saved.Last().NextWakeAt() is { } next; wakes++)
        {
            Assert.True(wakes < 20, "the launch's retries never ended");
            time.Advance(next - time.GetUtcNow());
            await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        }

        Assert.Equal((LaunchPhase.Failed, FailureTypes.RetriesExhausted), (writer.Saved.Last().Launches[0].Phase, writer.Saved.Last().Launches[0].FailureType));
        var sent = provider.Launches.Count;

        // A person relaunches it at once: the provider asked for 30 minutes, and is not asked again before.
        provider.Always = null;
        time.Advance(TimeSpan.FromMinutes(1));
        var relaunch = await engine.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/shop"), writer, CancellationToken.None);
        Assert.Equal(sent, provider.Launches.Count);
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromMinutes(29), Assert.Single(relaunch.Result.Retries).RetryAt);

        // Sent once it is over.
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(LaunchPhase.Launched, state.Launches[0].Phase);
        Assert.Equal(sent + 1, provider.Launches.Count);
    }

    [Fact]
    public async Task A_persons_trigger_looks_for_the_agent_of_a_relaunch_ended_before_any_call_behind_an_earlier_agent_that_finished_after_all()
    {
        var relaunch = await RelaunchLostBehindAStoppedAgentThatFinishesAsync(engine);
        // The relaunch's next attempt ends before any call (its integration taken out of the settings at that wake-up):
        // failed, no attempt kept, an agent may exist.
        var state = writer.Saved.Last();
        state = state with { Launches = [.. state.Launches.Select(launch => launch.Generation == 2 ? launch with { Phase = LaunchPhase.Failed, Attempts = 0, NextAttemptAt = null, FailureType = FailureTypes.InvalidRequest, OutcomeUnknown = true } : launch)] };

        // A person's trigger looks for it (it is there), and launches nothing.
        provider.Existing = new ProviderAgent("bc-9", ProviderAgentStatus.Running, BranchName: relaunch.BranchName, Repository: "acme/shop");
        var launchesBefore = provider.Launches.Count;
        await engine.TriggerAndFinishAsync(1, state, Trigger("acme/shop"), writer, CancellationToken.None);

        Assert.Equal(2, writer.Saved.Last().LaunchOfAgent("bc-9")?.Generation);
        Assert.Equal(launchesBefore, provider.Launches.Count);
    }

    [Fact]
    public async Task A_persons_trigger_looks_for_the_agent_of_a_relaunch_that_failed_unknown_behind_an_earlier_agent_that_finished_after_all()
    {
        var relaunch = await RelaunchLostBehindAStoppedAgentThatFinishesAsync(engine);
        // Every lookup for the relaunch's agent is incomplete until its attempts run out (the last one's too: one more
        // lookup after it). The wake-ups of the polls come between.
        provider.FindFailure = new ProviderFailure(FailureTypes.ReconcileIncomplete, Retryable: true, OutcomeUnknown: true);
        var state = writer.Saved.Last();
        for (var i = 0; i < 20 && state.FindLaunch("acme/shop", 42)!.Phase != LaunchPhase.Failed; i++)
        {
            time.Advance(state.NextWakeAt()!.Value - time.GetUtcNow());
            state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
        }

        Assert.Equal((LaunchPhase.Failed, FailureTypes.RetriesExhausted), (state.FindLaunch("acme/shop", 42)!.Phase, state.FindLaunch("acme/shop", 42)!.FailureType));

        // As the runbook says: look the branch up, and retry by hand; the retry looks once more (and only looks).
        provider.FindFailure = null;
        provider.Existing = new ProviderAgent("bc-9", ProviderAgentStatus.Running, BranchName: relaunch.BranchName, Repository: "acme/shop");
        var launchesBefore = provider.Launches.Count;
        var retried = await engine.TriggerAndFinishAsync(1, state, Trigger("acme/shop"), writer, CancellationToken.None);

        state = writer.Saved.Last();
        Assert.Equal(2, state.LaunchOfAgent("bc-9")?.Generation);
        Assert.Equal(launchesBefore, provider.Launches.Count);
        Assert.Equal("bc-1", Assert.Single(retried.Result.Successes).CodingAgentState.Id);

        // Found nothing, the look ends there (superseded), and the answer still reports the agent that finished.
        provider.Existing = null;
        state = state with { Launches = [.. state.Launches.Select(launch => launch.Generation == 2 ? launch with { Phase = LaunchPhase.Failed, AgentId = null, FailureType = FailureTypes.RetriesExhausted, OutcomeUnknown = true } : launch)], CodingAgents = state.CodingAgents.Where(agent => agent.Key != "bc-9").ToDictionary() };
        var again = await engine.TriggerAndFinishAsync(1, state, Trigger("acme/shop"), writer, CancellationToken.None);
        Assert.Equal((LaunchPhase.Failed, FailureTypes.Superseded, false), (writer.Saved.Last().FindLaunch("acme/shop", 42)!.Phase, writer.Saved.Last().FindLaunch("acme/shop", 42)!.FailureType, writer.Saved.Last().FindLaunch("acme/shop", 42)!.OutcomeUnknown));
        Assert.Equal("bc-1", Assert.Single(again.Result.Successes).CodingAgentState.Id);
        Assert.Equal(launchesBefore, provider.Launches.Count);
    }

    [Fact]
    public async Task An_agent_on_another_launchs_branch_is_not_taken_as_this_launchs_agent_even_before_that_launch_has_found_it()
    {
        // Two integrations (two keys to one provider account): the repository is handed to each, one generation apiece.
        var second = new Integration(43, provider);
        var both = new HandoffEngine(
            new TwoIntegrationCatalog(new Integration(42, provider), second), new HandoffEngineOptions(), new RetryPolicy(new RetryOptions(), () => 0.5), time, NullLogger<HandoffEngine>.Instance);
        // Generation 1's answer is lost after the provider made its agent, which the run does not know yet.
        provider.Next = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true);
        await both.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var first = Assert.Single(writer.Saved.Last().Launches);
        Assert.Equal(LaunchPhase.OutcomeUnknown, first.Phase);
        var lost = new ProviderAgent("bc-lost", ProviderAgentStatus.Running, BranchName: first.BranchName, Repository: "acme/shop");
        provider.Existing = lost;

        // Generation 2 (the other integration) is answered with generation 1's agent: same repository, generation 1's branch.
        provider.AnswerWith = lost;
        await both.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/shop") with { IntegrationId = 43 }, writer, CancellationToken.None);

        var state = writer.Saved.Last();
        Assert.Null(state.LaunchOfAgent("bc-lost"));
        var latest = state.FindLaunch("acme/shop", 43)!;
        // Its own agent may exist: looked for before anything is launched again.
        Assert.Equal((LaunchPhase.OutcomeUnknown, FailureTypes.InvalidResponse), (latest.Phase, latest.FailureType));

        // Generation 1's lookup then finds its agent, which no other launch holds.
        provider.AnswerWith = null;
        time.Advance(state.NextWakeAt()!.Value - time.GetUtcNow());
        state = await both.WakeAndFinishAsync(state, writer, CancellationToken.None);
        Assert.Equal(1, state.LaunchOfAgent("bc-lost")!.Generation);
    }

    [Fact]
    public async Task A_relaunch_ended_before_any_call_still_has_the_agent_looked_for_at_the_next_relaunch()
    {
        var catalog = new SwitchableCatalog(new Integration(42, provider));
        var switchable = new HandoffEngine(catalog, new HandoffEngineOptions(), new RetryPolicy(new RetryOptions(), () => 0.5), time, NullLogger<HandoffEngine>.Instance);
        // The answer is lost after the provider made the agent; the integration is then taken out of the settings, and
        // the wake-up that would have looked for the agent fails the launch (an agent may exist).
        provider.Next = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true);
        await switchable.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var branch = writer.Saved.Last().Launches.Single().BranchName;
        catalog.Present = false;
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        await switchable.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal((LaunchPhase.Failed, true), (writer.Saved.Last().Launches.Single().Phase, writer.Saved.Last().Launches.Single().OutcomeUnknown));

        // Put back, and a person relaunches it: to look first; but the integration goes again before the call is made.
        catalog.Present = true;
        var relaunch = await switchable.TriggerAsync(1, writer.Saved.Last(), Trigger("acme/shop"), writer, CancellationToken.None);
        Assert.True(Assert.Single(relaunch.Round!.Launches).ReconcileFirst);
        catalog.Present = false;
        await switchable.FinishAsync(relaunch.Round, writer, CancellationToken.None);
        Assert.Equal((LaunchPhase.Failed, 0, true), (writer.Saved.Last().Launches.Single().Phase, writer.Saved.Last().Launches.Single().Attempts, writer.Saved.Last().Launches.Single().OutcomeUnknown));

        // Put back for good, and relaunched again: still looked for first (it is there), never launched a second time on its branch.
        catalog.Present = true;
        provider.Existing = new ProviderAgent("bc-lost", ProviderAgentStatus.Running, BranchName: branch, Repository: "acme/shop");
        var launchesBefore = provider.Launches.Count;
        await switchable.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/shop"), writer, CancellationToken.None);

        Assert.Equal(launchesBefore, provider.Launches.Count);
        Assert.Equal("bc-lost", writer.Saved.Last().Launches.Single().AgentId);
    }

    [Fact]
    public async Task A_relaunch_ended_before_any_call_behind_an_earlier_agent_that_finished_after_all_is_still_looked_for()
    {
        var catalog = new SwitchableCatalog(new Integration(42, provider));
        var switchable = new HandoffEngine(catalog, new HandoffEngineOptions(), new RetryPolicy(new RetryOptions(), () => 0.5), time, NullLogger<HandoffEngine>.Instance);
        var relaunch = await RelaunchLostBehindAStoppedAgentThatFinishesAsync(switchable);

        // The integration is taken out of the settings: the wake-up that would have looked fails the relaunch (an agent may exist).
        catalog.Present = false;
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        await switchable.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal((LaunchPhase.Failed, true), (writer.Saved.Last().FindLaunch("acme/shop", 42)!.Phase, writer.Saved.Last().FindLaunch("acme/shop", 42)!.OutcomeUnknown));

        // Put back, and a person's trigger looks for it; but the integration goes again before the call is made.
        catalog.Present = true;
        var look = await switchable.TriggerAsync(1, writer.Saved.Last(), Trigger("acme/shop"), writer, CancellationToken.None);
        Assert.True(Assert.Single(look.Round!.Launches).ReconcileFirst);
        catalog.Present = false;
        await switchable.FinishAsync(look.Round, writer, CancellationToken.None);
        Assert.Equal((LaunchPhase.Failed, 0, true), (writer.Saved.Last().FindLaunch("acme/shop", 42)!.Phase, writer.Saved.Last().FindLaunch("acme/shop", 42)!.Attempts, writer.Saved.Last().FindLaunch("acme/shop", 42)!.OutcomeUnknown));

        // Put back for good: the next trigger still looks for the relaunch's agent, which is there.
        catalog.Present = true;
        provider.Existing = new ProviderAgent("bc-9", ProviderAgentStatus.Running, BranchName: relaunch.BranchName, Repository: "acme/shop");
        var launchesBefore = provider.Launches.Count;
        await switchable.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/shop"), writer, CancellationToken.None);

        Assert.Equal(2, writer.Saved.Last().LaunchOfAgent("bc-9")?.Generation);
        Assert.Equal(launchesBefore, provider.Launches.Count);
    }

    /// <summary>A catalog of one integration that can be taken out of the settings and put back.</summary>
    private sealed class SwitchableCatalog(Integration integration) : IIntegrationCatalog
    {
        public bool Present { get; set; } = true;

        public Integration? Find(long integrationId) => Present && integrationId == integration.Id ? integration : null;
    }

    /// <summary>A catalog of two integrations.</summary>
    private sealed class TwoIntegrationCatalog(Integration first, Integration second) : IIntegrationCatalog
    {
        public Integration? Find(long integrationId) => integrationId == first.Id ? first : integrationId == second.Id ? second : null;
    }

    [Fact]
    public async Task A_late_answer_changes_nothing_when_the_launch_has_moved_on_and_a_second_agent_is_logged_not_followed()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        var started = await logged.TriggerAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var holding = new HoldingRecorder();
        await logged.FinishRoundAsync(started.Round!, holding, CancellationToken.None);
        var late = holding.Launches;
        time.Advance(TimeSpan.FromMinutes(3));
        await logged.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        var relaunched = writer.Saved.Last();
        Assert.Equal("bc-2", relaunched.Launches[0].AgentId);

        await logged.CompleteRoundAsync(relaunched, late!, writer);

        Assert.Equal(relaunched.Launches, writer.Saved.Last().Launches);
        Assert.Equal(["bc-2"], writer.Saved.Last().CodingAgents.Keys);
        var warning = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "AgentNotFollowed");
        Assert.Equal("bc-1", warning.GetStructuredStateValue("AgentId"));
    }

    [Fact]
    public async Task A_late_failure_leaves_the_attempt_that_took_over_in_flight()
    {
        provider.Next = new ProviderFailure(FailureTypes.RateLimited, Retryable: true);
        var started = await engine.TriggerAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var late = await HoldAnswersAsync(started.Round!);
        time.Advance(TimeSpan.FromMinutes(3));
        await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None);
        var takeover = writer.Saved.Last().Launches[0];

        await engine.CompleteRoundAsync(writer.Saved.Last(), late, writer);

        Assert.Equal(takeover, writer.Saved.Last().Launches[0]);
        Assert.Equal(LaunchPhase.InFlight, takeover.Phase);
        Assert.Equal(2, takeover.Attempts);
    }

    [Fact]
    public async Task Caller_giving_up_mid_round_still_records_the_agent_the_provider_already_created()
    {
        // acme/fast is created at once; acme/slow is still out when the caller goes away (client gone, shutdown).
        // The caller gives up once both have happened, whatever their order: a fixed 100 ms after acme/slow was sent
        // cancelled acme/fast too when its answer came later (its launch delayed, or a loaded machine).
        provider.Delay = request => request.Repository.Name == "slow" ? 30_000 : 0;
        using var caller = new CancellationTokenSource();
        var slowSent = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var fastAnswered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _ = Task.WhenAll(slowSent.Task, fastAnswered.Task).ContinueWith(_ => caller.Cancel(), TaskScheduler.Default);
        provider.OnLaunch = request =>
        {
            if (request.Repository.Name == "slow")
            {
                slowSent.TrySetResult();
            }
        };
        provider.OnAnswer = request =>
        {
            if (request.Repository.Name == "fast")
            {
                fastAnswered.TrySetResult();
            }
        };

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => engine.TriggerAndFinishAsync(1, null, Trigger("acme/fast", "acme/slow"), writer, caller.Token));

        var saved = writer.Saved.Last().Launches;
        var fast = saved.Single(launch => launch.Repository == "acme/fast");
        Assert.Equal(LaunchPhase.Launched, fast.Phase);
        Assert.NotNull(fast.AgentId);
        // The unanswered one may exist at the provider: it is looked for before it is launched again.
        var slow = saved.Single(launch => launch.Repository == "acme/slow");
        Assert.Equal(LaunchPhase.OutcomeUnknown, slow.Phase);
    }

    [Fact]
    public async Task Provider_client_fault_on_one_repository_keeps_the_others_answers_and_leaves_it_unknown()
    {
        provider.OnLaunch = request =>
        {
            if (request.Repository.Name == "broken")
            {
                throw new InvalidOperationException("a bug in a provider client");
            }
        };

        var outcome = await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop", "acme/broken"), writer, CancellationToken.None);

        Assert.Equal(["acme/shop"], outcome.Result.Successes.Select(success => success.RepoName));
        var saved = writer.Saved.Last().Launches;
        Assert.Equal(LaunchPhase.Launched, saved.Single(launch => launch.Repository == "acme/shop").Phase);
        Assert.Equal(LaunchPhase.OutcomeUnknown, saved.Single(launch => launch.Repository == "acme/broken").Phase);
    }

    [Fact]
    public async Task Provider_client_fault_reading_one_agent_does_not_stop_the_poll_of_the_others()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        var state = writer.Saved.Last();
        var broken = state.Launches.Single(launch => launch.Repository == "acme/web").AgentId!;
        provider.OnRead = agentId =>
        {
            if (agentId == broken)
            {
                throw new InvalidOperationException("a bug in a provider client");
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
    public async Task Results_keep_the_repositories_order_when_answers_come_out_of_order()
    {
        provider.Delay = request => request.Repository.Name switch { "first" => 150, "second" => 50, _ => 0 };

        var outcome = await engine.TriggerAndFinishAsync(1, null, Trigger("acme/first", "acme/second", "acme/third"), writer, CancellationToken.None);

        Assert.Equal(["acme/first", "acme/second", "acme/third"], outcome.Result.Successes.Select(s => s.RepoName));
    }

    [Fact]
    public async Task Launches_of_one_run_go_out_in_parallel()
    {
        // Every launch waits for the other two to start: one at a time, the first would give up and MaxConcurrent be 1.
        provider.HoldUntilInFlight = 3;

        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/a", "acme/b", "acme/c"), writer, CancellationToken.None);

        Assert.Equal(3, provider.MaxConcurrent);
    }

    [Theory]
    [InlineData("")]
    [InlineData("  ")]
    public async Task Blank_base_branch_means_the_default_branch(string branch)
    {
        var trigger = Trigger("acme/shop");
        var preference = trigger.Snapshot!.Preferences!.Repositories![0]! with { BranchName = branch };
        trigger = trigger with { Snapshot = trigger.Snapshot with { Preferences = new HandoffPreferences([preference]) } };

        var outcome = await engine.TriggerAndFinishAsync(1, null, trigger, writer, CancellationToken.None);

        Assert.Single(outcome.Result.Successes);
        Assert.Null(Assert.Single(provider.Launches).BaseRef);
    }

    [Fact]
    public async Task Repositories_past_the_cap_are_reported_as_failures_and_logged_not_dropped()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var capped = new HandoffEngine(
            new SingleIntegrationCatalog(new Integration(42, provider)), new HandoffEngineOptions { MaxRepositories = 2 }, new RetryPolicy(new RetryOptions(), () => 0.5), time, logger);

        var outcome = await capped.TriggerAndFinishAsync(1, null, Trigger("acme/a", "acme/A", "acme/b", "acme/c", "acme/d"), writer, CancellationToken.None);

        Assert.Equal(["acme/a", "acme/b"], outcome.Result.Successes.Select(s => s.RepoName));
        Assert.Equal(["acme/c", "acme/d"], outcome.Result.Failures.Select(f => f.RepoName));
        Assert.All(outcome.Result.Failures, f => Assert.Equal(FailureTypes.TooManyRepositories, f.FailureType));
        Assert.Equal(2, provider.Launches.Count);
        var notLaunched = logger.Collector.GetSnapshot().Where(record => record.Id.Name == "HandoffRepositoryNotLaunched").ToList();
        Assert.Equal(["acme/c", "acme/d"], notLaunched.Select(record => record.GetStructuredStateValue("Repository")));
        Assert.All(notLaunched, record => Assert.Equal(FailureTypes.TooManyRepositories, record.GetStructuredStateValue("FailureType")));
    }

    [Fact]
    public async Task A_repository_whose_agents_keep_failing_is_launched_at_most_the_generation_cap_so_the_runs_state_stays_bounded()
    {
        // Trigger, stop (the agent fails), trigger again: each round was a new generation, a launch and an agent more in the
        // run's state, with no end (40 rounds of 50 repositories made a 59 MB state; daprd refuses a save above 8 MiB).
        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        for (var round = 1; round <= HandoffEngineOptions.DefaultMaxGenerations + 3; round++)
        {
            var outcome = await engine.TriggerAndFinishAsync(1, writer.Saved.LastOrDefault(), Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
            if (round <= HandoffEngineOptions.DefaultMaxGenerations)
            {
                Assert.Equal(2, outcome.Result.Successes.Count);
            }
            else
            {
                Assert.Empty(outcome.Result.Successes);
                Assert.Equal(["acme/shop", "acme/web"], outcome.Result.Failures.Select(failure => failure.RepoName));
                Assert.All(outcome.Result.Failures, failure => Assert.Equal(FailureTypes.TooManyGenerations, failure.FailureType));
            }

            foreach (var agent in writer.Saved.Last().CodingAgents.Values.Where(agent => !agent.Status.IsFinal()))
            {
                Assert.Equal(AgentCommandStatus.Done, (await engine.StopAgentAsync(writer.Saved.Last(), agent.Id, recorder, CancellationToken.None)).Status);
            }
        }

        var state = writer.Saved.Last();
        Assert.Equal(2 * HandoffEngineOptions.DefaultMaxGenerations, state.Launches.Count);
        Assert.Equal(2 * HandoffEngineOptions.DefaultMaxGenerations, state.CodingAgents.Count);
        Assert.Equal(2 * HandoffEngineOptions.DefaultMaxGenerations, provider.Launches.Count);
    }

    [Fact]
    public async Task A_run_relaunched_up_to_the_generation_cap_with_the_longest_instructions_stays_within_one_save_of_daprd()
    {
        // A launch's instruction is read only to build its prompt, while it is still to be sent; once launched or failed,
        // a relaunch takes the new trigger's. Kept in every ended generation (4096 characters, escaped as \u00e9 six bytes
        // each), 50 repositories at the cap made a 12.7 MB state (500 × 4096 × 6 bytes of instructions): past daprd's
        // 8 MiB, so the run could no longer be saved.
        var repositories = Enumerable.Range(1, 50).Select(i => $"acme/repo{i}").ToArray();
        var instruction = new string('é', 4096);
        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        for (var round = 0; round < HandoffEngineOptions.DefaultMaxGenerations; round++)
        {
            await engine.TriggerAndFinishAsync(1, writer.Saved.LastOrDefault(), Trigger(repositories) with { Instruction = instruction }, writer, CancellationToken.None);
            foreach (var agent in writer.Saved.Last().CodingAgents.Values.Where(agent => !agent.Status.IsFinal()).ToList())
            {
                await engine.StopAgentAsync(writer.Saved.Last(), agent.Id, recorder, CancellationToken.None);
            }
        }

        var state = writer.Saved.Last();
        Assert.Equal(500, state.Launches.Count);
        Assert.All(provider.Launches, request => Assert.Contains(instruction, request.Prompt));
        var size = JsonSerializer.SerializeToUtf8Bytes(state, HandoffJsonContext.Default.RunHandoffState).Length;
        Assert.True(size < 2 << 20, $"a state of {size} bytes");
        Assert.All(state.Launches, launch => Assert.Null(launch.Instruction));
    }

    [Fact]
    public async Task A_launch_still_to_be_sent_keeps_its_instruction_for_its_retry()
    {
        provider.Next = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, RequestSent: false);
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop") with { Instruction = "Use the pool's timeout." }, writer, CancellationToken.None);
        Assert.Equal((LaunchPhase.RetryScheduled, "Use the pool's timeout."), (writer.Saved.Last().Launches[0].Phase, writer.Saved.Last().Launches[0].Instruction));

        time.Advance(TimeSpan.FromHours(1));
        await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.Equal(2, provider.Launches.Count);
        Assert.Contains("Use the pool's timeout.", provider.Launches.Last().Prompt);
        Assert.Equal(LaunchPhase.Launched, writer.Saved.Last().Launches[0].Phase);
    }

    [Fact]
    public async Task A_state_stored_with_instructions_on_ended_launches_loses_them_at_the_next_change_of_a_launch()
    {
        // An earlier release kept every launch's instruction: its runs are read with them. Dropped only from the launch a
        // change touched, the others kept theirs for good, so a run stored near daprd's 8 MiB per save stayed there (or,
        // past it, refused every save) whatever was launched next.
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        var stored = writer.Saved.Last();
        stored = stored with { Launches = stored.Launches.Select(launch => launch with { Instruction = "Use the pool's timeout." }).ToList() };

        await engine.TriggerAndFinishAsync(1, stored, Trigger("acme/shop", "acme/web", "acme/api"), writer, CancellationToken.None);

        var state = writer.Saved.Last();
        Assert.Equal(3, state.Launches.Count);
        Assert.All(state.Launches, launch => Assert.Null(launch.Instruction));
    }

    [Theory]
    [InlineData("cursor_background_agent", CompletionStatus.HandedOff, 1)]
    [InlineData("CURSOR_BACKGROUND_AGENT", CompletionStatus.HandedOff, 1)]
    [InlineData(null, CompletionStatus.HandedOff, 1)]
    [InlineData("github_copilot_agent", CompletionStatus.Stored, 0)]
    public async Task Completed_run_is_handed_off_only_to_an_integration_of_the_target_it_names(string? target, CompletionStatus expected, int launches)
    {
        var snapshot = Trigger("acme/shop").Snapshot! with { Metadata = new RunMetadata("open_pr") };
        snapshot = snapshot with { Preferences = snapshot.Preferences! with { AutomationHandoff = new AutomationHandoff("root_cause", target, 42) } };

        var outcome = await engine.AcceptAndFinishAsync(null, snapshot, writer, LaunchTiming.Now, CancellationToken.None);

        Assert.Equal(expected, outcome.Status);
        Assert.Equal(launches, provider.Launches.Count);
        Assert.Equal(snapshot, writer.Saved.Last().Snapshot); // kept, so a person can still hand it off by hand
    }

    [Theory]
    [InlineData(null, false)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    public async Task Completed_run_auto_creates_a_pull_request_only_when_its_preference_says_so_not_by_the_integrations_default(bool? preference, bool expected)
    {
        // The integration's default (true here) is the manual trigger's; an event goes by the run's own preference.
        var snapshot = Trigger("acme/shop").Snapshot! with { Metadata = new RunMetadata("open_pr") };
        snapshot = snapshot with { Preferences = snapshot.Preferences! with { AutomationHandoff = new AutomationHandoff("root_cause", null, 42, preference) } };

        var outcome = await engine.AcceptAndFinishAsync(null, snapshot, writer, LaunchTiming.Now, CancellationToken.None);

        Assert.Equal(CompletionStatus.HandedOff, outcome.Status);
        var request = Assert.Single(provider.Launches);
        Assert.Equal(expected, request.AutoCreatePr);
        Assert.Equal(expected, request.Prompt.Contains("Fixes SHOP-1", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Redelivered_completion_event_does_not_launch_a_failed_repository_again()
    {
        // Pub/sub delivers at least once: a redelivery, even minutes later, is the same event, not a request to try again.
        var snapshot = Trigger("acme/shop", "acme/api").Snapshot! with { Metadata = new RunMetadata("open_pr") };
        snapshot = snapshot with { Preferences = snapshot.Preferences! with { AutomationHandoff = new AutomationHandoff("root_cause", null, 42) } };
        provider.Next = new ProviderFailure(FailureTypes.RepositoryAccess, Retryable: false);
        await engine.AcceptAndFinishAsync(null, snapshot, writer, LaunchTiming.Now, CancellationToken.None);
        var launched = writer.Saved.Last();
        var agentId = launched.Launches.Single(launch => launch.AgentId is not null).AgentId!;
        await engine.ApplyAgentReportAsync(launched, new AgentReport(42, new ProviderAgent(agentId, ProviderAgentStatus.Error)), writer);
        Assert.Equal(2, provider.Launches.Count);

        var redelivered = await engine.AcceptAndFinishAsync(writer.Saved.Last(), snapshot, writer, LaunchTiming.Now, CancellationToken.None);

        Assert.Equal(2, provider.Launches.Count);
        Assert.Equal(CompletionStatus.HandedOff, redelivered.Status);
        Assert.Equal(FailureTypes.RepositoryAccess, Assert.Single(redelivered.Result.Failures).FailureType);
        Assert.Equal(CodingAgentStatus.Failed, Assert.Single(redelivered.Result.Successes).CodingAgentState.Status);

        // A person asking again is another matter: both failed repositories go out on new branches.
        var manual = await engine.TriggerAndFinishAsync(1, writer.Saved.Last(), new HandoffTrigger(456, 42), writer, CancellationToken.None);

        Assert.Equal(4, provider.Launches.Count);
        Assert.Equal(2, manual.Result.Successes.Count);
    }

    [Fact]
    public async Task Root_cause_event_arriving_after_the_solution_event_hands_off_without_stepping_the_snapshot_back()
    {
        var rootCause = Trigger("acme/shop").Snapshot! with { Metadata = new RunMetadata("open_pr") };
        rootCause = rootCause with { Preferences = rootCause.Preferences! with { AutomationHandoff = new AutomationHandoff("root_cause", null, 42) } };
        var solution = rootCause with { Artifacts = rootCause.Artifacts! with { Solution = new SolutionArtifact("Bound the pool") } };
        var early = await engine.AcceptAndFinishAsync(null, solution, writer, LaunchTiming.Now, CancellationToken.None);
        Assert.Equal(CompletionStatus.Stored, early.Status);

        var late = await engine.AcceptAndFinishAsync(writer.Saved.Last(), rootCause, writer, LaunchTiming.Now, CancellationToken.None);

        // The root cause completing is still what hands off; what the run knows by now is not forgotten.
        Assert.Equal(CompletionStatus.HandedOff, late.Status);
        Assert.Contains("Bound the pool", Assert.Single(provider.Launches).Prompt);
        Assert.Equal(solution, writer.Saved.Last().Snapshot);
    }

    [Fact]
    public async Task Second_completion_event_of_the_same_step_hands_off_with_its_own_newer_snapshot()
    {
        // The root cause's event, first with the run not meant to go further, then again once it is: the same step, but
        // the later event is what the run says now (a sharper description), and is what the agent is given and kept.
        var rootCause = Trigger("acme/shop").Snapshot! with { Metadata = new RunMetadata("root_cause") };
        rootCause = rootCause with { Preferences = rootCause.Preferences! with { AutomationHandoff = new AutomationHandoff("root_cause", null, 42) } };
        var first = await engine.AcceptAndFinishAsync(null, rootCause, writer, LaunchTiming.Now, CancellationToken.None);
        Assert.Equal(CompletionStatus.Stored, first.Status);
        var sharper = rootCause with
        {
            Metadata = new RunMetadata("open_pr"),
            Artifacts = new RunArtifacts(new RootCauseArtifact("The pool is never returned on timeout")),
        };

        var second = await engine.AcceptAndFinishAsync(writer.Saved.Last(), sharper, writer, LaunchTiming.Now, CancellationToken.None);

        Assert.Equal(CompletionStatus.HandedOff, second.Status);
        Assert.Contains("The pool is never returned on timeout", Assert.Single(provider.Launches).Prompt);
        Assert.Equal(sharper, writer.Saved.Last().Snapshot);
    }

    [Fact]
    public async Task Duplicate_repositories_in_one_run_launch_once()
    {
        var outcome = await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop", "ACME/shop"), writer, CancellationToken.None);

        Assert.Single(provider.Launches);
        Assert.Single(outcome.Result.Successes);
    }

    [Fact]
    public async Task Unknown_outcome_is_reconciled_and_adopted_without_a_second_launch()
    {
        provider.Next = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true);
        var first = await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var retry = Assert.Single(first.Result.Retries);
        provider.Existing = new ProviderAgent("bc-found", ProviderAgentStatus.Running, BranchName: writer.Saved.Last().Launches[0].BranchName);

        time.Advance(retry.RetryAt - time.GetUtcNow());
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.Single(provider.Launches);
        Assert.Equal("bc-found", state.Launches[0].AgentId);
        Assert.Equal(CodingAgentStatus.Running, state.CodingAgents["bc-found"].Status);
        Assert.Contains(state.Timeline, entry => entry.Event == TimelineEvents.Reconciled);
    }

    [Fact]
    public async Task Adopted_agent_that_already_finished_keeps_its_pull_request()
    {
        provider.Next = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true);
        var first = await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var branch = writer.Saved.Last().Launches[0].BranchName;
        provider.Existing = new ProviderAgent("bc-done", ProviderAgentStatus.Finished, BranchName: branch, PrUrl: "https://github.com/acme/shop/pull/7", Summary: "Bounded the pool");

        time.Advance(Assert.Single(first.Result.Retries).RetryAt - time.GetUtcNow());
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        var agent = state.CodingAgents["bc-done"];
        Assert.Equal(CodingAgentStatus.Completed, agent.Status);
        var result = Assert.Single(agent.Results);
        Assert.Equal("https://github.com/acme/shop/pull/7", result.PrUrl);
        Assert.Equal("acme/shop", result.RepoFullName);
        Assert.Equal(branch, result.BranchName);
        Assert.Equal("Bounded the pool", result.Description);
    }

    [Fact]
    public async Task Retry_reuses_the_branch_and_exhausted_attempts_end_as_retries_exhausted()
    {
        await LaunchUntilRetriesRunOut(new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, StatusCode: 503));

        Assert.Equal(5, provider.Launches.Count);
        Assert.Single(provider.Launches.Select(l => l.BranchName).Distinct());
        var launch = writer.Saved.Last().Launches[0];
        Assert.Equal(LaunchPhase.Failed, launch.Phase);
        Assert.Equal(FailureTypes.RetriesExhausted, launch.FailureType);
        Assert.Null(writer.Saved.Last().NextWakeAt());
    }

    /// <summary>
    /// The fifth attempt's answer is lost (a gateway time-out) after the provider made the agent. It was failed
    /// retries_exhausted on the spot, never looked for, while a crash at that moment leaves it to one lookup: the agent
    /// ran unseen unless a webhook or a person's retry came.
    /// </summary>
    [Fact]
    public async Task A_last_attempt_whose_answer_was_lost_is_looked_for_once_and_its_agent_adopted()
    {
        provider.Always = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, StatusCode: 504);
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        for (var i = 0; i < 4; i++)
        {
            time.Advance(TimeSpan.FromHours(1));
            await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        }

        var last = writer.Saved.Last().Launches[0];
        Assert.Equal((LaunchPhase.OutcomeUnknown, 5), (last.Phase, last.Attempts));
        provider.Always = null;
        provider.Existing = new ProviderAgent("bc-lost", ProviderAgentStatus.Running, BranchName: last.BranchName);

        time.Advance(TimeSpan.FromHours(1));
        var looked = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.Equal(5, provider.Launches.Count);
        Assert.Equal((LaunchPhase.Launched, "bc-lost"), (looked.Launches[0].Phase, looked.Launches[0].AgentId));
    }

    [Fact]
    public async Task A_last_attempt_whose_answer_was_lost_ends_when_its_lookup_finds_no_agent_and_is_not_sent_again()
    {
        await LaunchUntilRetriesRunOut(new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, StatusCode: 504));

        var exhausted = writer.Saved.Last().Launches[0];
        Assert.Equal((LaunchPhase.Failed, FailureTypes.RetriesExhausted, false), (exhausted.Phase, exhausted.FailureType, exhausted.OutcomeUnknown));
        Assert.Equal(5, provider.Launches.Count);
    }

    [Fact]
    public async Task Manual_retry_after_an_unknown_last_attempt_adopts_the_agent_that_attempt_created()
    {
        // The lookup after the fifth attempt cannot tell either (the provider lists too many agents).
        await LaunchUntilRetriesRunOut(
            new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, StatusCode: 504),
            lastLookup: new ProviderFailure(FailureTypes.ReconcileIncomplete, Retryable: true, OutcomeUnknown: true));

        var exhausted = writer.Saved.Last().Launches[0];
        Assert.Equal((FailureTypes.RetriesExhausted, true), (exhausted.FailureType, exhausted.OutcomeUnknown));
        // The gateway lost the answer, but the fifth attempt did create an agent.
        provider.Always = null;
        provider.FindFailure = null;
        provider.Existing = new ProviderAgent("bc-lost", ProviderAgentStatus.Running, BranchName: exhausted.BranchName);

        var retried = await engine.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/shop"), writer, CancellationToken.None);

        Assert.Equal(5, provider.Launches.Count);
        Assert.Equal("bc-lost", Assert.Single(retried.Result.Successes).CodingAgentState!.Id);
        Assert.Equal("bc-lost", Assert.Single(writer.Saved.Last().Launches).AgentId);
    }

    [Fact]
    public async Task Manual_retry_of_a_launch_that_never_made_an_agent_launches_on_the_same_branch()
    {
        provider.Next = new ProviderFailure(FailureTypes.InvalidCredentials, Retryable: false, StatusCode: 401);
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var failed = writer.Saved.Last().Launches[0];

        var retried = await engine.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/shop"), writer, CancellationToken.None);

        Assert.Single(retried.Result.Successes);
        Assert.Equal([failed.BranchName, failed.BranchName], provider.Launches.Select(launch => launch.BranchName));
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

    /// <summary>
    /// A launch round is counted in handoff.in_flight while its provider calls are out and no longer once they are
    /// answered, and each provider call of it gives one handoff.launch.duration.
    /// </summary>
    [Fact]
    public async Task A_launch_round_is_in_flight_while_its_provider_call_is_out_and_records_one_launch_duration()
    {
        using var counted = new CountedMeasurements();
        var sent = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var answer = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        provider.OnLaunch = _ => sent.TrySetResult();
        provider.Hold = answer.Task;

        var finishing = engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await sent.Task;

        Assert.Equal(1, counted["handoff.in_flight"]);
        Assert.Empty(counted.Recorded("handoff.launch.duration"));

        answer.SetResult();
        var outcome = await finishing;

        Assert.Single(outcome.Result.Successes);
        Assert.Equal(0, counted["handoff.in_flight"]);
        Assert.InRange(Assert.Single(counted.Recorded("handoff.launch.duration")), 0, double.MaxValue);
    }

    [Fact]
    public async Task An_agent_timed_out_by_the_poll_is_counted_as_entering_failed()
    {
        using var counted = new CountedMeasurements();
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromHours(7));

        var timedOut = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.Equal(CodingAgentStatus.Failed, timedOut.CodingAgents["bc-1"].Status);
        Assert.Equal(1, counted["handoff.agents.status_changes", "handoff.status", "failed"]);
    }

    [Fact]
    public async Task An_agent_at_work_stopped_by_a_person_is_counted_as_entering_failed()
    {
        using var counted = new CountedMeasurements();
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);

        var stop = await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);

        Assert.Equal(AgentCommandStatus.Done, stop.Status);
        Assert.Equal(CodingAgentStatus.Failed, writer.Saved.Last().CodingAgents["bc-1"].Status);
        Assert.Equal(1, counted["handoff.agents.status_changes", "handoff.status", "failed"]);
    }

    [Fact]
    public async Task A_due_retry_whose_integration_was_removed_is_counted_failed_and_in_the_timeline_as_any_launch_that_fails()
    {
        provider.Next = new ProviderFailure(FailureTypes.RateLimited, Retryable: true, StatusCode: 429);
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        Assert.Equal(LaunchPhase.RetryScheduled, writer.Saved.Last().Launches[0].Phase);
        // Restarted with integration 42 taken out of the settings.
        var restarted = new HandoffEngine(
            new SingleIntegrationCatalog(new Integration(43, provider)), new HandoffEngineOptions(), new RetryPolicy(new RetryOptions(), () => 0.5), time, NullLogger<HandoffEngine>.Instance);
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        using var counted = new CountedMeasurements();

        var state = await restarted.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.Equal(LaunchPhase.Failed, state.Launches[0].Phase);
        Assert.Equal(1, counted["handoff.launches", "handoff.outcome", "failed"]);
        Assert.Equal(TimelineEvents.LaunchFailed, state.Timeline[^1].Event);
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
    public async Task Attempt_unanswered_when_its_in_flight_time_runs_out_is_saved_as_unknown_before_anyone_reconciles_it()
    {
        // Past the in-flight timeout another owner (a second process on the same file) would take the launch for
        // lost and reconcile it while this call is still out: the attempt must let go first.
        provider.Delay = _ => Timeout.Infinite;
        provider.OnLaunch = _ => time.Advance(TimeSpan.FromMinutes(2));

        var outcome = await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);

        var retry = Assert.Single(outcome.Result.Retries);
        Assert.Equal(FailureTypes.ProviderUnavailable, retry.FailureType);
        var launch = writer.Saved.Last().Launches[0];
        Assert.Equal(LaunchPhase.OutcomeUnknown, launch.Phase);
    }

    [Fact]
    public async Task Launches_whose_turn_comes_after_the_in_flight_time_ran_out_are_rescheduled_without_spending_an_attempt()
    {
        var oneAtATime = new HandoffEngine(
            new SingleIntegrationCatalog(new Integration(42, provider)), new HandoffEngineOptions { MaxParallelLaunches = 1 }, new RetryPolicy(new RetryOptions(), () => 0.5), time, NullLogger<HandoffEngine>.Instance);
        provider.Delay = _ => Timeout.Infinite;
        provider.OnLaunch = _ => time.Advance(TimeSpan.FromMinutes(2));

        await oneAtATime.TriggerAndFinishAsync(1, null, Trigger("acme/a", "acme/b"), writer, CancellationToken.None);

        Assert.Single(provider.Launches);
        var launches = writer.Saved.Last().Launches;
        Assert.Equal((LaunchPhase.OutcomeUnknown, 1), (launches[0].Phase, launches[0].Attempts));
        Assert.Equal((LaunchPhase.RetryScheduled, 0), (launches[1].Phase, launches[1].Attempts));
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

        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

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

        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Null(state.CodingAgents["bc-1"].Results.Single().PrUrl);
    }

    [Fact]
    public async Task Unknown_launch_whose_turn_comes_too_late_still_reconciles_before_launching_again()
    {
        var oneAtATime = new HandoffEngine(
            new SingleIntegrationCatalog(new Integration(42, provider)), new HandoffEngineOptions { MaxParallelLaunches = 1 }, new RetryPolicy(new RetryOptions(), () => 0.5), time, NullLogger<HandoffEngine>.Instance);
        // Round 1: both answers are lost (502): either agent may exist, so both must be reconciled before any new launch.
        provider.Always = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, StatusCode: 502);
        await oneAtATime.TriggerAndFinishAsync(1, null, Trigger("acme/a", "acme/b"), writer, CancellationToken.None);
        var branchB = writer.Saved.Last().Launches[1].BranchName;

        // Round 2: acme/a's call outlives the in-flight time, so acme/b's turn comes too late and nothing is sent for it.
        provider.Always = null;
        provider.Delay = _ => Timeout.Infinite;
        provider.OnLaunch = _ => time.Advance(TimeSpan.FromMinutes(2));
        time.Advance(TimeSpan.FromHours(1));
        await oneAtATime.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        // Round 1's lost answer for acme/b had in fact created an agent.
        provider.Delay = null;
        provider.OnLaunch = null;
        provider.Existing = new ProviderAgent("bc-lost", ProviderAgentStatus.Running, BranchName: branchB);
        time.Advance(TimeSpan.FromHours(1));
        var state = await oneAtATime.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.Single(provider.Launches, l => l.Repository.Name == "b");
        Assert.Equal("bc-lost", state.FindLaunch("acme/b", 42)!.AgentId);
    }

    [Fact]
    public async Task Provider_calls_end_before_the_saved_in_flight_deadline_even_when_saving_the_intent_is_slow()
    {
        var slow = new SlowFirstSaveWriter(time, TimeSpan.FromSeconds(30));
        provider.Delay = _ => Timeout.Infinite;
        // The call hangs; time moves to the deadline saved with the intent (the moment another owner may reconcile it).
        provider.OnLaunch = _ => time.Advance(slow.Saved.Last().Launches[0].NextAttemptAt!.Value - time.GetUtcNow());

        var trigger = engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), slow, CancellationToken.None);
        // A liveness bound, not a timing: with the deadline started too late the call would hang until the next advance.
        var finished = await Task.WhenAny(trigger, Task.Delay(TimeSpan.FromSeconds(30)));
        time.Advance(TimeSpan.FromMinutes(1)); // lets a call still out go, so the test leaves nothing hanging
        await trigger;

        Assert.Same(trigger, finished);
        Assert.Equal(LaunchPhase.OutcomeUnknown, slow.Saved.Last().Launches[0].Phase);
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
        time.Advance(state.NextWakeAt()!.Value - time.GetUtcNow());
        state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
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
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Equal("https://github.com/acme/shop/pull/11", Assert.Single(state.CodingAgents["bc-1"].Results).PrUrl);
        Assert.Null(state.NextWakeAt());
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
    public async Task Repository_on_another_host_than_github_or_with_a_bad_base_branch_fails_with_its_own_reason_and_no_call()
    {
        var trigger = Trigger("acme/shop");
        var gitlab = new RepositoryPreference("gitlab", "acme", "web");
        var badBranch = new RepositoryPreference("github", "acme", "api", BranchName: "../../bad");
        trigger = trigger with { Snapshot = trigger.Snapshot! with { Preferences = new HandoffPreferences([.. trigger.Snapshot!.Preferences!.Repositories!, gitlab, badBranch]) } };

        var outcome = await engine.TriggerAndFinishAsync(1, null, trigger, writer, CancellationToken.None);

        Assert.Equal(["acme/shop"], provider.Launches.Select(launch => launch.Repository.FullName));
        Assert.Equal(
            [("acme/web", FailureMessages.UnsupportedRepositoryHost, FailureTypes.InvalidRepository), ("acme/api", FailureMessages.InvalidBaseBranch, FailureTypes.InvalidRepository)],
            outcome.Result.Failures.Select(failure => (failure.RepoName, failure.ErrorMessage, failure.FailureType)));
    }

    [Fact]
    public async Task Failed_launch_records_whether_its_outcome_is_unknown()
    {
        provider.Next = new ProviderFailure(FailureTypes.InvalidCredentials, Retryable: false, StatusCode: 401);
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        Assert.False(writer.Saved.Last().Launches[0].OutcomeUnknown);

        // The answers are lost, and so is the one lookup after the last attempt (the provider lists too many agents).
        provider.Always = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, StatusCode: 504);
        await engine.TriggerAndFinishAsync(2, null, Trigger("acme/shop") with { Snapshot = Trigger("acme/shop").Snapshot! with { RunId = 2 } }, writer, CancellationToken.None);
        for (var i = 0; i < 6; i++)
        {
            provider.FindFailure = writer.Saved.Last().Launches[0].Attempts >= 5 ? new ProviderFailure(FailureTypes.ReconcileIncomplete, Retryable: true, OutcomeUnknown: true) : null;
            time.Advance(TimeSpan.FromHours(1));
            await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        }

        var exhausted = writer.Saved.Last().Launches[0];
        Assert.Equal(FailureTypes.RetriesExhausted, exhausted.FailureType);
        Assert.True(exhausted.OutcomeUnknown);
    }

    [Fact]
    public async Task Manual_retry_of_a_failed_launch_stored_before_its_outcome_was_recorded_looks_for_an_agent_first()
    {
        provider.Next = new ProviderFailure(FailureTypes.InvalidCredentials, Retryable: false, StatusCode: 401);
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var failed = writer.Saved.Last();

        // The same state as the previous version stored it: no outcome_unknown, so whether an agent may exist is not known.
        var json = System.Text.Json.Nodes.JsonNode.Parse(JsonSerializer.Serialize(failed, HandoffJsonContext.Default.RunHandoffState))!;
        Assert.True(json["launches"]![0]!.AsObject().Remove("outcome_unknown"));
        var legacy = JsonSerializer.Deserialize(json.ToJsonString(), HandoffJsonContext.Default.RunHandoffState)!;
        Assert.Null(legacy.Launches[0].OutcomeUnknown);
        provider.Existing = new ProviderAgent("bc-lost", ProviderAgentStatus.Running, BranchName: failed.Launches[0].BranchName);

        var retried = await engine.TriggerAndFinishAsync(1, legacy, Trigger("acme/shop"), writer, CancellationToken.None);

        Assert.Single(provider.Launches);
        Assert.Equal("bc-lost", Assert.Single(retried.Result.Successes).CodingAgentState!.Id);
    }

    [Fact]
    public async Task Open_circuit_schedules_the_launch_without_spending_an_attempt()
    {
        provider.Next = ProviderFailureClassifier.FromTransport(new ProviderTransportException(TransportFailureKind.CircuitOpen, requestSent: false));

        var outcome = await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);

        Assert.Empty(outcome.Result.Failures);
        Assert.Equal(0, writer.Saved.Last().Launches[0].Attempts);
        Assert.Equal(LaunchPhase.RetryScheduled, writer.Saved.Last().Launches[0].Phase);
    }

    [Fact]
    public async Task A_launch_round_that_sent_nothing_waits_the_first_delay_not_the_back_off_its_failed_attempts_reached()
    {
        var retry = new RetryOptions();
        provider.Next = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true);
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var state = writer.Saved.Last();
        for (var attempt = 2; attempt <= 3; attempt++)
        {
            time.Advance(retry.MaxDelay * 2);
            provider.Next = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true);
            state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
        }

        Assert.Equal(3, state.Launches[0].Attempts);
        time.Advance(retry.MaxDelay * 2);
        // Nothing sent (an open circuit; the same holds for a round stopped by shutdown before its call): no attempt spent,
        // and no reason to wait the eight minutes that follow a third failed attempt.
        provider.Next = ProviderFailureClassifier.FromTransport(new ProviderTransportException(TransportFailureKind.CircuitOpen, requestSent: false));
        state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);

        Assert.Equal(3, state.Launches[0].Attempts);
        Assert.Equal(LaunchPhase.RetryScheduled, state.Launches[0].Phase);
        Assert.InRange(state.Launches[0].NextAttemptAt!.Value - time.GetUtcNow(), TimeSpan.Zero, retry.BaseDelay * (1 + retry.JitterRatio));
    }

    [Fact]
    public async Task Refused_connection_spends_an_attempt_so_an_unreachable_provider_ends_in_retries_exhausted()
    {
        var retry = new RetryOptions();
        provider.Always = ProviderFailureClassifier.FromTransport(new ProviderTransportException(TransportFailureKind.Network, requestSent: false));

        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);

        var state = writer.Saved.Last();
        Assert.Equal(1, state.Launches[0].Attempts);
        // Nothing reached the provider: the next attempt need not look for an agent first.
        Assert.Equal(LaunchPhase.RetryScheduled, state.Launches[0].Phase);
        for (var attempt = 2; attempt <= retry.MaxAttempts; attempt++)
        {
            time.Advance(retry.MaxDelay * 2);
            state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
        }

        Assert.Equal(LaunchPhase.Failed, state.Launches[0].Phase);
        Assert.Equal(FailureTypes.RetriesExhausted, state.Launches[0].FailureType);
        Assert.Equal(retry.MaxAttempts, state.Launches[0].Attempts);
    }

    [Fact]
    public void Agent_reports_move_status_forward_only_and_record_the_pull_request_when_completed()
    {
        var state = RunHandoffState.New(1) with
        {
            CodingAgents = new Dictionary<string, CodingAgentState> { ["bc-1"] = new("bc-1", CodingAgentStatus.Pending, null, "cursor_background_agent", "acme/shop", time.GetUtcNow(), []) },
            Launches = [new RepositoryLaunch("acme/shop", "github", 42, "cursor_background_agent", 1, "b-abc123", null, true, null, LaunchPhase.Launched, 1, time.GetUtcNow(), null, "bc-1", null, time.GetUtcNow())],
        };

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
    [InlineData("/acme/shop/pull/1", null, false)]
    public void Provider_links_are_kept_only_as_escaped_absolute_web_urls_that_cannot_pose_as_another(string link, string? kept, bool pullRequestOfTheRepository)
    {
        var state = RunHandoffState.New(1) with
        {
            CodingAgents = new Dictionary<string, CodingAgentState> { ["bc-1"] = new("bc-1", CodingAgentStatus.Running, null, "cursor_background_agent", "acme/shop", time.GetUtcNow(), []) },
            Launches = [new RepositoryLaunch("acme/shop", "github", 42, "cursor_background_agent", 1, "b-abc123", null, true, null, LaunchPhase.Launched, 1, time.GetUtcNow(), null, "bc-1", null, time.GetUtcNow())],
        };

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
    public void State_round_trips_through_json_with_snake_case_enums()
    {
        var state = RunHandoffState.New(1) with
        {
            Launches = [new RepositoryLaunch("acme/shop", "github", 42, "cursor_background_agent", 1, "b-abc123", null, true, null, LaunchPhase.InFlight, 1, time.GetUtcNow(), null, null, null, time.GetUtcNow())],
            Poll = new PollSchedule(time.GetUtcNow(), 2),
        };

        var json = JsonSerializer.Serialize(state, HandoffJsonContext.Default.RunHandoffState);
        var back = JsonSerializer.Deserialize(json, HandoffJsonContext.Default.RunHandoffState)!;

        Assert.Contains("\"phase\":\"in_flight\"", json);
        Assert.Equal(state.Launches[0], back.Launches[0]);
        Assert.Equal(state.Poll, back.Poll);
    }

    [Fact]
    public void Design_wire_example_deserialises_with_every_field()
    {
        const string wire = """
            {"run_id":123,"organization_id":1,"project_id":2,
             "group":{"id":456,"title":"Database connection timeout in checkout","short_id":"SHOP-1A2"},
             "metadata":{"stopping_point":"open_pr","group_id":456},
             "artifacts":{"root_cause":{"one_line_description":"Pool exhausted under load","five_whys":["Requests time out","Pool is exhausted"],
               "reproduction_steps":["Send 100 concurrent checkouts"],"relevant_repo":"acme/shop"},
               "solution":{"one_line_summary":"Bound the pool and add a TTL","steps":[{"title":"Add TTL parameter","description":"Expire idle connections"}]}},
             "preferences":{"repositories":[{"provider":"github","owner":"acme","name":"shop","branch_name":null}],
               "automation_handoff":{"handoff_point":"root_cause","target":"cursor_background_agent","integration_id":42,"auto_create_pr":false}}}
            """;

        var run = JsonSerializer.Deserialize(wire, HandoffJsonContext.Default.RunSnapshot)!;

        Assert.Equal(123, run.RunId);
        Assert.Equal(456, run.GroupId);
        Assert.Equal("SHOP-1A2", run.Group!.ShortId);
        Assert.Equal("open_pr", run.Metadata!.StoppingPoint);
        Assert.Equal(2, run.Artifacts!.RootCause!.FiveWhys!.Count);
        Assert.Equal("Expire idle connections", run.Artifacts.Solution!.Steps![0]!.Description);
        Assert.Equal("shop", run.Preferences!.Repositories![0]!.Name);
        Assert.Equal(42, run.Preferences.AutomationHandoff!.IntegrationId);
        Assert.False(run.Preferences.AutomationHandoff.AutoCreatePr);
    }

    [Theory]
    [InlineData(503, LaunchPhase.RetryScheduled)]
    // A 502: the relaunch may have reached the provider, so its retry looks for an agent first; it finds none.
    [InlineData(502, LaunchPhase.OutcomeUnknown)]
    public async Task Relaunch_still_waiting_for_its_retry_is_not_made_once_the_agent_it_replaces_reports_finished(int status, LaunchPhase waiting)
    {
        // bc-1 is given up for age; a person launches acme/shop again, but that call fails and waits for its retry.
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromHours(6) + TimeSpan.FromMinutes(5));
        await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        provider.Next = ProviderFailureClassifier.FromResponse(new ProviderResponse(status, "{}"u8.ToArray()), time.GetUtcNow());
        var relaunch = await engine.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/shop"), writer, CancellationToken.None);
        Assert.Single(relaunch.Result.Retries);
        Assert.Equal(waiting, writer.Saved.Last().Launches.Single(launch => launch.Generation == 2).Phase);

        // Before the retry is due, the old agent turns out to have finished and opened its pull request.
        var late = await engine.ApplyAgentReportAsync(
            writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/13")), writer);
        Assert.Equal(AgentReportStatus.Changed, late);
        Assert.Equal(CodingAgentStatus.Completed, writer.Saved.Last().CodingAgents["bc-1"].Status);

        for (var i = 0; i < 3 && writer.Saved.Last().NextWakeAt() is { } next; i++)
        {
            time.Advance(next - time.GetUtcNow());
            await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        }

        // The repository has a completed agent: a second one (and a second pull request) must not be started.
        Assert.Equal(2, provider.Launches.Count);
        Assert.Single(writer.Saved.Last().CodingAgents);
        var dropped = writer.Saved.Last().Launches.Single(launch => launch.Generation == 2);
        Assert.Equal((LaunchPhase.Failed, FailureTypes.Superseded), (dropped.Phase, dropped.FailureType));
    }

    [Fact]
    public async Task Agent_stopped_as_it_finished_is_still_read_so_a_lost_finished_webhook_does_not_lose_its_pull_request()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        // The stop raced the finish: the provider accepted it, but the agent had already opened its pull request.
        var stop = await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        Assert.Equal(AgentCommandStatus.Done, stop.Status);
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/14";

        // No webhook comes (none configured, or it was lost): only the poll can learn the agent finished.
        var next = writer.Saved.Last().NextWakeAt();
        Assert.NotNull(next);
        time.Advance(next!.Value - time.GetUtcNow());
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Equal("https://github.com/acme/shop/pull/14", Assert.Single(state.CodingAgents["bc-1"].Results).PrUrl);
    }

    [Fact]
    public async Task Repository_cap_holds_per_run_when_a_later_snapshot_names_other_repositories()
    {
        var capped = new HandoffEngine(
            new SingleIntegrationCatalog(new Integration(42, provider)), new HandoffEngineOptions { MaxRepositories = 2 }, new RetryPolicy(new RetryOptions(), () => 0.5), time, NullLogger<HandoffEngine>.Instance);
        await capped.TriggerAndFinishAsync(1, null, Trigger("acme/a", "acme/b"), writer, CancellationToken.None);

        // The run's snapshot now lists a third repository first (the project's preferences changed, or a client sent its own `run`).
        var again = await capped.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/c", "acme/a", "acme/b"), writer, CancellationToken.None);

        Assert.Equal(2, provider.Launches.Count);
        Assert.Equal(["acme/a", "acme/b"], again.Result.Successes.Select(s => s.RepoName));
    }

    [Fact]
    public async Task Manual_trigger_launches_nothing_while_an_earlier_generations_agent_completed()
    {
        // Generation 1 (bc-1) is stopped, our "failed"; a person relaunches (bc-2); bc-1 then reports FINISHED with a
        // pull request, and bc-2 errors.
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        await engine.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/shop"), writer, CancellationToken.None);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/1")), writer);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-2", ProviderAgentStatus.Error)), writer);
        Assert.Equal(2, provider.Launches.Count);

        // The repository has a completed agent from the integration: nothing new is launched, and that agent is the answer.
        var again = await engine.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/shop"), writer, CancellationToken.None);

        Assert.Equal(2, provider.Launches.Count);
        Assert.Equal("bc-1", Assert.Single(again.Result.Successes).CodingAgentState.Id);
    }

    [Fact]
    public async Task Stored_instruction_that_no_longer_fits_the_prompt_cap_fails_without_a_call()
    {
        // Accepted under a larger cap; the integration's cap was lowered since (a restart with other settings).
        var capped = new HandoffEngine(
            new SingleIntegrationCatalog(new Integration(42, provider, PromptMaxLength: 8192)), new HandoffEngineOptions(), new RetryPolicy(new RetryOptions(), () => 0.5), time, NullLogger<HandoffEngine>.Instance);

        var outcome = await capped.TriggerAndFinishAsync(1, null, Trigger("acme/shop") with { Instruction = new string('i', 9000) }, writer, CancellationToken.None);

        Assert.Empty(provider.Launches);
        Assert.Equal(FailureTypes.InvalidRequest, Assert.Single(outcome.Result.Failures).FailureType);
        Assert.Equal(LaunchPhase.Failed, writer.Saved.Last().Launches[0].Phase);
    }

    [Fact]
    public async Task A_launch_that_fails_without_a_call_records_no_launch_duration()
    {
        // An integration of its own: other tests record launch durations and spans meanwhile.
        const long integrationId = 9_042;
        var durations = 0;
        using var meters = new System.Diagnostics.Metrics.MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == HandoffTelemetry.Name && instrument.Name == "handoff.launch.duration")
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        meters.SetMeasurementEventCallback<double>((_, _, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == "handoff.integration_id" && Equals(tag.Value, integrationId))
                {
                    Interlocked.Increment(ref durations);
                }
            }
        });
        meters.Start();
        var spans = new ConcurrentQueue<System.Diagnostics.Activity>();
        using var listener = new System.Diagnostics.ActivityListener
        {
            ShouldListenTo = source => source.Name == HandoffTelemetry.Name,
            Sample = (ref System.Diagnostics.ActivityCreationOptions<System.Diagnostics.ActivityContext> _) => System.Diagnostics.ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = spans.Enqueue,
        };
        System.Diagnostics.ActivitySource.AddActivityListener(listener);
        var capped = new HandoffEngine(
            new SingleIntegrationCatalog(new Integration(integrationId, provider, PromptMaxLength: 8192)), new HandoffEngineOptions(), new RetryPolicy(new RetryOptions(), () => 0.5), time, NullLogger<HandoffEngine>.Instance);

        // The instruction no longer fits the cap: failed invalid_request without a call to the provider.
        await capped.TriggerAndFinishAsync(1, null, Trigger("acme/shop") with { IntegrationId = integrationId, Instruction = new string('i', 9000) }, writer, CancellationToken.None);

        Assert.Empty(provider.Launches);
        Assert.Equal(LaunchPhase.Failed, writer.Saved.Last().Launches[0].Phase);
        // The runbook's p99 of launch calls is not pulled down by a zero for a call never made.
        Assert.Equal(0, durations);
        // The attempt's span still says why it failed.
        Assert.Equal(FailureTypes.InvalidRequest, Assert.Single(spans, span => span.OperationName == "handoff.launch_attempt" && Equals(span.GetTagItem("handoff.integration_id"), integrationId)).GetTagItem("handoff.outcome"));
    }

    [Fact]
    public async Task Prompt_leaves_room_for_what_the_provider_adds_to_it()
    {
        // Copilot appends its handoff reference line: the prompt it sends must still fit the integration's cap.
        provider.PromptReserve = 500;
        var capped = new HandoffEngine(
            new SingleIntegrationCatalog(new Integration(42, provider, PromptMaxLength: 2048)), new HandoffEngineOptions(), new RetryPolicy(new RetryOptions(), () => 0.5), time, NullLogger<HandoffEngine>.Instance);

        var trigger = Trigger("acme/shop");
        var longAnalysis = trigger.Snapshot! with { Artifacts = new RunArtifacts(new RootCauseArtifact(new string('r', 5000))) };

        await capped.TriggerAndFinishAsync(1, null, trigger with { Snapshot = longAnalysis }, writer, CancellationToken.None);

        // The analysis is cut to fit what is left.
        Assert.InRange(Assert.Single(provider.Launches).Prompt.Length, 1024, 2048 - 500);
    }

    [Fact]
    public async Task A_provider_client_fault_on_stop_is_a_provider_failure_and_records_nothing()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var saves = writer.Saved.Count;
        provider.StopFaults = true;

        var stop = await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);

        Assert.Equal(AgentCommandStatus.ProviderFailed, stop.Status);
        Assert.Equal(FailureTypes.InvalidResponse, stop.FailureType);
        Assert.Equal(saves, writer.Saved.Count);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_command_the_provider_accepted_is_answered_done_even_if_it_cannot_be_recorded(bool stop)
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var saves = writer.Saved.Count;
        // The owner's store or actor is unreachable when the command comes back to be recorded.
        var recorder = new RaceRecorder(new EngineRoundTrips.Recorder(engine, writer), () => throw new InvalidOperationException("store unreachable"));

        var outcome = stop
            ? await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", recorder, CancellationToken.None)
            : await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Add a test"), recorder, CancellationToken.None);

        // Not "try again": a follow-up sent again would reach the agent twice.
        Assert.Equal(AgentCommandStatus.Done, outcome.Status);
        Assert.Equal(stop ? CodingAgentStatus.Failed : CodingAgentStatus.Pending, outcome.Agent!.Status);
        Assert.Equal(saves, writer.Saved.Count);
    }

    [Fact]
    public async Task A_follow_up_whose_outcome_is_unknown_is_answered_so_and_puts_the_agent_back_under_watch()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        provider.ReadStatus = ProviderAgentStatus.Finished;
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Null(state.NextWakeAt());
        // The request was sent; its answer never came.
        provider.FollowupFailure = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, RequestSent: true);

        var followup = await engine.AddFollowupAsync(state, new AgentFollowup("bc-1", "Open the pull request"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);

        Assert.Equal(AgentCommandStatus.OutcomeUnknown, followup.Status);
        Assert.Equal(FailureTypes.ProviderUnavailable, followup.FailureType);
        state = writer.Saved.Last();
        Assert.Contains("bc-1", state.Poll?.AwaitingPullRequest ?? []);
        Assert.NotNull(state.NextWakeAt());
    }

    [Fact]
    public async Task A_stop_recorded_after_a_finished_webhook_leaves_the_agent_completed()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var read = writer.Saved.Last();
        var recorder = new RaceRecorder(new EngineRoundTrips.Recorder(engine, writer), async () =>
            await engine.ApplyAgentReportAsync(writer.Saved.Last(),
                new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/3")), writer));

        var stop = await engine.StopAgentAsync(read, "bc-1", recorder, CancellationToken.None);

        Assert.Equal(AgentCommandStatus.Done, stop.Status);
        Assert.Equal(CodingAgentStatus.Completed, stop.Agent!.Status);
        Assert.Equal(CodingAgentStatus.Completed, writer.Saved.Last().CodingAgents["bc-1"].Status);
        Assert.Equal("https://github.com/acme/shop/pull/3", writer.Saved.Last().CodingAgents["bc-1"].Results.Single().PrUrl);
    }

    [Fact]
    public async Task A_stop_recorded_while_a_poll_is_in_flight_keeps_the_agent_watched()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        var woken = await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.NotNull(woken.Poll);
        // The stop is sent and recorded while the poll is at the provider (it read RUNNING).
        var stop = await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        Assert.Equal(AgentCommandStatus.Done, stop.Status);
        await engine.FinishWakeAsync(woken, new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);

        var state = writer.Saved.Last();
        Assert.Equal(CodingAgentStatus.Failed, state.CodingAgents["bc-1"].Status);
        Assert.Contains("bc-1", state.Poll?.GivenUp ?? []);
    }

    [Fact]
    public async Task A_poll_report_with_the_pull_request_is_applied_even_if_a_webhook_finished_the_agent_without_one_while_the_poll_was_out()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
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
            time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
            await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
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
        time.Advance(state.NextWakeAt()!.Value - time.GetUtcNow());
        state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromMinutes(2), state.NextWakeAt());
    }

    [Fact]
    public async Task An_agent_stopped_after_a_follow_up_is_no_longer_read_once_the_provider_shows_it_stopped()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        // It finishes without a pull request, is sent a follow-up, then stopped by a person.
        provider.ReadStatus = ProviderAgentStatus.Finished;
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Null(state.NextWakeAt());
        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        Assert.Equal(AgentCommandStatus.Done, (await engine.AddFollowupAsync(state, new AgentFollowup("bc-1", "Open the pull request"), recorder, CancellationToken.None)).Status);
        time.Advance(TimeSpan.FromSeconds(20));
        Assert.Equal(AgentCommandStatus.Done, (await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", recorder, CancellationToken.None)).Status);

        // The provider shows it stopped: no pull request can come any more, and it is not read on for hours.
        provider.ReadStatus = ProviderAgentStatus.Stopped;
        var reads = provider.Reads;
        state = writer.Saved.Last();
        for (var i = 0; i < 10 && state.NextWakeAt() is { } next; i++)
        {
            time.Advance(next - time.GetUtcNow());
            state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
        }

        Assert.Null(state.NextWakeAt());
        Assert.Equal(1, provider.Reads - reads);
    }

    [Fact]
    public async Task A_launch_whose_process_dies_during_every_attempt_is_not_sent_more_than_max_attempts_times()
    {
        // Every attempt's process is killed after the provider call and before its answer is recorded (say the
        // provider's answer takes the process down); each answer was a 503, so nothing exists to reconcile.
        provider.Always = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, StatusCode: 503);
        var first = await engine.TriggerAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await HoldAnswersAsync(first.Round!);

        for (var crash = 0; crash < 10; crash++)
        {
            // The next wake-up finds the launch in flight past its deadline and takes it over.
            time.Advance(TimeSpan.FromMinutes(3));
            var woken = await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None);
            if (woken.Round is { } round)
            {
                await HoldAnswersAsync(round);
            }
        }

        var launch = writer.Saved.Last().Launches.Single();
        Assert.True(provider.Launches.Count <= new RetryOptions().MaxAttempts,
            $"{provider.Launches.Count} launch requests sent (MaxAttempts {new RetryOptions().MaxAttempts}); the launch is at attempt {launch.Attempts}, {launch.Phase}");
        // One lookup after the last launch (its process died too), then no call at all: the launch ends.
        Assert.Equal((LaunchPhase.Failed, FailureTypes.RetriesExhausted), (launch.Phase, launch.FailureType));
        Assert.Null(writer.Saved.Last().NextWakeAt());
    }

    [Fact]
    public async Task A_launch_a_wake_up_ends_for_its_process_dying_during_every_attempt_is_counted_failed_as_any_launch_that_fails()
    {
        // As above: no attempt's answer is ever recorded, so the launch ends at a wake-up, without a call.
        provider.Always = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, StatusCode: 503);
        using var counted = new CountedMeasurements();
        var first = await engine.TriggerAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await HoldAnswersAsync(first.Round!);
        for (var crash = 0; crash < 10 && writer.Saved.Last().Launches.Single().Phase != LaunchPhase.Failed; crash++)
        {
            time.Advance(TimeSpan.FromMinutes(3));
            var woken = await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None);
            if (woken.Round is { } round)
            {
                await HoldAnswersAsync(round);
            }
        }

        var launch = writer.Saved.Last().Launches.Single();
        Assert.Equal((LaunchPhase.Failed, FailureTypes.RetriesExhausted), (launch.Phase, launch.FailureType));
        Assert.Equal(TimelineEvents.LaunchFailed, writer.Saved.Last().Timeline[^1].Event);
        // Had the last lookup's answer (nothing found) been recorded, the same ending would have been counted failed.
        Assert.Equal(1, counted["handoff.launches", "handoff.failure_type", FailureTypes.RetriesExhausted]);
    }

    [Fact]
    public async Task A_late_answer_of_an_attempt_before_a_persons_relaunch_is_not_taken_for_the_relaunchs_attempt_of_the_same_number()
    {
        // Attempt 1's answer (rate limited) is held back past its deadline; the attempt that took it over is refused for good.
        provider.Next = new ProviderFailure(FailureTypes.RateLimited, Retryable: true, StatusCode: 429);
        var first = await engine.TriggerAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var late = await HoldAnswersAsync(first.Round!);
        time.Advance(TimeSpan.FromMinutes(3));
        provider.Next = new ProviderFailure(FailureTypes.InvalidRequest, Retryable: false, StatusCode: 422);
        await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(LaunchPhase.Failed, writer.Saved.Last().Launches.Single().Phase);

        // A person relaunches it: attempt 1 again, whose answer (an agent) is recorded after the old attempt 1's.
        time.Advance(TimeSpan.FromMinutes(1));
        var relaunch = await engine.TriggerAsync(1, writer.Saved.Last(), Trigger("acme/shop"), writer, CancellationToken.None);
        var answers = await HoldAnswersAsync(relaunch.Round!);
        Assert.Equal(1, writer.Saved.Last().Launches.Single().Attempts);
        await engine.CompleteRoundAsync(writer.Saved.Last(), late, writer);
        await engine.CompleteRoundAsync(writer.Saved.Last(), answers, writer);

        // The old answer is late, not the relaunch's: taken as its, it would schedule a retry, the relaunch's agent would
        // then be dropped as an answer already applied, and the retry would launch a second agent on the repository.
        var launch = writer.Saved.Last().Launches.Single();
        Assert.Equal((LaunchPhase.Launched, answers.Attempts[0].Agent!.Id), (launch.Phase, launch.AgentId));
    }

    [Fact]
    public async Task A_provider_client_fault_is_logged_by_its_exception_type_never_its_message()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        provider.OnLaunch = _ => throw new InvalidOperationException("unexpected answer {\"token\":\"sk-live-secret-123\"}");

        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);

        var records = logger.Collector.GetSnapshot();
        var faulted = Assert.Single(records, record => record.Id.Name == "ProviderClientFaulted");
        Assert.Contains(nameof(InvalidOperationException), faulted.Message);
        Assert.DoesNotContain(records, record => record.Message.Contains("sk-live-secret-123", StringComparison.Ordinal)
            || (record.StructuredState ?? []).Any(pair => pair.Value?.Contains("sk-live-secret-123", StringComparison.Ordinal) == true));
    }

    [Fact]
    public async Task A_late_answer_naming_the_agent_its_launch_already_follows_is_logged_as_late_not_as_a_second_agent()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        var started = await logged.TriggerAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var late = await HoldAnswersAsync(started.Round!);
        time.Advance(TimeSpan.FromMinutes(3));
        // The attempt that took it over finds the agent the first one made, before the first one's answer is recorded.
        provider.Existing = late.Attempts[0].Agent;
        await logged.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(late.Attempts[0].Agent!.Id, writer.Saved.Last().Launches.Single().AgentId);
        logger.Collector.Clear();

        await logged.CompleteRoundAsync(writer.Saved.Last(), late, writer);

        var records = logger.Collector.GetSnapshot();
        Assert.Single(records, record => record.Id.Name == "LaunchAnswerLate");
        Assert.DoesNotContain(records, record => record.Id.Name == "AgentNotFollowed");
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
    public async Task A_follow_up_never_puts_off_a_poll_due_sooner_than_its_own()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var due = writer.Saved.Last().Poll!.NextPollAt;
        time.Advance(TimeSpan.FromSeconds(30));

        await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Also add a test"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);

        Assert.Equal(due, writer.Saved.Last().Poll!.NextPollAt);
        Assert.Equal(due, writer.Saved.Last().NextWakeAt());
    }

    [Fact]
    public async Task A_follow_up_to_an_agent_that_has_its_pull_request_puts_no_watch_on_it()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/3")), writer);
        Assert.True(writer.Saved.Last().IsSettled);

        var followup = await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Also add a test"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);

        // Its pull request, what the handoff was for, is known: there is nothing to await. The run stays settled, with no
        // wake-up and no reads of the agent (only an agent that ended without one is read on after a follow-up).
        Assert.Equal(AgentCommandStatus.Done, followup.Status);
        var state = writer.Saved.Last();
        Assert.Equal(TimelineEvents.FollowupSent, state.Timeline[^1].Event);
        Assert.True(state.IsSettled);
        Assert.Null(state.NextWakeAt());
    }

    [Fact]
    public async Task A_runs_timeline_is_bounded_and_drops_its_oldest_entries_first()
    {
        // Every follow-up is an entry: a run followed up without end must not outgrow what the store takes in one save.
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        for (var i = 0; i < RunHandoffState.MaxTimelineEntries + 10; i++)
        {
            time.Advance(TimeSpan.FromSeconds(1));
            await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Also add a test"), recorder, CancellationToken.None);
        }

        var timeline = writer.Saved.Last().Timeline;
        Assert.Equal(RunHandoffState.MaxTimelineEntries, timeline.Count);
        Assert.All(timeline, entry => Assert.Equal(TimelineEvents.FollowupSent, entry.Event));
        Assert.Equal(time.GetUtcNow(), timeline[^1].At);
        Assert.Equal(time.GetUtcNow() - TimeSpan.FromSeconds(RunHandoffState.MaxTimelineEntries - 1), timeline[0].At);
    }

    [Fact]
    public async Task A_run_wakes_for_its_poll_when_that_comes_before_a_later_retry()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var pollDue = writer.Saved.Last().Poll!.NextPollAt;
        // acme/web is refused for ten minutes: its retry comes well after acme/shop's agent is next read.
        provider.Next = new ProviderFailure(FailureTypes.RateLimited, Retryable: true, RetryAfter: TimeSpan.FromMinutes(10));
        await engine.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        var state = writer.Saved.Last();
        Assert.True(state.FindLaunch("acme/web", 42)!.NextAttemptAt > pollDue);

        Assert.Equal(pollDue, state.NextWakeAt());
        time.Advance(pollDue - time.GetUtcNow());
        await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
        Assert.Equal(1, provider.Reads);
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

    private sealed class RaceRecorder(IRoundRecorder inner, Func<Task> meanwhile) : IRoundRecorder
    {
        public Task<HandoffResult> RecordLaunchesAsync(LaunchRoundAnswers answers) => inner.RecordLaunchesAsync(answers);

        public Task<PollVerdict> RecordPollAsync(PollAnswers answers) => inner.RecordPollAsync(answers);

        public async Task<AgentCommandOutcome> RecordCommandAsync(AgentCommandSent sent)
        {
            await meanwhile();
            return await inner.RecordCommandAsync(sent);
        }
    }

    private static HandoffTrigger Trigger(params string[] repositories) => new(456, 42, Snapshot: new RunSnapshot(
        1,
        Group: new RunGroup(456, "Pool timeout", "SHOP-1"),
        Artifacts: new RunArtifacts(new RootCauseArtifact("x")),
        Preferences: new HandoffPreferences(repositories.Select(r => (RepositoryPreference?)new RepositoryPreference("github", r.Split('/')[0], r.Split('/')[1])).ToList())));

    /// <summary>Makes the round's calls and keeps their answers without recording them, as an owner whose answers are late.</summary>
    private async Task<LaunchRoundAnswers> HoldAnswersAsync(LaunchRound round)
    {
        var holding = new HoldingRecorder();
        await engine.FinishRoundAsync(round, holding, CancellationToken.None);
        return holding.Launches!;
    }

    /// <summary>Keeps the answers it is given without recording them.</summary>
    private sealed class HoldingRecorder : IRoundRecorder
    {
        public LaunchRoundAnswers? Launches { get; private set; }

        public PollAnswers? Poll { get; private set; }

        public Task<HandoffResult> RecordLaunchesAsync(LaunchRoundAnswers answers)
        {
            Launches = answers;
            return Task.FromResult(HandoffResult.Empty);
        }

        public Task<PollVerdict> RecordPollAsync(PollAnswers answers)
        {
            Poll = answers;
            return Task.FromResult(new PollVerdict([]));
        }

        public Task<AgentCommandOutcome> RecordCommandAsync(AgentCommandSent sent) => Task.FromResult(new AgentCommandOutcome(AgentCommandStatus.Done));
    }

    /// <summary>
    /// Run 1's acme/shop agent (bc-1) is stopped by a person and relaunched; the relaunch's answer is lost after the provider
    /// made its agent (generation 2, outcome unknown), and the stopped agent then finishes after all.
    /// </summary>
    private async Task<RepositoryLaunch> RelaunchLostBehindAStoppedAgentThatFinishesAsync(HandoffEngine on)
    {
        await on.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await on.StopAgentAsync(writer.Saved.Last(), "bc-1", new EngineRoundTrips.Recorder(on, writer), CancellationToken.None);
        provider.Next = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true);
        await on.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/shop"), writer, CancellationToken.None);
        var relaunch = writer.Saved.Last().FindLaunch("acme/shop", 42)!;
        Assert.Equal((2, LaunchPhase.OutcomeUnknown), (relaunch.Generation, relaunch.Phase));
        await on.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);
        return relaunch;
    }

    /// <summary>
    /// Launches acme/shop for run 1 with every attempt failing so, and wakes the run until no attempt is left: five, then
    /// (for a failure whose outcome is unknown) the one lookup after them, which fails with <paramref name="lastLookup"/> if given.
    /// </summary>
    private async Task LaunchUntilRetriesRunOut(ProviderFailure failure, ProviderFailure? lastLookup = null)
    {
        provider.Always = failure;
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        for (var i = 0; i < 6; i++)
        {
            provider.FindFailure = writer.Saved.Last().Launches[0].Attempts >= 5 ? lastLookup : null;
            time.Advance(TimeSpan.FromHours(1));
            await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        }
    }

    /// <summary>A store that cannot be written: every save fails.</summary>
    private sealed class FailingWriter : IRunStateWriter
    {
        public Task SaveAsync(RunHandoffState state, CancellationToken cancellationToken) => Task.FromException(new IOException("The store is unavailable."));
    }

    /// <summary>A writer whose first save (the launch intent) takes <paramref name="firstSave"/> on the clock, as a busy store would.</summary>
    private sealed class SlowFirstSaveWriter(FakeTimeProvider clock, TimeSpan firstSave) : IRecordingWriter
    {
        public List<RunHandoffState> Saved { get; } = [];

        public Task SaveAsync(RunHandoffState state, CancellationToken cancellationToken)
        {
            lock (Saved)
            {
                Saved.Add(state);
                if (Saved.Count == 1)
                {
                    clock.Advance(firstSave);
                }
            }

            return Task.CompletedTask;
        }
    }

    private sealed class Provider : ICodingAgentProvider
    {
        private int concurrent;
        private int sequence;

        public ConcurrentQueue<AgentLaunchRequest> Launches { get; } = new();
        public int PromptReserve { get; set; }
        public Action<AgentLaunchRequest>? OnLaunch { get; set; }

        /// <summary>Runs as a launch's answer is handed back (after any delay).</summary>
        public Action<AgentLaunchRequest>? OnAnswer { get; set; }
        public Func<AgentLaunchRequest, int>? Delay { get; set; }
        private ProviderFailure? next;

        /// <summary>The next launch's failure, taken by exactly one of the launches made in parallel.</summary>
        public ProviderFailure? Next { get => next; set => next = value; }
        public ProviderFailure? Always { get; set; }
        public ProviderAgent? Existing { get; set; }
        public int MaxConcurrent { get; private set; }

        /// <summary>When set, every launch is answered with an agent of this id (a provider answering garbage).</summary>
        public string? AnswerAgentId { get; set; }

        /// <summary>When set, every launch is answered with this agent (a provider answering with another launch's agent).</summary>
        public ProviderAgent? AnswerWith { get; set; }

        /// <summary>When set, every launch is answered with an agent of this name.</summary>
        public string? AnswerName { get; set; }

        /// <summary>When set, a launch is answered only once this task completes (after <see cref="OnLaunch"/>).</summary>
        public Task? Hold { get; set; }

        /// <summary>When set, a launch waits (up to 10 s) until this many are in flight together.</summary>
        public int? HoldUntilInFlight { get; set; }

        private readonly TaskCompletionSource allInFlight = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public string ProviderName => "cursor_background_agent";

        public async Task<ProviderResult<ProviderAgent>> LaunchAsync(AgentLaunchRequest request, CancellationToken cancellationToken)
        {
            Launches.Enqueue(request);
            OnLaunch?.Invoke(request);
            var now = Interlocked.Increment(ref concurrent);
            lock (Launches)
            {
                MaxConcurrent = Math.Max(MaxConcurrent, now);
            }

            if (HoldUntilInFlight is { } expected)
            {
                if (now >= expected)
                {
                    allInFlight.TrySetResult();
                }

                await Task.WhenAny(allInFlight.Task, Task.Delay(TimeSpan.FromSeconds(10), cancellationToken));
            }

            if (Hold is { } hold)
            {
                await hold.WaitAsync(cancellationToken);
            }

            await Task.Delay(Delay?.Invoke(request) ?? 0, cancellationToken);
            Interlocked.Decrement(ref concurrent);
            var answer = (Always ?? Interlocked.Exchange(ref next, null)) is { } failure
                ? ProviderResult<ProviderAgent>.Failed(failure)
                : ProviderResult<ProviderAgent>.Success(AnswerWith ?? new ProviderAgent(AnswerAgentId ?? $"bc-{Interlocked.Increment(ref sequence)}", ProviderAgentStatus.Creating, Name: AnswerName, BranchName: request.BranchName));
            OnAnswer?.Invoke(request);
            return answer;
        }

        public Task<ProviderResult<ProviderAgent>> GetAgentAsync(string agentId, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref reads);
            OnRead?.Invoke(agentId);
            return Task.FromResult(ReadFailure is { } failure
                ? ProviderResult<ProviderAgent>.Failed(failure)
                : ProviderResult<ProviderAgent>.Success(new ProviderAgent(agentId, ReadStatus, PrUrl: ReadPrUrl, Repository: ReadRepository)));
        }

        private int reads;

        public int Reads => reads;

        public ProviderFailure? ReadFailure { get; set; }

        public Action<string>? OnRead { get; set; }

        /// <summary>Stop answers not_supported, as GitHub's agent tasks API does.</summary>
        public bool CannotStop { get; set; }

        /// <summary>What a read of an agent (the poll) answers.</summary>
        public ProviderAgentStatus ReadStatus { get; set; } = ProviderAgentStatus.Running;

        public string? ReadPrUrl { get; set; }

        /// <summary>The repository a read names (null: none, as GitHub's tasks).</summary>
        public string? ReadRepository { get; set; }

        public Task<ProviderResult<ProviderAgent?>> FindAgentByBranchAsync(RepositoryName repository, string branchName, DateTimeOffset? firstSentAt, CancellationToken cancellationToken) =>
            Task.FromResult(FindFailure is { } failure ? ProviderResult<ProviderAgent?>.Failed(failure) : ProviderResult<ProviderAgent?>.Success(Existing?.BranchName == branchName ? Existing : null));

        /// <summary>What a lookup answers when set (an incomplete one, say).</summary>
        public ProviderFailure? FindFailure { get; set; }

        /// <summary>Stop throws, as a provider client meeting an answer of another shape might.</summary>
        public bool StopFaults { get; set; }

        public Task<ProviderResult<bool>> StopAsync(string agentId, CancellationToken cancellationToken) => StopFaults ? throw new InvalidOperationException("unexpected answer") : Task.FromResult(CannotStop
            ? ProviderResult<bool>.Failed(new ProviderFailure(FailureTypes.NotSupported, Retryable: false, RequestSent: false))
            : ProviderResult<bool>.Success(true));

        /// <summary>What a follow-up answers; null: accepted.</summary>
        public ProviderFailure? FollowupFailure { get; set; }

        public Task<ProviderResult<bool>> AddFollowupAsync(string agentId, string text, CancellationToken cancellationToken) =>
            Task.FromResult(FollowupFailure is { } failure ? ProviderResult<bool>.Failed(failure) : ProviderResult<bool>.Success(true));
    }
}
