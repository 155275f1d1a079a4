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

    [Fact]
    public async Task Pull_request_opened_after_a_followup_to_a_stopped_agent_is_learnt_by_polling()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("stopped.db"), cursor.Url, time);
        using var client = factory.CreateClient();
        await client.PostJsonAsync("/runs/911/handoff", Payloads.Trigger(Payloads.Run(911, ["acme/shop"], automation: false)));
        var agentId = Assert.Single(cursor.Agents.Keys);
        Assert.Equal(HttpStatusCode.OK, (await client.PostAsync($"/runs/911/agents/{agentId}/stop", null)).StatusCode);
        // The poll sees the stop take, and the agent's watch ends: nothing left to wake up for.
        time.Advance(TimeSpan.FromMinutes(1));
        await factory.RunScheduleAsync();
        Assert.Null(await factory.Store.GetWakeupAsync(911, CancellationToken.None));

        // Asked to go on, the agent works again: it is watched again, and its pull request learnt without a webhook.
        var followup = await client.PostJsonAsync($"/runs/911/agents/{agentId}/followup", new JsonObject { ["text"] = "Please go on and open the pull request" });
        Assert.Equal(HttpStatusCode.OK, followup.StatusCode);
        Assert.NotNull(await factory.Store.GetWakeupAsync(911, CancellationToken.None));
        time.Advance(TimeSpan.FromMinutes(1));
        await factory.RunScheduleAsync();
        cursor.SetStatus(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/5");
        for (var i = 0; i < 12; i++)
        {
            time.Advance(TimeSpan.FromMinutes(15));
            await factory.RunScheduleAsync();
        }

        var agent = await Agent(client, 911, agentId);
        Assert.Equal("completed", agent["status"]!.GetValue<string>());
        Assert.Equal("https://github.com/acme/shop/pull/5", agent["results"]?[0]?["pr_url"]?.GetValue<string>());
    }

    [Fact]
    public async Task Pull_request_opened_after_a_followup_sent_long_after_the_launch_is_learnt_by_polling()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("late.db"), cursor.Url, time);
        using var client = factory.CreateClient();
        var agentId = await FinishedWithoutPullRequestAsync(factory, client, 913);
        Assert.Equal("completed", (await Agent(client, 913, agentId))["status"]!.GetValue<string>());

        // A day later, past any watch counted from the launch, it is asked for the pull request it did not open. The
        // first read after the follow-up still sees it finished without one: it has not resumed yet.
        time.Advance(TimeSpan.FromDays(1));
        var followup = await client.PostJsonAsync($"/runs/913/agents/{agentId}/followup", new JsonObject { ["text"] = "Open the pull request" });
        Assert.Equal(HttpStatusCode.OK, followup.StatusCode);
        time.Advance(TimeSpan.FromMinutes(1));
        await factory.RunScheduleAsync();
        cursor.SetStatus(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/13");
        for (var i = 0; i < 12; i++)
        {
            time.Advance(TimeSpan.FromMinutes(15));
            await factory.RunScheduleAsync();
        }

        Assert.Equal("https://github.com/acme/shop/pull/13", (await Agent(client, 913, agentId))["results"]?[0]?["pr_url"]?.GetValue<string>());
    }

    [Fact]
    public async Task Followup_that_timed_out_after_reaching_the_provider_is_a_504_that_says_it_may_have_been_carried_out_and_the_agent_is_watched_again()
    {
        // Real time, and every call of the test has it: the launch and polls before the follow-up must not run into it on
        // a loaded machine (1 s could), only the held follow-up.
        using var factory = new EmbeddedServiceFactory(temp.File("timeout.db"), cursor.Url, time, new Dictionary<string, string?>
        {
            [$"Handoff:Integrations:{EmbeddedServiceFactory.IntegrationId}:RequestTimeout"] = "00:00:05",
        });
        using var client = factory.CreateClient();
        var agentId = await FinishedWithoutPullRequestAsync(factory, client, 914);
        Assert.Null(await factory.Store.GetWakeupAsync(914, CancellationToken.None));

        // The follow-up reaches the provider, whose answer does not come in time.
        HttpResponseMessage response;
        using (var held = cursor.HoldCommands())
        {
            response = await client.PostJsonAsync($"/runs/914/agents/{agentId}/followup", new JsonObject { ["text"] = "Open the pull request" });
            Assert.True(held.Arrived.IsSet);
        }

        Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
        var problem = await response.ReadJsonAsync();
        Assert.EndsWith("/outcome-unknown", problem["type"]!.GetValue<string>());
        Assert.Equal("provider_unavailable", problem["failure_type"]!.GetValue<string>());
        Assert.Contains("may have been carried out", problem["detail"]!.GetValue<string>());

        // It may have been carried out: the agent is watched again, and a pull request it opens is learnt.
        Assert.NotNull(await factory.Store.GetWakeupAsync(914, CancellationToken.None));
        cursor.SetStatus(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/14");
        for (var i = 0; i < 12; i++)
        {
            time.Advance(TimeSpan.FromMinutes(15));
            await factory.RunScheduleAsync();
        }

        Assert.Equal("https://github.com/acme/shop/pull/14", (await Agent(client, 914, agentId))["results"]?[0]?["pr_url"]?.GetValue<string>());
    }

    [Fact]
    public async Task Stop_after_a_followup_whose_answer_was_lost_but_that_took_is_read_on_until_twice_the_maximum_age_from_the_followup_then_no_more()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("lost-stop.db"), cursor.Url, time);
        using var client = factory.CreateClient();
        var agentId = await FinishedWithoutPullRequestAsync(factory, client, 915);
        Assert.Equal(HttpStatusCode.OK, (await client.PostJsonAsync($"/runs/915/agents/{agentId}/followup", new JsonObject { ["text"] = "Open the pull request" })).StatusCode);
        var followedUpAt = time.GetUtcNow();
        cursor.SetStatus(agentId, "RUNNING");
        time.Advance(TimeSpan.FromMinutes(1));
        await factory.RunScheduleAsync();

        // A person stops the work the follow-up started; the provider stops the agent, but the answer is a gateway's 504.
        cursor.NextCommandAnswer = FakeCursor.Status(504);
        var stop = await client.PostAsync($"/runs/915/agents/{agentId}/stop", null);
        cursor.NextCommandAnswer = null;
        cursor.SetStatus(agentId, "STOPPED");
        Assert.Equal(HttpStatusCode.GatewayTimeout, stop.StatusCode);

        // The poll reads it stopped, which a stale read of an earlier stop would show too: it is read on (at most once
        // each 15 minutes), and no more once twice the maximum age (6 h) has passed since the follow-up.
        var readsBefore = cursor.GetRequests(agentId);
        for (var i = 0; i < 4; i++)
        {
            time.Advance(TimeSpan.FromMinutes(15));
            await factory.RunScheduleAsync();
        }

        Assert.True(cursor.GetRequests(agentId) - readsBefore >= 2, $"read {cursor.GetRequests(agentId) - readsBefore} times in the hour after the stop");
        while (time.GetUtcNow() < followedUpAt + TimeSpan.FromHours(13))
        {
            time.Advance(TimeSpan.FromMinutes(15));
            await factory.RunScheduleAsync();
        }

        Assert.Null(await factory.Store.GetWakeupAsync(915, CancellationToken.None));
        Assert.InRange(cursor.GetRequests(agentId) - readsBefore, 2, 12 * 4 + 8);
    }

    [Fact]
    public async Task Stop_and_followup_of_an_agent_whose_integration_is_no_longer_configured_say_so_not_that_the_run_lacks_the_agent()
    {
        var withIntegration = new Dictionary<string, string?>
        {
            ["Handoff:Integrations:44:Provider"] = "cursor_background_agent",
            ["Handoff:Integrations:44:BaseUrl"] = cursor.Url,
            ["Handoff:Integrations:44:ApiKey"] = "key-of-integration-44",
        };
        using (var before = new EmbeddedServiceFactory(temp.File("removed.db"), cursor.Url, time, withIntegration))
        using (var client = before.CreateClient())
        {
            Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/916/handoff", Payloads.Trigger(Payloads.Run(916, ["acme/shop"], automation: false), integrationId: 44))).StatusCode);
        }

        // Integration 44 is taken out of the settings; the run still shows its agent.
        using var factory = new EmbeddedServiceFactory(temp.File("removed.db"), cursor.Url, time);
        using var after = factory.CreateClient();
        var agentId = Assert.Single(cursor.Agents.Keys);
        Assert.NotNull(await Agent(after, 916, agentId));

        var stop = await after.PostAsync($"/runs/916/agents/{agentId}/stop", null);
        var followup = await after.PostJsonAsync($"/runs/916/agents/{agentId}/followup", new JsonObject { ["text"] = "Open the pull request" });

        foreach (var response in new[] { stop, followup })
        {
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
            var problem = await response.ReadJsonAsync();
            Assert.Equal("https://handoff-dapr.dev/problems/unknown-integration", problem["type"]!.GetValue<string>());
            // The request named no integration: the detail says which one is missing.
            Assert.Equal(
                "The integration that launched this agent is no longer configured on this service: nothing can reach the agent.",
                problem["detail"]!.GetValue<string>());
        }

        Assert.Empty(cursor.CommandRequests);
    }

    /// <summary>A person hands acme/shop off for the run; its agent finishes without a pull request, and the poll reads so.</summary>
    private async Task<string> FinishedWithoutPullRequestAsync(EmbeddedServiceFactory factory, HttpClient client, long runId)
    {
        await client.PostJsonAsync($"/runs/{runId}/handoff", Payloads.Trigger(Payloads.Run(runId, ["acme/shop"], automation: false)));
        var agentId = Assert.Single(cursor.Agents.Keys);
        cursor.SetStatus(agentId, "FINISHED");
        time.Advance(TimeSpan.FromMinutes(1));
        await factory.RunScheduleAsync();
        return agentId;
    }

    private static async Task<JsonNode> Agent(HttpClient client, long runId, string agentId) =>
        (await (await client.GetAsync($"/runs/{runId}/handoff")).ReadJsonAsync())["coding_agents"]![agentId]!;

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
