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

// The shared fixture (engine, clock, scripted provider, writer; the helpers and test doubles the parts share) and the tests of triggers, completion events, the wake-up's turn and the JSON forms (HandoffEngine.cs).
/// <summary>The run's decisions, with a scripted provider and an in-memory writer.</summary>
public sealed partial class HandoffEngineTests
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
        // A liveness bound (it blocks a thread): 5 s could pass before a loaded machine sent the launch.
        provider.OnRead = _ => readWaitedForNothing = launched.Wait(TimeSpan.FromSeconds(30));

        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.True(readWaitedForNothing);
        Assert.Equal(LaunchPhase.Launched, state.FindLaunch("acme/web", 42)!.Phase);
        Assert.Equal(1, provider.Reads);
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
    public async Task A_late_redelivery_of_an_event_the_run_has_moved_past_does_not_put_its_snapshot_back()
    {
        // Pub/sub delivers at least once, sometimes minutes later, and events carry no order: the root cause's first
        // event (the run then meant to stop there) redelivered after the second (meant to go further, naming a second
        // repository) is one the run already replaced.
        var first = Trigger("acme/shop").Snapshot! with { Metadata = new RunMetadata("root_cause") };
        first = first with { Preferences = first.Preferences! with { AutomationHandoff = new AutomationHandoff("root_cause", null, 42) } };
        Assert.Equal(CompletionStatus.Stored, (await engine.AcceptAndFinishAsync(null, first, writer, LaunchTiming.Now, CancellationToken.None)).Status);
        var newer = Trigger("acme/shop", "acme/api").Snapshot! with
        {
            Metadata = new RunMetadata("open_pr"),
            Artifacts = new RunArtifacts(new RootCauseArtifact("The pool is never returned on timeout")),
        };
        newer = newer with { Preferences = newer.Preferences! with { AutomationHandoff = new AutomationHandoff("root_cause", null, 42) } };
        Assert.Equal(CompletionStatus.HandedOff, (await engine.AcceptAndFinishAsync(writer.Saved.Last(), newer, writer, LaunchTiming.Now, CancellationToken.None)).Status);
        var saves = writer.Saved.Count;

        var redelivered = await engine.AcceptAndFinishAsync(writer.Saved.Last(), first, writer, LaunchTiming.Now, CancellationToken.None);

        Assert.Equal(CompletionStatus.Stored, redelivered.Status);
        Assert.Equal(newer, writer.Saved.Last().Snapshot);
        Assert.Equal(saves, writer.Saved.Count);
        Assert.Equal(2, provider.Launches.Count);
    }

    [Fact]
    public async Task A_trigger_for_a_run_not_stored_is_an_unknown_run_when_it_carries_no_run_or_a_run_of_another_group()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);

        // Nothing stored, and no run given to launch from.
        var bare = await logged.TriggerAsync(1, null, new HandoffTrigger(456, 42), writer, CancellationToken.None);
        // The run it carries is group 456's, not the asking group's.
        var foreign = await logged.TriggerAsync(1, null, Trigger("acme/shop") with { GroupId = 999 }, writer, CancellationToken.None);

        Assert.Equal((TriggerStatus.UnknownRun, TriggerStatus.UnknownRun), (bare.Status, foreign.Status));
        Assert.Empty(writer.Saved);
        Assert.Empty(provider.Launches);
        // The runbook's HandoffUnknownRun, naming the group asked with.
        Assert.Equal(
            ["456", "999"],
            logger.Collector.GetSnapshot().Where(record => record.Id.Name == "HandoffUnknownRun").Select(record => record.GetStructuredStateValue("GroupId")));
    }

    [Fact]
    public async Task A_persons_trigger_carrying_a_snapshot_the_run_has_since_replaced_hands_off_with_the_one_it_carries()
    {
        // Two events of the root cause's step, the run not meant to go further: the second replaced the first.
        var first = Trigger("acme/shop").Snapshot! with { Artifacts = new RunArtifacts(new RootCauseArtifact("The pool is never returned on timeout")) };
        var second = first with { Artifacts = new RunArtifacts(new RootCauseArtifact("Pool exhausted under load")) };
        await engine.AcceptAndFinishAsync(null, first, writer, LaunchTiming.Now, CancellationToken.None);
        await engine.AcceptAndFinishAsync(writer.Saved.Last(), second, writer, LaunchTiming.Now, CancellationToken.None);
        Assert.True(writer.Saved.Last().Replaced(first));

        // A person's trigger is not a redelivery: what its caller sends of the same step is the run as it is now.
        await engine.TriggerAndFinishAsync(1, writer.Saved.Last(), new HandoffTrigger(456, 42, Snapshot: first), writer, CancellationToken.None);

        Assert.Contains("The pool is never returned on timeout", Assert.Single(provider.Launches).Prompt);
        Assert.Equal(first, writer.Saved.Last().Snapshot);
    }

    [Fact]
    public async Task A_completion_event_naming_no_group_is_rejected_and_saves_nothing()
    {
        var snapshot = Trigger("acme/shop").Snapshot! with { Group = null };

        var outcome = await engine.AcceptAndFinishAsync(null, snapshot, writer, LaunchTiming.Now, CancellationToken.None);

        Assert.Equal((CompletionStatus.Rejected, "the run has no group"), (outcome.Status, outcome.Reason));
        Assert.Empty(writer.Saved);
        Assert.Empty(provider.Launches);
    }

    [Fact]
    public async Task A_trigger_carrying_an_earlier_step_of_the_run_keeps_the_stored_snapshot_and_its_solution()
    {
        // The caller's copy of the run from before the solution's event, which the run has stored since.
        var rootCause = Trigger("acme/shop").Snapshot!;
        var solution = rootCause with { Artifacts = rootCause.Artifacts! with { Solution = new SolutionArtifact("Bound the pool") } };
        Assert.Equal(CompletionStatus.Stored, (await engine.AcceptAndFinishAsync(null, solution, writer, LaunchTiming.Now, CancellationToken.None)).Status);

        await engine.TriggerAndFinishAsync(1, writer.Saved.Last(), new HandoffTrigger(456, 42, Snapshot: rootCause), writer, CancellationToken.None);

        Assert.Contains("Bound the pool", Assert.Single(provider.Launches).Prompt);
        Assert.Equal(solution, writer.Saved.Last().Snapshot);
    }

    [Fact]
    public void A_run_remembers_the_snapshots_it_replaced_newest_last_and_at_most_eight()
    {
        var state = RunHandoffState.New(1);
        var snapshots = Enumerable.Range(1, 11).Select(i => new RunSnapshot(1, OrganizationId: i)).ToList();

        foreach (var snapshot in snapshots)
        {
            state = state.WithSnapshot(snapshot).WithSnapshot(snapshot with { });
        }

        // The current one is not among them; the oldest fell out; one saying the same as the current is no change.
        Assert.Equal(snapshots.Skip(2).Take(8).Select(RunSnapshot.ContentDigest), state.ReplacedSnapshots);
        Assert.False(state.Replaced(snapshots[^1]));
        Assert.True(state.Replaced(snapshots[^2] with { }));
        Assert.False(state.Replaced(snapshots[1]));
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
    public async Task A_runs_bounded_timeline_keeps_each_agents_latest_held_finish_and_follow_up_past_its_bound()
    {
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        var shop = writer.Saved.Last().Launches.Single(launch => launch.Repository == "acme/shop").AgentId!;
        var web = writer.Saved.Last().Launches.Single(launch => launch.Repository == "acme/web").AgentId!;
        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        // acme/shop's agent: a webhook's finish without its pull request held for a read, then a follow-up.
        await engine.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent(shop, ProviderAgentStatus.Finished)), writer);
        time.Advance(TimeSpan.FromSeconds(1));
        await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup(shop, "Open the pull request"), recorder, CancellationToken.None);

        // acme/web's agent is followed up until the bound would have dropped every older entry many times over.
        for (var i = 0; i < RunHandoffState.MaxTimelineEntries + 10; i++)
        {
            time.Advance(TimeSpan.FromSeconds(1));
            await engine.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup(web, "Also add a test"), recorder, CancellationToken.None);
        }

        // The latest entries up to the bound, after acme/shop's two, oldest first.
        var timeline = writer.Saved.Last().Timeline;
        Assert.Equal(RunHandoffState.MaxTimelineEntries + 2, timeline.Count);
        Assert.Equal([TimelineEvents.FinishReported, TimelineEvents.FollowupSent], timeline.Take(2).Select(entry => entry.Event));
        Assert.All(timeline.Take(2), entry => Assert.Equal(shop, entry.AgentId));
        Assert.All(timeline.Skip(2), entry => Assert.Equal((TimelineEvents.FollowupSent, web), (entry.Event, entry.AgentId)));
        Assert.Equal(time.GetUtcNow(), timeline[^1].At);
        Assert.Equal(time.GetUtcNow() - TimeSpan.FromSeconds(RunHandoffState.MaxTimelineEntries - 1), timeline[2].At);
    }

    [Fact]
    public async Task A_stop_is_the_timelines_newest_entry_when_other_agents_kept_entries_fill_its_bound()
    {
        // A run of 200 agents each followed up (50 repositories, four generations each): their latest follow-ups alone
        // fill the bound. A stop is still recorded, as the runbook has people look for it before sending it again.
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var followedUp = Enumerable.Range(0, RunHandoffState.MaxTimelineEntries).Select(i =>
            new TimelineEntry(time.GetUtcNow(), TimelineEvents.FollowupSent, $"acme/r{i % 50}", $"bc-other-{i}"));
        writer.Saved.Add(writer.Saved.Last() with { Timeline = [.. writer.Saved.Last().Timeline, .. followedUp] });
        time.Advance(TimeSpan.FromSeconds(1));

        var recorder = new EngineRoundTrips.Recorder(engine, writer);
        await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", recorder, CancellationToken.None);

        var timeline = writer.Saved.Last().Timeline;
        var newest = (timeline[^1].Event, timeline[^1].AgentId, timeline[^1].At);
        Assert.Equal((TimelineEvents.Stopped, "bc-1", time.GetUtcNow()), newest);
        // The other agents' follow-ups are all kept (the oldest as its agent's latest), the run's older entries dropped.
        var followups = timeline.Count(entry => entry.Event == TimelineEvents.FollowupSent);
        Assert.Equal(RunHandoffState.MaxTimelineEntries + 1, timeline.Count);
        Assert.Equal(RunHandoffState.MaxTimelineEntries, followups);
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

    private static HandoffTrigger Trigger(params string[] repositories) => new(456, 42, Snapshot: new RunSnapshot(
        1,
        Group: new RunGroup(456, "Pool timeout", "SHOP-1"),
        Artifacts: new RunArtifacts(new RootCauseArtifact("x")),
        Preferences: new HandoffPreferences(repositories.Select(r => (RepositoryPreference?)new RepositoryPreference("github", r.Split('/')[0], r.Split('/')[1])).ToList())));

    /// <summary>
    /// A trigger whose agents are not asked to open a pull request: a webhook's finish without one is then taken as it
    /// comes (one asked to open a pull request is read first, to confirm it).
    /// </summary>
    private static HandoffTrigger TriggerWithoutPullRequest(params string[] repositories) => Trigger(repositories) with { AutoCreatePr = false };

    /// <summary>Moves the clock to the run's next wake-up, and wakes it: the poll or round then due is made and recorded.</summary>
    private async Task<RunHandoffState> WakeWhenDueAsync(RunHandoffState state)
    {
        time.Advance(state.NextWakeAt()!.Value - time.GetUtcNow());
        return await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
    }

    /// <summary>As <see cref="WakeWhenDueAsync"/>, for a wake-up that may be due already (the clock then stays).</summary>
    private async Task<RunHandoffState> WakeNowOrWhenDueAsync(RunHandoffState state)
    {
        time.Advance(TimeSpan.FromTicks(Math.Max(0, (state.NextWakeAt()!.Value - time.GetUtcNow()).Ticks)));
        return await engine.WakeAndFinishAsync(state, writer, CancellationToken.None);
    }

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

        public AgentCommandSent? Command { get; private set; }

        public Task<AgentCommandOutcome> RecordCommandAsync(AgentCommandSent sent)
        {
            Command = sent;
            return Task.FromResult(new AgentCommandOutcome(AgentCommandStatus.Done));
        }
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

    /// <summary>
    /// What a provider client that faults throws: a bug's exception, or a cancellation no caller asked for (a client's own
    /// time-out not turned into a failure), which must be a fault too, not a shutdown that ends the round or the command.
    /// </summary>
    private static Exception ClientFault(bool unaskedCancellation) =>
        unaskedCancellation ? new TaskCanceledException("the client's own time-out") : new InvalidOperationException("a bug in a provider client");

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

        /// <summary>
        /// A <see cref="Delay"/> for a call that never answers in the test's time: 20 s of real time, far past the fake
        /// clock's deadline the test moves to. Bounded, so that a round that fails to cut the call off fails its test
        /// with the call's late answer instead of hanging the run.
        /// </summary>
        public const int Unanswered = 20_000;
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

        /// <summary>
        /// When set, a launch waits until this many are in flight together, up to 30 s: a bound for launches made one at a
        /// time, which a loaded machine starting parallel ones late does not reach.
        /// </summary>
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

                await Task.WhenAny(allInFlight.Task, Task.Delay(TimeSpan.FromSeconds(30), cancellationToken));
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

        public bool CanStop => !CannotStop;

        /// <summary>Its lookup reads a reference in the prompt, as GitHub's tasks, not the branch asked for.</summary>
        public bool FindsByReference { get; set; }

        public bool FindsAgentsByBranch => !FindsByReference;

        /// <summary>What a read of an agent (the poll) answers.</summary>
        public ProviderAgentStatus ReadStatus { get; set; } = ProviderAgentStatus.Running;

        public string? ReadPrUrl { get; set; }

        /// <summary>The repository a read names (null: none, as GitHub's tasks).</summary>
        public string? ReadRepository { get; set; }

        public Task<ProviderResult<ProviderAgent?>> FindAgentByBranchAsync(RepositoryName repository, string branchName, DateTimeOffset? firstSentAt, CancellationToken cancellationToken) =>
            Task.FromResult(FindFailure is { } failure ? ProviderResult<ProviderAgent?>.Failed(failure) : ProviderResult<ProviderAgent?>.Success(Existing?.BranchName == branchName ? Existing : null));

        /// <summary>What a lookup answers when set (an incomplete one, say).</summary>
        public ProviderFailure? FindFailure { get; set; }

        /// <summary>Stop and follow-up throw <see cref="CommandFault"/>, as a provider client meeting an answer of another shape might.</summary>
        public bool CommandsFault { get; set; }

        public Func<Exception> CommandFault { get; set; } = () => new InvalidOperationException("unexpected answer");

        /// <summary>What a stop answers when set (the provider out of reach, say); null: accepted, unless <see cref="CannotStop"/>.</summary>
        public ProviderFailure? StopFailure { get; set; }

        /// <summary>The agents each stop was sent to, in order.</summary>
        public ConcurrentQueue<string> Stops { get; } = new();

        /// <summary>Runs as each stop reaches the provider (a shutdown that cuts it off there, say).</summary>
        public Action? OnStop { get; set; }

        public Task<ProviderResult<bool>> StopAsync(string agentId, CancellationToken cancellationToken)
        {
            Stops.Enqueue(agentId);
            if (OnStop is { } onStop)
            {
                onStop();
                cancellationToken.ThrowIfCancellationRequested();
            }

            return CommandsFault ? throw CommandFault() : Task.FromResult(
                CannotStop ? ProviderResult<bool>.Failed(new ProviderFailure(FailureTypes.NotSupported, Retryable: false, RequestSent: false))
                : StopFailure is { } failure ? ProviderResult<bool>.Failed(failure)
                : ProviderResult<bool>.Success(true));
        }

        /// <summary>What a follow-up answers; null: accepted.</summary>
        public ProviderFailure? FollowupFailure { get; set; }

        public Task<ProviderResult<bool>> AddFollowupAsync(string agentId, string text, CancellationToken cancellationToken) =>
            CommandsFault ? throw CommandFault()
            : Task.FromResult(FollowupFailure is { } failure ? ProviderResult<bool>.Failed(failure) : ProviderResult<bool>.Success(true));
    }
}
