using System.Net;
using System.Text.Json.Nodes;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>Polling is the fallback for lost webhooks: a pull request opened after a follow-up must be learnt without one.</summary>
public sealed class FollowupPollingTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero));

    [Fact]
    public async Task Pull_request_opened_after_a_followup_to_a_completed_agent_is_learnt_by_polling()
    {
        // No PublicBaseUrl: no webhooks, polling alone follows the agents.
        using var factory = new EmbeddedServiceFactory(temp.File("followup.db"), cursor.Url, time);
        using var client = factory.CreateClient();
        var launched = await client.PostJsonAsync("/runs/910/handoff", Payloads.Trigger(Payloads.Run(910, ["acme/shop"], automation: false)));
        Assert.Equal(HttpStatusCode.Accepted, launched.StatusCode);
        var agentId = Assert.Single(cursor.Agents.Keys);

        // The agent finishes without a pull request; the poll learns it.
        cursor.SetStatus(agentId, "FINISHED");
        time.Advance(TimeSpan.FromMinutes(1));
        await factory.RunScheduleAsync();
        Assert.Equal("completed", (await Agent(client, 910, agentId))["status"]!.GetValue<string>());

        // Asked to open one, it works again and finishes with it.
        var followup = await client.PostJsonAsync($"/runs/910/agents/{agentId}/followup", new JsonObject { ["text"] = "Open the pull request" });
        Assert.Equal(HttpStatusCode.OK, followup.StatusCode);
        cursor.SetStatus(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/12");

        for (var i = 0; i < 12; i++)
        {
            time.Advance(TimeSpan.FromMinutes(15));
            await factory.RunScheduleAsync();
        }

        var agent = await Agent(client, 910, agentId);
        Assert.Equal("https://github.com/acme/shop/pull/12", agent["results"]?[0]?["pr_url"]?.GetValue<string>());
    }

    private static async Task<JsonNode> Agent(HttpClient client, long runId, string agentId) =>
        (await (await client.GetAsync($"/runs/{runId}/handoff")).ReadJsonAsync())["coding_agents"]![agentId]!;

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
