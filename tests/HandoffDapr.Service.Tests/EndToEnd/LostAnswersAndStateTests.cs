using System.Net;
using System.Text.Json.Nodes;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Hosting;
using HandoffDapr.Service.Tests.DaprMode;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.EndToEnd;

/// <summary>
/// Through the hosts, in both modes: a lost Copilot answer adopted by its handoff reference (never launched twice), a
/// pull request learnt by polling after a follow-up, ids at the limit round-tripping through actor state, prompts
/// within their cap.
/// </summary>
public sealed class LostAnswersAndStateTests : IDisposable
{
    private const string Actor = HandoffRunActor.ActorTypeName;
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();
    private readonly FakeCopilot github = new();

    [Fact]
    public async Task Embedded_copilot_launch_whose_answer_was_lost_is_adopted_not_launched_twice()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        using var factory = new EmbeddedServiceFactory(temp.File("copilot-lost.db"), cursor.Url, time, new Dictionary<string, string?>
        {
            ["Handoff:Integrations:43:Provider"] = "github_copilot_agent",
            ["Handoff:Integrations:43:BaseUrl"] = github.Url,
        });
        using var client = factory.CreateClient();
        github.CreateButAnswerStatus = 502;

        var response = await client.PostJsonAsync("/runs/700/handoff", Payloads.Trigger(Payloads.Run(700, ["acme/shop"], automation: false), integrationId: 43));
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Single(github.Tasks);

        for (var i = 0; i < 4; i++)
        {
            time.Advance(TimeSpan.FromMinutes(1));
            await factory.RunScheduleAsync();
        }

