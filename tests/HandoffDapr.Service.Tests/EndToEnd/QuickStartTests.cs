extern alias FakeProviderSample;

using System.Net;
using System.Text.Json.Nodes;
using FakeProviderSample::HandoffDapr.FakeProvider;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;

namespace HandoffDapr.Service.Tests.EndToEnd;

/// <summary>
/// README's quick start as it is written: the built service with its Development profile, the sample fake provider
/// (samples/HandoffDapr.FakeProvider) and the sample payloads. Only the fake's address, its agents' pace and the data
/// file differ, so that the fake's agents finish in a second rather than ten.
/// </summary>
public sealed class QuickStartTests : IAsyncLifetime
{
    private const string WebhookSecret = "quick-start-webhook-secret-0123456789";
    private readonly TempDirectory temp = new();
    private WebApplication fake = null!;
    private Uri fakeAddress = null!;

    public async Task InitializeAsync()
    {
        fake = FakeProviderApp.Build(["--urls", "http://127.0.0.1:0"], options =>
        {
            options.RunningAfter = TimeSpan.FromMilliseconds(200);
            options.FinishAfter = TimeSpan.FromSeconds(1);
        });
        await fake.StartAsync();
        fakeAddress = new Uri(fake.Urls.Single());
    }

    public async Task DisposeAsync()
    {
        await fake.DisposeAsync();
        temp.Dispose();
    }

    /// <summary>
    /// With a public base URL and a webhook secret, the fake's agents are learnt finished, with their pull requests,
    /// from its signed webhooks: the first status poll is a minute away, past this test's wait.
    /// </summary>
    [Fact]
    public async Task Sample_event_launches_one_agent_per_repository_and_learns_their_pull_requests_from_the_fake_s_webhooks()
    {
        await using var service = await StartServiceAsync(address => new Dictionary<string, string>
        {
            ["Handoff__PublicBaseUrl"] = address.GetLeftPart(UriPartial.Authority),
            ["Handoff__Integrations__42__WebhookSecret"] = WebhookSecret,
        });
        using var client = new HttpClient { BaseAddress = service.Address };

        var accepted = await client.PostRawAsync("/events/autofix-run-completed", Sample("completion-event.json"));

        Assert.Equal(HttpStatusCode.OK, accepted.StatusCode);
        var agents = await AgentsWhenCompletedAsync(client, 123, service);
        await AssertAgentsAreTheFakesWithTheirPullRequestsAsync(agents, ["acme/shop", "acme/payments"]);
        // Delivered and answered 2xx, each agent's one webhook: the fake sends it again until then.
        var store = fake.Services.GetRequiredService<AgentStore>();
        Assert.All(agents, pair => Assert.True(store.Find(pair.Key)!.WebhookSent, pair.Key));
    }

    /// <summary>
    /// Without webhooks, a status poll learns the same; the sample trigger for the same run then launches nothing new,
    /// as samples/README.md says.
    /// </summary>
    [Fact]
    public async Task Sample_event_s_agents_are_learnt_completed_by_polling_and_the_sample_trigger_launches_nothing_new()
    {
        await using var service = await StartServiceAsync(_ => new Dictionary<string, string>
        {
            ["Handoff__Launch__PollInterval"] = "00:00:01",
        });
        using var client = new HttpClient { BaseAddress = service.Address };

        await client.PostRawAsync("/events/autofix-run-completed", Sample("completion-event.json"));
        var agents = await AgentsWhenCompletedAsync(client, 123, service);
        var trigger = await client.PostRawAsync("/runs/123/handoff", Sample("handoff-request.json"));

        await AssertAgentsAreTheFakesWithTheirPullRequestsAsync(agents, ["acme/shop", "acme/payments"]);
        Assert.True(trigger.IsSuccessStatusCode, await trigger.Content.ReadAsStringAsync());
        var stats = await FakeStatsAsync();
        Assert.Equal(2, stats["launches_accepted"]!.GetValue<int>());
        Assert.Equal(2, stats["launches_received"]!.GetValue<int>());
    }

    /// <summary>
    /// A person stopping an agent that already finished: the fake, as Cursor, stops only an agent at work, so the stop
    /// is the provider's refusal (a 502 naming it), and the run and the fake still show the agent completed with its
    /// pull request.
    /// </summary>
    [Fact]
    public async Task Stopping_an_agent_the_fake_finished_is_the_provider_s_refusal_and_the_run_keeps_its_pull_request()
    {
        await using var service = await StartServiceAsync(_ => new Dictionary<string, string>
        {
            ["Handoff__Launch__PollInterval"] = "00:00:01",
        });
        using var client = new HttpClient { BaseAddress = service.Address };
        await client.PostRawAsync("/events/autofix-run-completed", Sample("completion-event.json"));
        var agentId = (await AgentsWhenCompletedAsync(client, 123, service)).Select(pair => pair.Key).Order().First();

        var stop = await client.PostAsync($"/runs/123/agents/{agentId}/stop", null);

        var problem = await stop.ReadJsonAsync();
        Assert.Equal(HttpStatusCode.BadGateway, stop.StatusCode);
        Assert.Equal("invalid_request", problem["failure_type"]!.GetValue<string>());
        var agents = JsonNode.Parse(await client.GetStringAsync("/runs/123/handoff"))!["coding_agents"]!.AsObject();
        Assert.Equal("completed", agents[agentId]!["status"]!.GetValue<string>());
        await AssertAgentsAreTheFakesWithTheirPullRequestsAsync(agents, ["acme/shop", "acme/payments"]);
        using var fakeClient = new HttpClient { BaseAddress = fakeAddress };
        Assert.Equal("FINISHED", JsonNode.Parse(await fakeClient.GetStringAsync($"/v0/agents/{agentId}"))!["status"]!.GetValue<string>());
    }

