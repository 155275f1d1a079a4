using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using HandoffDapr.FakeSidecar;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Hosting;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging.Testing;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>The handoff in Dapr mode, end to end through the fake sidecar with the real Dapr SDK doing the talking.</summary>
public sealed class DaprModeTests : DaprModeTest
{
    [Fact]
    public async Task Cloud_event_delivered_by_the_sidecar_launches_through_the_binding_and_persists_actor_state()
    {
        var delivery = await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", Payloads.Run(123, ["acme/shop", "acme/web"]));

        Assert.Equal(DeliveryOutcome.Success, delivery.Outcome);
        Assert.Equal(2, cursor.LaunchRequests);
        // The key was added by the binding, not by the app.
        Assert.All(cursor.Server.LogEntries, entry => Assert.Equal("Bearer " + DaprServiceFactory.BindingApiKey, entry.RequestMessage.Headers!["Authorization"].Single()));
        var invocation = factory.Sidecar.BindingInvocations.First();
        Assert.Equal("post", invocation.Operation);
        Assert.Equal("/v0/agents", invocation.Metadata["path"]);
        Assert.Equal("false", invocation.Metadata["errorIfNot2XX"]);

        var agents = factory.Sidecar.GetActorState(Actor, "123", "coding_agents");
        Assert.NotNull(agents);
        Assert.Equal(2, agents.Value.EnumerateObject().Count());
        Assert.All(agents.Value.EnumerateObject(), agent => Assert.Equal("pending", agent.Value.GetProperty("status").GetString()));
    }

    /// <summary>
    /// Each actor call is a span of its own with the run and the method (issue 8), beside the launch attempts' spans; a
    /// call whose turn fails is an error named by the exception's type only.
    /// </summary>
    [Fact]
    public async Task Each_actor_call_is_a_span_naming_its_run_and_method_and_a_failed_turn_is_an_error()
    {
        var spans = new List<System.Diagnostics.Activity>();
        using var listener = Spans.Record(spans);
        factory.Sidecar.FailReminderRegistration = (_, id, _) => id == "161";

        var launched = await client.PostJsonAsync("/runs/160/handoff", Payloads.Trigger(Payloads.Run(160, ["acme/shop"], automation: false)));
        var failed = await client.PostJsonAsync("/runs/161/handoff", Payloads.Trigger(Payloads.Run(161, ["acme/shop"], automation: false)));

        Assert.Equal(HttpStatusCode.Accepted, launched.StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, failed.StatusCode);
        var calls = Spans.Of(spans, "handoff.actor_call", 160);
        Assert.Equal(["CompleteLaunchRoundAsync", "TriggerAsync"], calls.Select(span => (string)span.GetTagItem("handoff.actor_method")!).Order());
        Assert.All(calls, span => Assert.Equal(System.Diagnostics.ActivityStatusCode.Unset, span.Status));
        // The trigger's turn or the round's recording turn registers the reminder that fails, and a call may be made
        // again (actorRetry, the owner's retry): each failed call is an error of its own.
        var refused = Spans.Of(spans, "handoff.actor_call", 161).Where(span => span.Status == System.Diagnostics.ActivityStatusCode.Error).ToList();
        Assert.NotEmpty(refused);
        Assert.All(refused, span =>
        {
            Assert.Contains((string)span.GetTagItem("handoff.actor_method")!, new[] { "TriggerAsync", "CompleteLaunchRoundAsync" });
            // The SDK's exception for daprd's refusal, by its type: not its message (daprd's error text).
            Assert.Equal(typeof(Dapr.DaprApiException).FullName, span.GetTagItem("error.type"));
            Assert.Null(span.StatusDescription);
        });
    }

