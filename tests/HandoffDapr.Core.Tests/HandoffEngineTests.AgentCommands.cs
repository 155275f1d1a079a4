using System.Collections.Concurrent;
using System.Text.Json;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;

namespace HandoffDapr.Core.Tests;

// A person's stop and follow-up (HandoffEngine.AgentCommands.cs): their answers, and the watch they put an agent under until its pull request or its end shows.
public sealed partial class HandoffEngineTests
{
    [Fact]
    public async Task Completed_agent_sent_a_follow_up_is_read_on_until_its_pull_request_shows_even_if_first_read_finished()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        provider.ReadStatus = ProviderAgentStatus.Finished;
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Null(state.NextWakeAt());

        // Asked for the pull request it did not open; the next read still sees FINISHED (it has not resumed yet).
        var followup = await engine.AddFollowupAsync(state, new AgentFollowup("bc-1", "Open the pull request"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        Assert.Equal(AgentCommandStatus.Done, followup.Status);
        state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.NotNull(state.NextWakeAt());

        // It resumes, and finishes again with the pull request: learnt by the poll, which then ends.
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/21";
        state = await WakeWhenDueAsync(state);
        Assert.Equal("https://github.com/acme/shop/pull/21", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
    }

    /// <summary>
    /// The wait for a follow-up's pull request lasts twice <see cref="HandoffEngineOptions.AgentMaxAge"/> from the follow-up,
    /// not one: a pull request read past the first is learnt; past the second, the agent is no longer read.
    /// </summary>
    [Fact]
    public async Task Completed_agent_sent_a_follow_up_is_read_for_twice_its_maximum_age_from_the_follow_up()
    {
        var followedUpAt = await FinishedWithoutPullRequestThenFollowedUpAsync();
        var maxAge = new HandoffEngineOptions().AgentMaxAge;

        // Every read shows it finished without one, past its maximum age from the follow-up.
        var state = writer.Saved.Last();
        while (time.GetUtcNow() - followedUpAt <= maxAge + TimeSpan.FromMinutes(30))
        {
            state = await WakeWhenDueAsync(state);
            Assert.NotNull(state.NextWakeAt());
        }

        provider.ReadPrUrl = "https://github.com/acme/shop/pull/23";
        state = await WakeWhenDueAsync(state);
        Assert.Equal("https://github.com/acme/shop/pull/23", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
    }

    /// <summary>The other end of that wait: an agent that never shows a pull request is read no longer than twice its maximum age after the follow-up.</summary>
    [Fact]
    public async Task Completed_agent_sent_a_follow_up_that_never_shows_a_pull_request_is_no_longer_read_past_twice_its_maximum_age()
    {
        var followedUpAt = await FinishedWithoutPullRequestThenFollowedUpAsync();
        var maxAge = new HandoffEngineOptions().AgentMaxAge;

        var state = writer.Saved.Last();
        while (state.NextWakeAt() is not null)
        {
            state = await WakeWhenDueAsync(state);
        }

        var readFor = time.GetUtcNow() - followedUpAt;
        Assert.InRange(readFor, maxAge * 2, maxAge * 2 + new HandoffEngineOptions().PollMaxInterval);
    }

    /// <summary>
    /// acme/shop and acme/web launched side by side (which answers first, and is named bc-1, is up to the scheduler);
    /// acme/shop's agent finished without a pull request and is asked for one: watched, counting from that follow-up.
    /// </summary>
    private async Task<(EngineRoundTrips.Recorder Recorder, string Shop, string Web)> ShopFollowedUpForItsPullRequestBesideWebAsync()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        var shop = writer.Saved.Last().Launches.Single(launch => launch.Repository == "acme/shop").AgentId!;
        var web = writer.Saved.Last().Launches.Single(launch => launch.Repository == "acme/web").AgentId!;
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent(shop, ProviderAgentStatus.Finished)), writer);
        Assert.Equal(AgentCommandStatus.Done, (await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup(shop, "Open the pull request"), recorder, CancellationToken.None)).Status);
        return (recorder, shop, web);
    }

    /// <summary>One agent launched, read finished without a pull request, then sent a follow-up; when it was sent.</summary>
    private async Task<DateTimeOffset> FinishedWithoutPullRequestThenFollowedUpAsync()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        provider.ReadStatus = ProviderAgentStatus.Finished;
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        await engine.AddFollowupAsync(state, new AgentFollowup("bc-1", "Open the pull request"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        return time.GetUtcNow();
    }

    [Fact]
    public async Task Completed_agent_sent_a_follow_up_learns_the_pull_request_a_read_shows_even_when_the_follow_ups_work_failed()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        provider.ReadStatus = ProviderAgentStatus.Finished;
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);

        // Asked for the pull request, it opens it, but the follow-up's work then ends in an error (or it is still at work):
        // every read carries the pull request with a status other than FINISHED.
        var followup = await engine.AddFollowupAsync(state, new AgentFollowup("bc-1", "Open the pull request"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        Assert.Equal(AgentCommandStatus.Done, followup.Status);
        provider.ReadStatus = ProviderAgentStatus.Error;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/22";
        state = await WakeWhenDueAsync(writer.Saved.Last());

        // Final is final (still completed), but the pull request is learnt and the watch ends.
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Equal("https://github.com/acme/shop/pull/22", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
    }

    [Fact]
    public async Task Follow_up_to_an_agent_shown_running_is_still_awaited_after_a_poll_whose_read_of_it_failed()
    {
        await engine.TriggerAndFinishAsync(1, null, TriggerWithoutPullRequest("acme/shop"), writer, CancellationToken.None);
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
        state = await WakeWhenDueAsync(state);
        Assert.Equal("https://github.com/acme/shop/pull/25", state.CodingAgents["bc-1"].Results.Single().PrUrl);
    }

    [Fact]
    public async Task Follow_up_to_an_agent_at_work_is_still_awaited_after_a_read_at_work_when_a_late_webhook_tells_of_an_earlier_end()
    {
        await engine.TriggerAndFinishAsync(1, null, TriggerWithoutPullRequest("acme/shop"), writer, CancellationToken.None);
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.Equal(CodingAgentStatus.Running, state.CodingAgents["bc-1"].Status);

        // It had finished without a pull request, unseen; a person asks for one, and the next read shows it at work on it.
        var followup = await engine.AddFollowupAsync(state, new AgentFollowup("bc-1", "Open the pull request"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        Assert.Equal(AgentCommandStatus.Done, followup.Status);
        state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.Equal(CodingAgentStatus.Running, state.CodingAgents["bc-1"].Status);

        // Then the webhook of the end before the follow-up arrives late: completed, without a pull request.
        await engine.ApplyAgentReportAsync(state, new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer);
        state = writer.Saved.Last();
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);

        // Still read on: the follow-up's pull request is learnt without a webhook.
        Assert.Contains(state.AgentsToPoll, agent => agent.Id == "bc-1");
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/26";
        state = await WakeWhenDueAsync(state);
        Assert.Equal("https://github.com/acme/shop/pull/26", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
    }

    [Fact]
    public async Task An_agent_at_work_sent_a_follow_up_is_timed_out_by_its_age_from_that_follow_up_then_stopped_and_watched()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        // Five hours into its work, a person adds an instruction.
        time.Advance(TimeSpan.FromHours(5));
        Assert.Equal(AgentCommandStatus.Done, (await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Also add a test"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None)).Status);
        var followedUpAt = time.GetUtcNow();

        // Read at work seven hours after its launch (two after the follow-up): not timed out, still awaited.
        time.Advance(TimeSpan.FromHours(2));
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(CodingAgentStatus.Running, state.CodingAgents["bc-1"].Status);
        Assert.Contains("bc-1", state.Poll!.AwaitingPullRequest!);
        Assert.Empty(provider.Stops);

        // Read at work past its maximum age from the follow-up: timed out, stopped, and watched as given up.
        while (time.GetUtcNow() - followedUpAt <= TimeSpan.FromHours(6))
        {
            state = await WakeWhenDueAsync(state);
        }

        Assert.Equal(CodingAgentStatus.Failed, state.CodingAgents["bc-1"].Status);
        Assert.Equal(FailureTypes.TimedOut, state.Launches[0].FailureType);
        Assert.Equal(["bc-1"], provider.Stops);
        Assert.Equal(["bc-1"], state.Poll!.GivenUp!);
        Assert.Null(state.Poll.AwaitingPullRequest);
    }

    [Fact]
    public async Task A_stop_sent_before_a_follow_up_and_recorded_after_it_does_not_end_the_follow_ups_wait_for_its_pull_request()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        // The agent finished without a pull request, unseen. A person stops it; the stop's record is held (the owner busy).
        var held = new HoldingRecorder();
        Assert.Equal(AgentCommandStatus.Done, (await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", held, CancellationToken.None)).Status);
        // Then asks it for the pull request: the follow-up is recorded first, and the stop after it.
        Assert.Equal(AgentCommandStatus.Done, (await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Open the pull request"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None)).Status);
        var stop = await engine.RecordCommandAsync(writer.Saved.Last(), held.Command!, writer);
        Assert.Equal(AgentCommandStatus.Done, stop.Status);
        var state = writer.Saved.Last();
        Assert.Equal(TimelineEvents.Stopped, state.Timeline.Last().Event);

        // The next read is stale: it shows the end before the follow-up. The agent is still read on, not taken for a
        // stopped one whose end has now shown.
        provider.ReadStatus = ProviderAgentStatus.Finished;
        state = await WakeWhenDueAsync(state);
        Assert.Contains(state.AgentsToPoll, agent => agent.Id == "bc-1");

        // The follow-up's work opens the pull request: learnt without a webhook.
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/27";
        state = await WakeWhenDueAsync(state);
        Assert.Equal("https://github.com/acme/shop/pull/27", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
    }

    [Fact]
    public async Task An_agent_at_work_timed_out_after_its_follow_up_by_a_poll_recorded_after_its_lease_is_watched_as_given_up_and_stopped_again()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromHours(1));
        Assert.Equal(AgentCommandStatus.Done, (await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Also add a test"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None)).Status);

        // Past its maximum age from the follow-up, a poll reads it at work; its answers come back after its lease, when
        // the poll made again holds the schedule.
        time.Advance(TimeSpan.FromHours(6) + TimeSpan.FromMinutes(5));
        var slow = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll!;
        var holding = new HoldingRecorder();
        await engine.FinishPollAsync(slow, holding, CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(3));
        var again = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll!;
        var verdict = await engine.CompletePollAsync(writer.Saved.Last(), holding.Poll!, writer);

        // Timed out, and watched as given up, no longer as awaiting a pull request.
        var state = writer.Saved.Last();
        Assert.Equal(CodingAgentStatus.Failed, state.CodingAgents["bc-1"].Status);
        Assert.Equal(["bc-1"], verdict.ToStop.Select(agent => agent.AgentId));
        Assert.Contains("bc-1", state.Poll!.GivenUp!);
        Assert.DoesNotContain("bc-1", state.Poll.AwaitingPullRequest ?? []);

        // Its stop is never sent (the process gone first): the poll made again reads it at work and stops it.
        await engine.FinishPollAsync(again, new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        Assert.Equal(["bc-1"], provider.Stops);
    }

    [Fact]
    public async Task A_stop_checked_before_a_second_follow_up_recorded_at_the_same_instant_as_the_first_does_not_end_the_second_ones_wait()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        // The agent finished without a pull request, unseen; a person asks for one.
        Assert.Equal(AgentCommandStatus.Done, (await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Open the pull request"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None)).Status);
        // A stop checked against that run, its record held; then a second follow-up, recorded first, on a clock that has
        // not moved (a coarse one): the stop crossed it.
        var held = new HoldingRecorder();
        Assert.Equal(AgentCommandStatus.Done, (await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", held, CancellationToken.None)).Status);
        Assert.Equal(AgentCommandStatus.Done, (await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Open it now"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None)).Status);
        await engine.RecordCommandAsync(writer.Saved.Last(), held.Command!, writer);

        var state = writer.Saved.Last();
        Assert.Contains("bc-1", state.Poll!.AwaitingPullRequest!);
        Assert.DoesNotContain("bc-1", state.Poll.GivenUp ?? []);
    }

    [Fact]
    public async Task A_stop_keeps_the_follow_up_it_saw_through_the_actor_call_json_and_one_from_an_earlier_release_keeps_the_wait()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromTicks(1234567));
        Assert.Equal(AgentCommandStatus.Done, (await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Open the pull request"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None)).Status);
        var held = new HoldingRecorder();
        Assert.Equal(AgentCommandStatus.Done, (await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", held, CancellationToken.None)).Status);
        var followedUpAt = writer.Saved.Last().Poll!.FollowedUpAt!["bc-1"];
        Assert.Equal(followedUpAt, held.Command!.FollowupSeen);

        // As the actor's call carries it (the actor runtime's options), to the tick.
        var json = HandoffDapr.Core.Serialization.HandoffJsonContext.CreateOptions();
        var wire = JsonSerializer.Serialize(held.Command, json);
        Assert.Contains("\"followup_seen\"", wire, StringComparison.Ordinal);
        var back = JsonSerializer.Deserialize<AgentCommandSent>(wire, json)!;
        Assert.Equal(held.Command, back);
        Assert.Equal(followedUpAt.UtcTicks, back.FollowupSeen!.Value.UtcTicks);

        // A caller of an earlier release sends no such member: taken as having seen none, the follow-up's wait goes on.
        var legacy = JsonSerializer.Deserialize<AgentCommandSent>("""{"run_id":1,"agent_id":"bc-1","stop":true,"outcome_unknown":false,"command_id":"c-1"}""", json)!;
        Assert.Null(legacy.FollowupSeen);
        await engine.RecordCommandAsync(writer.Saved.Last(), legacy, writer);
        Assert.Contains("bc-1", writer.Saved.Last().Poll!.AwaitingPullRequest!);

        // The stop as sent ends it.
        await engine.RecordCommandAsync(writer.Saved.Last(), back with { CommandId = "c-2" }, writer);
        Assert.DoesNotContain("bc-1", writer.Saved.Last().Poll!.AwaitingPullRequest ?? []);
        Assert.Contains("bc-1", writer.Saved.Last().Poll!.GivenUp!);
    }

    /// <summary>
    /// All at one instant of a coarse clock: one or two follow-ups (each kept later than the one before), a stop that ends
    /// their wait, a second stop checked (its record held, having seen the last of them), a poll's answers (the read
    /// shows the agent stopped, which does not end its watch: it may be stale), then one more follow-up. The held stop
    /// crossed that one, whose time the schedule still tells apart from the earlier ones.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task A_stop_that_crossed_a_follow_up_recorded_at_the_instant_of_earlier_ones_and_of_a_read_showing_it_stopped_does_not_end_its_wait(int earlierFollowups)
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        // A poll reads the agent stopped; its answers are recorded later, while it still holds the schedule.
        var poll = (await engine.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None)).Poll!;
        provider.ReadStatus = ProviderAgentStatus.Stopped;
        var holding = new HoldingRecorder();
        await engine.FinishPollAsync(poll, holding, CancellationToken.None);
        time.Advance(TimeSpan.FromSeconds(90));

        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        for (var i = 1; i <= earlierFollowups; i++)
        {
            await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", $"Open the pull request ({i})"), recorder, CancellationToken.None);
        }

        await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", recorder, CancellationToken.None);
        var held = new HoldingRecorder();
        await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", held, CancellationToken.None);
        await engine.CompletePollAsync(writer.Saved.Last(), holding.Poll!, writer);
        Assert.Contains("bc-1", writer.Saved.Last().Poll!.FollowedUpAt!.Keys);
        await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Open the pull request now"), recorder, CancellationToken.None);

        await engine.RecordCommandAsync(writer.Saved.Last(), held.Command!, writer);
        Assert.Contains("bc-1", writer.Saved.Last().Poll!.AwaitingPullRequest ?? []);
        var followups = writer.Saved.Last().Timeline.Where(entry => entry.Event == TimelineEvents.FollowupSent).Select(entry => entry.At).ToList();
        Assert.Equal(Enumerable.Range(0, earlierFollowups + 1).Select(ticks => time.GetUtcNow().AddTicks(ticks)), followups);
    }

    [Fact]
    public async Task A_follow_up_recorded_at_the_instant_of_another_agents_is_kept_at_that_instant()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        var shop = writer.Saved.Last().Launches.Single(launch => launch.Repository == "acme/shop").AgentId!;
        var web = writer.Saved.Last().Launches.Single(launch => launch.Repository == "acme/web").AgentId!;
        var recorder = new EngineRoundTrips.Recorder(engine, writer);

        // On a coarse clock: two follow-ups of acme/web's agent, then one of acme/shop's, at one instant. Only an agent's own
        // earlier follow-ups move its time on.
        await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup(web, "Also add a test"), recorder, CancellationToken.None);
        await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup(web, "And a changelog line"), recorder, CancellationToken.None);
        await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup(shop, "Also add a test"), recorder, CancellationToken.None);

        var state = writer.Saved.Last();
        Assert.Equal(time.GetUtcNow().AddTicks(1), state.Poll!.FollowedUpAt![web]);
        Assert.Equal(time.GetUtcNow(), state.Poll.FollowedUpAt[shop]);
        Assert.Equal(time.GetUtcNow(), state.Timeline.Last(entry => entry.AgentId == shop).At);
    }

    [Fact]
    public async Task A_stop_that_crossed_a_follow_up_recorded_at_the_instant_of_an_earlier_one_whose_timeline_entry_was_dropped_does_not_end_its_wait()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        var shop = writer.Saved.Last().Launches.Single(launch => launch.Repository == "acme/shop").AgentId!;
        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        // acme/shop's agent is asked for the pull request, and a stop of it is checked, its record held.
        await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup(shop, "Open the pull request"), recorder, CancellationToken.None);
        var held = new HoldingRecorder();
        Assert.Equal(AgentCommandStatus.Done, (await engine.StopAgentAsync(writer.Saved.Last(), shop, held, CancellationToken.None)).Status);

        // All at one instant of a coarse clock: acme/shop's entries are gone from the timeline (a run stored by a release
        // whose bound dropped them, acme/web's entries many), then acme/shop's agent is sent a second follow-up, recorded
        // before the held stop.
        writer.Saved.Add(writer.Saved.Last() with { Timeline = [.. writer.Saved.Last().Timeline.Where(entry => entry.AgentId != shop)] });
        await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup(shop, "Open it now"), recorder, CancellationToken.None);

        // The held stop crossed the second follow-up (kept later than the first, known from the poll's schedule): its wait goes on.
        await engine.RecordCommandAsync(writer.Saved.Last(), held.Command!, writer);
        Assert.Contains(shop, writer.Saved.Last().Poll!.AwaitingPullRequest!);
        Assert.DoesNotContain(shop, writer.Saved.Last().Poll!.GivenUp ?? []);
    }

    [Fact]
    public async Task An_agent_timed_out_after_a_late_follow_up_is_watched_for_twice_its_age_from_that_follow_up_not_from_its_launch()
    {
        provider.CannotStop = true;
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        // Seven hours into its work (past its maximum age, but read failing meanwhile), a person adds an instruction.
        time.Advance(TimeSpan.FromHours(7));
        Assert.Equal(AgentCommandStatus.Done, (await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Also add a test"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None)).Status);
        var followedUpAt = time.GetUtcNow();
        var state = writer.Saved.Last();
        while (time.GetUtcNow() - followedUpAt <= TimeSpan.FromHours(6))
        {
            state = await WakeNowOrWhenDueAsync(state);
        }

        // Timed out thirteen hours after its launch: still watched (twice its age from the follow-up), so the pull request
        // it opens anyway (the provider cannot stop it) is learnt without a webhook.
        Assert.Equal(FailureTypes.TimedOut, state.Launches[0].FailureType);
        Assert.Contains("bc-1", state.Poll?.GivenUp ?? []);
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/41";
        state = await WakeNowOrWhenDueAsync(state);
        Assert.Equal("https://github.com/acme/shop/pull/41", state.CodingAgents["bc-1"].Results.Single().PrUrl);
    }

    [Fact]
    public async Task An_agent_stopped_without_a_follow_up_is_still_watched_while_another_agent_of_the_run_awaits_its_pull_request()
    {
        var (recorder, shop, web) = await ShopFollowedUpForItsPullRequestBesideWebAsync();
        // acme/web's agent is stopped by a person: read on as given up until the provider shows it ended.
        Assert.Equal(AgentCommandStatus.Done, (await engine.StopAgentAsync(writer.Saved.Last(), web, recorder, CancellationToken.None)).Status);
        Assert.Contains(web, writer.Saved.Last().Poll!.GivenUp!);

        // The next read shows it still running (the stop has not taken yet): it is still watched.
        var state = writer.Saved.Last();
        state = await WakeWhenDueAsync(state);
        Assert.Contains(web, state.Poll?.GivenUp ?? []);

        // It finishes after all, with its pull request: learnt without a webhook.
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/web/pull/24";
        state = await WakeWhenDueAsync(state);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents[web].Status);
        Assert.Equal("https://github.com/acme/web/pull/24", state.CodingAgents[web].Results.Single().PrUrl);
    }

    [Fact]
    public async Task Follow_up_to_an_agent_shown_running_that_had_ended_is_read_on_until_its_pull_request_shows()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.Equal(CodingAgentStatus.Running, state.CodingAgents["bc-1"].Status);

        // It finishes without a pull request; no webhook says so (none configured, or lost), so the run still shows it
        // running when a person asks for the pull request. The next read still sees FINISHED: it has not resumed yet.
        provider.ReadStatus = ProviderAgentStatus.Finished;
        var followup = await engine.AddFollowupAsync(state, new AgentFollowup("bc-1", "Open the pull request"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        Assert.Equal(AgentCommandStatus.Done, followup.Status);
        state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.NotNull(state.NextWakeAt());

        // It resumes, and finishes again with the pull request: learnt by the poll, which then ends.
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/23";
        state = await WakeWhenDueAsync(state);
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
        state = await WakeWhenDueAsync(state);
        Assert.Null(state.NextWakeAt());

        var followup = await engine.AddFollowupAsync(state, new AgentFollowup("bc-1", "Go on and open the pull request"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);

        Assert.Equal(AgentCommandStatus.Done, followup.Status);
        state = writer.Saved.Last();
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromMinutes(1), state.NextWakeAt());
        // The next read still shows it stopped (it has not resumed yet): that does not end the watch.
        state = await WakeWhenDueAsync(state);
        Assert.NotNull(state.NextWakeAt());
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/22";
        state = await WakeWhenDueAsync(state);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Equal("https://github.com/acme/shop/pull/22", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
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

    /// <summary>
    /// A provider client that throws may have sent the command first, as a launch that faulted may have: answered "not
    /// carried out" (a 502), a follow-up sent again would reach the agent twice.
    /// </summary>
    [Theory]
    [InlineData(true, false)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    [InlineData(false, true)]
    public async Task A_provider_client_fault_on_a_command_is_an_unknown_outcome_recorded_as_such(bool stop, bool unaskedCancellation)
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        provider.ReadStatus = ProviderAgentStatus.Finished;
        var before = (await WakeWhenDueAsync(writer.Saved.Last())).CodingAgents["bc-1"].Status;
        provider.CommandsFault = true;
        provider.CommandFault = () => ClientFault(unaskedCancellation);

        var outcome = stop
            ? await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None)
            : await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Open the pull request"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);

        Assert.Equal((AgentCommandStatus.OutcomeUnknown, FailureTypes.InvalidResponse), (outcome.Status, outcome.FailureType));
        var state = writer.Saved.Last();
        Assert.Equal((stop ? TimelineEvents.Stopped : TimelineEvents.FollowupSent, "bc-1", "outcome unknown"),
            (state.Timeline[^1].Event, state.Timeline[^1].AgentId, state.Timeline[^1].Detail));
        Assert.Equal(before, state.CodingAgents["bc-1"].Status);
        // A follow-up that may have been taken is watched again, as an accepted one is; a stop leaves the watch as it was.
        Assert.Equal(!stop, state.Poll?.AwaitingPullRequest?.Contains("bc-1") == true);
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
        var state = await WakeWhenDueAsync(writer.Saved.Last());
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
    public async Task An_agent_stopped_after_a_follow_up_that_the_provider_shows_stopped_is_read_on_only_until_twice_its_maximum_age_from_that_follow_up()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        // It finishes without a pull request, is sent a follow-up, then stopped by a person.
        provider.ReadStatus = ProviderAgentStatus.Finished;
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.Null(state.NextWakeAt());
        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        Assert.Equal(AgentCommandStatus.Done, (await engine.AddFollowupAsync(state, new AgentFollowup("bc-1", "Open the pull request"), recorder, CancellationToken.None)).Status);
        var followedUpAt = time.GetUtcNow();
        time.Advance(TimeSpan.FromSeconds(20));
        Assert.Equal(AgentCommandStatus.Done, (await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", recorder, CancellationToken.None)).Status);

        // The provider shows it stopped, which a stale read of a stop before the follow-up would show too: it is read
        // on, the interval growing, and no longer once twice its maximum age has passed since the follow-up.
        provider.ReadStatus = ProviderAgentStatus.Stopped;
        var reads = provider.Reads;
        state = writer.Saved.Last();
        var lastWake = time.GetUtcNow();
        for (var i = 0; i < 200 && state.NextWakeAt() is { } next; i++)
        {
            lastWake = next;
            state = await WakeWhenDueAsync(state);
        }

        var maxAge = new HandoffEngineOptions().AgentMaxAge;
        Assert.Null(state.NextWakeAt());
        Assert.InRange(lastWake, followedUpAt + 2 * maxAge, followedUpAt + 2 * maxAge + new HandoffEngineOptions().PollMaxInterval);
        Assert.InRange(provider.Reads - reads, 2, 2 * maxAge / new HandoffEngineOptions().PollMaxInterval + 10);
    }

    [Theory]
    [InlineData(ProviderAgentStatus.Error)]
    [InlineData(ProviderAgentStatus.Expired)]
    [InlineData(ProviderAgentStatus.Finished)]
    public async Task An_agent_stopped_after_a_follow_up_is_read_on_past_a_stale_read_of_an_earlier_end_until_it_completes_with_its_pull_request(ProviderAgentStatus staleEnd)
    {
        await FollowedUpAtWorkThenStoppedAsync();

        // A stale read shows an end from before the follow-up (an error, or a finish without the pull request, which
        // completes it): not the stop's end, so the agent is read on, and the follow-up's pull request is learnt.
        await ReadOnPastAStaleEndToTheFollowupsPullRequestAsync(staleEnd, "https://github.com/acme/shop/pull/32");
    }

    [Fact]
    public async Task An_agent_stopped_after_a_follow_up_is_still_watched_from_that_follow_up_after_a_read_at_work_then_a_stale_read_of_an_earlier_end()
    {
        await FollowedUpAtWorkThenStoppedAsync();

        // The first read shows it at work (the stop has not taken): still watched, and the follow-up it had is kept.
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.Contains("bc-1", state.Poll!.GivenUp!);
        Assert.True(state.Poll.FollowedUpAt!.ContainsKey("bc-1"));

        // A later read is stale: an end from before the follow-up (an error). Not the stop's end: still read on.
        provider.ReadStatus = ProviderAgentStatus.Error;
        state = await WakeWhenDueAsync(state);
        Assert.Contains(state.AgentsToPoll, agent => agent.Id == "bc-1");

        // The stop never took: the follow-up's work finishes with its pull request, which is learnt.
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/33";
        state = await WakeWhenDueAsync(state);
        Assert.Equal("https://github.com/acme/shop/pull/33", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
    }

    /// <summary>
    /// Stopped (the stop's record held), sent a follow-up that resumes it, the stop recorded after it (the two crossed),
    /// then stopped again, that stop's outcome unknown (it did not take): a stale read showing the first stop ended the
    /// watch, and the follow-up's finish with its pull request went unread (engine seed 1177602).
    /// </summary>
    [Fact]
    public async Task An_agent_whose_stop_after_a_follow_up_may_not_have_taken_is_read_on_past_a_stale_read_of_a_stop_before_that_follow_up()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var held = new HoldingRecorder();
        Assert.Equal(AgentCommandStatus.Done, (await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", held, CancellationToken.None)).Status);
        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        Assert.Equal(AgentCommandStatus.Done, (await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Also add a test"), recorder, CancellationToken.None)).Status);
        await engine.RecordCommandAsync(writer.Saved.Last(), held.Command!, writer);
        time.Advance(TimeSpan.FromSeconds(20));
        provider.StopFailure = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, RequestSent: true);
        Assert.Equal(AgentCommandStatus.OutcomeUnknown, (await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", recorder, CancellationToken.None)).Status);

        // A stale read shows the first stop: nothing tells it from the second taking, so the agent is read on, and the
        // follow-up's pull request is learnt (the second stop never took).
        await ReadOnPastAStaleEndToTheFollowupsPullRequestAsync(ProviderAgentStatus.Stopped, "https://github.com/acme/shop/pull/35");
    }

    /// <summary>
    /// The next read of bc-1, stopped after a follow-up, shows <paramref name="staleEnd"/>: it is still read. The one after
    /// shows it finished with <paramref name="pullRequest"/> (the stop had not taken): completed with it, nothing left to read.
    /// </summary>
    private async Task ReadOnPastAStaleEndToTheFollowupsPullRequestAsync(ProviderAgentStatus staleEnd, string pullRequest)
    {
        provider.ReadStatus = staleEnd;
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.Contains(state.AgentsToPoll, agent => agent.Id == "bc-1");

        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = pullRequest;
        state = await WakeWhenDueAsync(state);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Equal(pullRequest, state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
    }

    /// <summary>One agent launched, sent a follow-up while at work, then stopped by a person 20 s later: watched as given up, counting from the follow-up.</summary>
    private async Task FollowedUpAtWorkThenStoppedAsync()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        Assert.Equal(AgentCommandStatus.Done, (await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Also add a test"), recorder, CancellationToken.None)).Status);
        time.Advance(TimeSpan.FromSeconds(20));
        Assert.Equal(AgentCommandStatus.Done, (await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", recorder, CancellationToken.None)).Status);
    }

    [Fact]
    public async Task An_agent_stopped_after_a_follow_up_sent_long_after_its_launch_is_watched_from_that_follow_up_not_from_its_launch()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        provider.ReadStatus = ProviderAgentStatus.Finished;
        var state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.Null(state.NextWakeAt());

        // Thirteen hours after its launch (past twice its maximum age) it is asked for the pull request, then stopped.
        time.Advance(TimeSpan.FromHours(13));
        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        Assert.Equal(AgentCommandStatus.Done, (await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Open the pull request"), recorder, CancellationToken.None)).Status);
        time.Advance(TimeSpan.FromSeconds(20));
        Assert.Equal(AgentCommandStatus.Done, (await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", recorder, CancellationToken.None)).Status);

        // The next read shows it at work (the stop has not taken): stopped again, and still watched, its watch counted
        // from the follow-up.
        provider.ReadStatus = ProviderAgentStatus.Running;
        state = await WakeWhenDueAsync(writer.Saved.Last());
        Assert.Contains("bc-1", state.Poll?.GivenUp ?? []);

        // It finishes the follow-up's work with the pull request: learnt without a webhook.
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/34";
        state = await WakeWhenDueAsync(state);
        Assert.Equal("https://github.com/acme/shop/pull/34", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        Assert.Null(state.NextWakeAt());
    }

    /// <summary>
    /// A stop whose outcome is unknown leaves the agent shown at work, and it is read on as given up: a read that shows
    /// it at work (the stop not taken, or not yet) kept it polled as at work only, so a late webhook of its end before
    /// the follow-up (an error) ended every watch, and the follow-up's finish with its pull request went unread (engine
    /// seed 955129).
    /// </summary>
    [Fact]
    public async Task An_agent_whose_stop_after_a_follow_up_may_not_have_taken_is_read_on_past_a_late_webhook_of_an_earlier_end()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        Assert.Equal(AgentCommandStatus.Done, (await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Also add a test"), recorder, CancellationToken.None)).Status);
        time.Advance(TimeSpan.FromSeconds(20));
        provider.StopFailure = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, RequestSent: true);
        Assert.Equal(AgentCommandStatus.OutcomeUnknown, (await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", recorder, CancellationToken.None)).Status);

        // Read at work: the stop has not taken, or not yet.
        provider.ReadStatus = ProviderAgentStatus.Running;
        var state = writer.Saved.Last();
        time.Advance(state.NextWakeAt()!.Value - time.GetUtcNow());
        await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);

        // The webhook of the error the follow-up resumed it from comes late.
        Assert.Equal(AgentReportStatus.Changed, await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Error)), writer));
        state = writer.Saved.Last();
        Assert.Equal(CodingAgentStatus.Failed, state.CodingAgents["bc-1"].Status);

        // The follow-up's work finishes with its pull request, which is learnt.
        provider.ReadStatus = ProviderAgentStatus.Finished;
        provider.ReadPrUrl = "https://github.com/acme/shop/pull/33";
        Assert.NotNull(state.NextWakeAt());
        time.Advance(state.NextWakeAt()!.Value - time.GetUtcNow());
        state = await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        Assert.Equal("https://github.com/acme/shop/pull/33", state.CodingAgents["bc-1"].Results.Single().PrUrl);
        // Read at work while the run still showed it so, it was not stopped again: the poll only learns whether the stop took.
        Assert.Single(provider.Stops);
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
    public async Task A_stop_whose_outcome_is_unknown_answers_its_failure_type_leaves_the_agent_as_it_is_and_records_it_as_unknown()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var before = writer.Saved.Last().CodingAgents["bc-1"].Status;
        // Sent, and its answer could not be read: the stop may have taken, or not.
        provider.StopFailure = new ProviderFailure(FailureTypes.InvalidResponse, Retryable: true, OutcomeUnknown: true, RequestSent: true);

        var stop = await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);

        Assert.Equal(AgentCommandStatus.OutcomeUnknown, stop.Status);
        Assert.Equal(FailureTypes.InvalidResponse, stop.FailureType);
        var state = writer.Saved.Last();
        // Not "failed" on a stop that may not have taken: the poll, which reads it on, learns whether it did.
        Assert.Equal(before, state.CodingAgents["bc-1"].Status);
        Assert.Equal((TimelineEvents.Stopped, "bc-1", "outcome unknown"), (state.Timeline[^1].Event, state.Timeline[^1].AgentId, state.Timeline[^1].Detail));
    }

    [Fact]
    public async Task A_stop_cut_off_at_the_provider_by_shutdown_is_an_unknown_outcome_recorded_as_such_not_an_exception()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        using var shutdown = new CancellationTokenSource();
        // The provider has the request when the shutdown's grace runs out.
        provider.OnStop = shutdown.Cancel;

        var stop = await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", new EngineRoundTrips.Recorder(engine, writer), shutdown.Token);

        Assert.Equal(AgentCommandStatus.OutcomeUnknown, stop.Status);
        Assert.Equal(FailureTypes.ProviderUnavailable, stop.FailureType);
        Assert.Equal((TimelineEvents.Stopped, "outcome unknown"), (writer.Saved.Last().Timeline[^1].Event, writer.Saved.Last().Timeline[^1].Detail));
    }

    [Fact]
    public async Task A_stop_whose_caller_is_gone_before_it_is_sent_sends_and_records_nothing()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var saves = writer.Saved.Count;
        using var shutdown = new CancellationTokenSource();
        await shutdown.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() =>
            engine.StopAgentAsync(writer.Saved.Last(), "bc-1", new EngineRoundTrips.Recorder(engine, writer), shutdown.Token));

        Assert.Empty(provider.Stops);
        Assert.Equal(saves, writer.Saved.Count);
    }

    [Fact]
    public async Task A_stop_the_provider_refused_answers_the_providers_failure_type_and_records_nothing()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var saves = writer.Saved.Count;
        provider.StopFailure = new ProviderFailure(FailureTypes.RepositoryAccess, Retryable: false);

        var stop = await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);

        Assert.Equal((AgentCommandStatus.ProviderFailed, FailureTypes.RepositoryAccess), (stop.Status, stop.FailureType));
        Assert.Equal(saves, writer.Saved.Count);
    }

    /// <summary>The id by which the run's actor records a command once, though daprd makes the call again.</summary>
    [Fact]
    public async Task Each_command_taken_or_of_unknown_outcome_is_handed_to_be_recorded_with_an_id_of_its_own()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var recorder = new SeenRecorder(new EngineRoundTrips.Recorder(engine, writer));

        await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Add a test"), recorder, CancellationToken.None);
        await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Add a test"), recorder, CancellationToken.None);
        provider.StopFailure = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, RequestSent: true);
        await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", recorder, CancellationToken.None);

        Assert.Equal(3, recorder.Seen.Count);
        Assert.All(recorder.Seen, sent => Assert.False(string.IsNullOrEmpty(sent.CommandId)));
        Assert.Equal(3, recorder.Seen.Select(sent => sent.CommandId).Distinct().Count());
    }

    [Fact]
    public async Task A_stop_of_an_agent_that_ended_is_answered_with_its_end_even_if_it_cannot_be_recorded()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/3")), writer);
        var recorder = new RaceRecorder(new EngineRoundTrips.Recorder(engine, writer), () => throw new InvalidOperationException("store unreachable"));

        var stop = await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", recorder, CancellationToken.None);

        Assert.Equal(AgentCommandStatus.Done, stop.Status);
        Assert.Equal(CodingAgentStatus.Completed, stop.Agent!.Status);
    }

    [Fact]
    public async Task A_stop_or_follow_up_for_a_run_with_no_state_is_an_unknown_agent_and_saves_nothing()
    {
        var recorder = new EngineRoundTrips.Recorder(engine, writer);

        var stop = await engine.StopAgentAsync(null, "bc-1", recorder, CancellationToken.None);
        var followup = await engine.AddFollowupAsync(null, new AgentFollowup("bc-1", "Also fix the test"), recorder, CancellationToken.None);

        Assert.Equal((AgentCommandStatus.UnknownAgent, AgentCommandStatus.UnknownAgent), (stop.Status, followup.Status));
        Assert.Empty(writer.Saved);
    }

    [Fact]
    public async Task A_command_recorded_against_another_runs_state_is_an_unknown_agent_and_saves_nothing()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var saves = writer.Saved.Count;

        var outcome = await engine.RecordCommandAsync(writer.Saved.Last(), new AgentCommandSent(2, "bc-1", Stop: true, CommandId: "command-1"), writer);

        Assert.Equal(AgentCommandStatus.UnknownAgent, outcome.Status);
        Assert.Equal(saves, writer.Saved.Count);
        Assert.Equal(CodingAgentStatus.Pending, writer.Saved.Last().CodingAgents["bc-1"].Status);
    }

    [Fact]
    public async Task A_follow_up_starts_the_polls_back_off_again_from_its_first_interval()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        // Read at work: the first read changes its status, the next three see nothing new (the interval doubling each time).
        var state = writer.Saved.Last();
        for (var i = 0; i < 4; i++)
        {
            state = await WakeWhenDueAsync(state);
        }

        Assert.True(state.NextWakeAt() - time.GetUtcNow() > TimeSpan.FromMinutes(4));

        await engine.AddFollowupAsync(state, new AgentFollowup("bc-1", "Also add a test"), new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        state = await WakeWhenDueAsync(writer.Saved.Last());

        // One quiet read since the follow-up: twice the first interval, not the backed-off one it had before.
        Assert.Equal(time.GetUtcNow() + TimeSpan.FromMinutes(2), state.NextWakeAt());
    }

    [Fact]
    public async Task A_stop_of_an_agent_that_completed_puts_no_watch_on_it_while_another_agent_awaits_its_pull_request()
    {
        var (recorder, shop, web) = await ShopFollowedUpForItsPullRequestBesideWebAsync();
        // acme/web's agent completed with its own pull request.
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent(web, ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/web/pull/8")), writer);

        Assert.Equal(AgentCommandStatus.Done, (await engine.StopAgentAsync(writer.Saved.Last(), web, recorder, CancellationToken.None)).Status);
        var read = new ConcurrentQueue<string>();
        provider.OnRead = read.Enqueue;
        await WakeWhenDueAsync(writer.Saved.Last());

        // Its end and its pull request are known: only the agent awaiting its pull request is read.
        Assert.Equal([shop], read);
        Assert.Equal(CodingAgentStatus.Completed, writer.Saved.Last().CodingAgents[web].Status);
    }

    /// <summary>
    /// docs/api.md: a stop or follow-up the provider took is answered 200 even when it cannot be recorded. Retention may
    /// delete a settled run between the command's check and its record (a follow-up to its completed agent): the record
    /// finds no run and says the agent is unknown, which was answered 404, and the caller would send it again.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_command_the_provider_took_for_a_run_deleted_before_its_record_is_answered_done(bool stop)
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var deleted = new DeletedRunRecorder(logged, writer);

        var outcome = stop
            ? await logged.StopAgentAsync(writer.Saved.Last(), "bc-1", deleted, CancellationToken.None)
            : await logged.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Add a test too"), deleted, CancellationToken.None);

        Assert.Equal(AgentCommandStatus.Done, outcome.Status);
        Assert.Equal("bc-1", outcome.Agent!.Id);
        Assert.Equal(stop ? ["bc-1"] : [], provider.Stops);
        var line = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "AgentCommandRunDeleted");
        Assert.Equal(LogLevel.Warning, line.Level);
    }

    [Fact]
    public async Task Stopping_a_second_agent_keeps_the_first_one_given_up_on_watched()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        Assert.Equal(AgentCommandStatus.Done,
            (await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", recorder, CancellationToken.None)).Status);
        Assert.Equal(["bc-1"], writer.Saved.Last().Poll!.GivenUp!);

        Assert.Equal(AgentCommandStatus.Done,
            (await engine.StopAgentAsync(writer.Saved.Last(), "bc-2", recorder, CancellationToken.None)).Status);

        Assert.Equal(["bc-1", "bc-2"], writer.Saved.Last().Poll!.GivenUp!.Order());
    }

    /// <summary>Records a command as a host whose run is gone does: in no state.</summary>
    private sealed class DeletedRunRecorder(HandoffEngine engine, IRunStateWriter writer) : IRoundRecorder
    {
        public Task<HandoffResult> RecordLaunchesAsync(LaunchRoundAnswers answers) => throw new InvalidOperationException("no round in this test");

        public Task<PollVerdict> RecordPollAsync(PollAnswers answers) => throw new InvalidOperationException("no poll in this test");

        public Task<AgentCommandOutcome> RecordCommandAsync(AgentCommandSent sent) => engine.RecordCommandAsync(null, sent, writer);
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

    private sealed class SeenRecorder(IRoundRecorder inner) : IRoundRecorder
    {
        public List<AgentCommandSent> Seen { get; } = [];

        public Task<HandoffResult> RecordLaunchesAsync(LaunchRoundAnswers answers) => inner.RecordLaunchesAsync(answers);

        public Task<PollVerdict> RecordPollAsync(PollAnswers answers) => inner.RecordPollAsync(answers);

        public Task<AgentCommandOutcome> RecordCommandAsync(AgentCommandSent sent)
        {
            Seen.Add(sent);
            return inner.RecordCommandAsync(sent);
        }
    }
}
