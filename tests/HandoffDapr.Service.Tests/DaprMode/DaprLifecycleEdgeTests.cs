using System.Net;
using System.Text.Json.Nodes;
using HandoffDapr.FakeSidecar;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Hosting;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// Dapr mode's lifecycle edges end to end through the fake sidecar: shutdown while a reminder's round is at the provider,
/// a reminder and an event arriving while the app drains, deactivation under a round, a reminder whose run is gone,
/// wake firings lost while the app is down, a settled run's reminder.
/// </summary>
public sealed class DaprLifecycleEdgeTests(ITestOutputHelper output) : DaprModeTest
{
    private async Task RetryDueAsync(long run, string repo)
    {
        cursor.Script(repo, FakeCursor.Status(503));
        var response = await client.PostJsonAsync($"/runs/{run}/handoff", Payloads.Trigger(Payloads.Run(run, [repo], automation: false)));
        output.WriteLine(await response.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        time.Advance(TimeSpan.FromMinutes(10));
    }

    [Fact]
    public async Task Reminder_round_answered_within_the_grace_after_sigterm_is_recorded_launched()
    {
        await RetryDueAsync(901, "acme/down");
        using var held = cursor.Hold("acme/down");
        using var fired = await factory.Sidecar.FireReminderAsync(Actor, "901", HandoffRunActor.WakeReminder);
        Assert.Equal(HttpStatusCode.OK, fired.StatusCode);
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        var stopped = HostShutdown.Begin(factory.Services);
        time.Advance(TimeSpan.FromSeconds(1));
        held.Release();
        await stopped.WaitAsync(TimeSpan.FromSeconds(30));

        var launches = factory.Sidecar.GetActorState(Actor, "901", "launches")!.Value;
        output.WriteLine(launches.GetRawText());
        Assert.Equal("launched", launches[0].GetProperty("phase").GetString());
        Assert.Single(Agents(901));
    }

    [Fact]
    public async Task Reminder_round_unanswered_at_the_end_of_the_grace_is_recorded_unknown_and_its_reminder_kept()
    {
        await RetryDueAsync(902, "acme/down");
        using var held = cursor.Hold("acme/down");
        using var fired = await factory.Sidecar.FireReminderAsync(Actor, "902", HandoffRunActor.WakeReminder);
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        var stopped = HostShutdown.Begin(factory.Services);
        time.Advance(new HandoffDapr.Service.Configuration.DaprOptions().EffectiveProviderCallGrace);
        await stopped.WaitAsync(TimeSpan.FromSeconds(30));
        held.Release();

        var launches = factory.Sidecar.GetActorState(Actor, "902", "launches")!.Value;
        output.WriteLine(launches.GetRawText());
        Assert.Equal("outcome_unknown", launches[0].GetProperty("phase").GetString());
        Assert.Contains(factory.Sidecar.Reminders, r => r.ActorId == "902");
    }

    [Fact]
    public async Task Reminder_and_event_arriving_while_draining_after_the_grace_send_nothing_and_leave_their_launches_to_a_reminder()
    {
        await RetryDueAsync(907, "acme/down");
        var launchesBefore = cursor.LaunchRequests;
        var draining = await DrainPastTheGraceAsync();
        using var fired = await factory.Sidecar.FireReminderAsync(Actor, "907", HandoffRunActor.WakeReminder);
        output.WriteLine($"reminder: {(int)fired.StatusCode} {await fired.Content.ReadAsStringAsync()}");
        await factory.Services.GetRequiredService<BackgroundRounds>().WhenIdleAsync().WaitAsync(TimeSpan.FromSeconds(10));
        var delivery = await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", Payloads.Run(908, ["acme/shop"]));
        output.WriteLine($"event: {delivery.Outcome}");
        output.WriteLine("907: " + string.Join("\n", factory.Sidecar.GetActorStateKeys(Actor, "907").Select(kv => kv.Key + "=" + kv.Value)));
        output.WriteLine("908: " + string.Join("\n", factory.Sidecar.GetActorStateKeys(Actor, "908").Select(kv => kv.Key + "=" + kv.Value)));
        output.WriteLine("reminders: " + string.Join(", ", factory.Sidecar.Reminders.Select(r => r.ActorId + "@" + r.DueTime)));
        output.WriteLine($"launch requests during drain: {cursor.LaunchRequests - launchesBefore}");
        await draining.EndAsync();
        Assert.Equal(HttpStatusCode.OK, fired.StatusCode);
        Assert.Equal(DeliveryOutcome.Retry, delivery.Outcome);
        Assert.Equal(launchesBefore, cursor.LaunchRequests);
        Assert.Equal("retry_scheduled", LaunchPhase(907));
        Assert.Equal("retry_scheduled", LaunchPhase(908));
        Assert.Contains(factory.Sidecar.Reminders, r => r.ActorId == "907");
        Assert.Contains(factory.Sidecar.Reminders, r => r.ActorId == "908");
    }

    /// <summary>
    /// A person's stop or follow-up that reaches the app while it drains, once the provider calls' grace is over:
    /// nothing is sent (the caller may send it again, to another replica), and the answer says so, a 503 as a request
    /// after the drain gets, never the 500 of a cancellation escaping the run's owner.
    /// </summary>
    [Theory]
    [InlineData("stop")]
    [InlineData("followup")]
    public async Task Stop_or_followup_arriving_while_draining_after_the_grace_sends_nothing_and_is_a_503_not_a_500(
        string command)
    {
        var launched = await client.PostJsonAsync(
            "/runs/909/handoff", Payloads.Trigger(Payloads.Run(909, ["acme/shop"], automation: false)));
        var agentId = await launched.ReadFirstLaunchedAgentIdAsync();
        var draining = await DrainPastTheGraceAsync();
        var path = $"/runs/909/agents/{agentId}/{command}";
        var sent = command == "stop"
            ? await client.PostAsync(path, null)
            : await client.PostJsonAsync(path, new JsonObject { ["text"] = "Add a test" });
        var answer = await sent.Content.ReadAsStringAsync();
        await draining.EndAsync();

        Assert.Equal(HttpStatusCode.ServiceUnavailable, sent.StatusCode);
        Assert.Equal(
            "The service is shutting down. Try again shortly.",
            JsonNode.Parse(answer)!["detail"]!.GetValue<string>());
        Assert.Empty(cursor.CommandRequests);
    }

    [Fact]
    public async Task Deactivated_while_its_reminders_round_is_out_records_the_answers_in_a_new_activation()
    {
        await RetryDueAsync(910, "acme/down");
        using var held = cursor.Hold("acme/down");
        using var fired = await factory.Sidecar.FireReminderAsync(Actor, "910", HandoffRunActor.WakeReminder);
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));
        using var deactivated = await factory.Sidecar.DeactivateActorAsync(Actor, "910");
        output.WriteLine($"deactivate: {(int)deactivated.StatusCode}");
        held.Release();
        await factory.Services.GetRequiredService<BackgroundRounds>().WhenIdleAsync().WaitAsync(TimeSpan.FromSeconds(20));
        var launches = factory.Sidecar.GetActorState(Actor, "910", "launches")!.Value;
        output.WriteLine(launches.GetRawText());
        Assert.Equal("launched", launches[0].GetProperty("phase").GetString());
        var view = await (await client.GetAsync("/runs/910/handoff")).ReadJsonAsync();
        output.WriteLine(view.ToJsonString());
        Assert.Single(view["coding_agents"]!.AsObject());
    }

    [Fact]
    public async Task Reminder_for_a_run_whose_state_was_deleted_succeeds_launches_nothing_and_leaves_nothing_behind()
    {
        await RetryDueAsync(911, "acme/down");
        (await factory.Sidecar.DeactivateActorAsync(Actor, "911")).Dispose();
        foreach (var key in factory.Sidecar.GetActorStateKeys(Actor, "911").Keys.ToList())
        {
            factory.Sidecar.RemoveActorState(Actor, "911", key);
        }

        var before = cursor.LaunchRequests;
        using var fired = await factory.Sidecar.FireReminderAsync(Actor, "911", HandoffRunActor.WakeReminder);
        output.WriteLine($"reminder: {(int)fired.StatusCode} {await fired.Content.ReadAsStringAsync()}");
        await factory.Services.GetRequiredService<BackgroundRounds>().WhenIdleAsync().WaitAsync(TimeSpan.FromSeconds(20));
        output.WriteLine("state: " + string.Join(", ", factory.Sidecar.GetActorStateKeys(Actor, "911").Keys));
        output.WriteLine("reminders: " + string.Join(", ", factory.Sidecar.Reminders.Select(r => r.ActorId)));
        Assert.Equal(HttpStatusCode.OK, fired.StatusCode);
        Assert.Equal(before, cursor.LaunchRequests);
        Assert.Empty(factory.Sidecar.GetActorStateKeys(Actor, "911"));
        Assert.DoesNotContain(factory.Sidecar.Reminders, r => r.ActorId == "911");
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync("/runs/911/handoff")).StatusCode);
    }

    // A wake firing the app never takes (its process down while daprd still routes the run to it, until the app health
    // check fails) is retried by the Scheduler three times, a second apart, then counted done: a one-shot reminder would
    // be gone, and the run's retry with it. The reminder repeats (HandoffRunActor.WakeRepeat).
    [Fact]
    public async Task A_retry_whose_wake_firings_all_fail_while_the_app_is_down_is_made_at_the_reminders_next_repeat()
    {
        cursor.Script("acme/down", FakeCursor.Status(503));
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/920/handoff", Payloads.Trigger(Payloads.Run(920, ["acme/down"], automation: false)))).StatusCode);
        var launchesBefore = cursor.LaunchRequests;
        var reminder = Assert.Single(factory.Sidecar.Reminders, r => r.ActorId == "920");

        // The app is down: the firing and the Scheduler's three retries, a second apart, all fail.
        var app = factory.Sidecar.AppChannel;
        factory.Sidecar.AppChannel = new RefusingAppChannel();
        time.Advance(reminder.NextDueAt - time.GetUtcNow());
        var failed = 0;
        for (var i = 0; i < 4; i++)
        {
            var firings = await factory.Sidecar.FireDueRemindersAsync(time.GetUtcNow());
            failed += firings.Count(f => f.Reminder.ActorId == "920" && f.StatusCode != HttpStatusCode.OK);
            time.Advance(TimeSpan.FromSeconds(1));
        }

        Assert.Equal(4, failed);
        Assert.Equal(launchesBefore, cursor.LaunchRequests);
        // The tick is spent; the reminder is still there, due at its next repeat.
        var repeating = Assert.Single(factory.Sidecar.Reminders, r => r.ActorId == "920");
        Assert.Equal(reminder.NextDueAt + HandoffRunActor.WakeRepeat, repeating.NextDueAt);

        // The app is back: the repeat wakes the run, and the retry is made once.
        factory.Sidecar.AppChannel = app;
        time.Advance(repeating.NextDueAt - time.GetUtcNow());
        var woken = Assert.Single(await factory.Sidecar.FireDueRemindersAsync(time.GetUtcNow()), f => f.Reminder.ActorId == "920");
        Assert.Equal(HttpStatusCode.OK, woken.StatusCode);
        await Eventually.True(() => LaunchPhase(920) == "launched");
        Assert.Equal(launchesBefore + 1, cursor.LaunchRequests);
        Assert.Equal(1, cursor.AgentsFor("acme/down"));
    }

    [Fact]
    public async Task A_run_settled_by_its_wakes_round_keeps_no_reminder()
    {
        // Refused for good (401): the wake's retry ends the launch, and the run has nothing left to wake for (the turn
        // that records the round's answer removes the reminder).
        cursor.Script("acme/down", FakeCursor.Status(503), FakeCursor.Status(401));
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/921/handoff", Payloads.Trigger(Payloads.Run(921, ["acme/down"], automation: false)))).StatusCode);
        var reminder = Assert.Single(factory.Sidecar.Reminders, r => r.ActorId == "921");

        time.Advance(reminder.NextDueAt - time.GetUtcNow());
        Assert.Equal(HttpStatusCode.OK, Assert.Single(await factory.Sidecar.FireDueRemindersAsync(time.GetUtcNow()), f => f.Reminder.ActorId == "921").StatusCode);

        await Eventually.True(() => LaunchPhase(921) == "failed");
        await Eventually.True(() => !factory.Sidecar.Reminders.Any(r => r.ActorId == "921"));
        time.Advance(TimeSpan.FromHours(1));
        Assert.DoesNotContain(await factory.Sidecar.FireDueRemindersAsync(time.GetUtcNow()), f => f.Reminder.ActorId == "921");
    }

    /// <summary>
    /// Stops the app and moves its clock past the provider calls' grace, while a read held at the store keeps the
    /// drain waiting, so the server still takes requests; <see cref="HeldDrain.EndAsync"/> lets the read go and awaits
    /// the stop.
    /// </summary>
    private async Task<HeldDrain> DrainPastTheGraceAsync()
    {
        var heldReads = new HeldActorReads(factory.Sidecar, "999");
        var read = client.GetAsync("/runs/999/handoff");
        Assert.True(heldReads.Arrived.Wait(TimeSpan.FromSeconds(10)));
        var drain = factory.Services.GetRequiredService<RequestDrain>();
        var stopped = HostShutdown.Begin(factory.Services);
        await Eventually.True(() => drain.IsDraining);

        time.Advance(new HandoffDapr.Service.Configuration.DaprOptions().EffectiveProviderCallGrace);
        return new HeldDrain(heldReads, read, stopped);
    }

    private sealed class HeldDrain(HeldActorReads heldReads, Task read, Task stopped)
    {
        public async Task EndAsync()
        {
            heldReads.Release();
            await read.WaitAsync(TimeSpan.FromSeconds(20)).ContinueWith(_ => { });
            await stopped.WaitAsync(TimeSpan.FromSeconds(30));
        }
    }
}
