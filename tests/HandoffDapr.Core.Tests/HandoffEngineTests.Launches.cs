using System.Text.Json;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Serialization;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Core.Tests;

// Launches (HandoffEngine.Launches.cs): which repositories a trigger launches (caps, generations, prompts), launch rounds and their deadlines, retries, lookups of unknown launches, late answers adopted.
public sealed partial class HandoffEngineTests
{
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
    public async Task A_round_finished_exactly_90_percent_of_the_in_flight_timeout_after_its_intent_was_saved_sends_nothing()
    {
        var started = await engine.TriggerAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        // 108 s of the 2-minute timeout: the round's time is up to the tick, and the answer would come after its deadline.
        time.Advance(TimeSpan.FromSeconds(108));

        await engine.FinishAsync(started.Round!, writer, CancellationToken.None);

        Assert.Empty(provider.Launches);
        var launch = Assert.Single(writer.Saved.Last().Launches);
        Assert.Equal((LaunchPhase.RetryScheduled, 0), (launch.Phase, launch.Attempts));
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
        Assert.Contains(adopted.Timeline, entry => entry.Event == TimelineEvents.Reconciled && entry.AgentId == agentId && entry.Detail == "answered after its deadline");

        // The takeover finds the same agent on the branch; its answer changes nothing, and nothing was launched twice.
        provider.Existing = late.Attempts[0].Agent;
        await engine.FinishAsync(takeover, writer, CancellationToken.None);
        Assert.Equal(adopted.Launches, writer.Saved.Last().Launches);
        Assert.Single(writer.Saved.Last().CodingAgents);
        Assert.Single(provider.Launches);
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
        var state = await WakeWhenDueAsync(writer.Saved.Last());
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
            state = await WakeWhenDueAsync(state);
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
    public async Task A_completion_event_launches_a_repository_whose_hand_over_to_another_integration_failed()
    {
        // A person handed acme/shop to integration 43, whose key the provider refuses: that launch failed for good and
        // holds no agent. The event then hands the run to its own integration (42), which launches the repository in a
        // new generation; only a launch under way or an agent not failed holds a repository against an event.
        var both = new HandoffEngine(
            new TwoIntegrationCatalog(new Integration(42, provider), new Integration(43, provider)), new HandoffEngineOptions(), new RetryPolicy(new RetryOptions(), () => 0.5), time, NullLogger<HandoffEngine>.Instance);
        provider.Next = new ProviderFailure(FailureTypes.InvalidCredentials, Retryable: false, StatusCode: 401);
        await both.TriggerAndFinishAsync(1, null, Trigger("acme/shop") with { IntegrationId = 43 }, writer, CancellationToken.None);
        Assert.Equal((LaunchPhase.Failed, FailureTypes.InvalidCredentials), (writer.Saved.Last().FindLaunch("acme/shop", 43)!.Phase, writer.Saved.Last().FindLaunch("acme/shop", 43)!.FailureType));
        var snapshot = Trigger("acme/shop").Snapshot! with { Metadata = new RunMetadata("open_pr") };
        snapshot = snapshot with { Preferences = snapshot.Preferences! with { AutomationHandoff = new AutomationHandoff("root_cause", null, 42) } };

        var outcome = await both.AcceptAndFinishAsync(writer.Saved.Last(), snapshot, writer, LaunchTiming.Now, CancellationToken.None);

        Assert.Equal(CompletionStatus.HandedOff, outcome.Status);
        Assert.Equal(2, provider.Launches.Count);
        var launched = writer.Saved.Last().FindLaunch("acme/shop", 42)!;
        Assert.Equal((2, LaunchPhase.Launched), (launched.Generation, launched.Phase));
        Assert.Equal(launched.AgentId, Assert.Single(outcome.Result.Successes).CodingAgentState.Id);
        Assert.Empty(outcome.Result.Failures);
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
        // (The wake-up due first is the read of the stopped agent's finish, told without its pull request.)
        catalog.Present = false;
        time.Advance(writer.Saved.Last().FindLaunch("acme/shop", 42)!.NextAttemptAt!.Value - time.GetUtcNow());
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

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Provider_client_fault_on_one_repository_keeps_the_others_answers_and_leaves_it_unknown(bool unaskedCancellation)
    {
        provider.OnLaunch = request =>
        {
            if (request.Repository.Name == "broken")
            {
                throw ClientFault(unaskedCancellation);
            }
        };

        var outcome = await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop", "acme/broken"), writer, CancellationToken.None);

        Assert.Equal(["acme/shop"], outcome.Result.Successes.Select(success => success.RepoName));
        var saved = writer.Saved.Last().Launches;
        Assert.Equal(LaunchPhase.Launched, saved.Single(launch => launch.Repository == "acme/shop").Phase);
        Assert.Equal(LaunchPhase.OutcomeUnknown, saved.Single(launch => launch.Repository == "acme/broken").Phase);
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

    [Fact]
    public async Task A_repository_named_with_and_without_its_dot_git_suffix_is_launched_once()
    {
        // GitHub drops a ".git" suffix from a repository's name: acme/shop.git is acme/shop.
        var snapshot = Trigger("acme/shop", "acme/shop.git").Snapshot! with { Metadata = new RunMetadata("open_pr") };
        snapshot = snapshot with { Preferences = snapshot.Preferences! with { AutomationHandoff = new AutomationHandoff("root_cause", null, 42) } };

        var outcome = await engine.AcceptAndFinishAsync(null, snapshot, writer, LaunchTiming.Now, CancellationToken.None);

        Assert.Equal(CompletionStatus.HandedOff, outcome.Status);
        Assert.Equal("acme/shop", Assert.Single(provider.Launches).Repository.FullName);
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

    [Theory]
    [InlineData(ProviderAgentStatus.Error)]
    [InlineData(ProviderAgentStatus.Expired)]
    [InlineData(ProviderAgentStatus.Stopped)]
    public async Task An_agent_found_by_the_lookup_already_ended_without_finishing_is_adopted_failed_and_its_launch_says_agent_failed(ProviderAgentStatus ended)
    {
        // The lost answer's agent ended before the lookup found it: the launch has its agent (launched, not sent again),
        // and says why it came to nothing, as it does when a report ends an agent it already follows.
        provider.Next = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true);
        var first = await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        provider.Existing = new ProviderAgent("bc-ended", ended, BranchName: writer.Saved.Last().Launches[0].BranchName);

        time.Advance(Assert.Single(first.Result.Retries).RetryAt - time.GetUtcNow());
        var state = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.Single(provider.Launches);
        Assert.Equal(CodingAgentStatus.Failed, state.CodingAgents["bc-ended"].Status);
        var launch = Assert.Single(state.Launches);
        Assert.Equal((LaunchPhase.Launched, "bc-ended", FailureTypes.AgentFailed), (launch.Phase, launch.AgentId, launch.FailureType));
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
        var last = await FiveAttemptsWhoseAnswersWereLostAsync();
        provider.Always = null;
        provider.Existing = new ProviderAgent("bc-lost", ProviderAgentStatus.Running, BranchName: last.BranchName);

        time.Advance(TimeSpan.FromHours(1));
        var looked = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.Equal(5, provider.Launches.Count);
        Assert.Equal((LaunchPhase.Launched, "bc-lost"), (looked.Launches[0].Phase, looked.Launches[0].AgentId));
    }

    /// <summary>Launches acme/shop for run 1 and wakes it until its fifth attempt's answer too was lost (a 504 each): the launch after it.</summary>
    private async Task<RepositoryLaunch> FiveAttemptsWhoseAnswersWereLostAsync()
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
        return last;
    }

    [Fact]
    public async Task A_last_attempt_whose_answer_was_lost_ends_when_its_lookup_finds_no_agent_and_is_not_sent_again()
    {
        await LaunchUntilRetriesRunOut(new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, StatusCode: 504));

        var exhausted = writer.Saved.Last().Launches[0];
        Assert.Equal((LaunchPhase.Failed, FailureTypes.RetriesExhausted, false), (exhausted.Phase, exhausted.FailureType, exhausted.OutcomeUnknown));
        Assert.Equal(5, provider.Launches.Count);
    }

    /// <summary>
    /// The lookup after the fifth lost answer is the launch's last call. When it cannot finish either, the launch fails
    /// there (retries_exhausted, an agent may exist, nothing left to wake for), as one whose lookup found nothing does.
    /// </summary>
    [Fact]
    public async Task A_last_lookup_that_cannot_finish_fails_the_launch_at_once_and_leaves_nothing_to_wake_for()
    {
        await FiveAttemptsWhoseAnswersWereLostAsync();
        provider.FindFailure = new ProviderFailure(FailureTypes.ReconcileIncomplete, Retryable: true, OutcomeUnknown: true);
        time.Advance(TimeSpan.FromHours(1));

        var looked = await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        var launch = Assert.Single(looked.Launches);
        Assert.Equal((LaunchPhase.Failed, FailureTypes.RetriesExhausted, true), (launch.Phase, launch.FailureType, launch.OutcomeUnknown));
        Assert.Null(looked.NextWakeAt());
        Assert.Equal(TimelineEvents.LaunchFailed, looked.Timeline[^1].Event);
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
    public async Task Attempt_unanswered_when_its_in_flight_time_runs_out_is_saved_as_unknown_before_anyone_reconciles_it()
    {
        // Past the in-flight timeout another owner (a second process on the same file) would take the launch for
        // lost and reconcile it while this call is still out: the attempt must let go first.
        provider.Delay = _ => Provider.Unanswered;
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
        provider.Delay = _ => Provider.Unanswered;
        provider.OnLaunch = _ => time.Advance(TimeSpan.FromMinutes(2));

        await oneAtATime.TriggerAndFinishAsync(1, null, Trigger("acme/a", "acme/b"), writer, CancellationToken.None);

        Assert.Single(provider.Launches);
        var launches = writer.Saved.Last().Launches;
        Assert.Equal((LaunchPhase.OutcomeUnknown, 1), (launches[0].Phase, launches[0].Attempts));
        Assert.Equal((LaunchPhase.RetryScheduled, 0), (launches[1].Phase, launches[1].Attempts));
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
        provider.Delay = _ => Provider.Unanswered;
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
        provider.Delay = _ => Provider.Unanswered;
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
    public async Task Refusals_of_a_snapshot_are_the_refusals_a_trigger_of_it_answers_with_printable_names()
    {
        var trigger = Trigger("acme/shop");
        RepositoryPreference?[] refused =
        [
            new("github", "..", ".."),
            new("github", "\u202eevil", "r"),
            new("github", "acme", "api", BranchName: "ma..in"),
            new("gitlab", "acme", "web"),
            null,
        ];
        trigger = trigger with { Snapshot = trigger.Snapshot! with { Preferences = new HandoffPreferences([.. trigger.Snapshot!.Preferences!.Repositories!, .. refused]) } };

        var outcome = await engine.TriggerAndFinishAsync(1, null, trigger, writer, CancellationToken.None);
        var derived = HandoffEngine.Refusals(writer.Saved.Last().Snapshot);

        Assert.Equal(outcome.Result.Failures, derived);
        Assert.Equal(
            [("../..", FailureTypes.InvalidRepository), ("?evil/r", FailureTypes.InvalidRepository), ("acme/api", FailureTypes.InvalidRepository), ("acme/web", FailureTypes.InvalidRepository)],
            derived.Select(failure => (failure.RepoName, failure.FailureType)));
    }

    [Fact]
    public async Task Refusals_of_a_snapshot_name_a_repository_refused_twice_twice_as_a_trigger_of_it_answers()
    {
        var trigger = Trigger("acme/shop");
        RepositoryPreference gitlab = new("gitlab", "acme", "web");
        trigger = trigger with { Snapshot = trigger.Snapshot! with { Preferences = new HandoffPreferences([.. trigger.Snapshot!.Preferences!.Repositories!, gitlab, gitlab]) } };

        var outcome = await engine.TriggerAndFinishAsync(1, null, trigger, writer, CancellationToken.None);
        var derived = HandoffEngine.Refusals(writer.Saved.Last().Snapshot);

        Assert.Equal(outcome.Result.Failures, derived);
        Assert.Equal(["acme/web", "acme/web"], derived.Select(failure => failure.RepoName));
    }

    [Fact]
    public async Task A_repository_whose_host_is_blank_is_on_github_as_one_that_names_none()
    {
        var trigger = Trigger("acme/shop");
        RepositoryPreference?[] repositories = [new("", "acme", "shop"), new("  ", "acme", "web"), new(null, "acme", "api")];
        trigger = trigger with { Snapshot = trigger.Snapshot! with { Preferences = new HandoffPreferences(repositories) } };

        var outcome = await engine.TriggerAndFinishAsync(1, null, trigger, writer, CancellationToken.None);

        Assert.Empty(outcome.Result.Failures);
        Assert.Empty(HandoffEngine.Refusals(writer.Saved.Last().Snapshot));
        Assert.Equal(["acme/api", "acme/shop", "acme/web"], provider.Launches.Select(launch => launch.Repository.FullName).Order());
    }

    [Fact]
    public async Task Refusals_of_a_snapshot_without_repositories_are_its_no_repositories_answer()
    {
        var trigger = Trigger();

        var outcome = await engine.TriggerAsync(1, null, trigger, writer, CancellationToken.None);

        Assert.Equal(outcome.Result.Failures, HandoffEngine.Refusals(writer.Saved.Last().Snapshot));
        Assert.Equal(FailureTypes.NoRepositories, Assert.Single(HandoffEngine.Refusals(trigger.Snapshot)).FailureType);
        Assert.Empty(HandoffEngine.Refusals(Trigger("acme/shop").Snapshot));
        Assert.Empty(HandoffEngine.Refusals(null));
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
        // The same state as the previous version stored it: no outcome_unknown, so whether an agent may exist is not known.
        var legacy = await FailedLaunchAsThePreviousVersionStoredItAsync(attemptsMade: true);
        provider.Existing = new ProviderAgent("bc-lost", ProviderAgentStatus.Running, BranchName: legacy.Launches[0].BranchName);

        var retried = await engine.TriggerAndFinishAsync(1, legacy, Trigger("acme/shop"), writer, CancellationToken.None);

        Assert.Single(provider.Launches);
        Assert.Equal("bc-lost", Assert.Single(retried.Result.Successes).CodingAgentState!.Id);
    }

    [Fact]
    public async Task Manual_retry_of_a_failed_launch_stored_before_its_outcome_was_recorded_without_an_attempt_is_sent_at_once()
    {
        // As the previous version stored a launch refused before any call: no outcome_unknown, and no attempt made, so no
        // agent of it can exist. Looking first would never end where the lookup cannot finish (a busy repository).
        var legacy = await FailedLaunchAsThePreviousVersionStoredItAsync(attemptsMade: false);
        provider.FindFailure = new ProviderFailure(FailureTypes.ReconcileIncomplete, Retryable: true, OutcomeUnknown: true);

        var retried = await engine.TriggerAndFinishAsync(1, legacy, Trigger("acme/shop"), writer, CancellationToken.None);

        Assert.Equal(2, provider.Launches.Count);
        Assert.Single(retried.Result.Successes);
    }

    /// <summary>
    /// A run whose launch failed for good (a 401), stored as the previous version stored it: without
    /// <c>outcome_unknown</c>, and with no attempt counted where <paramref name="attemptsMade"/> is false.
    /// </summary>
    private async Task<RunHandoffState> FailedLaunchAsThePreviousVersionStoredItAsync(bool attemptsMade)
    {
        provider.Next = new ProviderFailure(FailureTypes.InvalidCredentials, Retryable: false, StatusCode: 401);
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var json = System.Text.Json.Nodes.JsonNode.Parse(JsonSerializer.Serialize(writer.Saved.Last(), HandoffJsonContext.Default.RunHandoffState))!;
        Assert.True(json["launches"]![0]!.AsObject().Remove("outcome_unknown"));
        if (!attemptsMade)
        {
            json["launches"]![0]!["attempts"] = 0;
        }

        var legacy = JsonSerializer.Deserialize(json.ToJsonString(), HandoffJsonContext.Default.RunHandoffState)!;
        Assert.Null(legacy.Launches[0].OutcomeUnknown);
        return legacy;
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
    public async Task A_completion_event_launches_nothing_on_a_repository_a_person_handed_to_another_integration_and_answers_with_its_agent()
    {
        // A person handed acme/shop to integration 43, whose agent is at work. The run's event (integration 42) names
        // acme/shop and acme/api: only acme/api is launched, and acme/shop is answered with 43's agent.
        var both = new HandoffEngine(
            new TwoIntegrationCatalog(new Integration(42, provider), new Integration(43, provider)), new HandoffEngineOptions(), new RetryPolicy(new RetryOptions(), () => 0.5), time, NullLogger<HandoffEngine>.Instance);
        await both.TriggerAndFinishAsync(1, null, Trigger("acme/shop") with { IntegrationId = 43 }, writer, CancellationToken.None);
        var held = writer.Saved.Last().FindLaunch("acme/shop", 43)!;
        var snapshot = Trigger("acme/shop", "acme/api").Snapshot! with { Metadata = new RunMetadata("open_pr") };
        snapshot = snapshot with { Preferences = snapshot.Preferences! with { AutomationHandoff = new AutomationHandoff("root_cause", null, 42) } };

        var outcome = await both.AcceptAndFinishAsync(writer.Saved.Last(), snapshot, writer, LaunchTiming.Now, CancellationToken.None);

        Assert.Equal(CompletionStatus.HandedOff, outcome.Status);
        Assert.Equal(["acme/shop", "acme/api"], provider.Launches.Select(request => request.Repository.FullName));
        var state = writer.Saved.Last();
        Assert.Null(state.FindLaunch("acme/shop", 42));
        Assert.Equal(
            [("acme/shop", held.AgentId), ("acme/api", state.FindLaunch("acme/api", 42)!.AgentId)],
            outcome.Result.Successes.Select(success => (success.RepoName, (string?)success.CodingAgentState.Id)));
        Assert.Empty(outcome.Result.Failures);
    }

    [Fact]
    public async Task A_completion_event_for_a_repository_whose_relaunch_failed_unknown_behind_an_agent_that_finished_answers_with_that_agent()
    {
        // The relaunch (generation 2) failed while its agent may exist; generation 1's agent finished after all. An event
        // launches nothing there, and its answer is the agent that holds the repository, not the failed relaunch.
        await RelaunchLostBehindAStoppedAgentThatFinishesAsync(engine);
        var state = writer.Saved.Last();
        state = state with { Launches = [.. state.Launches.Select(launch => launch.Generation == 2 ? launch with { Phase = LaunchPhase.Failed, NextAttemptAt = null, FailureType = FailureTypes.RetriesExhausted, OutcomeUnknown = true } : launch)] };
        var snapshot = Trigger("acme/shop").Snapshot! with { Metadata = new RunMetadata("open_pr") };
        snapshot = snapshot with { Preferences = snapshot.Preferences! with { AutomationHandoff = new AutomationHandoff("root_cause", null, 42) } };
        var launchesBefore = provider.Launches.Count;

        var outcome = await engine.AcceptAndFinishAsync(state, snapshot, writer, LaunchTiming.Now, CancellationToken.None);

        Assert.Equal(launchesBefore, provider.Launches.Count);
        Assert.Equal("bc-1", Assert.Single(outcome.Result.Successes).CodingAgentState.Id);
        Assert.Empty(outcome.Result.Failures);
    }

    [Fact]
    public async Task Each_retryable_failure_of_a_launch_waits_longer_before_its_next_attempt()
    {
        // 30 s, 2 min, 8 min (the jitter at its middle): an unavailable provider is not asked again every 30 seconds.
        var policy = new RetryPolicy(new RetryOptions(), () => 0.5);
        provider.Always = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, StatusCode: 503);
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var waits = new List<TimeSpan> { writer.Saved.Last().Launches[0].NextAttemptAt!.Value - time.GetUtcNow() };
        for (var attempt = 2; attempt <= 3; attempt++)
        {
            var state = await WakeWhenDueAsync(writer.Saved.Last());
            waits.Add(state.Launches[0].NextAttemptAt!.Value - time.GetUtcNow());
        }

        Assert.Equal(3, writer.Saved.Last().Launches[0].Attempts);
        Assert.Equal([policy.DelayAfter(1, null), policy.DelayAfter(2, null), policy.DelayAfter(3, null)], waits);
        Assert.Equal([TimeSpan.FromSeconds(30), TimeSpan.FromMinutes(2), TimeSpan.FromMinutes(8)], waits);
    }

    /// <summary>
    /// Cursor may put an agent on a branch of its own naming (its API docs' example answers another branch than the one
    /// asked for). The launch is taken as it is; but a launch whose answer is lost is looked for by its branch, and would
    /// be launched again, so the first renamed branch is said. Not for a provider found by a reference in its prompt.
    /// </summary>
    [Theory]
    [InlineData("cursor/fix-pool-1234", false, true)]
    [InlineData("cursor/fix-pool-1234", true, false)]
    [InlineData(null, false, false)]
    public async Task An_agent_put_on_another_branch_than_asked_is_taken_and_logged_where_lookups_go_by_branch(
        string? shownBranch, bool findsByReference, bool logged)
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logging = LoggingTo(logger);
        provider.FindsByReference = findsByReference;
        provider.OnLaunch = request => provider.AnswerWith = new ProviderAgent(
            "bc-7", ProviderAgentStatus.Creating, BranchName: shownBranch ?? request.BranchName);

        await logging.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);

        var launch = Assert.Single(writer.Saved.Last().Launches);
        Assert.Equal((LaunchPhase.Launched, "bc-7"), (launch.Phase, launch.AgentId));
        var lines = logger.Collector.GetSnapshot().Where(record => record.Id.Name == "LaunchBranchRenamed").ToList();
        Assert.Equal(logged ? 1 : 0, lines.Count);
        if (logged)
        {
            Assert.Equal(Microsoft.Extensions.Logging.LogLevel.Warning, lines[0].Level);
            Assert.Equal((launch.BranchName, shownBranch), (lines[0].GetStructuredStateValue("RequestedBranch"), lines[0].GetStructuredStateValue("ShownBranch")));
        }
    }

    [Fact]
    public async Task An_agent_of_another_repository_answering_a_launch_or_its_lookup_is_not_taken_and_the_launch_is_looked_for_again()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        provider.AnswerWith = new ProviderAgent("bc-web", ProviderAgentStatus.Creating, Repository: "acme/web");

        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);

