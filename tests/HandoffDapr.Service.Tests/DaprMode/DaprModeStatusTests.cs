using System.Net;
using System.Text.Json.Nodes;
using HandoffDapr.FakeSidecar;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Hosting;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>Status tracking, agent controls, the app token and the second provider in Dapr mode, through the fake sidecar.</summary>
public sealed class DaprModeStatusTests : IAsyncDisposable
{
    private const string Secret = "dapr-mode-webhook-secret-0123456789abcdef";
    private const string Actor = HandoffRunActor.ActorTypeName;
    private readonly FakeCursor cursor = new();
    private readonly FakeCopilot github = new();
    private readonly FakeTimeProvider time = new(DateTimeOffset.UtcNow);

    [Fact]
    public async Task Signed_webhook_completes_the_agent_in_actor_state_and_publishes_the_update()
    {
        await using var factory = await Start();
        var client = factory.CreateSidecarClient();
        var agentId = await Launch(client, 300);
        var body = new JsonObject
        {
            ["event"] = "statusChange", ["id"] = agentId, ["status"] = "FINISHED",
            ["source"] = new JsonObject { ["repository"] = "https://github.com/acme/shop" },
            ["target"] = new JsonObject { ["prUrl"] = "https://github.com/acme/shop/pull/4" },
        }.ToJsonString();
        var request = Payloads.SignedWebhook("/webhooks/cursor/42?run_id=300", body, Secret);

        var response = await factory.CreateClient().SendAsync(request);

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        var agent = factory.Sidecar.GetActorState(Actor, "300", "coding_agents")!.Value.GetProperty(agentId);
        Assert.Equal("completed", agent.GetProperty("status").GetString());
        Assert.Equal("https://github.com/acme/shop/pull/4", agent.GetProperty("results")[0].GetProperty("pr_url").GetString());
        Assert.Equal(2, factory.Sidecar.Published.Count(p => p.Topic == "handoff.coding-agents.updated"));
    }

    /// <summary>
    /// Actors cannot be listed: the status page of a replica shows the runs its own actors saved, as each save left
    /// them, the most recently saved first (<see cref="LocalRecentRuns"/>).
    /// </summary>
    [Fact]
    public async Task Status_list_shows_the_runs_this_replicas_actors_saved_as_last_saved_newest_first()
    {
        await using var factory = await Start();
        var client = factory.CreateSidecarClient();
        var first = await Launch(client, 340);
        await Launch(client, 341);
        var body = new JsonObject
        {
            ["event"] = "statusChange", ["id"] = first, ["status"] = "FINISHED",
            ["source"] = new JsonObject { ["repository"] = "https://github.com/acme/shop" },
            ["target"] = new JsonObject { ["prUrl"] = "https://github.com/acme/shop/pull/5" },
        }.ToJsonString();
        var launchedOrder = (await (await client.GetAsync("/runs")).ReadJsonArrayAsync()).Select(run => run!["run_id"]!.GetValue<long>()).ToList();

        Assert.Equal(HttpStatusCode.NoContent, (await factory.CreateClient().SendAsync(Payloads.SignedWebhook("/webhooks/cursor/42?run_id=340", body, Secret))).StatusCode);
        var listed = await (await client.GetAsync("/runs")).ReadJsonArrayAsync();

        Assert.Equal([341L, 340L], launchedOrder);
        Assert.Equal([340L, 341L], listed.Select(run => run!["run_id"]!.GetValue<long>()));
        Assert.Equal("completed", listed[0]!["coding_agents"]![first]!["status"]!.GetValue<string>());
    }