        var view = await (await client.GetAsync("/runs/700/handoff")).ReadJsonAsync();
        Assert.Equal(1, github.LaunchRequests);
        Assert.Equal(github.Tasks.Keys.Single(), Assert.Single(view["coding_agents"]!.AsObject()).Key);
    }

    [Fact]
    public async Task Dapr_copilot_launch_whose_answer_was_lost_is_adopted_not_launched_twice()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, time: time, copilotUrl: github.Url,
            settings: new Dictionary<string, string?> { ["Handoff:Integrations:43:Provider"] = "github_copilot_agent" });
        var client = factory.CreateSidecarClient();
        github.CreateButAnswerStatus = 502;

        var response = await client.PostJsonAsync("/runs/701/handoff", Payloads.Trigger(Payloads.Run(701, ["acme/shop"], automation: false), integrationId: 43));
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Single(github.Tasks);

        time.Advance(TimeSpan.FromMinutes(2));
        await factory.Sidecar.FireReminderAsync(Actor, "701", HandoffRunActor.WakeReminder);
        var taskId = github.Tasks.Keys.Single();
        await Eventually.True(() => factory.Sidecar.GetActorState(Actor, "701", "coding_agents") is { } agents && agents.TryGetProperty(taskId, out _));

        Assert.Equal(1, github.LaunchRequests);
    }

    [Fact]
    public async Task Dapr_followup_to_completed_agent_without_pr_learns_the_pr_by_polling()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var logs = new Microsoft.Extensions.Logging.Testing.FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, time: time, logs: logs);
        var client = factory.CreateSidecarClient();
        var launched = await client.PostJsonAsync("/runs/702/handoff", Payloads.Trigger(Payloads.Run(702, ["acme/shop"], automation: false)));
        Assert.Equal(HttpStatusCode.Accepted, launched.StatusCode);
        var agentId = Assert.Single(cursor.Agents.Keys);

        cursor.SetStatus(agentId, "FINISHED");
        time.Advance(TimeSpan.FromMinutes(1));
        await factory.Sidecar.FireReminderAsync(Actor, "702", HandoffRunActor.WakeReminder);
        await Eventually.True(() => factory.Sidecar.GetActorState(Actor, "702", "coding_agents")!.Value.GetProperty(agentId).GetProperty("status").GetString() == "completed");

        var followup = await client.PostJsonAsync($"/runs/702/agents/{agentId}/followup", new JsonObject { ["text"] = "Open the pull request" });
        Assert.Equal(HttpStatusCode.OK, followup.StatusCode);
        cursor.SetStatus(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/12");

        time.Advance(TimeSpan.FromMinutes(15));
        await factory.Sidecar.FireReminderAsync(Actor, "702", HandoffRunActor.WakeReminder);

        await Eventually.True(() => factory.Sidecar.GetActorState(Actor, "702", "coding_agents")!.Value.GetProperty(agentId).GetProperty("results") is { ValueKind: System.Text.Json.JsonValueKind.Array } r
            && r.GetArrayLength() > 0 && r[r.GetArrayLength() - 1].TryGetProperty("pr_url", out var pr) && pr.GetString() is not null);
    }

    [Fact]
    public async Task Dapr_run_with_every_id_at_the_limit_round_trips_through_actor_state()
    {
        const long Max = 9_007_199_254_740_991;
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, settings: new Dictionary<string, string?>
        {
            [$"Handoff:Integrations:{Max}:Provider"] = "cursor_background_agent",
            [$"Handoff:Integrations:{Max}:Binding"] = DaprServiceFactory.BindingName,
        });
        var client = factory.CreateSidecarClient();
        var run = Payloads.Run(Max, ["acme/shop"], groupId: Max);
        run["organization_id"] = Max;
        run["project_id"] = Max;
        run["preferences"]!["automation_handoff"]!["integration_id"] = Max;

        var delivery = await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", run);
        Assert.Equal(FakeSidecar.DeliveryOutcome.Success, delivery.Outcome);
        Assert.Equal(1, cursor.LaunchRequests);
        await factory.Sidecar.DeactivateActorAsync(Actor, Max.ToString());

        var read = await client.GetAsync($"/runs/{Max}/handoff?group_id={Max}");
        Assert.Equal(HttpStatusCode.OK, read.StatusCode);
        var view = await read.ReadJsonAsync();
        Assert.Equal(Max, view["run_id"]!.GetValue<long>());
        Assert.Single(view["coding_agents"]!.AsObject());

        var again = await client.PostJsonAsync($"/runs/{Max}/handoff", Payloads.Trigger(groupId: Max, integrationId: Max));
        Assert.Equal(HttpStatusCode.Accepted, again.StatusCode);
        Assert.Equal(1, cursor.LaunchRequests);
        var list = await client.GetAsync("/runs");
        Assert.Equal(HttpStatusCode.OK, list.StatusCode);
        var listed = Assert.Single(await list.ReadJsonArrayAsync())!;
        Assert.Equal(Max, listed["run_id"]!.GetValue<long>());
        Assert.Equal(Max, listed["group_id"]?.GetValue<long>());
    }

    [Fact]
    public async Task Dapr_copilot_pr_named_by_id_only_is_learnt_through_the_binding()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, time: time, copilotUrl: github.Url,
            settings: new Dictionary<string, string?> { ["Handoff:Integrations:43:Provider"] = "github_copilot_agent" });
        var client = factory.CreateSidecarClient();
        var response = await client.PostJsonAsync("/runs/703/handoff", Payloads.Trigger(Payloads.Run(703, ["acme/shop"], automation: false), integrationId: 43));
        var taskId = await response.ReadFirstLaunchedAgentIdAsync();

        github.SetState(taskId, "completed", "https://github.com/acme/shop/pull/19", withGlobalId: false);
        time.Advance(TimeSpan.FromMinutes(1));
        await factory.Sidecar.FireReminderAsync(Actor, "703", HandoffRunActor.WakeReminder);

        await Eventually.True(() => factory.Sidecar.GetActorState(Actor, "703", "coding_agents")!.Value.GetProperty(taskId).GetProperty("status").GetString() == "completed");
        var agent = factory.Sidecar.GetActorState(Actor, "703", "coding_agents")!.Value.GetProperty(taskId);
        Assert.Equal("https://github.com/acme/shop/pull/19", agent.GetProperty("results")[0].GetProperty("pr_url").GetString());
    }

    [Fact]
    public async Task Dapr_copilot_launch_answered_502_without_a_task_is_launched_again_once()
    {
        var time = new FakeTimeProvider(DateTimeOffset.UtcNow);
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, time: time, copilotUrl: github.Url,
            settings: new Dictionary<string, string?> { ["Handoff:Integrations:43:Provider"] = "github_copilot_agent" });
        var client = factory.CreateSidecarClient();
        github.NextLaunchAnswer = () => WireMockMessages.Json(502, """{"message":"Bad Gateway"}""");

        var response = await client.PostJsonAsync("/runs/704/handoff", Payloads.Trigger(Payloads.Run(704, ["acme/shop"], automation: false), integrationId: 43));
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Empty(github.Tasks);

        time.Advance(TimeSpan.FromMinutes(2));
        await factory.Sidecar.FireReminderAsync(Actor, "704", HandoffRunActor.WakeReminder);
        await Eventually.True(() => github.Tasks.Count == 1 && factory.Sidecar.GetActorState(Actor, "704", "coding_agents") is { } agents && agents.EnumerateObject().Any());

        Assert.Equal(2, github.LaunchRequests);
        Assert.Contains(github.Server.LogEntries, e => e.RequestMessage.Url.Contains("is_archived=true"));
    }

    [Fact]
    public async Task Embedded_copilot_prompt_with_long_analysis_and_longest_instruction_stays_within_prompt_max_length()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("copilot-cap.db"), cursor.Url, null, new Dictionary<string, string?>
        {
            ["Handoff:Integrations:43:Provider"] = "github_copilot_agent",
            ["Handoff:Integrations:43:BaseUrl"] = github.Url,
            ["Handoff:Integrations:43:PromptMaxLength"] = "8192",
            ["Handoff:Integrations:42:PromptMaxLength"] = "8192",
            ["Handoff:MaxInstructionLength"] = "7168",
        });
        using var client = factory.CreateClient();
        var run = Payloads.Run(705, ["acme/shop"], automation: false);
        run["artifacts"]!["root_cause"]!["one_line_description"] = new string('a', 20000);

        var response = await client.PostJsonAsync("/runs/705/handoff", Payloads.Trigger(run, integrationId: 43, instruction: new string('i', 7168)));
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var body = System.Text.Json.Nodes.JsonNode.Parse(github.Server.LogEntries.Single(e => e.RequestMessage.Method == "POST").RequestMessage.Body!)!;
        var prompt = body["prompt"]!.GetValue<string>();
        Assert.True(prompt.Length <= 8192, $"prompt length {prompt.Length}");
        // The reference names the launch's own branch (what a lookup after a lost answer matches), not merely itself.
        var launch = Assert.Single((await (await client.GetAsync("/runs/705/handoff")).ReadJsonAsync())["launches"]!.AsArray())!;
        Assert.EndsWith($"\n\nHandoff reference: {launch["branch_name"]!.GetValue<string>()}", prompt);
    }

    public void Dispose()
    {
        cursor.Dispose();
        github.Dispose();
        temp.Dispose();
    }
}
