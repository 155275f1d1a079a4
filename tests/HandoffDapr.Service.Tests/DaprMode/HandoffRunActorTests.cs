using System.Text.Json;
using Dapr.Actors;
using Dapr.Actors.Runtime;
using Dapr.Client;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Serialization;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Hosting;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>The actor as an adapter: state through its state manager, reminders only when work is pending, decisions by the engine.</summary>
public sealed class HandoffRunActorTests
{
    private const long RunId = 123;
    private readonly ScriptedProvider provider = new();
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero));
    private readonly RecordingTimerManager timers = new();
    private readonly InMemoryActorStateManager state = new(HandoffJsonContext.CreateOptions());
    private readonly HandoffEngine engine;
    private readonly ActorRecorder recorder;
    private readonly BackgroundRounds rounds;
    private readonly RequestDrain drain;
    private readonly Lifetime lifetime = new();
    private readonly FakeLogger<BackgroundRounds> roundsLog = new();
    private readonly FakeLogCollector actorLogs = new();
    private readonly HandoffRunActor actor;

    public HandoffRunActorTests()
    {
        engine = new HandoffEngine(
            new Catalog(new Integration(42, provider)),
            new HandoffEngineOptions(),
            new RetryPolicy(new RetryOptions(), () => 0.5),
            time,
            NullLogger<HandoffEngine>.Instance);
        // A reminder's round hands its answers back to this actor, as the proxy would in a new turn.
        drain = new RequestDrain(Options.Create(new HandoffOptions()), new HandoffDapr.Service.Configuration.HostingContext(HandoffDapr.Service.Configuration.HostingMode.Dapr), time, NullLogger<RequestDrain>.Instance);
        recorder = new ActorRecorder(() => actor!);
        rounds = new BackgroundRounds(
            engine, recorder, drain,
            new HandoffDapr.Service.Hosting.ProviderCallCutoff(lifetime, new HandoffOptions().Dapr.EffectiveProviderCallGrace, time), roundsLog);
        actor = NewActor();
    }

    /// <summary>An instance of the run's actor over the test's state; daprd activates a new one after a deactivation.</summary>
    private HandoffRunActor NewActor(RunLocks? runLocks = null, InMemoryActorStateManager? stateManager = null, HandoffOptions? options = null)
    {
        var host = ActorHost.CreateForTest<HandoffRunActor>(HandoffRunActor.ActorTypeName, new ActorTestOptions
        {
            ActorId = new ActorId(RunId.ToString()),
            TimerManager = timers,
            JsonSerializerOptions = HandoffJsonContext.CreateOptions(),
            LoggerFactory = Microsoft.Extensions.Logging.LoggerFactory.Create(logging => logging.AddProvider(new FakeLoggerProvider(actorLogs))),
        });
        // No sidecar: publishing fails and is logged, which the actor must survive.
        var dapr = new DaprClientBuilder().UseGrpcEndpoint("http://127.0.0.1:9").UseHttpEndpoint("http://127.0.0.1:9").Build();
        return new HandoffRunActor(host, engine, dapr, Options.Create(options ?? new HandoffOptions()), time, rounds, stateManager ?? state, runLocks);
    }

    /// <summary>
    /// daprd gives up on an actor call past its resiliency timeout (components/resiliency.yaml, <c>actorCall</c>) and
    /// releases the actor's turn while the app's method still runs, then makes the call again; after a deactivation it
    /// goes to a new instance, whose cache is its own. Without a guard of the app's own the repeat loads the run before
    /// the first turn has saved its claim, claims the repository too, and each call's caller launches an agent.
    /// </summary>
    [Fact]
    public async Task A_repeat_of_a_call_daprd_gave_up_on_waits_for_the_turn_still_running_and_launches_nothing_twice()
    {
        var runLocks = new RunLocks();
        var first = NewActor(runLocks);
        var reactivated = NewActor(runLocks, state.OverSameStore());
        var saveHeld = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        state.BeforeSave = async () =>
        {
            state.BeforeSave = null;
            saveHeld.SetResult();
            await release.Task;
        };

        var slow = first.TriggerAsync(Trigger(Snapshot("acme/shop")));
        await saveHeld.Task.WaitAsync(TimeSpan.FromSeconds(10));
        var repeat = reactivated.TriggerAsync(Trigger(Snapshot("acme/shop")));
        await Task.Delay(100);

        Assert.False(repeat.IsCompleted, "the repeat was answered while the first turn was still running");
        release.SetResult();
        var outcomes = await Task.WhenAll(slow, repeat).WaitAsync(TimeSpan.FromSeconds(10));

        // One claim of the repository between the two calls, the first's; the repeat finds its launch in flight.
        Assert.Equal("acme/shop", Assert.Single(outcomes.SelectMany(outcome => outcome.Round?.Launches ?? [])).Launch.Repository);
    }

    [Fact]
    public async Task Trigger_turn_saves_the_intent_and_ends_before_any_provider_call()
    {
        var outcome = await actor.TriggerAsync(Trigger(Snapshot("acme/shop")));

        Assert.Empty(provider.Launches);
        Assert.Equal("acme/shop", Assert.Single(outcome.Round!.Launches).Launch.Repository);
        Assert.Contains("\"phase\":\"in_flight\"", state.Saved["launches"]);

        var result = await engine.FinishRoundAsync(outcome.Round, new ActorRecorder(() => actor), CancellationToken.None);

        Assert.Equal("acme/shop", Assert.Single(result.Successes).RepoName);
        Assert.Contains("\"phase\":\"launched\"", state.Saved["launches"]);
    }

    [Fact]
    public async Task Reminder_turn_ends_while_its_round_is_at_the_provider_and_the_answers_come_back_in_a_new_turn()
    {
        await HealedRetryDueAsync();
        var answer = new TaskCompletionSource();
        // The round runs in the background: it waits for the answer without holding a thread-pool thread.
        provider.Answering = _ => Task.WhenAny(answer.Task, Task.Delay(TimeSpan.FromSeconds(10)));

        await actor.ReceiveReminderAsync(HandoffRunActor.WakeReminder, [], TimeSpan.Zero, TimeSpan.Zero);

        // The turn is over with the provider still answering: the launch is in flight. No request counts the round, so it
        // is counted itself: a shutdown's drain waits for its answers to be recorded before the server stops.
        Assert.Equal(LaunchPhase.InFlight, (await actor.GetStateAsync())!.FindLaunch("acme/down", 42)!.Phase);
        Assert.Equal(1, drain.InFlight);
        answer.SetResult();
        await rounds.WhenIdleAsync();
        Assert.Equal(LaunchPhase.Launched, (await actor.GetStateAsync())!.FindLaunch("acme/down", 42)!.Phase);
        Assert.Equal(0, drain.InFlight);
    }

    /// <summary>
    /// Nobody awaits a reminder's round: answers that cannot reach the actor are logged by the cause's type (never its
    /// text), and the launch stays in flight for its deadline to reconcile it.
    /// </summary>
    [Fact]
    public async Task A_reminders_round_whose_answers_cannot_be_recorded_is_logged_by_cause_and_left_for_its_deadline()
    {
        await HealedRetryDueAsync();
        recorder.Unreachable = new RunOwnerUnavailableException("the actor could not be reached", new HttpRequestException("connection refused to 127.0.0.1:3500"));

        await ReceiveWakeReminderAsync();

        var line = Assert.Single(roundsLog.Collector.GetSnapshot(), record => record.Id.Name == "LaunchRoundNotRecorded");
        Assert.Equal((LogLevel.Warning, "HttpRequestException"), (line.Level, line.GetStructuredStateValue("ExceptionType")));
        Assert.Contains($"Run {RunId}", line.Message, StringComparison.Ordinal);
        Assert.False(LogLines.Carry(line, "127.0.0.1"), LogLines.Whole(line));
        Assert.Null(line.Exception);
        Assert.Equal(LaunchPhase.InFlight, (await actor.GetStateAsync())!.FindLaunch("acme/down", 42)!.Phase);
        Assert.Equal(0, drain.InFlight);
    }

    /// <summary>
    /// Only shutdown's cutoff ends a round unsaid (its answers were recorded before the cancellation was passed on): a
    /// cancellation from anywhere else left the answers unrecorded, and is logged as any other cause. Taking every
    /// cancellation for shutdown's passed every round, drain and shutdown test, and such a round left no line at all.
    /// </summary>
    [Fact]
    public async Task A_reminders_round_cancelled_by_anything_but_shutdown_is_logged_as_not_recorded()
    {
        await HealedRetryDueAsync();
        recorder.Unreachable = new TaskCanceledException("the recording call was given up");

        await ReceiveWakeReminderAsync();

        var line = Assert.Single(roundsLog.Collector.GetSnapshot(), record => record.Id.Name == "LaunchRoundNotRecorded");
        Assert.Equal("TaskCanceledException", line.GetStructuredStateValue("ExceptionType"));
        Assert.Equal(LaunchPhase.InFlight, (await actor.GetStateAsync())!.FindLaunch("acme/down", 42)!.Phase);
        Assert.Equal(0, drain.InFlight);
    }

    [Fact]
    public async Task Shutdown_stops_a_reminders_round_still_at_the_provider_after_the_grace_and_records_its_outcome_as_unknown()
    {
        await HealedRetryDueAsync();
        var reached = new TaskCompletionSource();
        provider.Answering = async token =>
        {
            reached.TrySetResult();
            await Task.Delay(Timeout.Infinite, token);
        };
        await actor.ReceiveReminderAsync(HandoffRunActor.WakeReminder, [], TimeSpan.Zero, TimeSpan.Zero);
        await reached.Task.WaitAsync(TimeSpan.FromSeconds(10));

        lifetime.StopApplication();
        time.Advance(new DaprOptions().ProviderCallGrace - TimeSpan.FromSeconds(1));
        var roundsDone = rounds.WhenIdleAsync();
        await Task.Delay(50);
        Assert.False(roundsDone.IsCompleted, "the call was stopped before its grace was over");
        time.Advance(TimeSpan.FromSeconds(1));
        await roundsDone.WaitAsync(TimeSpan.FromSeconds(10));

        // Not left in flight until its deadline: recorded at once, to be looked for at the provider before any new launch.
        var launch = (await actor.GetStateAsync())!.FindLaunch("acme/down", 42)!;
        Assert.Equal(LaunchPhase.OutcomeUnknown, launch.Phase);
        Assert.True(launch.NeedsReconciliation);
        Assert.DoesNotContain(roundsLog.Collector.GetSnapshot(), record => record.Id.Name == "LaunchRoundNotRecorded");
    }

    [Fact]
    public async Task Reminders_round_answered_within_the_shutdown_grace_is_recorded_as_launched()
    {
        await HealedRetryDueAsync();
        // Asynchronous, so the test goes on on its own thread, not inside the provider's call.
        var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var answer = new TaskCompletionSource();
        provider.Answering = async token =>
        {
            reached.TrySetResult();
            await answer.Task.WaitAsync(token);
        };
        await actor.ReceiveReminderAsync(HandoffRunActor.WakeReminder, [], TimeSpan.Zero, TimeSpan.Zero);
        await reached.Task.WaitAsync(TimeSpan.FromSeconds(10));

        // A rolling update: shutdown begins while the launch is at the provider, which answers a little later.
        lifetime.StopApplication();
        time.Advance(TimeSpan.FromSeconds(1));
        answer.SetResult();
        await rounds.WhenIdleAsync();

        var launch = (await actor.GetStateAsync())!.FindLaunch("acme/down", 42)!;
        Assert.Equal(LaunchPhase.Launched, launch.Phase);
        Assert.NotNull(launch.AgentId);
    }

    [Fact]
    public async Task Trigger_launches_and_keeps_coding_agents_in_actor_state()
    {
        var outcome = await TriggerAsync(Trigger(Snapshot("acme/shop", "acme/web")));

        Assert.Equal(TriggerStatus.Accepted, outcome.Status);
        Assert.Equal(2, outcome.Result.Successes.Count);
        Assert.Equal(2, provider.Launches.Count);
        Assert.Contains("coding_agents", state.Saved.Keys);
        Assert.Contains("\"status\":\"pending\"", state.Saved["coding_agents"]);
        Assert.Contains("\"phase\":\"launched\"", state.Saved["launches"]);
        Assert.Contains("\"run_id\":123", state.Saved["snapshot"]);
    }

    [Fact]
    public async Task Intent_is_saved_before_the_provider_is_called()
    {
        (int Saves, string? Launches) atCall = default;
        provider.OnLaunch = _ => atCall = (state.Saves, state.Saved.GetValueOrDefault("launches"));

        await TriggerAsync(Trigger(Snapshot("acme/shop")));

        // When the provider was called, the intent was already in the store: the launch, in flight, on its branch.
        Assert.Equal(1, atCall.Saves);
        Assert.Contains("\"phase\":\"in_flight\"", atCall.Launches);
        // Then the outcome, in a second save.
        Assert.Equal(2, state.Saves);
    }

    [Fact]
    public async Task Repeated_trigger_launches_nothing_new()
    {
        var first = await TriggerAsync(Trigger(Snapshot("acme/shop")));
        await state.ClearCacheAsync();

        var second = await TriggerAsync(Trigger(null));

        Assert.Single(provider.Launches);
        Assert.Equal(first.Result.Successes[0].CodingAgentState.Id, second.Result.Successes[0].CodingAgentState.Id);
    }

    [Fact]
    public async Task Partial_failure_schedules_one_wake_reminder_and_the_reminder_retries()
    {
        provider.Fail("acme/down", ScriptedProvider.ServerError);

        var outcome = await TriggerAsync(Trigger(Snapshot("acme/shop", "acme/down")));

        Assert.Single(outcome.Result.Successes);
        var retry = Assert.Single(outcome.Result.Retries);
        var reminder = Assert.Single(timers.Registered, r => r.Name == HandoffRunActor.WakeReminder && r.DueTime <= TimeSpan.FromMinutes(1));
        Assert.Equal(HandoffRunActor.WakeRepeat, reminder.Period);

        provider.Heal("acme/down");
        time.Advance(retry.RetryAt - time.GetUtcNow());
        // The Scheduler fires with empty due time and period: only the name matters.
        await ReceiveWakeReminderAsync();

        var view = await actor.GetStateAsync();
        Assert.Equal(2, view!.CodingAgents.Count);
        Assert.All(view.Launches, launch => Assert.Equal(LaunchPhase.Launched, launch.Phase));
    }

    [Fact]
    public async Task Wake_reminder_whose_turn_failed_is_registered_again_by_the_next_save()
    {
        provider.Fail("acme/down", ScriptedProvider.ServerError);
        var outcome = await TriggerAsync(Trigger(Snapshot("acme/shop", "acme/down")));
        var agentId = Assert.Single(outcome.Result.Successes).CodingAgentState.Id;
        time.Advance(Assert.Single(outcome.Result.Retries).RetryAt - time.GetUtcNow());
        var registered = timers.Registered.Count;

        // The reminder fires, but the state store cannot be read: the runtime drops what the turn changed, the failed turn
        // registers a retry a minute out, and the stored wake time still names the moment that has passed.
        state.FailNextRead = true;
        await Assert.ThrowsAnyAsync<Exception>(() => actor.ReceiveReminderAsync(HandoffRunActor.WakeReminder, [], TimeSpan.Zero, TimeSpan.Zero));
        var retry = Assert.Single(timers.Registered.Skip(registered), r => r.Name == HandoffRunActor.WakeReminder);
        Assert.Equal(HandoffRunActor.FailedWakeRetry, retry.DueTime);
        // Repeating, as every wake reminder is: a one-shot retry whose firing failed again would leave the run never woken.
        Assert.Equal(HandoffRunActor.WakeRepeat, retry.Period);
        await state.ClearCacheAsync();
        await actor.ApplyAgentReportAsync(new AgentReport(42, new ProviderAgent(agentId, ProviderAgentStatus.Running)));

        var again = Assert.Single(timers.Registered.Skip(registered + 1), r => r.Name == HandoffRunActor.WakeReminder);
        Assert.Equal(TimeSpan.Zero, again.DueTime);
    }

    /// <summary>
    /// A wake-up that saved its round and then could not move the reminder to the round's deadline fails (daprd is told
    /// so, and the failure logged) and registers its retry a minute out; the round it saved is still made, once.
    /// </summary>
    [Fact]
    public async Task Wake_up_that_saved_its_round_but_could_not_change_the_reminder_fails_registers_its_retry_and_still_makes_the_round()
    {
        await HealedRetryDueAsync();
        var registered = timers.Registered.Count;
        timers.FailNextRegistrations = 1;

        await Assert.ThrowsAsync<ActorTurnFailedException>(() => actor.ReceiveReminderAsync(HandoffRunActor.WakeReminder, [], TimeSpan.Zero, TimeSpan.Zero));
        await rounds.WhenIdleAsync();

        Assert.Equal(HandoffRunActor.FailedWakeRetry, timers.Registered.Skip(registered).First(r => r.Name == HandoffRunActor.WakeReminder).DueTime);
        Assert.Contains(actorLogs.GetSnapshot(), record => record.Id.Name == "ActorTurnFailed");
        Assert.Equal(LaunchPhase.Launched, (await actor.GetStateAsync())!.FindLaunch("acme/down", 42)!.Phase);
        Assert.Equal(2, provider.Launches.Count(launch => launch.Repository.FullName == "acme/down"));
    }

    [Fact]
    public async Task Reminder_is_not_registered_when_nothing_is_pending_and_not_on_every_save()
    {
        await AcceptCompletedRunAsync(Snapshot("acme/shop") with { Preferences = new HandoffPreferences([new RepositoryPreference("github", "acme", "shop")]) });

        Assert.Empty(timers.Registered);

        await TriggerAsync(Trigger(null));
        // The intent registers the crash-safety wake-up (in-flight timeout); the outcome moves it to the first status poll.
        Assert.Equal([TimeSpan.FromMinutes(2), TimeSpan.FromMinutes(1)], timers.Registered.Select(r => r.DueTime));

        await ReceiveWakeReminderAsync();
        // The wake-up drops the stored wake time first (its reminder has done its work), so its save registers the
        // still-pending poll again, once, for the same time, replacing the reminder.
        Assert.Equal(3, timers.Registered.Count);
        Assert.Equal(TimeSpan.FromMinutes(1), timers.Registered[^1].DueTime);
        Assert.Empty(timers.Unregistered);
    }

    /// <summary>
    /// The poll's schedule is a key of its own, written only when it changes: once the run's last agent has finished, its
    /// removal must reach the store too, or every later activation reads the ended schedule back (and with it any agents
    /// it still watched, to be polled again).
    /// </summary>
    [Fact]
    public async Task Poll_schedule_that_ends_with_the_runs_last_agent_is_removed_from_the_store()
    {
        var outcome = await TriggerAsync(Trigger(Snapshot("acme/shop")));
        var agentId = Assert.Single(outcome.Result.Successes).CodingAgentState.Id;
        await state.SaveStateAsync();
        Assert.Contains(HandoffRunActor.PollKey, state.Saved.Keys);

        await actor.ApplyAgentReportAsync(new AgentReport(42, new ProviderAgent(agentId, ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/1")));
        await state.SaveStateAsync();
        await state.ClearCacheAsync();

        Assert.DoesNotContain(HandoffRunActor.PollKey, state.Saved.Keys);
        Assert.Null((await actor.GetStateAsync())!.Poll);
    }

    [Fact]
    public async Task A_wake_that_finds_its_run_settled_removes_the_repeating_reminder()
    {
        // Refused for good: the run settles in the trigger's round, and nothing is left to wake for.
        provider.Fail("acme/shop", new ProviderFailure(FailureTypes.InvalidCredentials, Retryable: false, StatusCode: 401));
        var outcome = await TriggerAsync(Trigger(Snapshot("acme/shop")));
        Assert.Single(outcome.Result.Failures);
        await state.SaveStateAsync();
        var unregistered = timers.Unregistered.Count;

        // A firing of a reminder the settling turn could not remove (its unregistration failed, or a retry registered
        // after a failed wake-up): the wake-up's own save sees no stored wake time and none wanted, and changes nothing.
        await ReceiveWakeReminderAsync();

        Assert.Equal([HandoffRunActor.WakeReminder], timers.Unregistered.Skip(unregistered));
        Assert.Single(provider.Launches);
    }

    [Fact]
    public async Task Unknown_reminder_name_changes_nothing()
    {
        await TriggerAsync(Trigger(Snapshot("acme/shop")));
        var saves = state.Saves;

        await actor.ReceiveReminderAsync("something-else", [], TimeSpan.Zero, TimeSpan.Zero);

        Assert.Equal(saves, state.Saves);
        Assert.Single(provider.Launches);
    }

    [Fact]
    public async Task Unknown_run_and_another_groups_run_launch_nothing()
    {
        var unknown = await TriggerAsync(Trigger(null));
        await TriggerAsync(Trigger(Snapshot("acme/shop")));
        var otherGroup = await TriggerAsync(new HandoffTrigger(999, 42));

        Assert.Equal(TriggerStatus.UnknownRun, unknown.Status);
        Assert.Equal(TriggerStatus.UnknownRun, otherGroup.Status);
        Assert.Single(provider.Launches);
    }

    [Fact]
    public async Task Completion_event_of_another_group_is_rejected()
    {
        await AcceptCompletedRunAsync(Snapshot("acme/shop"));

        var outcome = await AcceptCompletedRunAsync(Snapshot("acme/shop") with { Group = new RunGroup(999) });

        Assert.Equal(CompletionStatus.Rejected, outcome.Status);
    }

    [Fact]
    public async Task A_failed_turn_is_logged_with_its_run_id_as_every_line_about_a_run_is()
    {
        timers.FailNextRegistrations = 1;

        await Assert.ThrowsAsync<ActorTurnFailedException>(() => TriggerAsync(Trigger(Snapshot("acme/shop"))));

        var failed = Assert.Single(actorLogs.GetSnapshot(), record => record.Id.Name == "ActorTurnFailed");
        Assert.Equal(RunId.ToString(), failed.GetStructuredStateValue("RunId"));
    }

    [Fact]
    public async Task Reminder_whose_registration_failed_is_registered_by_the_callers_retry_though_it_saves_nothing()
    {
        // The intent is saved, then registering its reminder fails: the turn fails, the caller is told 503 / RETRY, and
        // the runtime drops what the turn had not saved. The saved round's calls are made in the background (held here
        // at the provider), as its caller never gets the round.
        var release = new TaskCompletionSource();
        provider.Answering = _ => Task.WhenAny(release.Task, Task.Delay(TimeSpan.FromSeconds(10)));
        timers.FailNextRegistrations = 1;
        await Assert.ThrowsAsync<ActorTurnFailedException>(() => TriggerAsync(Trigger(Snapshot("acme/shop"))));
        await state.ClearCacheAsync();
        Assert.Contains("\"phase\":\"in_flight\"", state.Saved["launches"]);

        // The retry finds the launch under way and saves nothing; without a reminder nothing would ever wake the run.
        var retry = await TriggerAsync(Trigger(null));
        await state.SaveStateAsync();

        Assert.Equal(TriggerStatus.Accepted, retry.Status);
        Assert.Null(retry.Round);
        Assert.Contains(timers.Registered, reminder => reminder.Name == HandoffRunActor.WakeReminder);
        release.SetResult();
        await Eventually.True(() => state.Saved["launches"].Contains("\"phase\":\"launched\"", StringComparison.Ordinal));
        Assert.Single(provider.Launches);
    }

    [Fact]
    public async Task Past_wake_time_of_a_failed_wake_up_is_registered_again_by_a_turn_that_saves_nothing()
    {
        provider.Fail("acme/down", ScriptedProvider.ServerError);
        var outcome = await TriggerAsync(Trigger(Snapshot("acme/shop", "acme/down")));
        time.Advance(Assert.Single(outcome.Result.Retries).RetryAt - time.GetUtcNow());
        var registered = timers.Registered.Count;
        // The reminder fires but its turn fails (a store read): the stored wake time is past, so it is not trusted.
        state.FailNextRead = true;
        await Assert.ThrowsAnyAsync<Exception>(() => actor.ReceiveReminderAsync(HandoffRunActor.WakeReminder, [], TimeSpan.Zero, TimeSpan.Zero));
        await state.ClearCacheAsync();

        // The next turn is the same trigger again (a redelivered event, a second click), which saves nothing.
        await TriggerAsync(Trigger(null));
        await state.SaveStateAsync();

        Assert.Contains(timers.Registered.Skip(registered), reminder => reminder.Name == HandoffRunActor.WakeReminder);
    }

    /// <summary>
    /// The stored wake time stands for a registered reminder only while that moment is ahead. A wake-up whose turn failed
    /// and whose retry could not be registered either (the Scheduler out of reach too; or the process killed as the
    /// reminder fired) leaves it in the store, past, with no reminder behind it. The run's next turn keeps that same wake
    /// time (the overdue work is still its next) and must register the reminder again: taken at its word, the stored
    /// time would leave the run never woken.
    /// </summary>
    [Theory]
    [InlineData(5)]
    [InlineData(0)]
    public async Task Past_wake_time_whose_wake_up_failed_unretried_is_registered_again_by_a_turn_that_keeps_it(int minutesLate)
    {
        provider.Fail("acme/down", ScriptedProvider.ServerError);
        var outcome = await TriggerAsync(Trigger(Snapshot("acme/shop", "acme/down")));
        var agentId = Assert.Single(outcome.Result.Successes).CodingAgentState.Id;
        // The runtime's save at the end of the turn stores the registered reminder's time.
        await state.SaveStateAsync();
        var wakeAt = time.GetUtcNow() + timers.Registered[^1].DueTime;
        Assert.Contains(HandoffRunActor.WakeAtKey, state.Saved.Keys);
        // Late, as a firing daprd retried is; or on time: a wake time that has come is no longer ahead either.
        time.Advance(wakeAt - time.GetUtcNow() + TimeSpan.FromMinutes(minutesLate));
        var registered = timers.Registered.Count;

        // The reminder fires; the state store cannot be read and its retry cannot be registered. The runtime drops what
        // the turn changed: the past time stays stored, and the reminder behind it is the Scheduler's to repeat (none
        // for a one-shot one an earlier release registered).
        state.FailNextRead = true;
        timers.FailNextRegistrations = 1;
        await Assert.ThrowsAnyAsync<Exception>(() => actor.ReceiveReminderAsync(HandoffRunActor.WakeReminder, [], TimeSpan.Zero, TimeSpan.Zero));
        await state.ClearCacheAsync();
        Assert.Contains(actorLogs.GetSnapshot(), record => record.Id.Name == "WakeRetryNotRegistered");
        Assert.Equal(registered, timers.Registered.Count);
        Assert.Contains(HandoffRunActor.WakeAtKey, state.Saved.Keys);

        // A webhook: acme/shop's agent is running. The run's next wake-up is still the one that never ran.
        await actor.ApplyAgentReportAsync(new AgentReport(42, new ProviderAgent(agentId, ProviderAgentStatus.Running)));
        await state.SaveStateAsync();

        Assert.Equal(wakeAt, (await actor.GetStateAsync())!.NextWakeAt());
        // Due at once: the wake time has come (five minutes past, or this moment), and a reminder's due time is never negative.
        var again = Assert.Single(timers.Registered.Skip(registered), reminder => reminder.Name == HandoffRunActor.WakeReminder);
        Assert.Equal(TimeSpan.Zero, again.DueTime);
    }

    /// <summary>
    /// A poll's recording turn that gives up on an agent (past its maximum age, still running) saves it failed, then
    /// fails at the reminder: its caller never gets the verdict, and the repeat of the call finds the agent given up on
    /// already and names none to stop. The actor stops it itself, or it would go on working, and could open a pull
    /// request nobody follows.
    /// </summary>
    [Fact]
    public async Task Agent_a_poll_gave_up_on_is_stopped_when_the_polls_turn_saved_and_then_failed_at_its_reminder()
    {
        var outcome = await TriggerAsync(Trigger(Snapshot("acme/shop")));
        var agentId = Assert.Single(outcome.Result.Successes).CodingAgentState.Id;
        time.Advance(new HandoffEngineOptions().AgentMaxAge + TimeSpan.FromMinutes(1));
        var lease = (await actor.GetStateAsync())!.Poll!.NextPollAt;
        var poll = new PollRound(RunId, time.GetUtcNow(), lease, [new AgentRef(agentId, 42)]);
        timers.FailNextRegistrations = 1;

        await Assert.ThrowsAsync<ActorTurnFailedException>(() => actor.CompletePollAsync(new PollAnswers(poll, [new ProviderAgent(agentId, ProviderAgentStatus.Running)])));
        await rounds.WhenIdleAsync();

        Assert.Contains("\"status\":\"failed\"", state.Saved["coding_agents"]);
        Assert.Equal([agentId], provider.Stops);
    }

    /// <summary>
    /// daprd makes an actor call again when its turn saved and then failed (the resiliency policy's retry): the repeat of a
    /// recorded follow-up, known by its command id, records nothing again, or the timeline would show one follow-up twice.
    /// Another command id is another command.
    /// </summary>
    [Fact]
    public async Task Repeated_record_of_a_command_with_the_same_id_is_recorded_once()
    {
        var outcome = await TriggerAsync(Trigger(Snapshot("acme/shop")));
        var agentId = Assert.Single(outcome.Result.Successes).CodingAgentState.Id;
        var sent = new AgentCommandSent(RunId, agentId, Stop: false, CommandId: "command-1");
        await RecordCommandTurnAsync(sent);
        var timeline = state.Saved["timeline"];

        var again = await RecordCommandTurnAsync(sent);

        Assert.Equal(AgentCommandStatus.Done, again.Status);
        Assert.Equal(timeline, state.Saved["timeline"]);
        await RecordCommandTurnAsync(sent with { CommandId = "command-2" });
        Assert.NotEqual(timeline, state.Saved["timeline"]);
    }

    /// <summary>
    /// Any app may call the actor through its sidecar: the record of a command, with its id, for a run that has no state
    /// is an unknown agent, as the engine answers it, and keeps nothing (no id stored for a run that does not exist).
    /// Not a failed turn: that would be an error logged as the store's fault, for a call anyone can make.
    /// </summary>
    [Fact]
    public async Task Record_of_a_command_with_an_id_for_a_run_with_no_state_is_an_unknown_agent_and_keeps_nothing()
    {
        var outcome = await RecordCommandTurnAsync(new AgentCommandSent(RunId, "bc-unknown", Stop: true, CommandId: "command-1"));

        Assert.Equal(AgentCommandStatus.UnknownAgent, outcome.Status);
        Assert.Empty(state.Saved);
        Assert.DoesNotContain(actorLogs.GetSnapshot(), record => record.Id.Name == "ActorTurnFailed");
    }

    /// <summary>
    /// The same for an agent the stored run does not have (a call straight through a sidecar): no id is kept for a
    /// command the engine did not record, so its repeat is an unknown agent again, never "done".
    /// </summary>
    [Fact]
    public async Task Record_of_a_command_with_an_id_for_an_agent_the_run_does_not_have_keeps_no_id()
    {
        await TriggerAsync(Trigger(Snapshot("acme/shop")));
        var sent = new AgentCommandSent(RunId, "bc-unknown", Stop: true, CommandId: "command-1");

        var first = await RecordCommandTurnAsync(sent);
        var again = await RecordCommandTurnAsync(sent);

        Assert.Equal(AgentCommandStatus.UnknownAgent, first.Status);
        Assert.Equal(AgentCommandStatus.UnknownAgent, again.Status);
        Assert.DoesNotContain(HandoffRunActor.RecordedCommandsKey, state.Saved.Keys);
    }

    /// <summary>
    /// The timeline is a key of its own, written only when it changes: a reloaded actor (a new activation, a sidecar
    /// restart) reads it back, and the next save adds to it rather than starting the run's history over.
    /// </summary>
    [Fact]
    public async Task Timeline_is_read_back_by_a_reloaded_actor_and_kept_by_its_next_save()
    {
        var outcome = await TriggerAsync(Trigger(Snapshot("acme/shop")));
        var agentId = Assert.Single(outcome.Result.Successes).CodingAgentState.Id;
        await state.SaveStateAsync();
        var before = (await actor.GetStateAsync())!.Timeline;
        await state.ClearCacheAsync();

        Assert.Equal(before.Count, (await actor.GetStateAsync())!.Timeline.Count);
        await actor.ApplyAgentReportAsync(new AgentReport(42, new ProviderAgent(agentId, ProviderAgentStatus.Finished, PrUrl: "https://github.com/acme/shop/pull/1")));
        await state.SaveStateAsync();
        await state.ClearCacheAsync();

        var after = (await actor.GetStateAsync())!.Timeline;
        Assert.True(after.Count > before.Count, $"{after.Count} timeline entries after the report, {before.Count} before");
        Assert.Equal(before, after.Take(before.Count));
    }

    /// <summary>
    /// daprd's retry of a command's recording can come after other commands to the run were recorded in between: the
    /// ids of the last sixteen are kept, so such a repeat still finds its id and records nothing. Older ids are dropped,
    /// oldest first, so the kept list does not grow with every command the run ever had.
    /// </summary>
    [Fact]
    public async Task Repeat_of_a_command_recorded_before_a_few_others_is_still_recorded_once_and_only_the_last_sixteen_ids_are_kept()
    {
        var outcome = await TriggerAsync(Trigger(Snapshot("acme/shop")));
        var agentId = Assert.Single(outcome.Result.Successes).CodingAgentState.Id;
        var first = new AgentCommandSent(RunId, agentId, Stop: false, CommandId: "command-1");
        await RecordCommandTurnAsync(first);
        for (var i = 2; i <= 4; i++)
        {
            await RecordCommandTurnAsync(first with { CommandId = $"command-{i}" });
        }

        var timeline = state.Saved["timeline"];

        var again = await RecordCommandTurnAsync(first);

        Assert.Equal(AgentCommandStatus.Done, again.Status);
        Assert.Equal(timeline, state.Saved["timeline"]);
        for (var i = 5; i <= 20; i++)
        {
            await RecordCommandTurnAsync(first with { CommandId = $"command-{i}" });
        }

        Assert.Equal(
            Enumerable.Range(5, 16).Select(i => $"command-{i}"),
            JsonSerializer.Deserialize<List<string>>(state.Saved[HandoffRunActor.RecordedCommandsKey]));
    }

    /// <summary>
    /// With <c>Handoff:RunRetention</c>, a settled run is deleted at its tombstone's <c>deleted_at</c> on the app's clock,
    /// that moment included, whether or not the store has expired its keys yet (a store whose clock is behind: this state
    /// manager never expires them). Read as still there at that moment, the run's failed launch would be handed off
    /// again by a trigger, on a run the store is about to drop.
    /// </summary>
    [Fact]
    public async Task A_settled_run_is_deleted_at_the_very_moment_its_deleted_at_comes_though_the_store_still_has_its_keys()
    {
        var retention = TimeSpan.FromDays(1);
        var retained = NewActor(options: new HandoffOptions { RunRetention = retention });
        provider.Fail("acme/shop", new ProviderFailure(FailureTypes.InvalidCredentials, Retryable: false, StatusCode: 401));
        var settled = await retained.TriggerAsync(Trigger(Snapshot("acme/shop")));
        await engine.FinishRoundAsync(settled.Round!, new ActorRecorder(() => retained), CancellationToken.None);
        await state.SaveStateAsync();
        var deletedAt = time.GetUtcNow() + retention;
        provider.Heal("acme/shop");

        time.Advance(retention - TimeSpan.FromTicks(1));
        Assert.NotNull(await retained.GetStateAsync());
        time.Advance(TimeSpan.FromTicks(1));

        Assert.Null(await retained.GetStateAsync());
        Assert.Equal(deletedAt, (await retained.GetDeletedAsync())!.DeletedAt);
        var trigger = await retained.TriggerAsync(Trigger(null));
        Assert.Equal(TriggerStatus.RunDeleted, trigger.Status);
        Assert.Null(trigger.Round);
        Assert.Single(provider.Launches);
    }

    /// <summary>
    /// Any app may call an actor through its sidecar: a completion event for run 124 sent to run 123's actor is not this
    /// actor's run. Taken, it would store run 124's snapshot under run 123 (every later turn of 123 would then fail on it)
    /// and launch 124's repositories from the wrong owner.
    /// </summary>
    [Fact]
    public async Task Completion_event_of_another_run_than_the_actors_is_rejected_and_stores_nothing()
    {
        var outcome = await actor.AcceptCompletedRunAsync(Snapshot("acme/shop") with { RunId = RunId + 1 });

        Assert.Equal(CompletionStatus.Rejected, outcome.Status);
        Assert.Null(outcome.Round);
        await state.SaveStateAsync();
        Assert.Empty(state.Saved);
        Assert.Empty(timers.Registered);
        Assert.Empty(provider.Launches);
    }

    /// <summary>A command's recording as daprd delivers it: the actor call, then the runtime's save at the end of its turn.</summary>
    private async Task<AgentCommandOutcome> RecordCommandTurnAsync(AgentCommandSent sent)
    {
        var outcome = await actor.RecordAgentCommandAsync(sent);
        await state.SaveStateAsync();
        return outcome;
    }

    /// <summary>A trigger as <see cref="ActorRunOwner"/> makes it: the turn, then the round's calls and its answers in a new turn.</summary>
    private async Task<TriggerOutcome> TriggerAsync(HandoffTrigger trigger)
    {
        var outcome = await actor.TriggerAsync(trigger);
        return outcome.Round is { } round
            ? outcome with { Round = null, Result = await engine.FinishRoundAsync(round, new ActorRecorder(() => actor), CancellationToken.None) }
            : outcome;
    }

    private async Task<CompletionOutcome> AcceptCompletedRunAsync(RunSnapshot snapshot)
    {
        var outcome = await actor.AcceptCompletedRunAsync(snapshot);
        return outcome.Round is { } round
            ? outcome with { Round = null, Result = await engine.FinishRoundAsync(round, new ActorRecorder(() => actor), CancellationToken.None) }
            : outcome;
    }

    /// <summary>acme/shop launched and acme/down failed once, its provider since healed, and the clock at its retry.</summary>
    private async Task HealedRetryDueAsync()
    {
        provider.Fail("acme/down", ScriptedProvider.ServerError);
        var outcome = await TriggerAsync(Trigger(Snapshot("acme/shop", "acme/down")));
        provider.Heal("acme/down");
        time.Advance(Assert.Single(outcome.Result.Retries).RetryAt - time.GetUtcNow());
    }

    /// <summary>The wake reminder fires; its round, if it starts one, is waited for.</summary>
    private async Task ReceiveWakeReminderAsync()
    {
        await actor.ReceiveReminderAsync(HandoffRunActor.WakeReminder, [], TimeSpan.Zero, TimeSpan.Zero);
        await rounds.WhenIdleAsync();
    }

    /// <summary>
    /// Records answers in this actor, as <see cref="ActorRunOwner"/> does through the proxy in a new turn: one at a time,
    /// as the runtime's turns are (shared by every recorder of the test class's actor).
    /// </summary>
    private sealed class ActorRecorder(Func<HandoffRunActor> actor) : IRoundRecorder
    {
        private static readonly SemaphoreSlim Turn = new(1, 1);

        /// <summary>When set, a launch round's answers cannot reach the actor (the sidecar gone): this is thrown.</summary>
        public Exception? Unreachable { get; set; }

        public Task<HandoffResult> RecordLaunchesAsync(LaunchRoundAnswers answers) =>
            Unreachable is { } unreachable ? Task.FromException<HandoffResult>(unreachable) : InTurnAsync(() => actor().CompleteLaunchRoundAsync(answers));

        public Task<PollVerdict> RecordPollAsync(PollAnswers answers) => InTurnAsync(() => actor().CompletePollAsync(answers));

        public Task<AgentCommandOutcome> RecordCommandAsync(AgentCommandSent sent) => InTurnAsync(() => actor().RecordAgentCommandAsync(sent));

        private static async Task<T> InTurnAsync<T>(Func<Task<T>> turn)
        {
            await Turn.WaitAsync();
            try
            {
                return await turn();
            }
            finally
            {
                Turn.Release();
            }
        }
    }

    private sealed class Lifetime : IHostApplicationLifetime
    {
        private readonly CancellationTokenSource stopping = new();

        public CancellationToken ApplicationStarted => CancellationToken.None;
        public CancellationToken ApplicationStopping => stopping.Token;
        public CancellationToken ApplicationStopped => CancellationToken.None;
        public void StopApplication() => stopping.Cancel();
    }

    private static RunSnapshot Snapshot(params string[] repositories) => new(
        RunId,
        Group: new RunGroup(456, "Database connection timeout", "SHOP-1"),
        Metadata: new RunMetadata("open_pr", 456),
        Artifacts: new RunArtifacts(new RootCauseArtifact("Pool exhausted")),
        Preferences: new HandoffPreferences(repositories.Select(r => (RepositoryPreference?)new RepositoryPreference("github", r.Split('/')[0], r.Split('/')[1])).ToList()));

    private static HandoffTrigger Trigger(RunSnapshot? snapshot) => new(456, 42, Snapshot: snapshot);

    private sealed class Catalog(Integration integration) : IIntegrationCatalog
    {
        public Integration? Find(long integrationId) => integrationId == integration.Id ? integration : null;
    }
}