    [Fact]
    public async Task Poll_reminder_completes_an_agent_whose_webhook_never_came()
    {
        await using var factory = await Start();
        var agentId = await Launch(factory.CreateSidecarClient(), 301);
        cursor.SetStatus(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/8");

        time.Advance(TimeSpan.FromMinutes(1));
        await factory.Sidecar.FireReminderAsync(Actor, "301", HandoffRunActor.WakeReminder);

        // The reminder's turn starts the poll; the read and the turn that records it follow.
        await Eventually.True(() => factory.Sidecar.GetActorState(Actor, "301", "coding_agents")!.Value.GetProperty(agentId).GetProperty("status").GetString() == "completed");
        Assert.Equal("get", factory.Sidecar.BindingInvocations.Last().Operation);
        Assert.Equal($"/v0/agents/{agentId}", factory.Sidecar.BindingInvocations.Last().Metadata["path"]);
        // Nothing left to watch: no reminder remains.
        await Eventually.True(() => !factory.Sidecar.Reminders.Any(r => r.ActorId == "301"));
    }

    [Fact]
    public async Task Stop_and_followup_go_through_the_actor_and_the_binding()
    {
        await using var factory = await Start();
        var client = factory.CreateSidecarClient();
        var agentId = await Launch(client, 302);

        var followup = await client.PostJsonAsync($"/runs/302/agents/{agentId}/followup", new JsonObject { ["text"] = "Add a test" });
        var stop = await client.PostAsync($"/runs/302/agents/{agentId}/stop", null);
        var otherRun = await client.PostAsync($"/runs/303/agents/{agentId}/stop", null);

        Assert.Equal(HttpStatusCode.OK, followup.StatusCode);
        Assert.Equal(HttpStatusCode.OK, stop.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, otherRun.StatusCode);
        Assert.Equal(
            [$"/v0/agents/{agentId}/followup", $"/v0/agents/{agentId}/stop"],
            cursor.CommandRequests.Select(r => r.Path));
        Assert.Equal("failed", factory.Sidecar.GetActorState(Actor, "302", "coding_agents")!.Value.GetProperty(agentId).GetProperty("status").GetString());
    }

    [Fact]
    public async Task Followup_whose_connection_the_provider_refused_is_a_502_and_not_recorded_as_sent()
    {
        await using var factory = await Start();
        var client = factory.CreateSidecarClient();
        var agentId = await Launch(client, 304);
        cursor.Server.Stop(); // the port is closed: the binding's dial is refused, nothing reaches the provider

        var followup = await client.PostJsonAsync($"/runs/304/agents/{agentId}/followup", new JsonObject { ["text"] = "Add a test" });

        // Before: taken for a request that may have been carried out (504 outcome-unknown, recorded as sent).
        Assert.Equal(HttpStatusCode.BadGateway, followup.StatusCode);
        Assert.DoesNotContain("followup_sent", factory.Sidecar.GetActorStateKeys(Actor, "304")["timeline"]);
    }

    [Fact]
    public async Task With_an_app_token_calls_without_it_are_401_and_the_sidecars_calls_work()
    {
        await using var factory = await Start(appApiToken: "app-token-from-daprd-11");
        var anonymous = factory.CreateClient();

        var refused = await anonymous.PostJsonAsync("/runs/1/handoff", Payloads.Trigger());
        Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
        Assert.Equal("dapr-api-token", Assert.Single(refused.Headers.WwwAuthenticate).Scheme);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync("/dapr/subscribe")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync("/dapr/config")).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(1, ["acme/shop"]))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("/healthz")).StatusCode);

        // The sidecar adds the token to everything it sends: the event is delivered and the actor runs.
        var delivery = await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", Payloads.Run(304, ["acme/shop"]));
        Assert.Equal(DeliveryOutcome.Success, delivery.Outcome);
        Assert.Equal(1, cursor.LaunchRequests);
    }

    /// <summary>
    /// With an app token, daprd's other ways in want it too: the dead-letter subscription's route and the actor runtime's
    /// calls (a method, a reminder, a deactivation) sent without it are refused before they reach the run.
    /// </summary>
    [Fact]
    public async Task With_an_app_token_dead_letters_and_actor_calls_without_it_are_401_and_reach_no_run()
    {
        await using var factory = await Start(appApiToken: "app-token-from-daprd-12");
        var anonymous = factory.CreateClient();
        HttpContent Json(string json) => new StringContent(json, System.Text.Encoding.UTF8, "application/json");
        var run = Payloads.Run(305, ["acme/shop"]).ToJsonString();

        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.PostAsync("/events/autofix-run-completed/dead-letter", Json(run))).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.PutAsync($"/actors/{Actor}/305/method/AcceptCompletedRunAsync", Json(run))).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.PutAsync($"/actors/{Actor}/305/method/remind/{HandoffRunActor.WakeReminder}", Json("{}"))).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.DeleteAsync($"/actors/{Actor}/305")).StatusCode);
        Assert.Equal(0, cursor.LaunchRequests);
    }

    [Fact]
    public async Task Actor_call_slower_than_the_actor_call_timeout_is_a_503_and_a_retry_not_a_500()
    {
        // Real time, for every actor call of the test: the app's first (activation, JIT) must not run into it on a
        // loaded machine (2 s could), only the held one and the delivery behind it.
        await using var factory = await Start(settings: new Dictionary<string, string?> { ["Handoff:Dapr:ActorCallTimeout"] = "00:00:05" });
        var client = factory.CreateClient();
        await Launch(client, 310);
        // Deactivated (idle), the actor reads its state from the store at its next turn.
        await factory.Sidecar.DeactivateActorAsync(Actor, "310");
        // The run's state store answers slowly once: the turn that reads it outlasts the proxy's timeout, and a
        // redelivered event for the run waits behind it.
        using var release = new ManualResetEventSlim();
        using var arrived = new ManualResetEventSlim();
        var held = 0;
        factory.Sidecar.BeforeActorStateRead = async call =>
        {
            if (call.ActorId == "310" && Interlocked.Exchange(ref held, 1) == 0)
            {
                arrived.Set();
                await Eventually.Within(TimeSpan.FromSeconds(10), () => release.IsSet);
            }
        };

        var pending = client.PostJsonAsync("/runs/310/handoff", Payloads.Trigger());
        Assert.True(arrived.Wait(TimeSpan.FromSeconds(10)));
        var delivery = await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", Payloads.Run(310, ["acme/shop"]));
        var trigger = await pending;
        release.Set();

        Assert.Equal(HttpStatusCode.ServiceUnavailable, trigger.StatusCode);
        Assert.Equal("https://handoff-dapr.dev/problems/unavailable", (await trigger.ReadJsonAsync())["type"]!.GetValue<string>());
        Assert.Equal(DeliveryOutcome.Retry, delivery.Outcome);
        Assert.Equal(HttpStatusCode.OK, delivery.Response!.StatusCode);
        Assert.Equal("RETRY", (await delivery.Response.ReadJsonAsync())["status"]!.GetValue<string>());
    }

    [Fact]
    public async Task Stop_whose_state_save_fails_leaves_the_reminder_the_stored_state_still_needs()
    {
        await using var factory = await Start();
        var client = factory.CreateSidecarClient();
        var agentId = await Launch(client, 320);
        Assert.Contains(factory.Sidecar.Reminders, r => r.ActorId == "320");

        factory.Sidecar.FailNextActorStateSaves(1);
        var stop = await client.PostAsync($"/runs/320/agents/{agentId}/stop", null);

        // The provider took the stop, so it is answered done although it could not be recorded.
        Assert.Equal(HttpStatusCode.OK, stop.StatusCode);
        // The turn's changes are gone: the stored agent is still pending, with a poll due...
        Assert.Equal("pending", factory.Sidecar.GetActorState(Actor, "320", "coding_agents")!.Value.GetProperty(agentId).GetProperty("status").GetString());
        // ...so the reminder that polls it must still be there.
        Assert.Contains(factory.Sidecar.Reminders, r => r.ActorId == "320");
    }

    [Fact]
    public async Task Finished_webhook_without_the_pull_request_asked_for_brings_the_reminder_forward_and_its_read_carries_it()
    {
        // The sidecar's reminders on the test's clock, so that which are due now can be told.
        await using var factory = await DaprServiceFactory.StartAsync(
            cursor.Url, time: time, sidecarTime: time,
            settings: new Dictionary<string, string?> { ["Handoff:PublicBaseUrl"] = "https://handoff.example.com", ["Handoff:Integrations:42:WebhookSecret"] = Secret });
        var agentId = await Launch(factory.CreateSidecarClient(), 302);
        Assert.Empty(await factory.Sidecar.FireDueRemindersAsync(time.GetUtcNow()));
        // Cursor's webhooks can leave target.prUrl out: the end is confirmed by a read, made at once.
        var body = HandoffInvariants.CursorStatusChange(agentId, "FINISHED", prUrl: null, "https://github.com/acme/shop", branch: null);

        var response = await factory.CreateClient().SendAsync(Payloads.SignedWebhook("/webhooks/cursor/42?run_id=302", body, Secret));

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        Assert.Equal("running", factory.Sidecar.GetActorState(Actor, "302", "coding_agents")!.Value.GetProperty(agentId).GetProperty("status").GetString());
        cursor.SetStatus(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/12");
        var fired = Assert.Single(await factory.Sidecar.FireDueRemindersAsync(time.GetUtcNow()));
        Assert.Equal(("302", HandoffRunActor.WakeReminder), (fired.Reminder.ActorId, fired.Reminder.Name));
        await Eventually.True(() => factory.Sidecar.GetActorState(Actor, "302", "coding_agents")!.Value.GetProperty(agentId).GetProperty("status").GetString() == "completed");
        var agent = factory.Sidecar.GetActorState(Actor, "302", "coding_agents")!.Value.GetProperty(agentId);
        Assert.Equal("https://github.com/acme/shop/pull/12", agent.GetProperty("results")[0].GetProperty("pr_url").GetString());
        Assert.Equal($"/v0/agents/{agentId}", factory.Sidecar.BindingInvocations.Last().Metadata["path"]);
    }

    [Fact]
    public async Task Finished_webhook_without_its_pull_request_of_an_agent_that_had_failed_registers_a_reminder_whose_read_carries_it()
    {
        await using var factory = await DaprServiceFactory.StartAsync(
            cursor.Url, time: time, sidecarTime: time,
            settings: new Dictionary<string, string?> { ["Handoff:PublicBaseUrl"] = "https://handoff.example.com", ["Handoff:Integrations:42:WebhookSecret"] = Secret });
        var agentId = await Launch(factory.CreateSidecarClient(), 303);
        string Webhook(string status) => HandoffInvariants.CursorStatusChange(agentId, status, prUrl: null, "https://github.com/acme/shop", branch: null);
        Assert.Equal(HttpStatusCode.NoContent, (await factory.CreateClient().SendAsync(Payloads.SignedWebhook("/webhooks/cursor/42?run_id=303", Webhook("ERROR"), Secret))).StatusCode);
        Assert.DoesNotContain(factory.Sidecar.Reminders, reminder => reminder.ActorId == "303");

        // Resumed in Cursor's own UI, it finishes; the webhook leaves target.prUrl out.
        cursor.SetStatus(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/13");
        var response = await factory.CreateClient().SendAsync(Payloads.SignedWebhook("/webhooks/cursor/42?run_id=303", Webhook("FINISHED"), Secret));

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        Assert.Equal("completed", factory.Sidecar.GetActorState(Actor, "303", "coding_agents")!.Value.GetProperty(agentId).GetProperty("status").GetString());
        var fired = Assert.Single(await factory.Sidecar.FireDueRemindersAsync(time.GetUtcNow()));
        Assert.Equal(("303", HandoffRunActor.WakeReminder), (fired.Reminder.ActorId, fired.Reminder.Name));
        await Eventually.True(() => factory.Sidecar.GetActorState(Actor, "303", "coding_agents")!.Value.GetProperty(agentId).GetProperty("results")[0].TryGetProperty("pr_url", out var pr)
            && pr.GetString() == "https://github.com/acme/shop/pull/13");
        Assert.Equal($"/v0/agents/{agentId}", factory.Sidecar.BindingInvocations.Last().Metadata["path"]);
        await Eventually.True(() => !factory.Sidecar.Reminders.Any(reminder => reminder.ActorId == "303"));
    }

    [Fact]
    public async Task Followup_whose_actor_turn_daprd_retries_after_its_state_was_saved_is_recorded_once()
    {
        // daprd as components/resiliency.yaml configures it: a failed actor call is made again.
        await using var factory = await DaprServiceFactory.StartAsync(
            cursor.Url, time: time, copilotUrl: github.Url, actorResiliency: true,
            settings: new Dictionary<string, string?> { ["Handoff:PublicBaseUrl"] = "https://handoff.example.com", ["Handoff:Integrations:42:WebhookSecret"] = Secret });
        var client = factory.CreateSidecarClient();
        var agentId = await Launch(client, 330, autoCreatePr: false);
        // Finished without a pull request, not asked for one: nothing is polled, so the follow-up's turn registers the run's
        // reminder again.
        var body = new JsonObject
        {
            ["event"] = "statusChange", ["id"] = agentId, ["status"] = "FINISHED",
            ["source"] = new JsonObject { ["repository"] = "https://github.com/acme/shop" },
        }.ToJsonString();
        var webhook = Payloads.SignedWebhook("/webhooks/cursor/42?run_id=330", body, Secret);
        Assert.Equal(HttpStatusCode.NoContent, (await factory.CreateClient().SendAsync(webhook)).StatusCode);
        // The turn that records the follow-up saves the state, then fails at the reminder: daprd calls it again.
        var failed = 0;
        factory.Sidecar.FailReminderRegistration = (_, id, _) => id == "330" && Interlocked.Exchange(ref failed, 1) == 0;

        var followup = await client.PostJsonAsync($"/runs/330/agents/{agentId}/followup", new JsonObject { ["text"] = "Open the pull request" });

        Assert.Equal(HttpStatusCode.OK, followup.StatusCode);
        // The repeat finds the follow-up recorded and answers with the agent, as the first turn would have.
        Assert.Equal(agentId, (await followup.ReadJsonAsync())["id"]!.GetValue<string>());
        Assert.Equal(1, failed);
        Assert.Single(cursor.CommandRequests);
        var timeline = factory.Sidecar.GetActorState(Actor, "330", "timeline")!.Value.EnumerateArray();
        Assert.Single(timeline, entry => entry.GetProperty("event").GetString() == "followup_sent");
        Assert.Contains(factory.Sidecar.Reminders, r => r.ActorId == "330");
    }

    [Fact]
    public async Task Launch_answers_whose_actor_turn_daprd_retries_after_their_state_was_saved_are_logged_and_counted_once()
    {
        // daprd as components/resiliency.yaml configures it: a failed actor call is made again.
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(
            cursor.Url, time: time, copilotUrl: github.Url, actorResiliency: true, logs: logs,
            settings: new Dictionary<string, string?> { ["Handoff:PublicBaseUrl"] = "https://handoff.example.com", ["Handoff:Integrations:42:WebhookSecret"] = Secret });
        // The turn that records the round's answers saves them, then fails at the reminder (the poll's, the run's second
        // registration): daprd calls it again, and the repeat finds the launch answered already.
        var registrations = 0;
        factory.Sidecar.FailReminderRegistration = (_, id, _) => id == "341" && Interlocked.Increment(ref registrations) == 2;

        var agentId = await Launch(factory.CreateSidecarClient(), 341);

        Assert.True(registrations >= 3);
        // What the saved turn decided is written (and counted) once: the turn that saved it, not the repeat.
        Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "HandoffLaunched" && record.Message.Contains(agentId, StringComparison.Ordinal));
        var timeline = factory.Sidecar.GetActorState(Actor, "341", "timeline")!.Value.EnumerateArray();
        Assert.Single(timeline, entry => entry.GetProperty("event").GetString() == "launched");
    }

    [Fact]
    public async Task Trigger_whose_actor_turn_daprd_retries_after_its_launch_round_was_saved_is_launched_at_once()
    {
        // daprd as components/resiliency.yaml configures it: a failed actor call is made again.
        await using var factory = await DaprServiceFactory.StartAsync(
            cursor.Url, time: time, copilotUrl: github.Url, actorResiliency: true,
            settings: new Dictionary<string, string?> { ["Handoff:PublicBaseUrl"] = "https://handoff.example.com", ["Handoff:Integrations:42:WebhookSecret"] = Secret });
        // The trigger's turn saves its launch round in flight, then fails at the reminder: daprd calls it again.
        var failed = 0;
        factory.Sidecar.FailReminderRegistration = (_, id, _) => id == "340" && Interlocked.Exchange(ref failed, 1) == 0;

        var response = await factory.CreateSidecarClient().PostJsonAsync("/runs/340/handoff", Payloads.Trigger(Payloads.Run(340, ["acme/shop"], automation: false)));

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Equal(1, failed);
        // The round's call is made now, once, not left to the in-flight deadline (two minutes) and a lookup.
        await Eventually.True(() => cursor.LaunchRequests == 1);
        await Eventually.True(() => DaprModeTest.LaunchPhase(factory.Sidecar, 340) == "launched");
        var timeline = factory.Sidecar.GetActorState(Actor, "340", "timeline")!.Value.EnumerateArray().ToList();
        Assert.Single(timeline, entry => entry.GetProperty("event").GetString() == "launch_started");
        Assert.Single(timeline, entry => entry.GetProperty("event").GetString() == "launched");
        Assert.Contains(factory.Sidecar.Reminders, r => r.ActorId == "340");
    }

    [Fact]
    public async Task Completion_event_whose_actor_turn_daprd_retries_after_its_launch_round_was_saved_is_launched_at_once()
    {
        await using var factory = await DaprServiceFactory.StartAsync(
            cursor.Url, time: time, copilotUrl: github.Url, actorResiliency: true,
            settings: new Dictionary<string, string?> { ["Handoff:PublicBaseUrl"] = "https://handoff.example.com", ["Handoff:Integrations:42:WebhookSecret"] = Secret });
        var failed = 0;
        factory.Sidecar.FailReminderRegistration = (_, id, _) => id == "342" && Interlocked.Exchange(ref failed, 1) == 0;

        var delivery = await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", Payloads.Run(342, ["acme/shop"]));

        Assert.Equal(DeliveryOutcome.Success, delivery.Outcome);
        Assert.Equal(1, failed);
        await Eventually.True(() => cursor.LaunchRequests == 1);
        await Eventually.True(() => DaprModeTest.LaunchPhase(factory.Sidecar, 342) == "launched");
    }

    [Fact]
    public async Task Wake_up_whose_turn_fails_at_the_reminder_after_its_launch_round_was_saved_still_launches()
    {
        await using var factory = await Start();
        // The first attempt is refused for now (503): its retry is due at the next wake-up.
        cursor.Script("acme/shop", FakeCursor.Status(503));
        var response = await factory.CreateSidecarClient().PostJsonAsync("/runs/343/handoff", Payloads.Trigger(Payloads.Run(343, ["acme/shop"], automation: false)));
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Equal(1, cursor.LaunchRequests);
        // The wake-up's turn saves the retry in flight, then fails at the reminder for its deadline.
        var failed = 0;
        factory.Sidecar.FailReminderRegistration = (_, id, _) => id == "343" && Interlocked.Exchange(ref failed, 1) == 0;
        time.Advance(TimeSpan.FromMinutes(5));

        await factory.Sidecar.FireReminderAsync(Actor, "343", HandoffRunActor.WakeReminder);

        Assert.Equal(1, failed);
        // The retry is made now, not at the round's deadline (two minutes) after a lookup.
        await Eventually.True(() => cursor.LaunchRequests == 2);
        await Eventually.True(() => DaprModeTest.LaunchPhase(factory.Sidecar, 343) == "launched");
        Assert.Contains(factory.Sidecar.Reminders, r => r.ActorId == "343");
    }

    [Fact]
    public async Task Agent_timed_out_by_a_poll_whose_actor_turn_daprd_retries_after_its_state_was_saved_is_stopped()
    {
        await using var factory = await DaprServiceFactory.StartAsync(
            cursor.Url, time: time, copilotUrl: github.Url, actorResiliency: true,
            settings: new Dictionary<string, string?> { ["Handoff:PublicBaseUrl"] = "https://handoff.example.com", ["Handoff:Integrations:42:WebhookSecret"] = Secret });
        var agentId = await Launch(factory.CreateSidecarClient(), 344);
        time.Advance(TimeSpan.FromHours(7));
        // The wake-up's turn registers the poll's lease; the turn that records the poll (the agent past its maximum age,
        // failed as timed out) saves, then fails at the reminder for the next poll: daprd calls it again.
        var registrations = 0;
        factory.Sidecar.FailReminderRegistration = (_, id, _) => id == "344" && Interlocked.Increment(ref registrations) == 2;

        await factory.Sidecar.FireReminderAsync(Actor, "344", HandoffRunActor.WakeReminder);

        await Eventually.True(() => factory.Sidecar.GetActorState(Actor, "344", "coding_agents")!.Value.GetProperty(agentId).GetProperty("status").GetString() == "failed");
        await factory.Services.GetRequiredService<BackgroundRounds>().WhenIdleAsync();
        Assert.True(registrations >= 3);
        // Given up on, it must not keep working: stopped by the actor for the turn that failed, and again by the repeat,
        // which reads the agent at work (a stop too many, not one too few).
        await Eventually.True(() => cursor.CommandRequests.Any());
        Assert.All(cursor.CommandRequests, command => Assert.Equal($"/v0/agents/{agentId}/stop", command.Path));
        Assert.InRange(cursor.CommandRequests.Count(), 1, 2);
        Assert.Contains(factory.Sidecar.Reminders, r => r.ActorId == "344");
    }

    [Fact]
    public async Task Launch_answers_whose_actor_turn_daprd_retries_after_their_state_was_saved_are_not_logged_as_late_answers()
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(
            cursor.Url, time: time, copilotUrl: github.Url, actorResiliency: true, logs: logs,
            settings: new Dictionary<string, string?> { ["Handoff:PublicBaseUrl"] = "https://handoff.example.com", ["Handoff:Integrations:42:WebhookSecret"] = Secret });
        // The turn that records the round's answers saves them, then fails at the reminder: daprd calls it again with the
        // same answers, which are no answer that came after the launch moved on.
        var registrations = 0;
        factory.Sidecar.FailReminderRegistration = (_, id, _) => id == "342" && Interlocked.Increment(ref registrations) == 2;

        await Launch(factory.CreateSidecarClient(), 342);

        Assert.True(registrations >= 3);
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "LaunchAnswerLate");
    }

    [Fact]
    public async Task Cloud_event_with_a_lone_surrogate_in_an_envelope_attribute_name_is_dropped_not_retried()
    {
        await using var factory = await Start();
        // An extension attribute whose name is a lone surrogate escape: a 500 would make daprd redeliver it again and again.
        var message = """{"specversion":"1.0","id":"e1","source":"autofix","type":"com.dapr.event.sent","topic":"autofix-run-completed","pubsubname":"pubsub","datacontenttype":"application/json","\ud800":"1","data":{"run_id":5,"group":{"id":456}}}""";

        // Posted as daprd posts a delivery (the fake sidecar's own envelope reader cannot read this name either).
        var response = await factory.CreateSidecarClient().PostRawAsync("/events/autofix-run-completed", message, "application/cloudevents+json");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("DROP", (await response.ReadJsonAsync())["status"]!.GetValue<string>());
    }

    [Fact]
    public async Task Cloud_event_without_data_is_dropped_not_retried()
    {
        await using var factory = await Start();
        // No data nor data_base64: no redelivery could bring a snapshot, so it goes to the dead-letter topic at once.
        var message = """{"specversion":"1.0","id":"e3","source":"autofix","type":"com.dapr.event.sent","topic":"autofix-run-completed","pubsubname":"pubsub"}""";

        var response = await factory.CreateSidecarClient().PostRawAsync("/events/autofix-run-completed", message, "application/cloudevents+json");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("DROP", (await response.ReadJsonAsync())["status"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("{")]
    [InlineData("[1,2")]
    [InlineData("{\"specversion\":\"1.0\",\"data\":")]
    [InlineData("not json")]
    public async Task Unsigned_webhook_sent_as_a_malformed_cloud_event_is_refused_not_a_500(string body)
    {
        await using var factory = await Start(appApiToken: "app-token-from-daprd-12");

        var response = await factory.CreateClient().PostRawAsync("/webhooks/cursor/42?run_id=1", body, "application/cloudevents+json");

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
    }

    [Fact]
    public async Task App_token_from_daprd_is_checked_by_our_constant_time_handler_and_a_near_miss_is_refused()
    {
        await using var factory = await Start(appApiToken: "app-token-from-daprd-13");
        var schemes = factory.Services.GetRequiredService<Microsoft.AspNetCore.Authentication.IAuthenticationSchemeProvider>();

        // Dapr.AspNetCore's own handler compares with string.Equals; ours compares digests in constant time.
        var scheme = Assert.Single(await schemes.GetAllSchemesAsync());
        Assert.Equal(typeof(HandoffDapr.Service.Security.TokenAuthenticationHandler), scheme.HandlerType);
        foreach (var given in new[] { "app-token-from-daprd-14", "app-token-from-daprd-1", "APP-TOKEN-FROM-DAPRD-13" })
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/runs/1/handoff");
            request.Headers.Add("dapr-api-token", given);
            Assert.Equal(HttpStatusCode.Unauthorized, (await factory.CreateClient().SendAsync(request)).StatusCode);
        }

        using var right = new HttpRequestMessage(HttpMethod.Get, "/runs/1/handoff");
        right.Headers.Add("dapr-api-token", "app-token-from-daprd-13");
        Assert.Equal(HttpStatusCode.NotFound, (await factory.CreateClient().SendAsync(right)).StatusCode);
    }

    /// <summary>
    /// A caller refused for daprd's token is logged (6005, CallerRefused) with why, never with the token it sent: a wrong
    /// one is daprd and the app disagreeing on APP_API_TOKEN, none a caller that went around daprd.
    /// </summary>
    [Fact]
    public async Task Callers_refused_for_the_dapr_api_token_are_logged_with_why_and_never_the_token()
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, "app-token-from-daprd-16", time, logs: logs);
        using var wrong = new HttpRequestMessage(HttpMethod.Get, "/runs/1/handoff");
        wrong.Headers.Add("dapr-api-token", "rotated-token-9c2d");
        using var none = new HttpRequestMessage(HttpMethod.Get, "/runs/1/handoff");
        // Refused unread, the right token in it or not: not "wrong", which would have the operator compare the tokens.
        using var twice = new HttpRequestMessage(HttpMethod.Get, "/runs/1/handoff");
        twice.Headers.Add("dapr-api-token", ["app-token-from-daprd-16", "app-token-from-daprd-16"]);

        Assert.Equal(HttpStatusCode.Unauthorized, (await factory.CreateClient().SendAsync(wrong)).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await factory.CreateClient().SendAsync(none)).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await factory.CreateClient().SendAsync(twice)).StatusCode);

        var lines = logs.GetSnapshot().Where(record => record.Id.Name == "CallerRefused").ToList();
        Assert.Equal(
            ["wrong dapr-api-token", "no dapr-api-token", "dapr-api-token sent more than once"],
            lines.Select(line => line.GetStructuredStateValue("Reason")));
        Assert.DoesNotContain(logs.GetSnapshot(), record => LogLines.Carry(record, "rotated-token-9c2d") || LogLines.Carry(record, "app-token-from-daprd-16"));
    }

    /// <summary>
    /// daprd sends its token in one dapr-api-token header: the header given twice is refused, though its two values read
    /// together (joined by a comma) are a token with a comma in it.
    /// </summary>
    [Fact]
    public async Task App_token_split_across_two_dapr_api_token_headers_is_refused()
    {
        await using var factory = await Start(appApiToken: "app-token,from-daprd-15");

        using var split = new HttpRequestMessage(HttpMethod.Get, "/runs/1/handoff");
        split.Headers.Add("dapr-api-token", ["app-token", "from-daprd-15"]);
        using var whole = new HttpRequestMessage(HttpMethod.Get, "/runs/1/handoff");
        whole.Headers.Add("dapr-api-token", "app-token,from-daprd-15");

        Assert.Equal(HttpStatusCode.Unauthorized, (await factory.CreateClient().SendAsync(split)).StatusCode);
        // Past the caller check: the run is unknown.
        Assert.Equal(HttpStatusCode.NotFound, (await factory.CreateClient().SendAsync(whole)).StatusCode);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("another-token")]
    public async Task Readiness_fails_and_start_up_says_so_when_the_sidecar_refuses_the_apps_token(string? appsToken)
    {
        // daprd with an API token answers its health endpoint to anyone, and refuses every other call without the token.
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(
            cursor.Url, settings: new Dictionary<string, string?> { ["DAPR_API_TOKEN"] = appsToken }, logs: logs, sidecarApiToken: "daprd-token-7");

        var ready = await factory.CreateClient().GetAsync("/readyz");
        await Eventually.True(() => logs.GetSnapshot().Any(record => record.Id.Name == "SidecarRefusedCalls"));

        Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
        Assert.Equal(Microsoft.Extensions.Logging.LogLevel.Critical, Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "SidecarRefusedCalls").Level);
        // The readiness line blames the token (daprd's Unauthenticated), as a warning though the app was never ready.
        var notReady = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "SidecarNotReady");
        Assert.Contains("refuses the app's calls (DAPR_API_TOKEN)", notReady.Message, StringComparison.Ordinal);
        // Neither token in any part of any record: the app's own (the one it could leak) nor daprd's.
        foreach (var token in new[] { appsToken, "daprd-token-7" }.OfType<string>())
        {
            Assert.DoesNotContain(logs.GetSnapshot(), record => LogLines.Carry(record, token));
        }
    }

    [Theory]
    [InlineData("embedded-token-3b7e", true)]
    [InlineData(null, false)]
    public async Task A_handoff_api_token_set_in_dapr_mode_is_said_at_start_to_guard_nothing(string? apiToken, bool warned)
    {
        // Callers come through daprd there, checked by APP_API_TOKEN: a token copied from an embedded set-up was silently
        // unused, and the API taken for guarded by it.
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, settings: new Dictionary<string, string?> { ["Handoff:ApiToken"] = apiToken }, logs: logs);

        var ready = await factory.CreateClient().GetAsync("/healthz");

        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        Assert.Equal(warned, logs.GetSnapshot().Any(record => record.Id.Name == "ApiTokenIgnored" && record.Level == Microsoft.Extensions.Logging.LogLevel.Warning));
        Assert.DoesNotContain(logs.GetSnapshot(), record => LogLines.Carry(record, "embedded-token-3b7e"));
    }

    /// <summary>
    /// Dapr mode without APP_API_TOKEN checks no caller, as its start-up warning (6002, NoCallerCheck) says: not the
    /// embedded loopback-only check, whose warning would be the wrong one and which would refuse a caller daprd relays
    /// under another Host.
    /// </summary>
    [Fact]
    public async Task Without_an_app_token_dapr_mode_warns_that_any_caller_is_accepted_and_accepts_one_of_another_host()
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, logs: logs);
        using var request = new HttpRequestMessage(HttpMethod.Get, "http://handoff.example/runs/1/handoff");
        request.Headers.Add("Origin", "https://elsewhere.example");

        var response = await factory.CreateClient().SendAsync(request);

        // Past the caller check: the run is unknown.
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        var warning = Assert.Single(logs.GetSnapshot(), record => record.Id.Name is "NoCallerCheck" or "LoopbackOnly" or "CallerCheck");
        Assert.Equal(6002, warning.Id.Id);
        Assert.Equal("NoCallerCheck", warning.Id.Name);
        Assert.Equal(Microsoft.Extensions.Logging.LogLevel.Warning, warning.Level);
    }

    /// <summary>Start-up says Dapr mode runs, and where the runs are kept, in one line that carries no token.</summary>
    [Fact]
    public async Task Start_up_says_it_runs_in_dapr_mode_on_the_actor_state_store_and_names_no_token()
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, appApiToken: "app-token-5c1d", logs: logs);

        Assert.Equal(HttpStatusCode.OK, (await factory.CreateClient().GetAsync("/healthz")).StatusCode);

        var line = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "HostingModeChosen");
        Assert.Equal("Dapr", line.GetStructuredStateValue("Mode"));
        Assert.Equal("daprd's actor state store", line.GetStructuredStateValue("RunStore"));
        Assert.DoesNotContain(logs.GetSnapshot(), record => LogLines.Carry(record, "app-token-5c1d"));
    }

    [Fact]
    public async Task Readiness_passes_with_the_sidecars_token()
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(
            cursor.Url, settings: new Dictionary<string, string?> { ["DAPR_API_TOKEN"] = "daprd-token-7" }, logs: logs, sidecarApiToken: "daprd-token-7");

        var ready = await factory.CreateClient().GetAsync("/readyz");
        await Eventually.True(() => logs.GetSnapshot().Any(record => record.Id.Name == "SidecarReady"));

        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "SidecarRefusedCalls");
    }

    /// <summary>
    /// With daprd's API token set, the calls to a run's actor carry it too: the owner builds its proxies' options from the
    /// SDK's (to give them the actor call timeout), and without the token daprd refuses every trigger, event and read of
    /// a run, each answered 503, while readiness, which checks the token with its own call, says all is well.
    /// </summary>
    [Fact]
    public async Task Calls_to_a_runs_actor_carry_the_sidecars_token()
    {
        await using var factory = await DaprServiceFactory.StartAsync(
            cursor.Url, settings: new Dictionary<string, string?> { ["DAPR_API_TOKEN"] = "daprd-token-7" }, sidecarApiToken: "daprd-token-7");
        var client = factory.CreateSidecarClient();

        var triggered = await client.PostJsonAsync("/runs/306/handoff", Payloads.Trigger(Payloads.Run(306, ["acme/shop"], automation: false)));
        var read = await client.GetAsync("/runs/306/handoff");

        Assert.Equal(HttpStatusCode.Accepted, triggered.StatusCode);
        Assert.Equal(1, cursor.LaunchRequests);
        Assert.Equal(HttpStatusCode.OK, read.StatusCode);
    }

    [Fact]
    public async Task Readiness_reports_the_sidecar()
    {
        await using var factory = await Start();

        var client = factory.CreateClient();
        var ready = await client.GetAsync("/readyz");
        await factory.Sidecar.DisposeAsync(); // the sidecar goes away
        var gone = await client.GetAsync("/readyz");
        var alive = await client.GetAsync("/healthz");

        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, gone.StatusCode);
        // Liveness does not depend on the sidecar: restarting the app would not bring it back.
        Assert.Equal(HttpStatusCode.OK, alive.StatusCode);
    }

    [Fact]
    public async Task Copilot_handoff_in_dapr_mode_launches_through_its_binding_and_polling_completes_it()
    {
        await using var factory = await Start(settings: new Dictionary<string, string?> { ["Handoff:Integrations:43:Provider"] = "github_copilot_agent" });
        var client = factory.CreateSidecarClient();

        var response = await client.PostJsonAsync("/runs/305/handoff", Payloads.Trigger(Payloads.Run(305, ["acme/shop"], automation: false), integrationId: 43));
        var taskId = await response.ReadFirstLaunchedAgentIdAsync();
        await client.PostJsonAsync("/runs/305/handoff", Payloads.Trigger(integrationId: 43));

        Assert.Equal(1, github.LaunchRequests);
        var launch = github.Server.LogEntries.Single().RequestMessage;
        Assert.Equal("Bearer " + DaprServiceFactory.BindingApiKey, launch.Headers!["Authorization"].Single());
        // bindings.http sends Go-canonical header names (X-Github-Api-Version); header names are case-insensitive.
        Assert.Equal("2026-03-10", launch.Headers.Single(h => h.Key.Equals("X-GitHub-Api-Version", StringComparison.OrdinalIgnoreCase)).Value.Single());
        Assert.Equal(0, cursor.LaunchRequests);

        github.SetState(taskId, "completed", "https://github.com/acme/shop/pull/9");
        time.Advance(TimeSpan.FromMinutes(1));
        await factory.Sidecar.FireReminderAsync(Actor, "305", HandoffRunActor.WakeReminder);

        await Eventually.True(() => factory.Sidecar.GetActorState(Actor, "305", "coding_agents")!.Value.GetProperty(taskId).GetProperty("status").GetString() == "completed");
        var agent = factory.Sidecar.GetActorState(Actor, "305", "coding_agents")!.Value.GetProperty(taskId);
        Assert.Equal("https://github.com/acme/shop/pull/9", agent.GetProperty("results")[0].GetProperty("pr_url").GetString());
    }

    private Task<DaprServiceFactory> Start(string? appApiToken = null, IDictionary<string, string?>? settings = null)
    {
        var all = new Dictionary<string, string?>
        {
            ["Handoff:PublicBaseUrl"] = "https://handoff.example.com",
            ["Handoff:Integrations:42:WebhookSecret"] = Secret,
        };
        foreach (var (key, value) in settings ?? new Dictionary<string, string?>())
        {
            all[key] = value;
        }

        return DaprServiceFactory.StartAsync(cursor.Url, appApiToken, time, all, github.Url);
    }

    private static async Task<string> Launch(HttpClient client, long runId, bool autoCreatePr = true)
    {
        var trigger = Payloads.Trigger(Payloads.Run(runId, ["acme/shop"], automation: false));
        trigger["auto_create_pr"] = autoCreatePr;
        var response = await client.PostJsonAsync($"/runs/{runId}/handoff", trigger);
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        return await response.ReadFirstLaunchedAgentIdAsync();
    }

    public ValueTask DisposeAsync()
    {
        cursor.Dispose();
        github.Dispose();
        return ValueTask.CompletedTask;
    }
}
