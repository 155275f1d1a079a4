using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using HandoffDapr.FakeSidecar;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Hosting;
using HandoffDapr.Service.Tests.DaprMode;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.EndToEnd;

/// <summary>
/// Whole sequences through the HTTP API, in both hosts, across this release's changes: a completion event and its
/// redeliveries (embedded mode answers repeats from a digest), the stored view read by GET, webhooks, stop and
/// follow-up, manual triggers that carry a snapshot, and shutdown while a launch is at the provider. Each sequence
/// must give the same observable answers in both modes: status codes, what reached the provider, the GET body.
/// </summary>
public sealed class RedeliveryViewsAndShutdownTests : IDisposable
{
    private const string Secret = "e2e-webhook-secret-of-integration-42-0123456789";
    private const string EventRoute = "/events/autofix-run-completed";
    private const string Pr = "https://github.com/acme/shop/pull/31";
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 12, 2, 10, 0, 0, TimeSpan.Zero));

    public enum Mode
    {
        Embedded,
        EmbeddedInline, // Handoff:Embedded:LaunchEventsInBackground=false: the event's request makes the provider calls
        Dapr,
    }

    [Theory]
    [InlineData(Mode.Embedded)]
    [InlineData(Mode.EmbeddedInline)]
    [InlineData(Mode.Dapr)]
    public async Task Event_redelivery_finished_webhook_redelivery_then_get_shows_the_pr_and_launches_once(Mode mode)
    {
        await using var host = await Start(mode, "seq-webhook.db");
        var run = Payloads.Run(801, ["acme/shop"]);

        var answers = new List<HttpResponseMessage> { await host.EventAsync(run) };
        await host.SettleAsync();
        answers.Add(await host.EventAsync(run));
        await host.SettleAsync();
        var agentId = Assert.Single(cursor.Agents.Keys);

        var webhook = await host.WebhookAsync(801, agentId, "FINISHED", Pr);
        Assert.Equal(HttpStatusCode.NoContent, webhook.StatusCode);
        answers.Add(await host.EventAsync(run));
        await host.SettleAsync();
        var read = await host.Client.GetAsync("/runs/801/handoff");

        foreach (var answer in answers)
        {
            await AssertSuccessAsync(answer);
        }

        Assert.Equal(1, cursor.LaunchRequests);
        Assert.Equal(mode == Mode.Dapr ? 0 : 2, host.Repeats); // embedded: both redeliveries answered from the digest
        Assert.Equal(HttpStatusCode.OK, read.StatusCode);
        Assert.Equal("nosniff", read.Headers.GetValues("X-Content-Type-Options").Single());
        Assert.Contains("no-store", read.Headers.CacheControl!.ToString());
        var view = await read.ReadJsonAsync();
        var agent = view["coding_agents"]![agentId]!;
        Assert.Equal("completed", agent["status"]!.GetValue<string>());
        Assert.Equal(Pr, agent["results"]![0]!["pr_url"]!.GetValue<string>());
        var launch = Assert.Single(view["launches"]!.AsArray())!;
        Assert.Equal("launched", launch["phase"]!.GetValue<string>());
        Assert.Equal(agentId, launch["agent_id"]!.GetValue<string>());
        Assert.Contains(view["timeline"]!.AsArray(), entry => entry!["event"]!.GetValue<string>() == "status_changed" && entry["detail"]?.GetValue<string>() == "completed");
        Assert.Equal(HttpStatusCode.NotFound, (await host.Client.GetAsync("/runs/801/handoff?group_id=999")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await host.Client.GetAsync($"/runs/801/handoff?group_id={Payloads.GroupId}")).StatusCode);
    }

    [Theory]
    [InlineData(Mode.Embedded)]
    [InlineData(Mode.EmbeddedInline)]
    [InlineData(Mode.Dapr)]
    public async Task Redelivery_while_the_events_launch_is_held_at_the_provider_is_answered_and_launches_nothing_more(Mode mode)
    {
        await using var host = await Start(mode, "seq-held.db");
        using var held = cursor.Hold("acme/slow");
        var run = Payloads.Run(802, ["acme/slow"]);

        // The first delivery: in embedded mode answered at once, its launch made by the schedule; else made in the request.
        var first = host.EventAsync(run);
        var settling = Task.CompletedTask;
        if (mode == Mode.Embedded)
        {
            await AssertSuccessAsync(await first);
            settling = host.SettleAsync();
        }

        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)), "the launch did not reach the provider");
        var during = await host.EventAsync(run).WaitAsync(TimeSpan.FromSeconds(10));
        var whileHeld = await (await host.Client.GetAsync("/runs/802/handoff")).ReadJsonAsync();
        held.Release();
        if (mode != Mode.Embedded)
        {
            await AssertSuccessAsync(await first.WaitAsync(TimeSpan.FromSeconds(10)));
        }

        await settling.WaitAsync(TimeSpan.FromSeconds(10));
        await host.SettleAsync();
        var after = await host.EventAsync(run);
        await host.SettleAsync();
        var view = await (await host.Client.GetAsync("/runs/802/handoff")).ReadJsonAsync();

        await AssertSuccessAsync(during);
        await AssertSuccessAsync(after);
        Assert.Equal(mode == Mode.Dapr ? 0 : 2, host.Repeats);
        Assert.Equal("in_flight", Assert.Single(whileHeld["launches"]!.AsArray())!["phase"]!.GetValue<string>());
        Assert.Empty(whileHeld["coding_agents"]!.AsObject());
        Assert.Equal(1, cursor.LaunchRequests);
        var agentId = Assert.Single(cursor.Agents.Keys);
        Assert.Equal(agentId, Assert.Single(view["coding_agents"]!.AsObject()).Key);
        Assert.Equal("launched", Assert.Single(view["launches"]!.AsArray())!["phase"]!.GetValue<string>());
    }

    [Theory]
    [InlineData(Mode.Embedded, false)]
    [InlineData(Mode.Dapr, false)]
    [InlineData(Mode.Embedded, true)]
    [InlineData(Mode.Dapr, true)]
    public async Task Manual_trigger_with_a_new_snapshot_then_redeliveries_of_the_old_event_launch_nothing_more(Mode mode, bool laterStep)
    {
        await using var host = await Start(mode, "seq-trigger.db");
        var old = Payloads.Run(803, ["acme/shop"]);
        await AssertSuccessAsync(await host.EventAsync(old));
        await host.SettleAsync();

        // A person hands off again with the run as it is now: a second repository (and, later, the solution step).
        var newer = Payloads.Run(803, ["acme/shop", "acme/api"], withSolution: laterStep);
        var trigger = await host.Client.PostJsonAsync("/runs/803/handoff", Payloads.Trigger(newer));
        Assert.Equal(HttpStatusCode.Accepted, trigger.StatusCode);
        Assert.Equal(2, cursor.LaunchRequests);

        var redelivered = await host.EventAsync(old);
        await host.SettleAsync();
        var again = await host.EventAsync(old);
        await host.SettleAsync();
        var retriggered = await host.Client.PostJsonAsync("/runs/803/handoff", Payloads.Trigger());
        await host.SettleAsync();
        var view = await (await host.Client.GetAsync("/runs/803/handoff")).ReadJsonAsync();

        await AssertSuccessAsync(redelivered);
        await AssertSuccessAsync(again);
        Assert.Equal(HttpStatusCode.Accepted, retriggered.StatusCode);
        Assert.Equal(2, cursor.LaunchRequests);
        Assert.Equal(2, view["coding_agents"]!.AsObject().Count);
        Assert.Equal(["acme/api", "acme/shop"], view["launches"]!.AsArray().Select(l => l!["repository"]!.GetValue<string>()).Order().ToArray());
        Assert.All(view["launches"]!.AsArray(), l => Assert.Equal("launched", l!["phase"]!.GetValue<string>()));
    }

    [Theory]
    [InlineData(Mode.Embedded)]
    [InlineData(Mode.Dapr)]
    public async Task Stop_then_get_then_redelivery_shows_the_stop_and_does_not_launch_again(Mode mode)
    {
        await using var host = await Start(mode, "seq-stop.db");
        var run = Payloads.Run(804, ["acme/shop"]);
        await AssertSuccessAsync(await host.EventAsync(run));
        await host.SettleAsync();
        await AssertSuccessAsync(await host.EventAsync(run)); // embedded: the row now holds the event's digest
        var agentId = Assert.Single(cursor.Agents.Keys);

        var stop = await host.Client.PostAsync($"/runs/804/agents/{agentId}/stop", null);
        var afterStop = await (await host.Client.GetAsync("/runs/804/handoff")).ReadJsonAsync();
        var redelivered = await host.EventAsync(run);
        await host.SettleAsync();
        var view = await (await host.Client.GetAsync("/runs/804/handoff")).ReadJsonAsync();

        Assert.Equal(HttpStatusCode.OK, stop.StatusCode);
        Assert.Equal("failed", afterStop["coding_agents"]![agentId]!["status"]!.GetValue<string>());
        Assert.Contains(afterStop["timeline"]!.AsArray(), entry => entry!["event"]!.GetValue<string>() == "stopped" && entry["agent_id"]!.GetValue<string>() == agentId);
        await AssertSuccessAsync(redelivered);
        Assert.Equal(1, cursor.LaunchRequests);
        Assert.Equal(mode == Mode.Dapr ? 0 : 2, host.Repeats); // the digest outlives the stop's save
        Assert.Equal(afterStop.ToJsonString(), view.ToJsonString());
    }

    /// <summary>
    /// A stop or follow-up the provider has taken is recorded as carried out though its caller gave up: it is sent with
    /// shutdown's cutoff, not the request's token, which would cut the call and leave its outcome unknown.
    /// </summary>
    [Theory]
    [InlineData(Mode.Embedded, "stop", "stopped", "failed")]
    [InlineData(Mode.Embedded, "followup", "followup_sent", null)]
    [InlineData(Mode.Dapr, "stop", "stopped", "failed")]
    [InlineData(Mode.Dapr, "followup", "followup_sent", null)]
    public async Task Command_whose_caller_gives_up_while_it_is_at_the_provider_is_recorded_as_carried_out(
        Mode mode, string command, string timelineEvent, string? statusAfter)
    {
        await using var host = await Start(mode, "seq-command-given-up.db");
        var launched = await (await host.Client.PostJsonAsync("/runs/809/handoff", Payloads.Trigger(Payloads.Run(809, ["acme/shop"], automation: false)))).ReadJsonAsync();
        var agent = launched["successes"]![0]!["coding_agent_state"]!;
        var agentId = agent["id"]!.GetValue<string>();
        using var held = cursor.HoldCommands();
        using var givingUp = new CancellationTokenSource();
        var body = command == "followup" ? new StringContent("{\"text\": \"Add a regression test\"}", Encoding.UTF8, "application/json") : null;
        var sent = host.Client.PostAsync($"/runs/809/agents/{agentId}/{command}", body, givingUp.Token);
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        givingUp.Cancel();
        await Task.Delay(100);
        held.Release();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => sent);

        JsonNode? entry = null;
        JsonObject view = [];
        // The recording follows the provider's answer in the background: up to 10 s on a loaded machine.
        for (var tries = 0; entry is null && tries < 400; tries++)
        {
            await Task.Delay(25);
            view = await (await host.Client.GetAsync("/runs/809/handoff")).ReadJsonAsync();
            entry = view["timeline"]!.AsArray().FirstOrDefault(entry => entry!["event"]!.GetValue<string>() == timelineEvent);
        }

        Assert.NotNull(entry);
        Assert.Equal(agentId, entry["agent_id"]!.GetValue<string>());
        Assert.Null(entry["detail"]); // not "outcome unknown": the provider's answer came and was kept
        // A stop carried out ends the agent; a follow-up leaves its status to the provider's next report.
        Assert.Equal(statusAfter ?? agent["status"]!.GetValue<string>(), view["coding_agents"]![agentId]!["status"]!.GetValue<string>());
        Assert.Single(cursor.CommandRequests);
    }

    [Theory]
    [InlineData(Mode.Embedded)]
    [InlineData(Mode.Dapr)]
    public async Task Followup_to_a_finished_agent_then_get_shows_it_and_the_pr_it_opened_after_a_redelivery(Mode mode)
    {
        await using var host = await Start(mode, "seq-followup.db");
        var run = Payloads.Run(805, ["acme/shop"]);
        await AssertSuccessAsync(await host.EventAsync(run));
        await host.SettleAsync();
        var agentId = Assert.Single(cursor.Agents.Keys);
        Assert.Equal(HttpStatusCode.NoContent, (await host.WebhookAsync(805, agentId, "FINISHED", prUrl: null)).StatusCode);
        await AssertSuccessAsync(await host.EventAsync(run));

        var followup = await host.Client.PostJsonAsync($"/runs/805/agents/{agentId}/followup", new JsonObject { ["text"] = "Open the pull request" });
        var afterFollowup = await (await host.Client.GetAsync("/runs/805/handoff")).ReadJsonAsync();
        var redelivered = await host.EventAsync(run);
        Assert.Equal(HttpStatusCode.NoContent, (await host.WebhookAsync(805, agentId, "FINISHED", Pr)).StatusCode);
        var redeliveredAgain = await host.EventAsync(run);
        await host.SettleAsync();
        var view = await (await host.Client.GetAsync("/runs/805/handoff")).ReadJsonAsync();

        Assert.Equal(HttpStatusCode.OK, followup.StatusCode);
        Assert.Contains(afterFollowup["timeline"]!.AsArray(), entry => entry!["event"]!.GetValue<string>() == "followup_sent" && entry["agent_id"]!.GetValue<string>() == agentId);
        await AssertSuccessAsync(redelivered);
        await AssertSuccessAsync(redeliveredAgain);
        Assert.Equal(1, cursor.LaunchRequests);
        Assert.Equal(Pr, view["coding_agents"]![agentId]!["results"]![0]!["pr_url"]!.GetValue<string>());
        Assert.Equal("completed", view["coding_agents"]![agentId]!["status"]!.GetValue<string>());
    }

    /// <summary>The same sequence in both modes: the GET bodies agree on every field but times and ids.</summary>
    [Fact]
    public async Task Both_modes_give_the_same_answers_and_the_same_view_for_one_sequence()
    {
        var results = new Dictionary<Mode, (List<string> Answers, JsonObject View)>();
        foreach (var mode in new[] { Mode.EmbeddedInline, Mode.Dapr })
        {
            using var provider = new FakeCursor();
            await using var host = await Start(mode, $"same-{mode}.db", provider);
            var run = Payloads.Run(806, ["acme/shop", "acme/api"]);
            var answers = new List<string>();
            async Task Note(HttpResponseMessage response) => answers.Add($"{(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");

            await Note(await host.EventAsync(run));
            await Note(await host.EventAsync(run));
            var shop = provider.Agents.Values.Single(a => a["source"]!["repository"]!.GetValue<string>().EndsWith("/shop"))["id"]!.GetValue<string>();
            var api = provider.Agents.Values.Single(a => a["source"]!["repository"]!.GetValue<string>().EndsWith("/api"))["id"]!.GetValue<string>();
            await Note(await host.WebhookAsync(806, shop, "FINISHED", Pr));
            await Note(await host.Client.PostAsync($"/runs/806/agents/{api}/stop", null));
            await Note(await host.EventAsync(run));
            await Note(await host.Client.PostJsonAsync("/runs/806/handoff", Payloads.Trigger()));
            await Note(await host.EventAsync(run));
            answers.Add($"launches {provider.LaunchRequests}");
            var view = await (await host.Client.GetAsync("/runs/806/handoff")).ReadJsonAsync();
            results[mode] = (answers.Select(a => Normalise(a, shop, api)).ToList(), JsonNode.Parse(Normalise(view.ToJsonString(), shop, api))!.AsObject());
        }

        Assert.Equal(results[Mode.Dapr].Answers, results[Mode.EmbeddedInline].Answers);
        Assert.Equal(Shape(results[Mode.Dapr].View), Shape(results[Mode.EmbeddedInline].View));
    }

    [Fact]
    public async Task Two_embedded_processes_taking_the_same_events_webhooks_and_followups_at_once_launch_once_and_show_every_change()
    {
        const int Runs = 12;
        var path = temp.File("contended.db");
        await using var first = await Start(Mode.EmbeddedInline, path);
        await using var second = await Start(Mode.EmbeddedInline, path);
        var runs = Enumerable.Range(0, Runs).Select(i => Payloads.Run(820 + i, ["acme/shop"])).ToList();

        // The same event delivered to both processes at once, twice to one (redeliveries racing the first delivery).
        var events = await Task.WhenAll(runs.SelectMany(run => new[] { first.EventAsync(run), second.EventAsync(run), first.EventAsync(run) }));
        foreach (var answer in events)
        {
            await AssertSuccessAsync(answer);
        }

        Assert.Equal(Runs, cursor.LaunchRequests);
        var agents = new Dictionary<long, string>();
        foreach (var run in runs)
        {
            var id = run["run_id"]!.GetValue<long>();
            var view = await (await first.Client.GetAsync($"/runs/{id}/handoff")).ReadJsonAsync();
            agents[id] = Assert.Single(view["coding_agents"]!.AsObject()).Key;
        }

        // Then, per run at once: the finished webhook on one process, a follow-up and redeliveries on both.
        var work = runs.SelectMany(run =>
        {
            var id = run["run_id"]!.GetValue<long>();
            return new[]
            {
                first.WebhookAsync(id, agents[id], "FINISHED", Pr),
                second.Client.PostJsonAsync($"/runs/{id}/agents/{agents[id]}/followup", new JsonObject { ["text"] = "Add a test" }),
                first.EventAsync(run),
                second.EventAsync(run),
            };
        }).ToList();
        var answers = await Task.WhenAll(work);

        Assert.All(answers, answer => Assert.True(answer.IsSuccessStatusCode, $"{(int)answer.StatusCode} {answer.Content.ReadAsStringAsync().Result}"));
        Assert.Equal(Runs, cursor.LaunchRequests);
        foreach (var (id, agentId) in agents)
        {
            var fromFirst = await (await first.Client.GetAsync($"/runs/{id}/handoff")).Content.ReadAsStringAsync();
            var fromSecond = await (await second.Client.GetAsync($"/runs/{id}/handoff")).Content.ReadAsStringAsync();
            Assert.Equal(fromFirst, fromSecond);
            var view = JsonNode.Parse(fromFirst)!;
            Assert.Equal(Pr, view["coding_agents"]![agentId]!["results"]![0]!["pr_url"]!.GetValue<string>());
            Assert.Contains(view["timeline"]!.AsArray(), entry => entry!["event"]!.GetValue<string>() == "followup_sent");
        }
    }

    [Fact]
    public async Task Two_embedded_processes_on_one_file_agree_on_redeliveries_and_on_the_view()
    {
        var path = temp.File("shared.db");
        // Only SettleAsync runs the schedules: a pass at start, in the background, could otherwise claim the event's launch
        // (the second host's, if it runs after the first event), so that first.SettleAsync found nothing to wait for.
        await using var first = await Start(Mode.Embedded, path, scheduleRunsOnItsOwn: false);
        await using var second = await Start(Mode.Embedded, path, scheduleRunsOnItsOwn: false);
        var run = Payloads.Run(807, ["acme/shop"]);

        await AssertSuccessAsync(await first.EventAsync(run));
        await first.SettleAsync();
        await AssertSuccessAsync(await first.EventAsync(run)); // the first process's digest
        await AssertSuccessAsync(await second.EventAsync(run)); // the long way: another process
        var agentId = Assert.Single(cursor.Agents.Keys);
        Assert.Equal(HttpStatusCode.NoContent, (await second.WebhookAsync(807, agentId, "FINISHED", Pr)).StatusCode);
        await AssertSuccessAsync(await first.EventAsync(run));
        await AssertSuccessAsync(await second.EventAsync(run));
        await first.SettleAsync();
        await second.SettleAsync();

        var fromFirst = await first.Client.GetAsync("/runs/807/handoff");
        var fromSecond = await second.Client.GetAsync("/runs/807/handoff");
        Assert.Equal(1, cursor.LaunchRequests);
        Assert.Equal(await fromSecond.Content.ReadAsStringAsync(), await fromFirst.Content.ReadAsStringAsync());
        Assert.Equal(Pr, (await fromFirst.ReadJsonAsync())["coding_agents"]![agentId]!["results"]![0]!["pr_url"]!.GetValue<string>());
    }

    [Fact]
    public async Task Dapr_shutdown_while_a_launch_is_held_waits_for_the_trigger_which_gets_its_agent()
    {
        var logs = new FakeLogCollector();
        var factory = await DaprServiceFactory.StartAsync(cursor.Url, time: time, logs: logs);
        var client = factory.CreateSidecarClient();
        using var held = cursor.Hold("acme/slow");
        var trigger = client.PostJsonAsync("/runs/808/handoff", Payloads.Trigger(Payloads.Run(808, ["acme/slow"], automation: false)));
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));
        var drain = factory.Services.GetRequiredService<RequestDrain>();

        // SIGTERM: the host stops, and its request drain waits for the trigger.
        var stopping = HostShutdown.Begin(factory.Services);
        await Eventually.True(() => drain.IsDraining);
        Assert.Equal(new HandoffDapr.Service.Configuration.DaprOptions().ShutdownDrain, drain.Limit);
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.False(stopping.IsCompleted);
        held.Release();

        var response = await trigger.WaitAsync(TimeSpan.FromSeconds(10));
        await stopping.WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Equal("acme/slow", (await response.ReadJsonAsync())["successes"]![0]!["repo_name"]!.GetValue<string>());
        Assert.Contains(logs.GetSnapshot(), record => record.Id.Id == 4202); // drained, not cut short
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Id == 4203);
        await factory.DisposeAsync();
    }

    [Fact]
    public async Task Dapr_shutdown_drain_waits_for_a_request_until_Dapr_ShutdownDrain_not_the_embedded_limit()
    {
        var logs = new FakeLogCollector();
        var factory = await DaprServiceFactory.StartAsync(cursor.Url, time: time, logs: logs);
        var client = factory.CreateSidecarClient();
        // A read of run 809 whose actor state read hangs (a slow state store): the request stays in progress.
        using var heldReads = new HeldActorReads(factory.Sidecar, "809");
        var read = client.GetAsync("/runs/809/handoff");
        Assert.True(heldReads.Arrived.Wait(TimeSpan.FromSeconds(10)));
        var drain = factory.Services.GetRequiredService<RequestDrain>();

        var stopping = HostShutdown.Begin(factory.Services);
        await Eventually.True(() => drain.IsDraining);
        var limit = new HandoffDapr.Service.Configuration.DaprOptions().ShutdownDrain;
        time.Advance(new HandoffDapr.Service.Configuration.EmbeddedOptions().ProviderCallGrace + HandoffDapr.Service.Configuration.DaprOptions.RecordingTime + TimeSpan.FromSeconds(1));
        await Task.Delay(300);
        var cutEarly = logs.GetSnapshot().Any(record => record.Id.Id == 4203);
        time.Advance(limit);
        await Eventually.True(() => logs.GetSnapshot().Any(record => record.Id.Id == 4203));
        heldReads.Release();
        await read.WaitAsync(TimeSpan.FromSeconds(20)).ContinueWith(_ => { });
        await stopping.WaitAsync(TimeSpan.FromSeconds(60));

        await factory.DisposeAsync();

        Assert.False(cutEarly, "the drain gave up before Handoff:Dapr:ShutdownDrain");
        Assert.Contains(logs.GetSnapshot(), record => record.Id.Id == 4201 && record.Message.Contains(limit.ToString()));
    }

    [Fact]
    public async Task Embedded_shutdown_cuts_a_held_scheduled_launch_redeliveries_are_answered_and_the_next_process_adopts_the_agent()
    {
        var path = temp.File("restart.db");
        var run = Payloads.Run(810, ["acme/slow"]);
        var logs = new FakeLogCollector();
        var before = new EmbeddedServiceFactory(path, cursor.Url, time, new Dictionary<string, string?> { ["Handoff:Integrations:42:WebhookSecret"] = Secret }) { Logs = logs };
        var client = before.CreateClient();
        using var held = cursor.Hold("acme/slow");
        await AssertSuccessAsync(await client.PostRawAsync(EventRoute, Payloads.CloudEvent(run).ToJsonString(), "application/cloudevents+json"));
        var schedule = before.RunScheduleAsync();
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        // SIGTERM while the launch is at the provider: a redelivery in the grace is answered, and launches nothing.
        var stopping = HostShutdown.Begin(before.Services);
        time.Advance(TimeSpan.FromSeconds(1));
        var inGrace = await client.PostRawAsync(EventRoute, Payloads.CloudEvent(run).ToJsonString(), "application/cloudevents+json");
        // The grace ends unanswered: recorded as unknown. The provider then creates the agent all the same.
        time.Advance(new HandoffDapr.Service.Configuration.EmbeddedOptions().ProviderCallGrace);
        await schedule.WaitAsync(TimeSpan.FromSeconds(10));
        held.Release();
        await Eventually.True(() => cursor.Agents.Count == 1);
        time.Advance(TimeSpan.FromSeconds(10));
        await stopping.WaitAsync(TimeSpan.FromSeconds(30));
        before.Dispose();

        // The next process: the same event again goes the long way, then its schedule finds the agent by its branch.
        using var after = new EmbeddedServiceFactory(path, cursor.Url, time);
        using var again = after.CreateClient();
        var afterRestart = await again.PostRawAsync(EventRoute, Payloads.CloudEvent(run).ToJsonString(), "application/cloudevents+json");
        var unknown = await (await again.GetAsync("/runs/810/handoff")).ReadJsonAsync();
        time.Advance(TimeSpan.FromMinutes(5));
        await after.RunScheduleAsync();
        await AssertSuccessAsync(await again.PostRawAsync(EventRoute, Payloads.CloudEvent(run).ToJsonString(), "application/cloudevents+json"));
        var view = await (await again.GetAsync("/runs/810/handoff")).ReadJsonAsync();

        await AssertSuccessAsync(inGrace);
        await AssertSuccessAsync(afterRestart);
        Assert.Equal("outcome_unknown", Assert.Single(unknown["launches"]!.AsArray())!["phase"]!.GetValue<string>());
        Assert.Equal(1, cursor.LaunchRequests);
        var agentId = Assert.Single(cursor.Agents.Keys);
        Assert.Equal(agentId, Assert.Single(view["coding_agents"]!.AsObject()).Key);
        Assert.Equal("launched", Assert.Single(view["launches"]!.AsArray())!["phase"]!.GetValue<string>());
    }

    [Fact]
    public async Task Embedded_inline_event_held_at_shutdown_is_drained_and_answered_while_its_redelivery_is_answered_at_once()
    {
        var factory = new EmbeddedServiceFactory(temp.File("inline-drain.db"), cursor.Url, time, new Dictionary<string, string?> { ["Handoff:Embedded:LaunchEventsInBackground"] = "false" });
        var client = factory.CreateClient();
        using var held = cursor.Hold("acme/slow");
        var run = Payloads.Run(811, ["acme/slow"]);
        var first = client.PostRawAsync(EventRoute, Payloads.CloudEvent(run).ToJsonString(), "application/cloudevents+json");
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));
        var drain = factory.Services.GetRequiredService<RequestDrain>();

        var stopping = HostShutdown.Begin(factory.Services);
        await Eventually.True(() => drain.IsDraining);
        var redelivered = await client.PostRawAsync(EventRoute, Payloads.CloudEvent(run).ToJsonString(), "application/cloudevents+json").WaitAsync(TimeSpan.FromSeconds(10));
        time.Advance(TimeSpan.FromSeconds(2));
        Assert.False(stopping.IsCompleted);
        held.Release();
        var answer = await first.WaitAsync(TimeSpan.FromSeconds(10));
        await stopping.WaitAsync(TimeSpan.FromSeconds(30));
        factory.Dispose();

        await AssertSuccessAsync(redelivered);
        await AssertSuccessAsync(answer);
        Assert.Equal(1, cursor.LaunchRequests);
        using var store = new HandoffDapr.Service.Embedded.SqliteRunStore(temp.File("inline-drain.db"), time);
        var launch = Assert.Single((await store.LoadAsync(811, CancellationToken.None)).State!.Launches);
        Assert.Equal(HandoffDapr.Core.Handoff.LaunchPhase.Launched, launch.Phase);
    }

    /// <summary>
    /// Conditional request headers mean nothing to these answers (they carry no ETag or Last-Modified): a GET or an
    /// event answered from stored bytes must answer them as the built answers do, in both modes.
    /// </summary>
    [Theory]
    [InlineData(Mode.Embedded, "If-None-Match", "*")]
    [InlineData(Mode.Dapr, "If-None-Match", "*")]
    [InlineData(Mode.Embedded, "If-Match", "\"v1\"")]
    [InlineData(Mode.Dapr, "If-Match", "\"v1\"")]
    public async Task Get_and_event_answers_ignore_conditional_request_headers(Mode mode, string header, string value)
    {
        await using var host = await Start(mode, "conditional.db");
        var run = Payloads.Run(812, ["acme/shop"]);
        await AssertSuccessAsync(await host.EventAsync(run));
        await host.SettleAsync();

        using var read = new HttpRequestMessage(HttpMethod.Get, "/runs/812/handoff");
        read.Headers.TryAddWithoutValidation(header, value);
        var view = await host.Client.SendAsync(read);
        using var redelivery = new HttpRequestMessage(HttpMethod.Post, EventRoute)
        {
            Content = new StringContent(Payloads.CloudEvent(run).ToJsonString(), Encoding.UTF8, "application/cloudevents+json"),
        };
        redelivery.Headers.TryAddWithoutValidation(header, value);
        var answer = await host.Client.SendAsync(redelivery);

        Assert.Equal(HttpStatusCode.OK, view.StatusCode);
        Assert.Single((await view.ReadJsonAsync())["coding_agents"]!.AsObject());
        await AssertSuccessAsync(answer);
        Assert.Equal(1, cursor.LaunchRequests);
    }

    [Fact]
    public async Task Dapr_event_whose_launch_outlives_the_shutdown_grace_is_answered_retry_and_its_redelivery_during_the_drain_launches_nothing()
    {
        var factory = await DaprServiceFactory.StartAsync(cursor.Url, time: time);
        using var held = cursor.Hold("acme/slow");
        // Another request keeps the drain waiting: a read of run 814 whose actor state read hangs.
        using var heldReads = new HeldActorReads(factory.Sidecar, "814");
        var read = factory.CreateSidecarClient().GetAsync("/runs/814/handoff");
        Assert.True(heldReads.Arrived.Wait(TimeSpan.FromSeconds(10)));
        var data = Encoding.UTF8.GetBytes(Payloads.Run(813, ["acme/slow"]).ToJsonString());
        var delivery = factory.Sidecar.DeliverRawEventAsync("pubsub", "autofix-run-completed", data, "application/json");
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));
        var drain = factory.Services.GetRequiredService<RequestDrain>();

        factory.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();
        await Eventually.True(() => drain.IsDraining);
        time.Advance(new HandoffDapr.Service.Configuration.DaprOptions().EffectiveProviderCallGrace);
        var first = await delivery.WaitAsync(TimeSpan.FromSeconds(10));
        // daprd redelivers while the app still drains: the launch is known (outcome unknown), nothing is launched again.
        var again = await factory.Sidecar.DeliverRawEventAsync("pubsub", "autofix-run-completed", data, "application/json").WaitAsync(TimeSpan.FromSeconds(10));
        var launches = factory.Sidecar.GetActorState(HandoffRunActor.ActorTypeName, "813", "launches")!.Value;
        heldReads.Release();
        held.Release();
        // The released launch is answered to a caller that gave up: the fake logs it once its own thread gets there.
        await Eventually.True(() => cursor.LaunchRequests > 0);
        await read.WaitAsync(TimeSpan.FromSeconds(20)).ContinueWith(_ => { });
        await factory.DisposeAsync();

        Assert.Equal(DeliveryOutcome.Retry, first.Outcome);
        Assert.Null(first.DeadLetterTopic);
        Assert.Equal(DeliveryOutcome.Success, again.Outcome);
        Assert.Equal("outcome_unknown", launches[0].GetProperty("phase").GetString());
        Assert.Equal(1, launches.GetArrayLength());
        Assert.Equal(1, cursor.LaunchRequests);
    }

    [Theory]
    [InlineData(Mode.Embedded)]
    [InlineData(Mode.Dapr)]
    public async Task Copilot_event_whose_answer_was_lost_redelivered_before_and_after_reconciling_launches_once(Mode mode)
    {
        using var github = new FakeCopilot();
        await using var host = await Start(mode, "copilot-lost.db", copilot: github);
        var run = Payloads.Run(830, ["acme/shop"]);
        run["preferences"]!["automation_handoff"]!["target"] = "github_copilot_agent";
        run["preferences"]!["automation_handoff"]!["integration_id"] = EmbeddedServiceFactory.CopilotIntegrationId;
        github.CreateButAnswerStatus = 502;

        await AssertSuccessAsync(await host.EventAsync(run));
        await host.SettleAsync();
        github.CreateButAnswerStatus = null;
        var beforeReconcile = await host.EventAsync(run);
        await host.SettleAsync();
        var unknown = await (await host.Client.GetAsync("/runs/830/handoff")).ReadJsonAsync();

        time.Advance(TimeSpan.FromMinutes(2));
        await host.WakeAsync(830);
        var taskId = Assert.Single(github.Tasks.Keys);
        await Eventually.True(async () => (await (await host.Client.GetAsync("/runs/830/handoff")).ReadJsonAsync())["coding_agents"]!.AsObject().ContainsKey(taskId));
        var afterReconcile = await host.EventAsync(run);
        await host.SettleAsync();
        var view = await (await host.Client.GetAsync("/runs/830/handoff")).ReadJsonAsync();

        await AssertSuccessAsync(beforeReconcile);
        await AssertSuccessAsync(afterReconcile);
        Assert.Equal("outcome_unknown", Assert.Single(unknown["launches"]!.AsArray())!["phase"]!.GetValue<string>());
        Assert.Equal(1, github.LaunchRequests);
        Assert.Equal(taskId, Assert.Single(view["coding_agents"]!.AsObject()).Key);
        Assert.Equal("launched", Assert.Single(view["launches"]!.AsArray())!["phase"]!.GetValue<string>());
    }

    /// <summary>
    /// The old event's bytes after a trigger replaced the run's snapshot: a late redelivery of a snapshot the run has
    /// replaced, in every mode alike (embedded mode's digest of those bytes no longer answers for the changed run). It
    /// launches nothing and keeps the trigger's snapshot, so a later trigger without one hands off what that one names.
    /// </summary>
    [Theory]
    [InlineData(Mode.Embedded)]
    [InlineData(Mode.EmbeddedInline)]
    [InlineData(Mode.Dapr)]
    public async Task Old_event_bytes_after_a_trigger_replaced_the_snapshot_keep_the_triggers_snapshot(Mode mode)
    {
        await using var host = await Start(mode, "snapshot-back.db");
        var old = Payloads.Run(831, ["acme/shop"]);
        await AssertSuccessAsync(await host.EventAsync(old));
        await host.SettleAsync();
        await AssertSuccessAsync(await host.EventAsync(old)); // embedded: now a digest of these bytes
        var shop = Assert.Single(cursor.Agents.Keys);
        Assert.Equal(HttpStatusCode.Accepted, (await host.Client.PostJsonAsync("/runs/831/handoff", Payloads.Trigger(Payloads.Run(831, ["acme/api"])))).StatusCode);
        Assert.Equal(2, cursor.LaunchRequests);

        await AssertSuccessAsync(await host.EventAsync(old));
        await host.SettleAsync();
        Assert.Equal(HttpStatusCode.OK, (await host.Client.PostAsync($"/runs/831/agents/{shop}/stop", null)).StatusCode);
        // A person's trigger without a snapshot: the run's snapshot (still the trigger's) names acme/api, whose agent
        // is at work; acme/shop, whose agent was stopped, is not named, so not launched again.
        var retrigger = await host.Client.PostJsonAsync("/runs/831/handoff", Payloads.Trigger());
        await host.SettleAsync();
        var view = await (await host.Client.GetAsync("/runs/831/handoff")).ReadJsonAsync();

        Assert.Equal(HttpStatusCode.Accepted, retrigger.StatusCode);
        Assert.Equal(2, cursor.LaunchRequests);
        Assert.Equal(1, cursor.AgentsFor("acme/shop"));
        Assert.Equal(2, view["launches"]!.AsArray().Count);
    }

    [Theory]
    [InlineData(Mode.Embedded)]
    [InlineData(Mode.Dapr)]
    public async Task Openapi_document_still_describes_the_get_answer_as_RunHandoffView_and_the_event_reply(Mode mode)
    {
        string document;
        if (mode == Mode.Dapr)
        {
            await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, time: time);
            using var development = factory.WithWebHostBuilder(b => b.UseEnvironment("Development"));
            document = await development.CreateClient().GetStringAsync("/openapi/v1.json");
        }
        else
        {
            using var factory = new EmbeddedServiceFactory(temp.File("openapi-e2e.db"), cursor.Url);
            using var development = factory.WithWebHostBuilder(b => b.UseEnvironment("Development"));
            document = await development.CreateClient().GetStringAsync("/openapi/v1.json");
        }

        var root = JsonNode.Parse(document)!;
        var ok = root["paths"]!["/runs/{runId}/handoff"]!["get"]!["responses"]!["200"]!;
        Assert.Equal("#/components/schemas/RunHandoffView", ok["content"]!["application/json"]!["schema"]!["$ref"]!.GetValue<string>());
        var properties = root["components"]!["schemas"]!["RunHandoffView"]!["properties"]!.AsObject().Select(p => p.Key).Order().ToArray();
        Assert.Equal(["coding_agents", "group_id", "launches", "refused", "run_id", "timeline"], properties);
        var eventReply = root["paths"]![EventRoute]!["post"]!["responses"]!["200"]!;
        Assert.Equal("#/components/schemas/DaprEventReply", eventReply["content"]!["application/json"]!["schema"]!["$ref"]!.GetValue<string>());
    }

    private static async Task AssertSuccessAsync(HttpResponseMessage answer)
    {
        var body = await answer.Content.ReadAsStringAsync();
        Assert.True(answer.StatusCode == HttpStatusCode.OK, $"{(int)answer.StatusCode} {body}");
        Assert.Equal("SUCCESS", JsonNode.Parse(body)!["status"]!.GetValue<string>());
        Assert.Equal("nosniff", answer.Headers.GetValues("X-Content-Type-Options").Single());
    }

    private static string Normalise(string text, string shop, string api) => text.Replace(shop, "<shop-agent>").Replace(api, "<api-agent>");

    /// <summary>The view without times (the hosts' clocks differ by when they ran).</summary>
    private static string Shape(JsonObject view)
    {
        var copy = view.DeepClone().AsObject();
        foreach (var launch in copy["launches"]!.AsArray())
        {
            launch!.AsObject().Remove("updated_at");
            launch.AsObject().Remove("next_attempt_at");
        }

        foreach (var entry in copy["timeline"]!.AsArray())
        {
            entry!.AsObject().Remove("at");
        }

        return copy.ToJsonString();
    }

    private async Task<IHostUnderTest> Start(Mode mode, string file, FakeCursor? provider = null, FakeCopilot? copilot = null, bool scheduleRunsOnItsOwn = true)
    {
        provider ??= cursor;
        var settings = new Dictionary<string, string?>
        {
            ["Handoff:PublicBaseUrl"] = "https://handoff.example.com",
            ["Handoff:Integrations:42:WebhookSecret"] = Secret,
        };
        if (copilot is not null)
        {
            settings["Handoff:Integrations:43:Provider"] = "github_copilot_agent";
            if (mode != Mode.Dapr)
            {
                settings["Handoff:Integrations:43:BaseUrl"] = copilot.Url;
            }
        }

        if (mode == Mode.Dapr)
        {
            return new DaprHostUnderTest(await DaprServiceFactory.StartAsync(provider.Url, time: time, settings: settings, copilotUrl: copilot?.Url));
        }

        if (mode == Mode.EmbeddedInline)
        {
            settings["Handoff:Embedded:LaunchEventsInBackground"] = "false";
        }

        settings["Logging:LogLevel:Default"] = "Debug";
        var logs = new FakeLogCollector();
        return new EmbeddedHostUnderTest(new EmbeddedServiceFactory(Path.IsPathRooted(file) ? file : temp.File(file), provider.Url, time, settings) { Logs = logs, ScheduleRunsOnItsOwn = scheduleRunsOnItsOwn }, logs);
    }

    private interface IHostUnderTest : IAsyncDisposable
    {
        HttpClient Client { get; }

        /// <summary>The completion event, as daprd delivers it (a structured CloudEvent), with the same data bytes every time.</summary>
        Task<HttpResponseMessage> EventAsync(JsonObject run);

        /// <summary>Runs what the event left due (embedded mode's schedule); nothing in Dapr mode, whose event makes its calls.</summary>
        Task SettleAsync();

        Task<HttpResponseMessage> WebhookAsync(long runId, string agentId, string status, string? prUrl);

        /// <summary>The run's wake-up: embedded mode's schedule, Dapr mode's reminder.</summary>
        Task WakeAsync(long runId);

        /// <summary>Events answered from the run's digest, without reading the run (embedded mode only).</summary>
        int Repeats { get; }
    }

    private abstract class HostBase : IHostUnderTest
    {
        public abstract HttpClient Client { get; }

        protected abstract HttpClient WebhookClient { get; }

        public abstract Task<HttpResponseMessage> EventAsync(JsonObject run);

        public abstract Task SettleAsync();

        public abstract Task WakeAsync(long runId);

        public abstract ValueTask DisposeAsync();

        public virtual int Repeats => 0;

        public Task<HttpResponseMessage> WebhookAsync(long runId, string agentId, string status, string? prUrl)
        {
            var body = new JsonObject
            {
                ["event"] = "statusChange",
                ["timestamp"] = "2026-12-02T10:05:00Z",
                ["id"] = agentId,
                ["status"] = status,
                ["source"] = new JsonObject { ["repository"] = "https://github.com/acme/shop", ["ref"] = "main" },
                ["target"] = new JsonObject { ["url"] = $"https://cursor.com/agents?id={agentId}", ["prUrl"] = prUrl },
                ["summary"] = "Bounded the pool",
            }.ToJsonString();
            return WebhookClient.SendAsync(Payloads.SignedWebhook($"/webhooks/cursor/42?run_id={runId}", body, Secret));
        }

        protected static string CloudEvent(JsonObject run) => Payloads.CloudEvent(run).ToJsonString();
    }

    private sealed class EmbeddedHostUnderTest(EmbeddedServiceFactory factory, FakeLogCollector logs) : HostBase
    {
        private readonly HttpClient client = factory.CreateClient();

        public override int Repeats => logs.GetSnapshot().Count(record => record.Id.Name == "CompletionEventRepeated");

        public override HttpClient Client => client;

        protected override HttpClient WebhookClient => client;

        public override Task<HttpResponseMessage> EventAsync(JsonObject run) =>
            client.PostRawAsync(EventRoute, CloudEvent(run), "application/cloudevents+json");

        public override Task SettleAsync() => factory.RunScheduleAsync();

        public override Task WakeAsync(long runId) => factory.RunScheduleAsync();

        public override ValueTask DisposeAsync()
        {
            client.Dispose();
            factory.Dispose();
            return ValueTask.CompletedTask;
        }
    }

    private sealed class DaprHostUnderTest(DaprServiceFactory factory) : HostBase
    {
        private readonly HttpClient client = factory.CreateSidecarClient();
        private readonly HttpClient webhooks = factory.CreateClient();

        public override HttpClient Client => client;

        protected override HttpClient WebhookClient => webhooks;

        /// <summary>Through the fake sidecar's pub/sub delivery: its answer is the app's, as daprd read it.</summary>
        public override async Task<HttpResponseMessage> EventAsync(JsonObject run)
        {
            var delivery = await factory.Sidecar.DeliverRawEventAsync("pubsub", "autofix-run-completed", Encoding.UTF8.GetBytes(run.ToJsonString()), "application/json");
            Assert.Equal(DeliveryOutcome.Success, delivery.Outcome);
            return delivery.Response!;
        }

        public override Task SettleAsync() => Task.CompletedTask;

        public override Task WakeAsync(long runId) =>
            factory.Sidecar.FireReminderAsync(HandoffRunActor.ActorTypeName, runId.ToString(System.Globalization.CultureInfo.InvariantCulture), HandoffRunActor.WakeReminder);

        public override async ValueTask DisposeAsync()
        {
            client.Dispose();
            webhooks.Dispose();
            await factory.DisposeAsync();
        }
    }

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
