using System.Net;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.Copilot;

/// <summary>A handoff to a Copilot integration end to end in embedded mode, beside a Cursor integration in the same process.</summary>
public sealed class CopilotHandoffTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();
    private readonly FakeCopilot github = new();
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero));
    private readonly EmbeddedServiceFactory factory;
    private readonly HttpClient client;

    public CopilotHandoffTests()
    {
        factory = new EmbeddedServiceFactory(temp.File("copilot.db"), cursor.Url, time, new Dictionary<string, string?>
        {
            ["Handoff:Integrations:43:Provider"] = "github_copilot_agent",
            ["Handoff:Integrations:43:BaseUrl"] = github.Url,
        });
        client = factory.CreateClient();
    }

    [Fact]
    public async Task Copilot_handoff_launches_then_polling_completes_it_with_the_pull_request()
    {
        var response = await client.PostJsonAsync("/runs/600/handoff", Payloads.Trigger(Payloads.Run(600, ["acme/shop"], automation: false), integrationId: 43));

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var agent = (await response.ReadJsonAsync())["successes"]![0]!["coding_agent_state"]!;
        Assert.Equal("github_copilot_agent", agent["provider"]!.GetValue<string>());
        var taskId = agent["id"]!.GetValue<string>();
        Assert.True(github.Tasks.ContainsKey(taskId));
        Assert.Equal(0, cursor.LaunchRequests);

        github.SetState(taskId, "completed", "https://github.com/acme/shop/pull/7");
        time.Advance(TimeSpan.FromMinutes(1));
        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        var view = await (await client.GetAsync("/runs/600/handoff")).ReadJsonAsync();
        var polled = view["coding_agents"]![taskId]!;
        Assert.Equal("completed", polled["status"]!.GetValue<string>());
        Assert.Equal("https://github.com/acme/shop/pull/7", polled["results"]![0]!["pr_url"]!.GetValue<string>());
    }

    [Fact]
    public async Task Copilot_integrations_model_setting_is_sent_with_its_launch()
    {
        using var modelFactory = new EmbeddedServiceFactory(temp.File("copilot-model.db"), cursor.Url, time, new Dictionary<string, string?>
        {
            ["Handoff:Integrations:43:Provider"] = "github_copilot_agent",
            ["Handoff:Integrations:43:BaseUrl"] = github.Url,
            ["Handoff:Integrations:43:Model"] = "claude-sonnet-4.5",
        });
        using var modelClient = modelFactory.CreateClient();

        var response = await modelClient.PostJsonAsync("/runs/608/handoff", Payloads.Trigger(Payloads.Run(608, ["acme/shop"], automation: false), integrationId: 43));

        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var launch = System.Text.Json.Nodes.JsonNode.Parse(github.Server.LogEntries.Single(e => e.RequestMessage.Method == "POST" && e.RequestMessage.Path != "/graphql").RequestMessage.Body!)!;
        Assert.Equal("claude-sonnet-4.5", launch["model"]?.GetValue<string>());
    }

    [Fact]
    public async Task Repeated_copilot_trigger_launches_nothing_new()
    {
        await client.PostJsonAsync("/runs/601/handoff", Payloads.Trigger(Payloads.Run(601, ["acme/shop", "acme/web"], automation: false), integrationId: 43));

        await client.PostJsonAsync("/runs/601/handoff", Payloads.Trigger(integrationId: 43));

        Assert.Equal(2, github.LaunchRequests);
    }

    [Fact]
    public async Task Cursor_and_copilot_runs_in_one_process_each_reach_their_own_provider()
    {
        await client.PostJsonAsync("/runs/602/handoff", Payloads.Trigger(Payloads.Run(602, ["acme/shop"], automation: false)));
        await client.PostJsonAsync("/runs/603/handoff", Payloads.Trigger(Payloads.Run(603, ["acme/web"], automation: false), integrationId: 43));

        Assert.Equal(1, cursor.LaunchRequests);
        Assert.Equal(1, github.LaunchRequests);
        Assert.Equal("https://github.com/acme/shop", cursor.LaunchBodies.Single()["source"]!["repository"]!.GetValue<string>());
        Assert.Equal("/agents/repos/acme/web/tasks", github.Server.LogEntries.Single().RequestMessage.Path);
    }

    /// <summary>
    /// A person handed the repository to Copilot by hand; the run's completion event, whose preference names Cursor, then
    /// arrives (the two race when the root cause completes). The event used to launch a Cursor agent on the same
    /// repository beside the Copilot task: two agents, two pull requests for one repository of the run.
    /// </summary>
    [Fact]
    public async Task Completion_event_after_a_person_handed_the_repository_to_another_integration_launches_no_second_agent()
    {
        var handedOff = await client.PostJsonAsync("/runs/606/handoff", Payloads.Trigger(Payloads.Run(606, ["acme/shop"], automation: false), integrationId: 43));
        Assert.Equal(HttpStatusCode.Accepted, handedOff.StatusCode);

        var delivered = await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(606, ["ACME/shop", "acme/web"]));
        await factory.RunScheduleAsync();

        Assert.Equal("SUCCESS", (await delivered.ReadJsonAsync())["status"]!.GetValue<string>());
        Assert.Equal(1, github.LaunchRequests);
        // The repository the person did not hand off is still launched through the event's integration.
        Assert.Equal("https://github.com/acme/web", cursor.LaunchBodies.Single()["source"]!["repository"]!.GetValue<string>());
        var view = await (await client.GetAsync("/runs/606/handoff")).ReadJsonAsync();
        Assert.Equal(2, view["coding_agents"]!.AsObject().Count);
    }

    [Fact]
    public async Task Copilot_agent_cannot_be_stopped_and_says_so()
    {
        var response = await client.PostJsonAsync("/runs/604/handoff", Payloads.Trigger(Payloads.Run(604, ["acme/shop"], automation: false), integrationId: 43));
        var taskId = await response.ReadFirstLaunchedAgentIdAsync();

        var stop = await client.PostAsync($"/runs/604/agents/{taskId}/stop", null);

        Assert.Equal(HttpStatusCode.Conflict, stop.StatusCode);
        Assert.Equal("not_supported", (await stop.ReadJsonAsync())["failure_type"]!.GetValue<string>());
    }

    /// <summary>
    /// The 409 for an action the provider does not offer is a problem of its own type and title: not "the provider failed",
    /// which would have the caller retry a stop or follow-up that can never be carried out.
    /// </summary>
    [Fact]
    public async Task Copilot_agent_followup_is_a_not_supported_problem_not_a_provider_failure()
    {
        var response = await client.PostJsonAsync("/runs/605/handoff", Payloads.Trigger(Payloads.Run(605, ["acme/shop"], automation: false), integrationId: 43));
        var taskId = await response.ReadFirstLaunchedAgentIdAsync();

        var followup = await client.PostJsonAsync($"/runs/605/agents/{taskId}/followup", new System.Text.Json.Nodes.JsonObject { ["text"] = "Also add a test" });

        Assert.Equal(HttpStatusCode.Conflict, followup.StatusCode);
        var problem = await followup.ReadJsonAsync();
        Assert.Equal("https://handoff-dapr.dev/problems/not-supported", problem["type"]!.GetValue<string>());
        Assert.Equal("Not supported by this provider", problem["title"]!.GetValue<string>());
        Assert.Equal("not_supported", problem["failure_type"]!.GetValue<string>());
    }

    /// <summary>
    /// The webhook route is Cursor's: its reports are read with Cursor's statuses and fields. A WebhookSecret configured on
    /// a Copilot integration (GitHub sends no webhooks) used to open the route for it, so a Cursor-shaped report signed
    /// with that secret moved the Copilot task, pull request included.
    /// </summary>
    [Fact]
    public async Task Cursor_webhook_signed_for_a_copilot_integration_is_refused_and_moves_nothing()
    {
        const string secret = "a-secret-someone-set-on-the-copilot-integration";
        using var withSecret = new EmbeddedServiceFactory(temp.File("copilot-webhook.db"), cursor.Url, time, new Dictionary<string, string?>
        {
            ["Handoff:Integrations:43:Provider"] = "github_copilot_agent",
            ["Handoff:Integrations:43:BaseUrl"] = github.Url,
            ["Handoff:Integrations:43:WebhookSecret"] = secret,
        });
        var secretClient = withSecret.CreateClient();
        var response = await secretClient.PostJsonAsync("/runs/605/handoff", Payloads.Trigger(Payloads.Run(605, ["acme/shop"], automation: false), integrationId: 43));
        var taskId = await response.ReadFirstLaunchedAgentIdAsync();

        var body = $$$"""{"event": "statusChange", "id": "{{{taskId}}}", "status": "FINISHED", "source": {"repository": "https://github.com/acme/shop"}, "target": {"prUrl": "https://github.com/acme/shop/pull/666"}}""";
        using var webhook = Payloads.SignedWebhook("/webhooks/cursor/43?run_id=605", body, secret);
        var answer = await secretClient.SendAsync(webhook);

        Assert.Equal(HttpStatusCode.Unauthorized, answer.StatusCode);
        var agent = (await (await secretClient.GetAsync("/runs/605/handoff")).ReadJsonAsync())["coding_agents"]![taskId]!;
        Assert.NotEqual("completed", agent["status"]!.GetValue<string>());
        Assert.Empty(agent["results"]!.AsArray());
    }

    public void Dispose()
    {
        client.Dispose();
        factory.Dispose();
        cursor.Dispose();
        github.Dispose();
        temp.Dispose();
    }
}