        var launch = Assert.Single(writer.Saved.Last().Launches);
        Assert.Equal((LaunchPhase.OutcomeUnknown, FailureTypes.InvalidResponse, (string?)null), (launch.Phase, launch.FailureType, launch.AgentId));
        Assert.Empty(writer.Saved.Last().CodingAgents);
        var answered = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "AgentReportOfAnotherRepository");
        Assert.Equal(("launch", "bc-web", "acme/web"), (answered.GetStructuredStateValue("Source"), answered.GetStructuredStateValue("AgentId"), answered.GetStructuredStateValue("ReportedRepository")));

        // The next attempt looks first, and its lookup finds an agent on the launch's branch that names acme/web too.
        logger.Collector.Clear();
        provider.Existing = new ProviderAgent("bc-web-2", ProviderAgentStatus.Running, BranchName: launch.BranchName, Repository: "acme/web");
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        var state = await logged.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.Equal((LaunchPhase.OutcomeUnknown, (string?)null), (state.Launches[0].Phase, state.Launches[0].AgentId));
        var found = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "AgentReportOfAnotherRepository");
        Assert.Equal(("reconcile", "bc-web-2"), (found.GetStructuredStateValue("Source"), found.GetStructuredStateValue("AgentId")));
        Assert.Single(provider.Launches);
    }

    [Fact]
    public async Task A_relaunch_answered_with_the_agent_its_earlier_generation_follows_does_not_take_it()
    {
        // bc-1 (generation 1) is stopped; the relaunch's answer names bc-1 again (a provider answering garbage).
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await engine.StopAgentAsync(writer.Saved.Last(), "bc-1", new EngineRoundTrips.Recorder(engine, writer), CancellationToken.None);
        provider.AnswerAgentId = "bc-1";

        await engine.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/shop"), writer, CancellationToken.None);

        var state = writer.Saved.Last();
        Assert.Equal(1, state.LaunchOfAgent("bc-1")!.Generation);
        Assert.Single(state.Launches, launch => launch.AgentId == "bc-1");
        var relaunch = state.FindLaunch("acme/shop", 42)!;
        // Its own agent may exist: looked for before anything is launched again.
        Assert.Equal((2, LaunchPhase.OutcomeUnknown, FailureTypes.InvalidResponse), (relaunch.Generation, relaunch.Phase, relaunch.FailureType));
    }

    [Fact]
    public async Task A_rounds_answers_are_dropped_and_logged_when_the_run_is_gone_another_run_or_their_count_is_not_the_rounds()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        var started = await logged.TriggerAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var holding = new HoldingRecorder();
        await logged.FinishRoundAsync(started.Round!, holding, CancellationToken.None);
        var answers = holding.Launches!;
        var intent = writer.Saved.Last();
        var saves = writer.Saved.Count;

        Assert.Same(HandoffResult.Empty, await logged.CompleteRoundAsync(null, answers, writer));
        Assert.Same(HandoffResult.Empty, await logged.CompleteRoundAsync(intent with { RunId = 2 }, answers, writer));
        Assert.Same(HandoffResult.Empty, await logged.CompleteRoundAsync(intent, answers with { Attempts = [] }, writer));

        Assert.Equal(saves, writer.Saved.Count);
        Assert.Equal(3, logger.Collector.GetSnapshot().Count(record => record.Id.Name == "LaunchRoundDropped"));
        // The run's own state still takes them.
        Assert.Single((await logged.CompleteRoundAsync(intent, answers, writer)).Successes);
        Assert.Equal(LaunchPhase.Launched, writer.Saved.Last().Launches[0].Phase);
    }

    [Fact]
    public async Task A_snapshot_without_preferences_is_answered_no_repositories()
    {
        var bare = new RunSnapshot(1, Group: new RunGroup(456, "Pool timeout", "SHOP-1"), Artifacts: new RunArtifacts(new RootCauseArtifact("x")));

        var outcome = await engine.TriggerAsync(1, null, new HandoffTrigger(456, 42, Snapshot: bare), writer, CancellationToken.None);

        Assert.Equal(FailureTypes.NoRepositories, Assert.Single(outcome.Result.Failures).FailureType);
        Assert.Equal(FailureTypes.NoRepositories, Assert.Single(HandoffEngine.Refusals(bare)).FailureType);
        Assert.Empty(provider.Launches);
    }

    [Fact]
    public async Task A_late_answer_naming_the_agent_another_launch_has_found_since_is_logged_as_that_launchs_and_changes_nothing()
    {
        // Both launches' answers (one agent, bc-dup, for both: a provider answering garbage) come after their deadline.
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        provider.AnswerAgentId = "bc-dup";
        var started = await logged.TriggerAsync(1, null, Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        var holding = new HoldingRecorder();
        await logged.FinishRoundAsync(started.Round!, holding, CancellationToken.None);
        // The takeover finds bc-dup on acme/web's branch, and launches acme/shop anew.
        provider.AnswerAgentId = null;
        provider.Existing = new ProviderAgent("bc-dup", ProviderAgentStatus.Running, BranchName: writer.Saved.Last().FindLaunch("acme/web", 42)!.BranchName);
        time.Advance(TimeSpan.FromMinutes(3));
        var taken = await logged.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal("bc-dup", taken.FindLaunch("acme/web", 42)!.AgentId);
        var shopsAgent = taken.FindLaunch("acme/shop", 42)!.AgentId;
        Assert.NotNull(shopsAgent);

        await logged.CompleteRoundAsync(taken, holding.Launches!, writer);

        Assert.Equal(taken.Launches, writer.Saved.Last().Launches);
        var line = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "AgentOfAnotherLaunch");
        Assert.Equal(("acme/shop", "bc-dup", "acme/web"), (line.GetStructuredStateValue("Repository"), line.GetStructuredStateValue("AgentId"), line.GetStructuredStateValue("OtherRepository")));
        Assert.DoesNotContain(logger.Collector.GetSnapshot(), record => record.Id.Name == "AgentNotFollowed");
    }

    [Fact]
    public async Task A_late_answer_naming_an_agent_of_another_repository_is_not_adopted_by_the_attempt_that_took_over()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        provider.AnswerWith = new ProviderAgent("bc-web", ProviderAgentStatus.Creating, Repository: "acme/web");
        var started = await logged.TriggerAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var holding = new HoldingRecorder();
        await logged.FinishRoundAsync(started.Round!, holding, CancellationToken.None);

        var line = await AnswerAfterATakeOverAsync(logged, logger, holding);

        Assert.Equal(("launch", "bc-web"), (line.GetStructuredStateValue("Source"), line.GetStructuredStateValue("AgentId")));
    }

    [Fact]
    public async Task A_late_lookups_answer_naming_an_agent_of_another_repository_is_logged_as_the_reconciles()
    {
        // Attempt 1's answer is lost; attempt 2 looks first, and its lookup finds an agent on the launch's branch that
        // names acme/web, but answers after attempt 3 took over.
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        provider.Next = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true);
        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var lost = writer.Saved.Last();
        provider.Existing = new ProviderAgent("bc-web", ProviderAgentStatus.Running, BranchName: lost.Launches[0].BranchName, Repository: "acme/web");
        time.Advance(lost.NextWakeAt()!.Value - time.GetUtcNow());
        var lookup = (await logged.WakeAsync(lost, writer, CancellationToken.None)).Round!;
        var holding = new HoldingRecorder();
        await logged.FinishRoundAsync(lookup, holding, CancellationToken.None);
        Assert.True(holding.Launches!.Attempts[0].Reconciled);

        var line = await AnswerAfterATakeOverAsync(logged, logger, holding);

        Assert.Equal(("reconcile", "bc-web"), (line.GetStructuredStateValue("Source"), line.GetStructuredStateValue("AgentId")));
        Assert.Equal("Run 1: a reconcile report about agent bc-web names the repository acme/web, not acme/shop it was launched on; not applied", line.Message);
    }

    /// <summary>
    /// Lets the held round's deadline pass so the next attempt takes over, then gives the held answers back: they change
    /// nothing, and the one line they log (of an agent of another repository) is returned.
    /// </summary>
    private async Task<FakeLogRecord> AnswerAfterATakeOverAsync(HandoffEngine logged, FakeLogger<HandoffEngine> logger, HoldingRecorder holding)
    {
        time.Advance(TimeSpan.FromMinutes(3));
        await logged.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None);
        var takeover = writer.Saved.Last();

        await logged.CompleteRoundAsync(takeover, holding.Launches!, writer);

        Assert.Equal(takeover.Launches, writer.Saved.Last().Launches);
        Assert.Empty(writer.Saved.Last().CodingAgents);
        return Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "AgentReportOfAnotherRepository");
    }

    [Fact]
    public async Task A_late_failure_of_an_attempt_the_next_one_has_been_refused_since_is_logged_late()
    {
        // Attempt 1's answer (rate limited) comes after attempt 2 took over and was refused for now too.
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        provider.Always = new ProviderFailure(FailureTypes.RateLimited, Retryable: true, StatusCode: 429);
        var started = await logged.TriggerAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var holding = new HoldingRecorder();
        await logged.FinishRoundAsync(started.Round!, holding, CancellationToken.None);
        time.Advance(TimeSpan.FromMinutes(3));
        var refused = await logged.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal((LaunchPhase.RetryScheduled, 2), (refused.Launches[0].Phase, refused.Launches[0].Attempts));

        await logged.CompleteRoundAsync(refused, holding.Launches!, writer);

        Assert.Equal(refused.Launches, writer.Saved.Last().Launches);
        var line = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "LaunchAnswerLate");
        Assert.Equal("1", line.GetStructuredStateValue("Attempt"));
    }

    [Fact]
    public async Task An_attempts_answer_naming_another_agent_than_the_one_a_webhook_adopted_for_it_meanwhile_is_logged_not_followed()
    {
        // While attempt 1 is out, a webhook reports an agent on its branch, which the launch adopts; the attempt's answer
        // then names another agent: a second agent on the repository.
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        var started = await logged.TriggerAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var holding = new HoldingRecorder();
        await logged.FinishRoundAsync(started.Round!, holding, CancellationToken.None);
        var branch = writer.Saved.Last().Launches[0].BranchName;
        Assert.Equal(AgentReportStatus.Changed, await logged.ApplyAgentReportAsync(
            writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-hooked", ProviderAgentStatus.Running, BranchName: branch), Repository: "acme/shop"), writer));
        var adopted = writer.Saved.Last();
        Assert.Equal((LaunchPhase.Launched, "bc-hooked", 1), (adopted.Launches[0].Phase, adopted.Launches[0].AgentId, adopted.Launches[0].Attempts));

        await logged.CompleteRoundAsync(adopted, holding.Launches!, writer);

        Assert.Equal(adopted.Launches, writer.Saved.Last().Launches);
        Assert.Equal(["bc-hooked"], writer.Saved.Last().CodingAgents.Keys);
        var line = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "AgentNotFollowed");
        Assert.Equal(holding.Launches!.Attempts[0].Agent!.Id, line.GetStructuredStateValue("AgentId"));
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
}
