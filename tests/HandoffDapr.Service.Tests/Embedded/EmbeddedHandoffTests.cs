using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>The handoff end to end in embedded mode: HTTP API → engine → SQLite, with WireMock.Net as Cursor.</summary>
public sealed class EmbeddedHandoffTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();
    private readonly FakeLogCollector logs = new();
    private readonly EmbeddedServiceFactory factory;
    private readonly HttpClient client;

    public EmbeddedHandoffTests()
    {
        factory = new EmbeddedServiceFactory(temp.File("handoff.db"), cursor.Url) { Logs = logs };
        client = factory.CreateClient();
    }

    [Fact]
    public async Task Manual_trigger_launches_every_repository_and_stores_coding_agents()
    {
        var run = Payloads.Run(123, ["acme/shop", "acme/billing"], automation: false);

        var response = await client.PostJsonAsync("/runs/123/handoff", Payloads.Trigger(run));

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var body = await response.ReadJsonAsync();
        var successes = body["successes"]!.AsArray();
        Assert.Equal(["acme/shop", "acme/billing"], successes.Select(s => s!["repo_name"]!.GetValue<string>()));
        Assert.Empty(body["failures"]!.AsArray());
        Assert.All(successes, s => Assert.Equal("pending", s!["coding_agent_state"]!["status"]!.GetValue<string>()));
        Assert.Equal(2, cursor.LaunchRequests);

        var view = await (await client.GetAsync("/runs/123/handoff")).ReadJsonAsync();
        Assert.Equal(123, view["run_id"]!.GetValue<long>());
        Assert.Equal(Payloads.GroupId, view["group_id"]!.GetValue<long>());
        var agents = view["coding_agents"]!.AsObject();
        Assert.Equal(cursor.Agents.Keys.Order(), agents.Select(pair => pair.Key).Order());
        Assert.All(agents, pair => Assert.Equal("cursor_background_agent", pair.Value!["provider"]!.GetValue<string>()));
        Assert.All(view["launches"]!.AsArray(), launch => Assert.Equal("launched", launch!["phase"]!.GetValue<string>()));
    }

    /// <summary>The 202's Location is where the run's handoff is read: following it gives the run just triggered.</summary>
    [Fact]
    public async Task Accepted_trigger_is_located_at_the_run_s_handoff()
    {
        var response = await client.PostJsonAsync("/runs/126/handoff", Payloads.Trigger(Payloads.Run(126, ["acme/shop"], automation: false)));

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Equal("/runs/126/handoff", response.Headers.Location?.OriginalString);
        var view = await (await client.GetAsync(response.Headers.Location)).ReadJsonAsync();
        Assert.Equal(126, view["run_id"]!.GetValue<long>());
    }

    /// <summary>Handoff:MaxInstructionLength is the longest instruction taken (4096 by default), not the first one refused.</summary>
    [Fact]
    public async Task Instruction_of_exactly_the_maximum_length_is_accepted_and_sent_whole()
    {
        var run = Payloads.Run(125, ["acme/shop"], automation: false);
        var instruction = new string('y', 4096);

        var response = await client.PostJsonAsync("/runs/125/handoff", Payloads.Trigger(run, instruction: instruction));

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var body = JsonNode.Parse(Assert.Single(cursor.Server.LogEntries).RequestMessage.Body!)!;
        Assert.Contains(instruction, body["prompt"]!["text"]!.GetValue<string>());
    }

    /// <summary>
    /// An instruction with something visible is taken even beside a control character, as a follow-up's text is: only one
    /// of nothing visible is refused.
    /// </summary>
    [Fact]
    public async Task Instruction_with_visible_text_beside_a_control_character_is_accepted_as_a_followups_text_is()
    {
        var run = Payloads.Run(129, ["acme/shop"], automation: false);

        var response = await client.PostJsonAsync("/runs/129/handoff", Payloads.Trigger(run, instruction: " Keep\u0007 the API "));

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var body = JsonNode.Parse(Assert.Single(cursor.Server.LogEntries).RequestMessage.Body!)!;
        Assert.Contains("Keep\u0007 the API", body["prompt"]!["text"]!.GetValue<string>());
    }

    /// <summary>
    /// A follow-up's text may be as long as an instruction (Handoff:MaxInstructionLength, counted as received, the spaces
    /// around it included), and reaches the agent without those spaces.
    /// </summary>
    [Fact]
    public async Task Followup_of_exactly_the_maximum_length_is_accepted_and_sent_trimmed()
    {
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/127/handoff", Payloads.Trigger(Payloads.Run(127, ["acme/shop"], automation: false)))).StatusCode);
        var agentId = Assert.Single(cursor.Agents.Keys);
        var text = new string('y', 4094);

        var response = await client.PostJsonAsync($"/runs/127/agents/{agentId}/followup", new JsonObject { ["text"] = " " + text + "\n" });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var sent = JsonNode.Parse(Assert.Single(cursor.CommandRequests).Body!)!;
        Assert.Equal(text, sent["prompt"]!["text"]!.GetValue<string>());
    }

    /// <summary>One character past Handoff:MaxInstructionLength (the spaces around it counted) is refused, and nothing reaches the agent.</summary>
    [Fact]
    public async Task Followup_one_character_over_the_maximum_length_is_a_400_and_nothing_is_sent()
    {
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/128/handoff", Payloads.Trigger(Payloads.Run(128, ["acme/shop"], automation: false)))).StatusCode);
        var agentId = Assert.Single(cursor.Agents.Keys);

        var response = await client.PostJsonAsync($"/runs/128/agents/{agentId}/followup", new JsonObject { ["text"] = " " + new string('y', 4094) + "\n\n" });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await response.ReadJsonAsync();
        Assert.Equal("https://handoff-dapr.dev/problems/invalid-request", problem["type"]!.GetValue<string>());
        Assert.Equal("text may be at most 4096 characters.", problem["detail"]!.GetValue<string>());
        Assert.Empty(cursor.CommandRequests);
    }

    /// <summary>
    /// A follow-up's text of nothing an agent could read (empty, spaces, controls, zero-width characters) is refused, and
    /// nothing reaches the agent: trimmed, it would be an empty instruction.
    /// </summary>
    [Theory]
    [InlineData("")]
    [InlineData("   \n")]
    [InlineData("\u200b\u0007")]
    [InlineData("\ufeff\u00a0\u2028")]
    public async Task Followup_of_no_visible_text_is_a_400_and_nothing_is_sent(string text)
    {
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/130/handoff", Payloads.Trigger(Payloads.Run(130, ["acme/shop"], automation: false)))).StatusCode);
        var agentId = Assert.Single(cursor.Agents.Keys);

        var response = await client.PostJsonAsync($"/runs/130/agents/{agentId}/followup", new JsonObject { ["text"] = text });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await response.ReadJsonAsync();
        Assert.Equal("https://handoff-dapr.dev/problems/invalid-request", problem["type"]!.GetValue<string>());
        Assert.Equal("text is required and must have a visible character.", problem["detail"]!.GetValue<string>());
        Assert.Empty(cursor.CommandRequests);
    }

    [Fact]
    public async Task Manual_trigger_sends_the_prompt_branch_and_bearer_key_to_cursor()
    {
        var run = Payloads.Run(124, ["acme/shop"], automation: false);

        await client.PostJsonAsync("/runs/124/handoff", Payloads.Trigger(run, instruction: "Keep the public API unchanged"));

        var request = Assert.Single(cursor.Server.LogEntries).RequestMessage;
        Assert.Equal($"Bearer {EmbeddedServiceFactory.ApiKey}", request.Headers!["Authorization"].Single());
        var body = JsonNode.Parse(request.Body!)!;
        var prompt = body["prompt"]!["text"]!.GetValue<string>();
        Assert.StartsWith("Please fix the following issue. Ensure that your fix is fully working.", prompt);
        Assert.Contains("Include 'Fixes SHOP-1A2' in the pull request description.", prompt);
        Assert.Contains("Keep the public API unchanged", prompt);
        Assert.Contains("## Root Cause Analysis", prompt);
        Assert.Equal("https://github.com/acme/shop", body["source"]!["repository"]!.GetValue<string>());
        Assert.Matches("^database-connection-timeout-[a-z0-9]{6}$", body["target"]!["branchName"]!.GetValue<string>());
        Assert.True(body["target"]!["autoCreatePr"]!.GetValue<bool>());
    }

    [Fact]
    public async Task Manual_trigger_without_auto_create_pr_takes_the_integrations_default()
    {
        var settings = new Dictionary<string, string?> { [$"Handoff:Integrations:{EmbeddedServiceFactory.IntegrationId}:AutoCreatePr"] = "false" };
        using var noPrFactory = new EmbeddedServiceFactory(temp.File("no-pr.db"), cursor.Url, settings: settings);
        using var noPrClient = noPrFactory.CreateClient();
        var defaulted = Payloads.Trigger(Payloads.Run(125, ["acme/shop"], automation: false));
        defaulted.Remove("auto_create_pr");
        var explicitYes = Payloads.Trigger(Payloads.Run(126, ["acme/shop"], automation: false));

        await noPrClient.PostJsonAsync("/runs/125/handoff", defaulted);
        await noPrClient.PostJsonAsync("/runs/126/handoff", explicitYes);

        var sent = cursor.Server.LogEntries.Select(entry => JsonNode.Parse(entry.RequestMessage.Body!)!["target"]!["autoCreatePr"]!.GetValue<bool>());
        Assert.Equal([false, true], sent);
    }

    /// <summary>An integration that does not set AutoCreatePr asks for a pull request when the trigger does not say.</summary>
    [Fact]
    public async Task Manual_trigger_without_auto_create_pr_asks_for_a_pr_when_the_integration_does_not_say_either()
    {
        var defaulted = Payloads.Trigger(Payloads.Run(128, ["acme/shop"], automation: false));
        defaulted.Remove("auto_create_pr");

        await client.PostJsonAsync("/runs/128/handoff", defaulted);

        var body = Assert.Single(cursor.LaunchBodies);
        Assert.True(body["target"]!["autoCreatePr"]!.GetValue<bool>(), body.ToJsonString());
    }

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    public async Task A_blank_model_setting_leaves_model_out_of_the_launch(string model)
    {
        // Cursor's launch API: "model — The LLM to use. Minimum length: 1"; without it Cursor picks its default. A blank
        // setting (the README's default is "empty", e.g. Handoff__Integrations__42__Model=) means "the provider's default".
        var settings = new Dictionary<string, string?> { [$"Handoff:Integrations:{EmbeddedServiceFactory.IntegrationId}:Model"] = model };
        using var blankFactory = new EmbeddedServiceFactory(temp.File("blank-model.db"), cursor.Url, settings: settings);
        using var blankClient = blankFactory.CreateClient();

        await blankClient.PostJsonAsync("/runs/127/handoff", Payloads.Trigger(Payloads.Run(127, ["acme/shop"], automation: false)));

        var body = Assert.Single(cursor.LaunchBodies);
        Assert.False(body.ContainsKey("model"), body.ToJsonString());
    }

    [Fact]
    public async Task Recent_runs_of_a_data_file_without_runs_is_an_empty_array()
    {
        var response = await client.GetAsync("/runs");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("[]", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Recent_runs_lists_the_newest_first_and_honours_the_limit()
    {
        foreach (var runId in new[] { 130, 131, 132 })
        {
            await client.PostJsonAsync($"/runs/{runId}/handoff", Payloads.Trigger(Payloads.Run(runId, ["acme/shop"], automation: false)));
        }

        var all = (await (await client.GetAsync("/runs")).ReadJsonArrayAsync()).Select(run => run!["run_id"]!.GetValue<long>());
        var two = (await (await client.GetAsync("/runs?limit=2")).ReadJsonArrayAsync()).Select(run => run!["run_id"]!.GetValue<long>());

        Assert.Equal([132L, 131L, 130L], all);
        Assert.Equal([132L, 131L], two);
    }

    [Fact]
    public async Task Recent_runs_without_a_limit_lists_the_newest_50()
    {
        // Stored by completion events without automation: nothing is launched, each is a run of its own.
        var runIds = Enumerable.Range(1000, 51).Select(id => (long)id).ToList();
        foreach (var runId in runIds)
        {
            var response = await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(runId, ["acme/shop"], automation: false));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        var listed = (await (await client.GetAsync("/runs")).ReadJsonArrayAsync()).Select(run => run!["run_id"]!.GetValue<long>()).ToList();

        // Runs stored within the same millisecond may list in either order: only how many are listed, and that the newest is among them, is pinned.
        Assert.Equal(50, listed.Count);
        Assert.Equal(50, listed.Distinct().Count());
        Assert.Contains(runIds[^1], listed);
        Assert.Equal(0, cursor.LaunchRequests);
    }

    [Fact]
    public async Task Repositories_past_the_cap_are_launched_up_to_it_and_the_rest_reported_for_triggers_and_events()
    {
        var settings = new Dictionary<string, string?> { ["Handoff:Launch:MaxRepositories"] = "2" };
        using var cappedFactory = new EmbeddedServiceFactory(temp.File("capped.db"), cursor.Url, settings: settings);
        using var cappedClient = cappedFactory.CreateClient();
        string[] repositories = ["acme/a", "acme/b", "acme/c"];

        var response = await cappedClient.PostJsonAsync("/runs/140/handoff", Payloads.Trigger(Payloads.Run(140, repositories, automation: false)));
        var eventResponse = await cappedClient.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(141, repositories));
        await cappedFactory.RunScheduleAsync();

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Equal(HttpStatusCode.OK, eventResponse.StatusCode);
        var body = await response.ReadJsonAsync();
        Assert.Equal(["acme/a", "acme/b"], body["successes"]!.AsArray().Select(s => s!["repo_name"]!.GetValue<string>()));
        var failure = Assert.Single(body["failures"]!.AsArray())!;
        Assert.Equal("acme/c", failure["repo_name"]!.GetValue<string>());
        Assert.Equal("too_many_repositories", failure["failure_type"]!.GetValue<string>());
        Assert.Equal(0, cursor.AgentsFor("acme/c"));
        Assert.Equal(2, cursor.AgentsFor("acme/a"));
    }

    [Fact]
    public async Task Trigger_sent_as_text_json_is_read_like_application_json()
    {
        var response = await client.PostRawAsync("/runs/5/handoff", Payloads.Trigger(Payloads.Run(5, ["acme/shop"], automation: false)).ToJsonString(), "text/json");

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Equal("acme/shop", (await response.ReadJsonAsync())["successes"]![0]!["repo_name"]!.GetValue<string>());
        Assert.Equal(1, cursor.LaunchRequests);
    }

    [Fact]
    public async Task Trigger_without_a_content_type_is_read_as_json()
    {
        var content = new ByteArrayContent(System.Text.Encoding.UTF8.GetBytes(Payloads.Trigger(Payloads.Run(6, ["acme/shop"], automation: false)).ToJsonString()));

        var response = await client.PostAsync("/runs/6/handoff", content);

        Assert.Null(content.Headers.ContentType);
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Equal("acme/shop", (await response.ReadJsonAsync())["successes"]![0]!["repo_name"]!.GetValue<string>());
        Assert.Equal(1, cursor.LaunchRequests);
    }

    [Fact]
    public async Task Completion_event_with_automation_preference_launches_and_one_without_does_not()
    {
        var automatic = await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(200, ["acme/shop"]));
        var manualOnly = await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(201, ["acme/shop"], automation: false));
        await factory.RunScheduleAsync();

        Assert.Equal(HttpStatusCode.OK, automatic.StatusCode);
        Assert.Equal(HttpStatusCode.OK, manualOnly.StatusCode);
        Assert.Equal(1, cursor.LaunchRequests);
        var launched = await (await client.GetAsync("/runs/200/handoff")).ReadJsonAsync();
        Assert.Single(launched["coding_agents"]!.AsObject());
        var stored = await (await client.GetAsync("/runs/201/handoff")).ReadJsonAsync();
        Assert.Empty(stored["coding_agents"]!.AsObject());
    }

    /// <summary>
    /// The automatic handoff asks for a pull request exactly when the run's automation_handoff says auto_create_pr, and
    /// only then tells the agent to name the issue in it.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Completion_event_launches_with_the_auto_create_pr_of_the_run_s_automation_preference(bool autoCreatePr)
    {
        var run = Payloads.Run(207, ["acme/shop"]);
        run["preferences"]!["automation_handoff"]!["auto_create_pr"] = autoCreatePr;

        var response = await client.PostJsonAsync("/events/autofix-run-completed", run);
        await factory.RunScheduleAsync();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var body = Assert.Single(cursor.LaunchBodies);
        Assert.Equal(autoCreatePr, body["target"]!["autoCreatePr"]!.GetValue<bool>());
        var prompt = body["prompt"]!["text"]!.GetValue<string>();
        Assert.Equal(autoCreatePr, prompt.Contains("Include 'Fixes SHOP-1A2' in the pull request description.", StringComparison.Ordinal));
    }

    /// <summary>The event is taken either way; the log line says, in the event's own field names, what held it back.</summary>
    [Theory]
    [InlineData(202, "solution step", "the step completed is not the root cause (no root cause yet, or the solution)")]
    [InlineData(203, "stops at root cause", "metadata.stopping_point is not past root_cause")]
    [InlineData(205, "no preference", "no preferences.automation_handoff")]
    [InlineData(206, "unknown integration", "automation_handoff.integration_id is not configured")]
    public async Task Completion_event_the_gate_refuses_stores_the_run_launches_nothing_and_logs_why(long runId, string kind, string reason)
    {
        var run = Payloads.Run(runId, ["acme/shop"], automation: kind != "no preference", withSolution: kind == "solution step", stoppingPoint: kind == "stops at root cause" ? "root_cause" : "open_pr");
        if (kind == "unknown integration")
        {
            run["preferences"]!["automation_handoff"]!["integration_id"] = 77;
        }

        var response = await client.PostJsonAsync("/events/autofix-run-completed", run);
        await factory.RunScheduleAsync();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var stored = await (await client.GetAsync($"/runs/{runId}/handoff")).ReadJsonAsync();
        Assert.Empty(stored["launches"]!.AsArray());
        Assert.Equal(0, cursor.LaunchRequests);
        var line = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "CompletionEventStored");
        Assert.Equal(reason, line.GetStructuredStateValue("Reason"));
    }

    [Fact]
    public async Task Completion_event_as_structured_cloud_event_launches()
    {
        var cloudEvent = Payloads.CloudEvent(Payloads.Run(204, ["acme/shop"]));

        var response = await client.PostJsonAsync("/events/autofix-run-completed", cloudEvent, "application/cloudevents+json");
        await factory.RunScheduleAsync();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(1, cursor.LaunchRequests);
    }

    /// <summary>
    /// Only a CloudEvent (one with specversion) is an envelope: a plain snapshot that happens to carry a "data" member is
    /// read whole, as the run it names, never as the run inside that member.
    /// </summary>
    [Fact]
    public async Task Completion_event_without_specversion_is_the_snapshot_itself_not_its_data_member()
    {
        var run = Payloads.Run(205, ["acme/shop"], automation: false);
        run["data"] = Payloads.Run(206, ["acme/shop"], automation: false);

        var response = await client.PostJsonAsync("/events/autofix-run-completed", run);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/runs/205/handoff")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await client.GetAsync("/runs/206/handoff")).StatusCode);
    }

    [Fact]
    public async Task Completion_event_whose_snapshot_comes_as_data_base64_launches_and_its_redelivery_as_data_does_not()
    {
        // CloudEvents' JSON format carries binary data as data_base64; decoded, it is the same snapshot.
        var run = Payloads.Run(205, ["acme/shop"]);
        var encoded = Payloads.CloudEvent(run);
        encoded.Remove("data");
        encoded["data_base64"] = Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes(run.ToJsonString()));

        var response = await client.PostJsonAsync("/events/autofix-run-completed", encoded, "application/cloudevents+json");
        await factory.RunScheduleAsync();
        await client.PostJsonAsync("/events/autofix-run-completed", Payloads.CloudEvent(run), "application/cloudevents+json");
        await factory.RunScheduleAsync();

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(1, cursor.LaunchRequests);
    }

    [Fact]
    public async Task Same_event_delivered_twice_launches_each_repository_once()
    {
        var run = Payloads.Run(210, ["acme/shop", "acme/billing", "acme/web"]);

        await client.PostJsonAsync("/events/autofix-run-completed", run);
        await client.PostJsonAsync("/events/autofix-run-completed", Payloads.CloudEvent(run), "application/cloudevents+json");
        await factory.RunScheduleAsync();
        await client.PostJsonAsync("/events/autofix-run-completed", run); // after the launches too
        await factory.RunScheduleAsync();

        Assert.Equal(3, cursor.LaunchRequests);
        Assert.All(new[] { "acme/shop", "acme/billing", "acme/web" }, repo => Assert.Equal(1, cursor.AgentsFor(repo)));
    }

    [Fact]
    public async Task Completion_event_is_answered_before_the_provider_is_called_and_launched_by_the_schedule()
    {
        var response = await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(206, ["acme/shop", "acme/web"]));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(0, cursor.LaunchRequests);
        var saved = await (await client.GetAsync("/runs/206/handoff")).ReadJsonAsync();
        Assert.All(saved["launches"]!.AsArray(), launch => Assert.Equal("retry_scheduled", launch!["phase"]!.GetValue<string>()));

        Assert.Equal(1, await factory.RunScheduleAsync());

        Assert.Equal(2, cursor.LaunchRequests);
        var launched = await (await client.GetAsync("/runs/206/handoff")).ReadJsonAsync();
        Assert.Equal(2, launched["coding_agents"]!.AsObject().Count);
    }

    [Fact]
    public async Task Completion_event_launches_without_help_when_the_scheduler_is_woken()
    {
        using var woken = new EmbeddedServiceFactory(temp.File("woken.db"), cursor.Url) { WakeOnSignal = true };
        using var wokenClient = woken.CreateClient();

        await wokenClient.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(207, ["acme/shop", "acme/web"]));

        // The schedule polls every 10 days in tests: only the signal can have started these launches.
        await Eventually.True(() => cursor.LaunchRequests >= 2);

        Assert.Equal(2, cursor.LaunchRequests);
    }

    [Fact]
    public async Task Run_waiting_on_a_slow_provider_does_not_hold_up_the_next_runs_launches()
    {
        using var slow = cursor.Hold("acme/slow");
        using var woken = new EmbeddedServiceFactory(temp.File("slow.db"), cursor.Url) { WakeOnSignal = true };
        using var wokenClient = woken.CreateClient();

        await wokenClient.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(209, ["acme/slow"]));
        await wokenClient.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(210, ["acme/fast"]));

        await Eventually.True(() => cursor.AgentsFor("acme/fast") > 0);

        Assert.Equal(1, cursor.AgentsFor("acme/fast"));
        Assert.Equal(0, cursor.AgentsFor("acme/slow")); // still waiting on the provider
        slow.Release();
    }

    /// <summary>
    /// The schedule works on at most <c>Handoff:Embedded:MaxConcurrentWakeups</c> runs at once: with one slot and two runs
    /// due when it starts, it claims one, and the other only once that one's provider call has answered.
    /// </summary>
    [Fact]
    public async Task Schedule_claims_no_more_runs_than_its_slots_and_the_next_once_one_is_done()
    {
        using var held = cursor.Hold("acme/slow");
        var path = await DueAtStartAsync(temp.File("one-slot.db"), 240, 241);
        using var woken = new EmbeddedServiceFactory(path, cursor.Url, settings: new Dictionary<string, string?> { ["Handoff:Embedded:MaxConcurrentWakeups"] = "1" }) { WakeOnSignal = true };
        woken.CreateClient().Dispose();

        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));
        Assert.Equal(1, ClaimedWakeups(path));

        held.Release();
        await Eventually.True(() => cursor.AgentsFor("acme/slow") == 2);
    }

    /// <summary>
    /// The schedule claims due wake-ups 16 at a time and goes on while a batch comes back full: with 17 runs due when it
    /// starts and slots for all, all 17 are claimed while the first 16 are still at the provider.
    /// </summary>
    [Fact]
    public async Task Schedule_claims_past_a_full_batch_while_it_has_slots()
    {
        using var held = cursor.Hold("acme/slow");
        var path = await DueAtStartAsync(temp.File("two-batches.db"), [.. Enumerable.Range(250, 17).Select(run => (long)run)]);
        using var woken = new EmbeddedServiceFactory(path, cursor.Url) { WakeOnSignal = true };
        woken.CreateClient().Dispose();

        await Eventually.True(() => ClaimedWakeups(path) == 17);

        held.Release();
        await Eventually.True(() => cursor.AgentsFor("acme/slow") == 17);
    }

    /// <summary>A data file whose runs have their launches (to acme/slow) due, saved by a service that then stopped before its schedule ran.</summary>
    private async Task<string> DueAtStartAsync(string path, params long[] runIds)
    {
        // Its schedule never runs: its pass at start, in the background, could otherwise claim a launch posted below.
        using var earlier = new EmbeddedServiceFactory(path, cursor.Url) { ScheduleRunsOnItsOwn = false };
        using var earlierClient = earlier.CreateClient();
        foreach (var runId in runIds)
        {
            Assert.Equal(HttpStatusCode.OK, (await earlierClient.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(runId, ["acme/slow"]))).StatusCode);
        }

        return path;
    }

    /// <summary>Wake-ups claimed (leased) by a process.</summary>
    private static long ClaimedWakeups(string path)
    {
        using var connection = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={path};Pooling=False");
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT count(*) FROM wakeups WHERE lease_owner IS NOT NULL";
        return (long)command.ExecuteScalar()!;
    }

    /// <summary>
    /// Launches an event saved as due while a trigger's launch round was at the provider are not claimed then (the round
    /// is under way here); the schedule is told to look again when the round ends, and launches them without waiting for
    /// its poll.
    /// </summary>
    [Fact]
    public async Task Launches_due_while_a_triggers_round_is_out_are_made_when_the_round_ends()
    {
        using var held = cursor.Hold("acme/slow");
        using var woken = new EmbeddedServiceFactory(temp.File("round-ends.db"), cursor.Url) { WakeOnSignal = true };
        using var wokenClient = woken.CreateClient();
        var trigger = wokenClient.PostJsonAsync("/runs/260/handoff", Payloads.Trigger(Payloads.Run(260, ["acme/slow"], automation: false)));
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        Assert.Equal(HttpStatusCode.OK, (await wokenClient.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(260, ["acme/slow", "acme/fast"]))).StatusCode);
        held.Release();
        Assert.Equal(HttpStatusCode.Accepted, (await trigger).StatusCode);

        // The schedule polls every 10 days in tests: only the round's end can have started this launch.
        await Eventually.True(() => cursor.AgentsFor("acme/fast") == 1);
    }

    [Fact]
    public async Task Completion_event_launches_within_the_request_when_background_launches_are_off()
    {
        using var inline = new EmbeddedServiceFactory(temp.File("inline.db"), cursor.Url, settings: new Dictionary<string, string?> { ["Handoff:Embedded:LaunchEventsInBackground"] = "false" });
        using var inlineClient = inline.CreateClient();

        await inlineClient.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(208, ["acme/shop"]));

        Assert.Equal(1, cursor.LaunchRequests);
    }

    [Fact]
    public async Task Run_answers_a_second_trigger_while_its_launch_round_is_at_the_provider()
    {
        using var held = cursor.Hold("acme/slow");
        var first = client.PostJsonAsync("/runs/230/handoff", Payloads.Trigger(Payloads.Run(230, ["acme/slow"], automation: false)));
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        // The run's lock was let go when the intent was saved: the second trigger sees the launch under way.
        var second = await client.PostJsonAsync("/runs/230/handoff", Payloads.Trigger());
        Assert.Equal(HttpStatusCode.Accepted, second.StatusCode);
        Assert.Equal("acme/slow", (await second.ReadJsonAsync())["retries"]![0]!["repo_name"]!.GetValue<string>());
        Assert.False(first.IsCompleted);

        held.Release();
        var answer = await (await first).ReadJsonAsync();
        Assert.Equal("acme/slow", answer["successes"]![0]!["repo_name"]!.GetValue<string>());
        Assert.Equal(1, cursor.LaunchRequests);
    }

    [Fact]
    public async Task Answers_recorded_after_another_process_on_the_same_file_saved_the_run_keep_what_it_saved()
    {
        using var held = cursor.Hold("acme/shop");
        using var other = new EmbeddedServiceFactory(factory.DataPath, cursor.Url);
        using var otherClient = other.CreateClient();
        var first = client.PostJsonAsync("/runs/232/handoff", Payloads.Trigger(Payloads.Run(232, ["acme/shop"], automation: false)));
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        // The second process stores a later snapshot of the run while the launch is at the provider.
        var stored = await otherClient.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(232, ["acme/shop"], automation: false, withSolution: true));
        Assert.Equal(HttpStatusCode.OK, stored.StatusCode);
        held.Release();

        var answer = await first;
        Assert.Equal(HttpStatusCode.Accepted, answer.StatusCode);
        var view = await (await otherClient.GetAsync("/runs/232/handoff")).ReadJsonAsync();
        Assert.Single(view["coding_agents"]!.AsObject());
        Assert.Equal("launched", view["launches"]![0]!["phase"]!.GetValue<string>());
        Assert.NotNull((await factory.Store.LoadAsync(232, CancellationToken.None)).State!.Snapshot!.Artifacts!.Solution);
        Assert.Equal(1, cursor.LaunchRequests);
    }

    [Fact]
    public async Task Trigger_whose_caller_gives_up_while_the_launch_is_at_the_provider_still_records_the_agent()
    {
        using var held = cursor.Hold("acme/slow");
        using var givingUp = new CancellationTokenSource();
        var body = new StringContent(Payloads.Trigger(Payloads.Run(231, ["acme/slow"], automation: false)).ToJsonString(), System.Text.Encoding.UTF8, "application/json");
        var first = client.PostAsync("/runs/231/handoff", body, givingUp.Token);
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        // The caller's own timeout: the launch has been sent and must not be dropped for it (as in Dapr mode).
        givingUp.Cancel();
        await Task.Delay(100);
        held.Release();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => first);

        // The answer is recorded in the background after the caller has gone: up to 10 s on a loaded machine.
        var phase = "in_flight";
        await Eventually.True(async () =>
        {
            phase = (await (await client.GetAsync("/runs/231/handoff")).ReadJsonAsync())["launches"]![0]!["phase"]!.GetValue<string>();
            return phase != "in_flight";
        });

        Assert.Equal("launched", phase);
        Assert.Equal(1, cursor.LaunchRequests);
    }

    [Fact]
    public async Task Run_answers_a_trigger_while_a_stop_is_at_the_provider_and_records_the_stop_after()
    {
        var launched = await (await client.PostJsonAsync("/runs/240/handoff", Payloads.Trigger(Payloads.Run(240, ["acme/shop"], automation: false)))).ReadJsonAsync();
        var agentId = launched.FirstLaunchedAgentId();
        using var held = cursor.HoldCommands();

        var stop = client.PostAsync($"/runs/240/agents/{agentId}/stop", null);
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));
        var second = await client.PostJsonAsync("/runs/240/handoff", Payloads.Trigger());

        // The trigger was answered with the stop still at the provider: the run was not held for it.
        Assert.Equal(HttpStatusCode.Accepted, second.StatusCode);
        Assert.False(stop.IsCompleted);
        held.Release();
        Assert.Equal(HttpStatusCode.OK, (await stop).StatusCode);
        var view = await (await client.GetAsync("/runs/240/handoff")).ReadJsonAsync();
        Assert.Equal("failed", view["coding_agents"]![agentId]!["status"]!.GetValue<string>());
        Assert.Contains(view["timeline"]!.AsArray(), entry => entry!["event"]!.GetValue<string>() == "stopped");
    }

    /// <summary>
    /// A caller that gives up while its stop or follow-up is at the provider does not cut the provider's call short: the
    /// call runs on under the shutdown cut-off only, and its answer is recorded (the follow-up sent, the agent stopped),
    /// where cut short with the request its outcome would be unknown, and a stopped agent left shown at work.
    /// </summary>
    [Theory]
    [InlineData("stop", "stopped")]
    [InlineData("followup", "followup_sent")]
    public async Task Command_whose_caller_gives_up_while_it_is_at_the_provider_is_still_made_and_recorded(string command, string recorded)
    {
        var runId = command == "stop" ? 241 : 242;
        var launched = await (await client.PostJsonAsync($"/runs/{runId}/handoff", Payloads.Trigger(Payloads.Run(runId, ["acme/shop"], automation: false)))).ReadJsonAsync();
        var agentId = launched.FirstLaunchedAgentId();
        using var held = cursor.HoldCommands();
        using var givingUp = new CancellationTokenSource();
        using var body = command == "followup" ? JsonContent.Create(new JsonObject { ["text"] = "Open the pull request" }) : null;

        var sent = client.PostAsync($"/runs/{runId}/agents/{agentId}/{command}", body, givingUp.Token);
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));
        await givingUp.CancelAsync();
        // Released only after the caller gave up (the test server ends the caller's wait once the handler has ended).
        held.Release();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => sent);

        JsonObject view = [];
        await Eventually.True(async () =>
        {
            view = await (await client.GetAsync($"/runs/{runId}/handoff")).ReadJsonAsync();
            return view["timeline"]!.AsArray().Any(entry => entry!["event"]!.GetValue<string>() == recorded);
        });
        var entry = Assert.Single(view["timeline"]!.AsArray(), entry => entry!["event"]!.GetValue<string>() == recorded);
        Assert.Null(entry!["detail"]);
        var statusBefore = launched["successes"]![0]!["coding_agent_state"]!["status"]!.GetValue<string>();
        Assert.Equal(command == "stop" ? "failed" : statusBefore, view["coding_agents"]![agentId]!["status"]!.GetValue<string>());
    }

    [Fact]
    public async Task Concurrent_triggers_for_one_run_launch_each_repository_once()
    {
        var run = Payloads.Run(220, ["acme/shop", "acme/billing", "acme/web"], automation: false);
        await client.PostJsonAsync("/events/autofix-run-completed", run);

        var responses = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => client.PostJsonAsync("/runs/220/handoff", Payloads.Trigger())));

        Assert.All(responses, response => Assert.Equal(HttpStatusCode.Accepted, response.StatusCode));
        Assert.Equal(3, cursor.LaunchRequests);
        // Every caller sees the three repositories: as the same three agents once the launch round is recorded, or, while
        // it is at the provider, as launches under way.
        var answers = await Task.WhenAll(responses.Select(response => response.ReadJsonAsync()));
        Assert.All(answers, answer => Assert.Equal(3, answer["successes"]!.AsArray().Count + answer["retries"]!.AsArray().Count));
        var agentIds = answers.SelectMany(answer => answer["successes"]!.AsArray().Select(s => s!["coding_agent_state"]!["id"]!.GetValue<string>())).ToHashSet();
        Assert.Equal(3, agentIds.Count);
    }

    [Fact]
    public async Task Repeated_trigger_answers_with_existing_agents_and_launches_nothing()
    {
        var run = Payloads.Run(225, ["acme/shop"], automation: false);
        var first = await (await client.PostJsonAsync("/runs/225/handoff", Payloads.Trigger(run))).ReadJsonAsync();

        var second = await (await client.PostJsonAsync("/runs/225/handoff", Payloads.Trigger())).ReadJsonAsync();

        Assert.Equal(1, cursor.LaunchRequests);
        Assert.Equal(
            first.FirstLaunchedAgentId(),
            second.FirstLaunchedAgentId());
    }

    [Fact]
    public async Task Run_of_another_group_is_unknown_and_launches_nothing()
    {
        await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(230, ["acme/shop"], automation: false));

        var response = await client.PostJsonAsync("/runs/230/handoff", Payloads.Trigger(groupId: 999));
        var unknown = await client.PostJsonAsync("/runs/231/handoff", Payloads.Trigger());
        var read = await client.GetAsync("/runs/230/handoff?group_id=999");

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, read.StatusCode);
        // Another group's run and a missing run are indistinguishable, detail and all.
        var unknownProblem = await unknown.ReadJsonAsync();
        var otherGroupProblem = await response.ReadJsonAsync();
        Assert.Equal(unknownProblem["type"]!.ToString(), otherGroupProblem["type"]!.ToString());
        Assert.Equal(unknownProblem["detail"]!.ToString(), otherGroupProblem["detail"]!.ToString());
        Assert.Equal(0, cursor.LaunchRequests);
    }

    [Fact]
    public async Task Snapshot_of_another_group_cannot_take_over_a_stored_run()
    {
        await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(232, ["acme/shop"], automation: false));

        var hijack = await client.PostJsonAsync("/runs/232/handoff", Payloads.Trigger(Payloads.Run(232, ["evil/repo"], automation: false, groupId: 999), groupId: 999));

        Assert.Equal(HttpStatusCode.NotFound, hijack.StatusCode);
        // It sent its snapshot: not told that a run not stored yet needs one.
        Assert.Equal("No run with this id belongs to the given group.", (await hijack.ReadJsonAsync())["detail"]!.GetValue<string>());
        Assert.Equal(0, cursor.LaunchRequests);
    }

    [Fact]
    public async Task Unknown_integration_is_a_404_problem()
    {
        var response = await client.PostJsonAsync("/runs/240/handoff", Payloads.Trigger(Payloads.Run(240, ["acme/shop"]), integrationId: 7));

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType!.MediaType);
        var problem = await response.ReadJsonAsync();
        Assert.EndsWith("unknown-integration", problem["type"]!.GetValue<string>());
        Assert.Equal("integration_id names no integration configured on this service.", problem["detail"]!.GetValue<string>());
    }

    [Fact]
    public async Task Partial_failure_reports_a_generic_message_without_provider_or_exception_text()
    {
        cursor.Script("acme/broken", FakeCursor.Status(400, """{"error":{"message":"provider-internal-detail-7f3a"}}"""));
        var run = Payloads.Run(250, ["acme/shop", "acme/broken", "bad name/with space"], automation: false);

        var response = await client.PostJsonAsync("/runs/250/handoff", Payloads.Trigger(run));
        var text = await response.Content.ReadAsStringAsync();

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var body = await response.ReadJsonAsync();
        Assert.Equal("acme/shop", Assert.Single(body["successes"]!.AsArray())!["repo_name"]!.GetValue<string>());
        var failures = body["failures"]!.AsArray();
        Assert.Equal(2, failures.Count);
        var broken = failures.Single(f => f!["repo_name"]!.GetValue<string>() == "acme/broken")!;
        Assert.Equal("Failed to launch coding agent", broken["error_message"]!.GetValue<string>());
        Assert.Equal("invalid_request", broken["failure_type"]!.GetValue<string>());
        var invalid = failures.Single(f => f!["failure_type"]!.GetValue<string>() == "invalid_repository")!;
        Assert.StartsWith("Invalid repository name format: ", invalid["error_message"]!.GetValue<string>());
        Assert.DoesNotContain(FakeCursor.ProviderSecretText, text);
        Assert.DoesNotContain("Exception", text);
        Assert.DoesNotContain(EmbeddedServiceFactory.ApiKey, text);
        // The invalid name never reached the provider.
        Assert.Equal(2, cursor.LaunchRequests);
    }

    [Fact]
    public async Task Provider_server_error_schedules_a_retry_instead_of_failing()
    {
        cursor.Script("acme/flaky", FakeCursor.Status(500));
        var run = Payloads.Run(255, ["acme/flaky"], automation: false);

        var body = await (await client.PostJsonAsync("/runs/255/handoff", Payloads.Trigger(run))).ReadJsonAsync();

        Assert.Empty(body["successes"]!.AsArray());
        Assert.Empty(body["failures"]!.AsArray());
        var retry = Assert.Single(body["retries"]!.AsArray())!;
        Assert.Equal("acme/flaky", retry["repo_name"]!.GetValue<string>());
        Assert.Equal("provider_unavailable", retry["failure_type"]!.GetValue<string>());
        Assert.Equal(2, retry["attempt"]!.GetValue<int>());
        Assert.NotNull(await factory.Store.GetWakeupAsync(255, CancellationToken.None));
    }

    [Fact]
    public async Task Provider_answer_with_invalid_utf16_is_an_unknown_outcome_not_a_crash()
    {
        cursor.Script("acme/odd", FakeCursor.Status(201, "{\"id\":\"bc-\\ud800\",\"status\":\"CREATING\"}"));

        var response = await client.PostJsonAsync("/runs/256/handoff", Payloads.Trigger(Payloads.Run(256, ["acme/odd"], automation: false)));

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Equal("invalid_response", (await response.ReadJsonAsync())["retries"]![0]!["failure_type"]!.GetValue<string>());
    }

    [Fact]
    public async Task Run_without_repositories_answers_one_failure_and_calls_nobody()
    {
        var response = await client.PostJsonAsync("/runs/260/handoff", Payloads.Trigger(Payloads.Run(260, [], automation: false)));

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var failure = Assert.Single((await response.ReadJsonAsync())["failures"]!.AsArray())!;
        Assert.Equal("No repositories found in run state", failure["error_message"]!.GetValue<string>());
        Assert.Null(failure["repo_name"]);
        Assert.Equal(0, cursor.LaunchRequests);
    }

    [Fact]
    public async Task State_survives_a_restart_on_the_same_file()
    {
        await client.PostJsonAsync("/runs/270/handoff", Payloads.Trigger(Payloads.Run(270, ["acme/shop"], automation: false)));
        var before = await (await client.GetAsync("/runs/270/handoff")).Content.ReadAsStringAsync();
        await factory.DisposeAsync();

        await using var restarted = new EmbeddedServiceFactory(factory.DataPath, cursor.Url);
        var restartedClient = restarted.CreateClient();
        var after = await (await restartedClient.GetAsync("/runs/270/handoff")).Content.ReadAsStringAsync();
        await restartedClient.PostJsonAsync("/runs/270/handoff", Payloads.Trigger());

        Assert.Equal(before, after);
        Assert.Equal(1, cursor.LaunchRequests);
    }

    [Fact]
    public async Task Completion_event_answered_but_not_yet_launched_is_launched_after_a_restart()
    {
        // The schedule never runs in this process, not even its pass at start (which, started before the event and run in
        // the background, could otherwise claim the launches): the answer is all that happened before it stopped.
        var path = temp.File("launched-after-restart.db");
        var before = new EmbeddedServiceFactory(path, cursor.Url) { ScheduleRunsOnItsOwn = false };
        using (var beforeClient = before.CreateClient())
        {
            var answer = await beforeClient.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(271, ["acme/shop", "acme/web"]));
            Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        }

        await before.DisposeAsync();
        Assert.Equal(0, cursor.LaunchRequests);

        // The restarted scheduler runs overdue work at start, without a signal or a test driving it.
        await using var restarted = new EmbeddedServiceFactory(path, cursor.Url);
        restarted.CreateClient().Dispose();
        await Eventually.True(() => cursor.LaunchRequests >= 2);

        Assert.Equal(1, cursor.AgentsFor("acme/shop"));
        Assert.Equal(1, cursor.AgentsFor("acme/web"));
    }

    public void Dispose()
    {
        client.Dispose();
        factory.Dispose();
        cursor.Dispose();
        temp.Dispose();
    }
}