    /// <summary>
    /// README: the Development profile points integration 43 (Copilot) at the fake too, which speaks only Cursor's API,
    /// so a trigger for 43 there fails <c>repository_access</c> (the fake answers 404), and the fake makes no agent.
    /// </summary>
    [Fact]
    public async Task Sample_trigger_for_the_Copilot_integration_fails_repository_access_at_the_fake()
    {
        await using var service = await StartServiceAsync(_ => new Dictionary<string, string>());
        using var client = new HttpClient { BaseAddress = service.Address };
        var trigger = JsonNode.Parse(Sample("handoff-request.json"))!.AsObject();
        trigger["integration_id"] = 43;
        trigger["run"] = JsonNode.Parse(Sample("completion-event.json"));
        trigger["run"]!["run_id"] = 124;

        var response = await client.PostJsonAsync("/runs/124/handoff", trigger);

        var body = await response.ReadJsonAsync();
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Empty(body["successes"]!.AsArray());
        var failures = body["failures"]!.AsArray();
        Assert.Equal(["acme/payments", "acme/shop"], failures.Select(f => f!["repo_name"]!.GetValue<string>()).Order());
        Assert.All(failures, f => Assert.Equal("repository_access", f!["failure_type"]!.GetValue<string>()));
        Assert.Equal(0, (await FakeStatsAsync())["launches_accepted"]!.GetValue<int>());
    }

    private Task<ServiceProcess> StartServiceAsync(Func<Uri, IDictionary<string, string>> settingsAt) =>
        ServiceProcess.StartAsync(address =>
        {
            var environment = new Dictionary<string, string>(settingsAt(address))
            {
                // The profile `dotnet run` starts with (launchSettings.json), whose appsettings point 42 and 43 at the fake.
                ["ASPNETCORE_ENVIRONMENT"] = "Development",
                ["Handoff__Integrations__42__BaseUrl"] = fakeAddress.GetLeftPart(UriPartial.Authority),
                ["Handoff__Integrations__43__BaseUrl"] = fakeAddress.GetLeftPart(UriPartial.Authority),
                ["Handoff__DataPath"] = temp.File("quick-start.db"),
            };
            return environment;
        });

    /// <summary>The run's coding_agents once every agent is completed; fails after 20 s with the run's view.</summary>
    private static async Task<JsonObject> AgentsWhenCompletedAsync(HttpClient client, long runId, ServiceProcess service)
    {
        JsonObject? view = null;
        var completed = await Eventually.Within(TimeSpan.FromSeconds(20), async () =>
        {
            view = JsonNode.Parse(await client.GetStringAsync($"/runs/{runId}/handoff"))!.AsObject();
            var agents = view["coding_agents"]!.AsObject();
            return agents.Count == 2 && agents.All(pair => pair.Value!["status"]!.GetValue<string>() == "completed");
        });
        Assert.True(completed, $"not every agent completed within 20 s: {view?.ToJsonString()}\n{service.Output}");
        return view!["coding_agents"]!.AsObject();
    }

    /// <summary>
    /// Each agent is one the fake made, for its own repository, and shows the pull request the fake reports for it and a
    /// link to its page on the fake, at whatever port the fake runs on.
    /// </summary>
    private async Task AssertAgentsAreTheFakesWithTheirPullRequestsAsync(JsonObject agents, string[] repositories)
    {
        using var fakeClient = new HttpClient { BaseAddress = fakeAddress };
        var shown = new List<string>();
        foreach (var (agentId, agent) in agents)
        {
            var atFake = JsonNode.Parse(await fakeClient.GetStringAsync($"/v0/agents/{agentId}"))!;
            var result = Assert.Single(agent!["results"]!.AsArray())!;
            var repository = result["repo_full_name"]!.GetValue<string>();
            Assert.Equal($"https://github.com/{repository}", atFake["source"]!["repository"]!.GetValue<string>());
            Assert.Equal(atFake["target"]!["prUrl"]!.GetValue<string>(), result["pr_url"]!.GetValue<string>());
            var page = agent["agent_url"]!.GetValue<string>();
            Assert.Equal(new Uri(fakeAddress, $"/agents/{agentId}"), new Uri(page));
            Assert.Contains(agentId, await fakeClient.GetStringAsync(page), StringComparison.Ordinal);
            shown.Add(repository);
        }

        Assert.Equal(repositories.Order(), shown.Order());
    }

    private async Task<JsonObject> FakeStatsAsync()
    {
        using var fakeClient = new HttpClient { BaseAddress = fakeAddress };
        return JsonNode.Parse(await fakeClient.GetStringAsync("/_fake/stats"))!.AsObject();
    }

    private static string Sample(string name) =>
        File.ReadAllText(Path.Combine(Security.WebhookSignatureTests.RepositoryRoot(), "samples", name));
}