    /// <summary>
    /// A completion event's launches, made within its delivery, are in the trace its CloudEvent carries (issue 8); daprd
    /// also sends that trace as the delivery's traceparent header. Launches moved out of the delivery would lose it.
    /// </summary>
    [Fact]
    public async Task Launches_of_a_delivered_event_continue_the_trace_its_cloud_event_carries()
    {
        const string traceId = "0af7651916cd43dd8448eb211c80319c";
        var spans = new List<System.Diagnostics.Activity>();
        using var listener = Spans.Record(spans);
        var cloudEvent = Payloads.CloudEvent(Payloads.Run(162, ["acme/shop", "acme/web"]));
        cloudEvent["traceparent"] = $"00-{traceId}-b7ad6b7169203331-01";

        var delivery = await factory.Sidecar.DeliverBrokerMessageAsync("pubsub", "autofix-run-completed", Encoding.UTF8.GetBytes(cloudEvent.ToJsonString()));

        Assert.Equal(DeliveryOutcome.Success, delivery.Outcome);
        var attempts = Spans.Of(spans, "handoff.launch_attempt", 162);
        Assert.Equal(2, attempts.Count);
        Assert.All(attempts, span => Assert.Equal(traceId, span.TraceId.ToHexString()));
    }

    [Fact]
    public async Task Run_answers_reads_and_redeliveries_while_its_launch_round_is_at_the_provider()
    {
        using var held = cursor.Hold("acme/slow");
        var trigger = client.PostJsonAsync("/runs/140/handoff", Payloads.Trigger(Payloads.Run(140, ["acme/slow"], automation: false)));
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        // The actor's turn ended when the intent was saved: a read and a redelivered event get their own turns now.
        var view = await (await client.GetAsync("/runs/140/handoff")).ReadJsonAsync();
        Assert.Equal("in_flight", view["launches"]![0]!["phase"]!.GetValue<string>());
        var redelivery = await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", Payloads.Run(140, ["acme/slow"]));
        Assert.Equal(DeliveryOutcome.Success, redelivery.Outcome);
        Assert.False(trigger.IsCompleted);

        held.Release();
        var answer = await (await trigger).ReadJsonAsync();
        Assert.Equal("acme/slow", answer["successes"]![0]!["repo_name"]!.GetValue<string>());
        Assert.Equal(1, cursor.LaunchRequests);
        Assert.Equal("launched", LaunchPhase(140));
    }

    [Fact]
    public async Task Agents_saved_by_a_completion_turn_whose_reminder_registration_failed_are_still_published()
    {
        // The trigger turn registers the run's reminder; the round's completion turn moves it and that registration fails once.
        var registrations = 0;
        factory.Sidecar.FailReminderRegistration = (_, id, _) => id == "153" && Interlocked.Increment(ref registrations) == 2;

        var response = await client.PostJsonAsync("/runs/153/handoff", Payloads.Trigger(Payloads.Run(153, ["acme/shop"], automation: false)));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        var agentId = Assert.Single(Agents(153)).Name;

        // The caller retries, as a 503 asks: the retry's turn repairs the reminder.
        var retry = await client.PostJsonAsync("/runs/153/handoff", Payloads.Trigger());
        Assert.Equal(HttpStatusCode.Accepted, retry.StatusCode);
        Assert.Contains(factory.Sidecar.Reminders, r => r.ActorId == "153");

        // The agent is in actor state: its coding_agents update was published, by the turn that saved it.
        Assert.Contains(factory.Sidecar.Published, p => p.Topic == "handoff.coding-agents.updated"
            && JsonNode.Parse(p.Data.ToArray())!["coding_agents"]!.AsObject().ContainsKey(agentId));
    }

    [Fact]
    public async Task Trigger_whose_launch_answers_soon_after_shutdown_begins_gets_its_agent_not_a_retry()
    {
        using var held = cursor.Hold("acme/slow");
        var trigger = client.PostJsonAsync("/runs/142/handoff", Payloads.Trigger(Payloads.Run(142, ["acme/slow"], automation: false)));
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        // A rolling update's SIGTERM while the launch is at the provider, which answers a second later, within the grace.
        factory.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();
        time.Advance(TimeSpan.FromSeconds(1));
        held.Release();

        var response = await trigger;
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Equal("acme/slow", (await response.ReadJsonAsync())["successes"]![0]!["repo_name"]!.GetValue<string>());
        Assert.Equal("launched", LaunchPhase(142));
    }

