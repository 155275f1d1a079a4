using System.Collections.Concurrent;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Logging.Testing;

namespace HandoffDapr.Core.Tests;

// What the engine logs, counts and traces (HandoffEngine.Logging.cs, HandoffTelemetry): log lines, metrics and spans.
public sealed partial class HandoffEngineTests
{
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
        Assert.Equal(1, counted["handoff.launches", "handoff.failure_type", "none"]);

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
    public async Task A_stop_of_an_agent_given_up_on_that_no_answer_confirmed_is_logged_as_maybe_carried_out()
    {
        // The stop timed out after it was sent: the provider may have carried it out, and the line must not say it did not.
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        provider.StopFailure = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, RequestSent: true);
        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        time.Advance(TimeSpan.FromHours(6) + TimeSpan.FromMinutes(5));

        await logged.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        var line = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "AgentStopNotTaken");
        Assert.Equal(
            "Run 1: the provider refused the stop of agent bc-1, given up on, or did not say whether it carried it out (provider_unavailable); "
            + "sent again at the next read that shows it at work",
            line.Message);
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
        await logged.TriggerAndFinishAsync(1, null, TriggerWithoutPullRequest("acme/shop", "acme/web"), writer, CancellationToken.None);
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
        await logged.TriggerAndFinishAsync(1, null, TriggerWithoutPullRequest("acme/shop"), writer, CancellationToken.None);
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
    public async Task The_pull_request_of_an_agent_failed_with_it_is_not_logged_again_when_it_finishes_after_all()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await logged.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Error, PrUrl: "https://github.com/acme/shop/pull/40")), writer);

        await logged.ApplyAgentReportAsync(writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/40")), writer);

        Assert.Equal(CodingAgentStatus.Completed, writer.Saved.Last().CodingAgents["bc-1"].Status);
        var learnt = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "AgentPullRequestLearnt");
        Assert.Equal("Run 1: agent bc-1 opened pull request https://github.com/acme/shop/pull/40 for acme/shop", learnt.Message);
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

        Assert.Equal((CompletionStatus.Stored, "automation_handoff.target is not the integration's provider"), (outcome.Status, outcome.Reason));
        Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "AutomationTargetMismatch");
    }

    [Fact]
    public async Task An_event_whose_save_fails_and_is_decided_again_logs_its_unknown_integration_once()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        var snapshot = Trigger("acme/shop").Snapshot! with { Metadata = new RunMetadata("open_pr") };
        snapshot = snapshot with { Preferences = snapshot.Preferences! with { AutomationHandoff = new AutomationHandoff("root_cause", null, 77) } };

        // As an embedded owner whose save met another process's: the turn is decided again on the state read anew.
        await Assert.ThrowsAsync<IOException>(() => logged.AcceptCompletedRunAsync(null, snapshot, new FailingWriter(), LaunchTiming.Now, CancellationToken.None));
        var outcome = await logged.AcceptCompletedRunAsync(null, snapshot, writer, LaunchTiming.Now, CancellationToken.None);

        Assert.Equal((CompletionStatus.Stored, "automation_handoff.integration_id is not configured"), (outcome.Status, outcome.Reason));
        Assert.Equal(snapshot, writer.Saved.Last().Snapshot);
        var line = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "HandoffUnknownIntegration");
        Assert.Equal("77", line.GetStructuredStateValue("IntegrationId"));
    }

    [Fact]
    public async Task An_event_whose_launches_wait_for_the_next_wake_up_logs_each_repository_it_refuses()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        var snapshot = Trigger("acme/shop", "acme/bad repo").Snapshot! with { Metadata = new RunMetadata("open_pr") };
        snapshot = snapshot with { Preferences = snapshot.Preferences! with { AutomationHandoff = new AutomationHandoff("root_cause", null, 42) } };

        var outcome = await logged.AcceptCompletedRunAsync(null, snapshot, writer, LaunchTiming.OnNextWake, CancellationToken.None);

        Assert.Equal(CompletionStatus.HandedOff, outcome.Status);
        Assert.Equal(LaunchPhase.RetryScheduled, Assert.Single(writer.Saved.Last().Launches).Phase);
        // Nothing is stored for the refused one: for an event this line is all an operator gets.
        AssertNotLaunchedLogged(logger, "acme/bad repo", FailureTypes.InvalidRepository);
    }

    /// <summary>
    /// Nothing is stored for a refused repository, so for an event the line is all an operator gets: its Reason says
    /// which part was refused, the name, the host or the base branch (it said only invalid_repository for all three).
    /// </summary>
    [Fact]
    public async Task A_refused_repository_s_line_says_whether_its_name_host_or_base_branch_was_refused()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        var trigger = Trigger("acme/shop", "acme/bad repo");
        trigger = trigger with { Snapshot = trigger.Snapshot! with { Preferences = new HandoffPreferences([
            .. trigger.Snapshot!.Preferences!.Repositories!,
            new RepositoryPreference("gitlab", "acme", "web"),
            new RepositoryPreference("github", "acme", "api", BranchName: "ma..in")]) } };

        await logged.TriggerAsync(1, null, trigger, writer, CancellationToken.None);

        var reasons = logger.Collector.GetSnapshot().Where(record => record.Id.Name == "HandoffRepositoryNotLaunched")
            .ToDictionary(record => record.GetStructuredStateValue("Repository")!, record => record.GetStructuredStateValue("Reason"));
        Assert.Equal(FailureMessages.InvalidRepositoryPrefix + "acme/bad repo", reasons["acme/bad repo"]);
        Assert.Equal(FailureMessages.UnsupportedRepositoryHost, reasons["acme/web"]);
        Assert.Equal(FailureMessages.InvalidBaseBranch, reasons["acme/api"]);
        Assert.Equal(3, reasons.Count);
    }

    [Fact]
    public async Task A_trigger_for_a_run_naming_no_repository_logs_none_as_the_repository_not_launched()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);

        await logged.TriggerAsync(1, null, Trigger(), writer, CancellationToken.None);

        AssertNotLaunchedLogged(logger, "(none)", FailureTypes.NoRepositories);
    }

    [Fact]
    public async Task A_launch_a_wake_up_ends_without_a_call_is_logged_as_not_launched_with_its_failure_type()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        // Every attempt's process dies after the provider call and before its answer is recorded (each answer a 503),
        // its last lookup's too: the wake-up after it ends the launch with no call left to make.
        provider.Always = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, StatusCode: 503);
        var first = await logged.TriggerAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        await HoldAnswersAsync(first.Round!);
        for (var crash = 0; crash < 10 && writer.Saved.Last().Launches[0].Phase != LaunchPhase.Failed; crash++)
        {
            time.Advance(TimeSpan.FromMinutes(3));
            var woken = await logged.WakeAsync(writer.Saved.Last(), writer, CancellationToken.None);
            if (woken.Round is { } round)
            {
                await HoldAnswersAsync(round);
            }
        }

        Assert.Equal((LaunchPhase.Failed, FailureTypes.RetriesExhausted), (writer.Saved.Last().Launches[0].Phase, writer.Saved.Last().Launches[0].FailureType));
        AssertNotLaunchedLogged(logger, "acme/shop", FailureTypes.RetriesExhausted);
    }

    [Fact]
    public async Task A_launch_attempt_whose_provider_client_faults_ends_its_span_as_an_error_with_its_outcome()
    {
        var spans = new ConcurrentQueue<System.Diagnostics.Activity>();
        using var listener = ListenToEngineSpans(spans);
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
        await engine.TriggerAndFinishAsync(1, null, TriggerWithoutPullRequest("acme/shop"), writer, CancellationToken.None);
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
    public async Task A_launch_that_fails_without_a_call_records_no_launch_duration()
    {
        // An integration of its own: other tests record launch durations and spans meanwhile.
        const long integrationId = 9_042;
        using var counted = new CountedMeasurements();
        var spans = new ConcurrentQueue<System.Diagnostics.Activity>();
        using var listener = ListenToEngineSpans(spans);
        var capped = new HandoffEngine(
            new SingleIntegrationCatalog(new Integration(integrationId, provider, PromptMaxLength: 8192)), new HandoffEngineOptions(), new RetryPolicy(new RetryOptions(), () => 0.5), time, NullLogger<HandoffEngine>.Instance);

        // The instruction no longer fits the cap: failed invalid_request without a call to the provider.
        await capped.TriggerAndFinishAsync(1, null, Trigger("acme/shop") with { IntegrationId = integrationId, Instruction = new string('i', 9000) }, writer, CancellationToken.None);

        Assert.Empty(provider.Launches);
        Assert.Equal(LaunchPhase.Failed, writer.Saved.Last().Launches[0].Phase);
        // The runbook's p99 of launch calls is not pulled down by a zero for a call never made.
        Assert.Empty(counted.Recorded("handoff.launch.duration"));
        // The attempt's span still says why it failed.
        Assert.Equal(FailureTypes.InvalidRequest, Assert.Single(spans, span => span.OperationName == "handoff.launch_attempt" && Equals(span.GetTagItem("handoff.integration_id"), integrationId)).GetTagItem("handoff.outcome"));
    }

    /// <summary>
    /// A launch whose outcome is unknown looks for its agent first; when the provider's circuit is open that lookup is
    /// refused before any request goes out (as the launch call would be). No call was made, so no duration: in an outage
    /// (time-outs, then an open circuit) every such attempt recorded a zero, pulling down the p99 the runbook alerts on.
    /// </summary>
    [Fact]
    public async Task A_lookup_first_refused_by_an_open_circuit_records_no_launch_duration()
    {
        using var counted = new CountedMeasurements();
        // The first attempt times out after sending: its outcome is unknown, so the next one looks first.
        provider.Next = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true);
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        Assert.Equal(LaunchPhase.OutcomeUnknown, writer.Saved.Last().Launches[0].Phase);
        Assert.Single(counted.Recorded("handoff.launch.duration"));

        // The circuit is open: the lookup is refused without a request, as FromTransport says for CircuitOpen.
        provider.FindFailure = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, RequestSent: false, Attempted: false);
        await WakeWhenDueAsync(writer.Saved.Last());

        Assert.Equal(LaunchPhase.OutcomeUnknown, writer.Saved.Last().Launches[0].Phase);
        Assert.Single(provider.Launches);
        Assert.Single(counted.Recorded("handoff.launch.duration"));
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

    /// <summary>A store that cannot be written: every save fails.</summary>
    [Fact]
    public async Task Each_launch_attempt_is_logged_and_put_on_the_timeline_as_the_runbook_names_it()
    {
        var logger = new FakeLogger<HandoffEngine>();

        await LaunchThroughEachOutcomeAsync(LoggingTo(logger));

        var records = logger.Collector.GetSnapshot();
        Assert.Equal(
            ["HandoffRetryScheduled", "HandoffOutcomeUnknown", "HandoffReconciled", "HandoffLaunched", "HandoffLaunchFailed"],
            records.Select(record => record.Id.Name ?? "").Where(name => name.StartsWith("Handoff", StringComparison.Ordinal)));
        var reconciled = Assert.Single(records, record => record.Id.Name == "HandoffReconciled");
        Assert.Equal(("bc-found", "by a lookup at the provider"), (reconciled.GetStructuredStateValue("AgentId"), reconciled.GetStructuredStateValue("FoundBy")));
        var unknown = Assert.Single(records, record => record.Id.Name == "HandoffOutcomeUnknown");
        Assert.Equal(("acme/shop", FailureTypes.ProviderUnavailable, "2"), (unknown.GetStructuredStateValue("Repository"), unknown.GetStructuredStateValue("FailureType"), unknown.GetStructuredStateValue("Attempt")));

        var timeline = writer.Saved.Last().Timeline;
        var shop = timeline.Where(entry => entry.Repository == "acme/shop").ToList();
        Assert.Equal(
            [
                (TimelineEvents.LaunchStarted, null, "attempt 1"),
                (TimelineEvents.RetryScheduled, null, $"provider_unavailable; next attempt at {shop[0].At + TimeSpan.FromSeconds(30):O}"),
                (TimelineEvents.LaunchStarted, null, "attempt 2"),
                (TimelineEvents.RetryScheduled, null, $"provider_unavailable; next attempt at {shop[2].At + TimeSpan.FromMinutes(2):O}"),
                (TimelineEvents.LaunchStarted, null, "attempt 3"),
                (TimelineEvents.Reconciled, "bc-found", null),
            ],
            shop.Select(entry => (entry.Event, entry.AgentId, entry.Detail)));
        Assert.Equal(
            [(TimelineEvents.LaunchStarted, null, "attempt 1"), (TimelineEvents.Launched, "bc-1", null)],
            timeline.Where(entry => entry.Repository == "acme/web").Select(entry => (entry.Event, entry.AgentId, entry.Detail)));
        Assert.Equal(
            [(TimelineEvents.LaunchStarted, null, "attempt 1"), (TimelineEvents.LaunchFailed, null, FailureTypes.InvalidCredentials)],
            timeline.Where(entry => entry.Repository == "acme/api").Select(entry => (entry.Event, entry.AgentId, entry.Detail)));
    }

    /// <summary>
    /// Run 1 through each outcome of a launch attempt: acme/shop refused for now (a 503), then its answer lost (a 504), then
    /// its agent (bc-found) found by the lookup; acme/web launched (bc-1); acme/api refused for its key (a 401).
    /// </summary>
    private async Task LaunchThroughEachOutcomeAsync(HandoffEngine on)
    {
        provider.Next = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, StatusCode: 503);
        await on.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        provider.Next = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, OutcomeUnknown: true, StatusCode: 504);
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        await on.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        provider.Existing = new ProviderAgent("bc-found", ProviderAgentStatus.Running, BranchName: writer.Saved.Last().Launches[0].BranchName);
        time.Advance(writer.Saved.Last().NextWakeAt()!.Value - time.GetUtcNow());
        await on.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        await on.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/shop", "acme/web"), writer, CancellationToken.None);
        provider.Next = new ProviderFailure(FailureTypes.InvalidCredentials, Retryable: false, StatusCode: 401);
        await on.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/shop", "acme/web", "acme/api"), writer, CancellationToken.None);
    }

    [Fact]
    public async Task A_launch_attempts_span_names_its_agent_launched_or_reconciled()
    {
        var spans = new ConcurrentQueue<System.Diagnostics.Activity>();
        using var listener = ListenToEngineSpans(spans);

        await LaunchThroughEachOutcomeAsync(engine);

        // Spans of other tests running beside this one are told apart by this test's repositories and attempts.
        string[] Outcomes(string repository) => [.. spans
            .Where(span => span.OperationName == "handoff.launch_attempt" && Equals(span.GetTagItem("handoff.repository"), repository))
            .OrderBy(span => span.StartTimeUtc)
            .Select(span => span.GetTagItem("handoff.outcome") as string ?? "")];
        Assert.Contains("launched", Outcomes("acme/web"));
        Assert.Contains("reconciled", Outcomes("acme/shop"));
        Assert.Contains(FailureTypes.InvalidCredentials, Outcomes("acme/api"));
    }

    [Fact]
    public async Task A_provider_client_fault_during_a_launch_is_logged_as_the_launchs_with_the_exceptions_type_only()
    {
        var logger = new FakeLogger<HandoffEngine>();
        provider.OnLaunch = _ => throw new InvalidOperationException("A bug in the provider client, quoting the prompt.");

        await LoggingTo(logger).TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);

        var line = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "ProviderClientFaulted");
        Assert.Equal(("launch", nameof(InvalidOperationException)), (line.GetStructuredStateValue("Operation"), line.GetStructuredStateValue("ExceptionType")));
        Assert.DoesNotContain("prompt", line.Message ?? "", StringComparison.Ordinal);
    }

    /// <summary>
    /// The runbook's ProviderClientFaulted for a person's command: the caller got a 504 (outcome unknown), and this line is
    /// the only one that says a provider client bug, not the provider, left it unknown.
    /// </summary>
    [Theory]
    [InlineData(true, "stop")]
    [InlineData(false, "follow-up")]
    public async Task A_provider_client_fault_on_a_persons_stop_or_follow_up_is_logged_as_that_commands_with_the_exceptions_type_only(bool stop, string operation)
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        provider.CommandsFault = true;
        var recorder = new EngineRoundTrips.Recorder(logged, writer);

        var outcome = stop
            ? await logged.StopAgentAsync(writer.Saved.Last(), "bc-1", recorder, CancellationToken.None)
            : await logged.AddFollowupAsync(writer.Saved.Last(), new AgentFollowup("bc-1", "Also add a test"), recorder, CancellationToken.None);

        Assert.Equal(AgentCommandStatus.OutcomeUnknown, outcome.Status);
        var line = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "ProviderClientFaulted");
        Assert.Equal(LogLevel.Error, line.Level);
        Assert.Equal(("1", operation, nameof(InvalidOperationException)),
            (line.GetStructuredStateValue("RunId"), line.GetStructuredStateValue("Operation"), line.GetStructuredStateValue("ExceptionType")));
        Assert.DoesNotContain("unexpected answer", line.Message ?? "", StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_launch_that_reached_no_provider_records_no_launch_duration()
    {
        // Its integration is taken out of the settings after the round's intent is saved: nothing is sent.
        var catalog = new SwitchableCatalog(new Integration(42, provider));
        var switchable = new HandoffEngine(catalog, new HandoffEngineOptions(), new RetryPolicy(new RetryOptions(), () => 0.5), time, NullLogger<HandoffEngine>.Instance);
        using var counted = new CountedMeasurements();
        var started = await switchable.TriggerAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        catalog.Present = false;

        await switchable.FinishAsync(started.Round!, writer, CancellationToken.None);

        Assert.Equal((LaunchPhase.Failed, FailureTypes.InvalidRequest), (writer.Saved.Last().Launches[0].Phase, writer.Saved.Last().Launches[0].FailureType));
        Assert.Empty(counted.Recorded("handoff.launch.duration"));
        Assert.Equal(1, counted["handoff.launches", "handoff.outcome", "failed"]);
    }

    [Fact]
    public async Task A_launch_whose_agent_a_lookup_found_is_counted_reconciled_with_failure_type_none()
    {
        using var counted = new CountedMeasurements();

        await LaunchThroughEachOutcomeAsync(engine);

        Assert.Equal([1, 1], new[] { "launched", "reconciled" }.Select(outcome => counted["handoff.launches", "handoff.outcome", outcome]));
        Assert.Equal(2, counted["handoff.launches", "handoff.failure_type", "none"]);
    }

    private sealed class FailingWriter : IRunStateWriter
    {
        public Task SaveAsync(RunHandoffState state, CancellationToken cancellationToken) => Task.FromException(new IOException("The store is unavailable."));
    }

    [Fact]
    public async Task A_launched_agent_is_counted_as_entering_the_status_its_answer_shows_and_starts_when_the_provider_says()
    {
        using var counted = new CountedMeasurements();
        var createdAt = time.GetUtcNow() - TimeSpan.FromSeconds(30);
        provider.AnswerWith = new ProviderAgent("bc-9", ProviderAgentStatus.Creating, CreatedAt: createdAt);

        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var state = writer.Saved.Last();

        Assert.Equal(1, counted["handoff.agents.status_changes", "handoff.status", "pending"]);
        Assert.Equal(createdAt, state.CodingAgents["bc-9"].StartedAt);
    }

    [Fact]
    public async Task A_provider_client_fault_reading_an_agent_in_a_poll_is_logged_as_a_failed_read()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        provider.OnRead = _ => throw new InvalidOperationException("a bug in a provider client");
        time.Advance(TimeSpan.FromMinutes(1));

        await logged.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        var faulted = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "ProviderClientFaulted");
        Assert.Equal("read", faulted.StructuredState!.Single(pair => pair.Key == "Operation").Value);
        Assert.Contains(nameof(InvalidOperationException), faulted.Message);
    }

    [Fact]
    public async Task A_report_of_another_repository_is_logged_naming_whether_a_webhook_or_a_poll_sent_it()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);

        Assert.Equal(AgentReportStatus.OtherRepository, await logged.ApplyAgentReportAsync(
            writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished), "evil/other"), writer));
        provider.ReadRepository = "evil/other";
        time.Advance(TimeSpan.FromMinutes(1));
        await logged.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        var sources = logger.Collector.GetSnapshot().Where(record => record.Id.Name == "AgentReportOfAnotherRepository")
            .Select(record => record.StructuredState!.Single(pair => pair.Key == "Source").Value);
        Assert.Equal(["webhook", "poll"], sources);
    }

    [Fact]
    public async Task A_webhook_that_changes_nothing_but_names_another_repositorys_pull_request_is_still_logged_so()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);

        // Still creating, as the run knows it: nothing to save, but the pull request it names is not the launch's.
        var status = await logged.ApplyAgentReportAsync(
            writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Creating, PrUrl: "https://github.com/evil/other/pull/1")), writer);

        Assert.Equal(AgentReportStatus.Unchanged, status);
        Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "PullRequestOfAnotherRepository");
    }

    [Fact]
    public async Task A_held_finish_taken_at_the_time_out_for_want_of_a_read_is_logged_as_taken_unconfirmed()
    {
        var logger = new FakeLogger<HandoffEngine>();
        var logged = LoggingTo(logger);
        await logged.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        Assert.Equal(AgentReportStatus.Changed, await logged.ApplyAgentReportAsync(
            writer.Saved.Last(), new AgentReport(42, new ProviderAgent("bc-1", ProviderAgentStatus.Finished)), writer));

        // Every read fails until the agent's time-out: the webhook's word ends it, and the log says so.
        provider.ReadFailure = new ProviderFailure(FailureTypes.ProviderUnavailable, Retryable: true, StatusCode: 503);
        var state = writer.Saved.Last();
        while (!state.CodingAgents["bc-1"].Status.IsFinal())
        {
            time.Advance(state.NextWakeAt()!.Value - time.GetUtcNow());
            state = await logged.WakeAndFinishAsync(state, writer, CancellationToken.None);
        }

        Assert.Equal(CodingAgentStatus.Completed, state.CodingAgents["bc-1"].Status);
        var line = Assert.Single(
            logger.Collector.GetSnapshot(), record => record.Id.Name == "AgentFinishTakenUnconfirmed");
        Assert.Equal(LogLevel.Warning, line.Level);
        Assert.Contains("bc-1", line.Message);
    }

    /// <summary>Collects the engine's spans as they end, until the listener returned is disposed.</summary>
    private static System.Diagnostics.ActivityListener ListenToEngineSpans(ConcurrentQueue<System.Diagnostics.Activity> spans)
    {
        var listener = new System.Diagnostics.ActivityListener
        {
            ShouldListenTo = source => source.Name == HandoffTelemetry.Name,
            Sample = (ref System.Diagnostics.ActivityCreationOptions<System.Diagnostics.ActivityContext> _) => System.Diagnostics.ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = spans.Enqueue,
        };
        System.Diagnostics.ActivitySource.AddActivityListener(listener);
        return listener;
    }

    /// <summary>The one <c>HandoffRepositoryNotLaunched</c> line logged names <paramref name="repository"/> and <paramref name="failureType"/>.</summary>
    private static void AssertNotLaunchedLogged(FakeLogger<HandoffEngine> logger, string repository, string failureType)
    {
        var line = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "HandoffRepositoryNotLaunched");
        Assert.Equal((repository, failureType), (line.GetStructuredStateValue("Repository"), line.GetStructuredStateValue("FailureType")));
        Assert.False(string.IsNullOrWhiteSpace(line.GetStructuredStateValue("Reason")));
    }
}