    [Fact]
    public async Task Trigger_whose_launch_is_still_unanswered_when_the_shutdown_grace_ends_gets_a_retry_and_its_outcome_is_recorded_unknown()
    {
        using var held = cursor.Hold("acme/slow");
        var trigger = client.PostJsonAsync("/runs/143/handoff", Payloads.Trigger(Payloads.Run(143, ["acme/slow"], automation: false)));
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        factory.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();
        time.Advance(new HandoffDapr.Service.Configuration.DaprOptions().ProviderCallGrace);

        // Answered as a retry (on another replica), not a 500 from a service provider the stopping host has let go.
        var response = await trigger;
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal("outcome_unknown", LaunchPhase(143));
    }

    /// <summary>
    /// A delivery whose launch the grace cut asks for redelivery, its outcome recorded unknown, and says why on one line:
    /// it was logged with the cancellation's stack, a warning with a stack trace at every rolling update that cut one.
    /// </summary>
    [Fact]
    public async Task Event_whose_launch_the_shutdown_grace_cut_asks_for_redelivery_and_logs_why_without_a_stack()
    {
        var logs = new FakeLogCollector();
        await using var service = await DaprServiceFactory.StartAsync(cursor.Url, time: time, logs: logs);
        using var held = cursor.Hold("acme/slow");
        var delivery = service.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", Payloads.Run(145, ["acme/slow"]));
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        service.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();
        time.Advance(new HandoffDapr.Service.Configuration.DaprOptions().ProviderCallGrace);

        Assert.Equal(DeliveryOutcome.Retry, (await delivery).Outcome);
        Assert.Equal("outcome_unknown", LaunchPhase(service.Sidecar, 145));
        var line = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "CompletionEventRetry");
        Assert.Equal("the service is shutting down", line.GetStructuredStateValue("Cause"));
        Assert.Equal("redelivery requested", line.GetStructuredStateValue("Answer"));
        Assert.Null(line.Exception);
    }

    [Fact]
    public async Task Trigger_cut_short_by_shutdown_without_a_grace_gets_a_retry_not_a_server_error()
    {
        // The answer is written after the owner returned: the drain must hold the server (and its services) until then.
        await using var stopsAtOnce = await DaprServiceFactory.StartAsync(
            cursor.Url, time: time, settings: new Dictionary<string, string?> { ["Handoff:Dapr:ProviderCallGrace"] = "00:00:00" });
        using var held = cursor.Hold("acme/slow");
        var trigger = stopsAtOnce.CreateSidecarClient().PostJsonAsync("/runs/144/handoff", Payloads.Trigger(Payloads.Run(144, ["acme/slow"], automation: false)));
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        stopsAtOnce.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();

        var response = await trigger;
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal("outcome_unknown", LaunchPhase(stopsAtOnce.Sidecar, 144));
        // The run's state was reached (the outcome is recorded): the answer says why, as a request after the drain is told.
        Assert.Equal("The service is shutting down. Try again shortly.", (await response.ReadJsonAsync())["detail"]!.GetValue<string>());
    }

    [Fact]
    public async Task Follow_up_the_provider_took_is_answered_done_when_recording_it_fails_so_it_is_not_sent_again()
    {
        var launched = await (await client.PostJsonAsync("/runs/171/handoff", Payloads.Trigger(Payloads.Run(171, ["acme/shop"], automation: false)))).ReadJsonAsync();
        var agentId = launched.FirstLaunchedAgentId();

        // The run's state store fails while the follow-up is recorded, after Cursor took it.
        HttpResponseMessage answer;
        using (factory.Sidecar.FailActorStateOperations(call => call.ActorId == "171" && call.Operation == ActorStateOperation.Transaction))
        {
            answer = await client.PostJsonAsync($"/runs/171/agents/{agentId}/followup", new JsonObject { ["text"] = "Add a test" });
        }

        // A 503 would ask the caller to send it again, and the agent would get the instruction twice.
        Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        Assert.Single(cursor.CommandRequests, request => request.Path.EndsWith("/followup"));
    }

    [Fact]
    public async Task Follow_up_still_at_the_provider_when_the_shutdown_grace_ends_is_answered_outcome_unknown_and_recorded_not_a_retry()
    {
        var launched = await (await client.PostJsonAsync("/runs/172/handoff", Payloads.Trigger(Payloads.Run(172, ["acme/shop"], automation: false)))).ReadJsonAsync();
        var agentId = launched.FirstLaunchedAgentId();
        using var held = cursor.HoldCommands();
        var followup = client.PostJsonAsync($"/runs/172/agents/{agentId}/followup", new JsonObject { ["text"] = "Add a test" });
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        // A rolling update's SIGTERM while Cursor has the follow-up; its answer does not come within the grace.
        factory.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();
        time.Advance(new HandoffDapr.Service.Configuration.DaprOptions().ProviderCallGrace);

        // Cursor has the instruction: a 503 would ask the caller to send it again, and the agent would get it twice.
        var response = await followup;
        held.Release();
        Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
        // Recorded as possibly sent, so the agent is watched for what it does with it.
        Assert.Contains("outcome unknown", factory.Sidecar.GetActorStateKeys(Actor, "172")["timeline"]);
    }

    /// <summary>
    /// A stop whose caller hung up while Cursor had it is still answered and recorded: the caller's token is not passed
    /// on. Cut off mid-call, the stop Cursor took would be recorded as of unknown outcome and the agent left as it was.
    /// </summary>
    [Fact]
    public async Task Stop_whose_caller_hangs_up_while_cursor_has_it_is_still_recorded_as_taken()
    {
        var launched = await (await client.PostJsonAsync("/runs/177/handoff", Payloads.Trigger(Payloads.Run(177, ["acme/shop"], automation: false)))).ReadJsonAsync();
        var agentId = launched.FirstLaunchedAgentId();
        using var held = cursor.HoldCommands();
        using var hangUp = new CancellationTokenSource();
        var stop = client.PostAsync($"/runs/177/agents/{agentId}/stop", null, hangUp.Token);
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        await hangUp.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => stop);
        held.Release();

        await Eventually.True(() => factory.Sidecar.GetActorStateKeys(Actor, "177")["timeline"].Contains("stop", StringComparison.OrdinalIgnoreCase));
        Assert.DoesNotContain("outcome unknown", factory.Sidecar.GetActorStateKeys(Actor, "177")["timeline"]);
        Assert.Equal("failed", Assert.Single(Agents(177)).Value.GetProperty("status").GetString());
    }

    [Fact]
    public async Task Run_with_the_largest_accepted_group_id_reads_back_after_its_actor_is_reloaded_from_the_store()
    {
        const long group = Core.Model.WholeIds.Max;
        var response = await client.PostJsonAsync("/runs/170/handoff", Payloads.Trigger(Payloads.Run(170, ["acme/shop"], automation: false, groupId: group), groupId: group));
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);

        // Deactivated (idle, a rebalance, a restart): its state comes back through daprd, whose numbers are float64.
        (await factory.Sidecar.DeactivateActorAsync(Actor, "170")).Dispose();

        var read = await client.GetAsync($"/runs/170/handoff?group_id={group}");
        Assert.Equal(HttpStatusCode.OK, read.StatusCode);
    }

    /// <summary>
    /// Group scoping through the actor: a read naming another group gets exactly the answer of a run that does not exist,
    /// so one group cannot learn of another's runs. Dropping that check for the actor's state (hand mutation) was killed
    /// only by one row of a redelivery test.
    /// </summary>
    [Fact]
    public async Task Read_naming_another_group_is_answered_as_a_run_that_does_not_exist()
    {
        var response = await client.PostJsonAsync("/runs/175/handoff", Payloads.Trigger(Payloads.Run(175, ["acme/shop"], automation: false, groupId: 7), groupId: 7));
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);

        var own = await client.GetAsync("/runs/175/handoff?group_id=7");
        var other = await client.GetAsync("/runs/175/handoff?group_id=8");
        var missing = await client.GetAsync("/runs/176/handoff?group_id=8");

        Assert.Equal(HttpStatusCode.OK, own.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, other.StatusCode);
        var (otherBody, missingBody) = (await other.ReadJsonAsync(), await missing.ReadJsonAsync());
        Assert.Equal(
            (missingBody["type"]!.ToString(), missingBody["title"]!.ToString(), missingBody["detail"]!.ToString()),
            (otherBody["type"]!.ToString(), otherBody["title"]!.ToString(), otherBody["detail"]!.ToString()));
        Assert.DoesNotContain("acme/shop", await other.Content.ReadAsStringAsync(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Run_answers_a_read_while_a_follow_up_is_at_the_provider()
    {
        var launched = await (await client.PostJsonAsync("/runs/141/handoff", Payloads.Trigger(Payloads.Run(141, ["acme/shop"], automation: false)))).ReadJsonAsync();
        var agentId = launched.FirstLaunchedAgentId();
        using var held = cursor.HoldCommands();

        var followup = client.PostJsonAsync($"/runs/141/agents/{agentId}/followup", new JsonObject { ["text"] = "Add a test" });
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));
        var read = await client.GetAsync("/runs/141/handoff");

        // Read through the actor while the follow-up was still at the provider: no turn held for it.
        Assert.Equal(HttpStatusCode.OK, read.StatusCode);
        Assert.False(followup.IsCompleted);
        held.Release();
        Assert.Equal(HttpStatusCode.OK, (await followup).StatusCode);
        var timeline = factory.Sidecar.GetActorState(Actor, "141", "timeline")!.Value;
        Assert.Contains(timeline.EnumerateArray(), entry => entry.GetProperty("event").GetString() == "followup_sent");
    }

    [Fact]
    public async Task Duplicate_and_concurrent_deliveries_launch_each_repository_once()
    {
        var run = Payloads.Run(124, ["acme/shop", "acme/web", "acme/api"]);

        var deliveries = await Task.WhenAll(Enumerable.Range(0, 4).Select(i => factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", run, cloudEventId: $"event-{i}")));
        var late = await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", run);

        Assert.All(deliveries.Append(late), d => Assert.Equal(DeliveryOutcome.Success, d.Outcome));
        Assert.Equal(3, cursor.LaunchRequests);
        Assert.Equal(3, Agents(124).Count());
    }

    [Fact]
    public async Task A_late_redelivery_of_an_event_the_run_has_moved_past_keeps_the_newer_snapshot_after_its_actor_is_reloaded()
    {
        var first = Payloads.Run(126, ["acme/shop"], automation: false);
        var newer = Payloads.Run(126, ["acme/shop", "acme/web"], automation: false);
        Assert.Equal(DeliveryOutcome.Success, (await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", first)).Outcome);
        Assert.Equal(DeliveryOutcome.Success, (await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", newer)).Outcome);
        (await factory.Sidecar.DeactivateActorAsync(Actor, "126")).Dispose();

        var redelivered = await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", first);
        // A person's trigger without a run hands off the snapshot the run kept: the newer event's two repositories.
        var trigger = await client.PostJsonAsync("/runs/126/handoff", Payloads.Trigger());

        Assert.Equal(DeliveryOutcome.Success, redelivered.Outcome);
        Assert.Equal(HttpStatusCode.Accepted, trigger.StatusCode);
        Assert.Equal(2, cursor.LaunchRequests);
        Assert.Equal(1, factory.Sidecar.GetActorState(Actor, "126", "replaced_snapshots")!.Value.GetArrayLength());
    }

    [Fact]
    public async Task Manual_trigger_goes_through_the_actor_and_the_update_publishes_the_agents_as_GET_shows_them()
    {
        var response = await client.PostJsonAsync("/runs/125/handoff", Payloads.Trigger(Payloads.Run(125, ["acme/shop"], automation: false)));

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var agentId = await response.ReadFirstLaunchedAgentIdAsync();
        var view = await (await client.GetAsync("/runs/125/handoff")).ReadJsonAsync();
        Assert.True(view["coding_agents"]!.AsObject().ContainsKey(agentId));

        var update = Assert.Single(factory.Sidecar.Published, p => p.Topic == "handoff.coding-agents.updated");
        var data = JsonNode.Parse(update.Data.ToArray())!;
        Assert.Equal(125, data["run_id"]!.GetValue<long>());
        Assert.Equal(Payloads.GroupId, data["group_id"]!.GetValue<long>());
        Assert.True(data["coding_agents"]!.AsObject().ContainsKey(agentId));
        // The run's whole set, as GET writes it (docs/api.md, "Agent updates").
        Assert.True(JsonNode.DeepEquals(view["coding_agents"], data["coding_agents"]), $"published {data["coding_agents"]}, GET has {view["coding_agents"]}");
    }

    /// <summary>
    /// An update is published when a save changes the run's coding_agents, not at every save of a run that has agents: a
    /// retry's intent and its failed answer leave the agents as they were, and their subscribers are told nothing new.
    /// </summary>
    [Fact]
    public async Task Saves_that_leave_the_coding_agents_as_they_were_publish_no_update()
    {
        cursor.Script("acme/down", FakeCursor.Status(500));
        cursor.Script("acme/down", FakeCursor.Status(500));
        var response = await client.PostJsonAsync("/runs/128/handoff", Payloads.Trigger(Payloads.Run(128, ["acme/shop", "acme/down"], automation: false)));
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Single(factory.Sidecar.Published, p => p.Topic == "handoff.coding-agents.updated");

        // The retry is due; acme/down fails again.
        time.Advance(TimeSpan.FromMinutes(1));
        Assert.True((await factory.Sidecar.FireReminderAsync(Actor, "128", HandoffRunActor.WakeReminder)).IsSuccessStatusCode);
        await Eventually.True(() => cursor.LaunchRequests == 3
            && factory.Sidecar.GetActorState(Actor, "128", "launches")!.Value.EnumerateArray().All(launch => launch.GetProperty("phase").GetString() != "in_flight"));

        var updates = factory.Sidecar.Published
            .Where(p => p.Topic == "handoff.coding-agents.updated")
            .Select(p => JsonNode.Parse(p.Data.ToArray())!["coding_agents"]!.ToJsonString())
            .ToList();
        Assert.All(updates.Zip(updates.Skip(1)), pair => Assert.NotEqual(pair.First, pair.Second));
    }

    /// <summary>
    /// An update is published once its agents are saved: a save the state store refuses publishes none, or subscribers
    /// would hear of an agent the run's state (and GET) does not have.
    /// </summary>
    [Fact]
    public async Task A_save_the_state_store_refuses_publishes_no_update_of_the_agents_it_would_have_saved()
    {
        using var held = cursor.Hold("acme/shop");
        var trigger = client.PostJsonAsync("/runs/176/handoff", Payloads.Trigger(Payloads.Run(176, ["acme/shop"], automation: false)));
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        // Cursor answers with the agent; the turn that records it cannot save.
        HttpResponseMessage response;
        using (factory.Sidecar.FailActorStateOperations(call => call.ActorId == "176" && call.Operation == ActorStateOperation.Transaction))
        {
            held.Release();
            response = await trigger;
        }

        Assert.Empty(Agents(176));
        Assert.DoesNotContain(factory.Sidecar.Published, p => p.Topic == "handoff.coding-agents.updated");
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
    }

    [Fact]
    public async Task Another_groups_run_is_unknown_through_the_actor_too()
    {
        await client.PostJsonAsync("/runs/126/handoff", Payloads.Trigger(Payloads.Run(126, ["acme/shop"], automation: false)));

        var response = await client.PostJsonAsync("/runs/126/handoff", Payloads.Trigger(groupId: 999));

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal(1, cursor.LaunchRequests);
    }

    [Fact]
    public async Task Provider_error_is_a_generic_retry_and_the_reminder_launches_it_later()
    {
        cursor.Script("acme/shop", FakeCursor.Status(500));

        var response = await client.PostJsonAsync("/runs/127/handoff", Payloads.Trigger(Payloads.Run(127, ["acme/shop"], automation: false)));
        var text = await response.Content.ReadAsStringAsync();

        Assert.DoesNotContain(FakeCursor.ProviderSecretText, text);
        Assert.Equal("provider_unavailable", JsonNode.Parse(text)!["retries"]![0]!["failure_type"]!.GetValue<string>());
        var reminder = Assert.Single(factory.Sidecar.Reminders, r => r.ActorId == "127" && r.Name == HandoffRunActor.WakeReminder);

        // When due, the Scheduler fires it (empty dueTime and period): the actor retries the repository.
        time.Advance(TimeSpan.FromMinutes(1));
        var fired = await factory.Sidecar.FireReminderAsync(Actor, "127", HandoffRunActor.WakeReminder);

        Assert.True(fired.IsSuccessStatusCode);
        // The reminder's turn ends once the attempt is saved in flight; the call and its answer's turn follow.
        await Eventually.True(() => LaunchPhase(127) == "launched");
        Assert.Equal(2, cursor.LaunchRequests);
        Assert.Equal(1, cursor.AgentsFor("acme/shop"));
    }

    [Fact]
    public async Task Completion_event_that_hits_a_failing_state_store_asks_for_redelivery()
    {
        factory.Sidecar.FailNextActorStateSaves(1);

        var delivery = await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", Payloads.Run(128, ["acme/shop"]));

        Assert.Equal(DeliveryOutcome.Retry, delivery.Outcome);
        Assert.Empty(factory.Sidecar.AppExceptions);
        // resiliency.yaml's inbound retry keeps it out of the dead-letter topic.
        Assert.False(delivery.DeadLettered);
        Assert.DoesNotContain(factory.Sidecar.Published, p => p.Topic == "autofix-run-completed-deadletter");

        // Redelivered after the store recovers: launched once.
        var again = await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", Payloads.Run(128, ["acme/shop"]));
        Assert.Equal(DeliveryOutcome.Success, again.Outcome);
        Assert.Equal(1, cursor.AgentsFor("acme/shop"));
    }

    /// <summary>
    /// An event naming another group than the stored run's is refused for good: dropped to the dead-letter topic (an
    /// operator looks at it), not taken as handled, and the stored run is not touched.
    /// </summary>
    [Fact]
    public async Task Event_for_a_run_of_another_group_is_dropped_to_the_dead_letter_topic_and_launches_nothing()
    {
        Assert.Equal(DeliveryOutcome.Success, (await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", Payloads.Run(129, ["acme/shop"], automation: false))).Outcome);

        var delivery = await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", Payloads.Run(129, ["evil/repo"], groupId: 999));

        Assert.Equal(DeliveryOutcome.Drop, delivery.Outcome);
        Assert.True(delivery.DeadLettered);
        Assert.Equal(0, cursor.LaunchRequests);
        Assert.Equal(Payloads.GroupId, (await (await client.GetAsync("/runs/129/handoff")).ReadJsonAsync())["group_id"]!.GetValue<long>());
    }

    [Fact]
    public async Task Malformed_event_is_dropped_to_the_dead_letter_topic()
    {
        var delivery = await factory.Sidecar.DeliverRawEventAsync("pubsub", "autofix-run-completed", Encoding.UTF8.GetBytes("""{"run_id":"not a number"}"""), "application/json");

        Assert.Equal(DeliveryOutcome.Drop, delivery.Outcome);
        Assert.True(delivery.DeadLettered);
        Assert.Contains(factory.Sidecar.Published, p => p.Topic == "autofix-run-completed-deadletter");
        Assert.Equal(0, cursor.LaunchRequests);
    }

    [Fact]
    public async Task Dapr_config_lists_the_actor_with_reentrancy_off()
    {
        var config = await (await client.GetAsync("/dapr/config")).ReadJsonAsync();

        Assert.Contains("HandoffRunActor", config["entities"]!.AsArray().Select(e => e!.GetValue<string>()));
        Assert.False(config["reentrancy"]!["enabled"]!.GetValue<bool>());
    }

    [Fact]
    public async Task Actor_drain_timeout_fits_a_placement_round_and_no_daprd_clamps_it()
    {
        var config = await (await client.GetAsync("/dapr/config")).ReadJsonAsync();

        // The placement service drops a daprd that has not answered a round in 8 s; daprd 1.17.7+ clamps 5 s and more
        // to 4 s, 1.18 30 s and more to 24 s. The SDK writes Go's duration form, e.g. "0h0m4s0ms".
        var parts = System.Text.RegularExpressions.Regex.Match(config["drainOngoingCallTimeout"]!.GetValue<string>(), @"^(\d+)h(\d+)m(\d+)s(\d+)ms$").Groups;
        var drain = new TimeSpan(0, int.Parse(parts[1].Value), int.Parse(parts[2].Value), int.Parse(parts[3].Value), int.Parse(parts[4].Value));
        Assert.InRange(drain, TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(4));
        Assert.True(config["drainRebalancedActors"]!.GetValue<bool>());
    }

    [Fact]
    public async Task Dapr_config_gives_daprd_an_actor_idle_timeout_of_30_minutes_half_its_default()
    {
        var config = await (await client.GetAsync("/dapr/config")).ReadJsonAsync();

        // A run's actor is called mostly just after its event and at its wake-ups: held 30 min idle, not daprd's 60.
        Assert.Equal("0h30m0s0ms", config["actorIdleTimeout"]!.GetValue<string>());
    }

    [Fact]
    public async Task Dapr_subscribe_lists_the_topic_route_and_dead_letter_topic()
    {
        var subscriptions = JsonNode.Parse(await client.GetStringAsync("/dapr/subscribe"))!.AsArray();

        var completion = subscriptions.Single(s => s!["topic"]!.GetValue<string>() == "autofix-run-completed")!;
        Assert.Equal("pubsub", completion["pubsubName"]!.GetValue<string>());
        Assert.Equal("autofix-run-completed-deadletter", completion["deadLetterTopic"]!.GetValue<string>());
        Assert.Contains("events/autofix-run-completed", completion["route"]?.GetValue<string>() ?? completion["routes"]!.ToJsonString());
        Assert.Contains(subscriptions, s => s!["topic"]!.GetValue<string>() == "autofix-run-completed-deadletter");
    }

    [Theory]
    [InlineData("DELETE")]
    [InlineData("POST")]
    [InlineData("PUT")]
    public async Task Liveness_probe_answers_only_get_and_head_in_dapr_mode_too(string method)
    {
        // The SDK's MapActorsHandlers maps a /healthz of its own, for any method, open to anyone and running every
        // health check (the sidecar's readiness too): the method the probe does not take must not reach it.
        var response = await factory.CreateClient().SendAsync(new HttpRequestMessage(new HttpMethod(method), "/healthz"));

        Assert.Equal(HttpStatusCode.MethodNotAllowed, response.StatusCode);
        Assert.Equal("https://handoff-dapr.dev/problems/method-not-allowed", (await response.ReadJsonAsync())["type"]!.GetValue<string>());
        Assert.Equal(["GET", "HEAD"], response.Content.Headers.Allow.Order());
        Assert.Equal("Healthy", await client.GetStringAsync("/healthz"));
        Assert.Equal(HttpStatusCode.OK, (await client.SendAsync(new HttpRequestMessage(HttpMethod.Head, "/healthz"))).StatusCode);
    }
}
