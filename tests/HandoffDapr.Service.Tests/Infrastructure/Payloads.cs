using System.Text;
using System.Text.Json.Nodes;
using HandoffDapr.Core.Providers;

namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>Wire payloads as the autofix API and the providers send them (DESIGN.md "Wire examples").</summary>
public static class Payloads
{
    public const long GroupId = 456;

    /// <summary>A completed run whose root cause is done and whose preferences ask for an automatic handoff to integration 42.</summary>
    public static JsonObject Run(long runId, string[] repositories, bool automation = true, string stoppingPoint = "open_pr", bool withSolution = false, long groupId = GroupId)
    {
        var run = new JsonObject
        {
            ["run_id"] = runId,
            ["organization_id"] = 1,
            ["project_id"] = 2,
            ["group"] = new JsonObject { ["id"] = groupId, ["title"] = "Database connection timeout in checkout", ["short_id"] = "SHOP-1A2" },
            ["metadata"] = new JsonObject { ["stopping_point"] = stoppingPoint, ["group_id"] = groupId },
            ["artifacts"] = new JsonObject
            {
                ["root_cause"] = new JsonObject
                {
                    ["one_line_description"] = "Pool exhausted under load",
                    ["five_whys"] = new JsonArray("Requests time out", "Pool is exhausted"),
                    ["reproduction_steps"] = new JsonArray("Send 100 concurrent checkouts"),
                    ["relevant_repo"] = repositories.FirstOrDefault(),
                },
                ["solution"] = withSolution
                    ? new JsonObject { ["one_line_summary"] = "Bound the pool", ["steps"] = new JsonArray(new JsonObject { ["title"] = "Add TTL", ["description"] = "Expire idle connections" }) }
                    : null,
            },
            ["preferences"] = new JsonObject
            {
                ["repositories"] = new JsonArray(repositories.Select(Repository).ToArray()),
                ["automation_handoff"] = automation
                    ? new JsonObject { ["handoff_point"] = "root_cause", ["target"] = "cursor_background_agent", ["integration_id"] = EmbeddedServiceFactory.IntegrationId, ["auto_create_pr"] = false }
                    : null,
            },
        };
        return run;
    }

    public static JsonNode Repository(string fullName)
    {
        var slash = fullName.IndexOf('/');
        return slash < 0
            ? new JsonObject { ["provider"] = "github", ["owner"] = fullName, ["name"] = null }
            : new JsonObject { ["provider"] = "github", ["owner"] = fullName[..slash], ["name"] = fullName[(slash + 1)..], ["branch_name"] = null };
    }

    /// <summary>The manual trigger's body, optionally carrying the run snapshot.</summary>
    public static JsonObject Trigger(JsonObject? run = null, long groupId = GroupId, long integrationId = EmbeddedServiceFactory.IntegrationId, string? instruction = null) => new()
    {
        ["group_id"] = groupId,
        ["integration_id"] = integrationId,
        ["instruction"] = instruction,
        ["auto_create_pr"] = true,
        ["run"] = run?.DeepClone(),
    };

    /// <summary>A Cursor webhook POST of <paramref name="body"/> (application/json) to <paramref name="path"/>, signed with <paramref name="secret"/> in X-Webhook-Signature.</summary>
    public static HttpRequestMessage SignedWebhook(string path, string body, string secret)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        request.Headers.Add("X-Webhook-Signature", WebhookSignature.Sign(secret, Encoding.UTF8.GetBytes(body)));
        return request;
    }

    /// <summary>A structured CloudEvent, as daprd delivers it.</summary>
    public static JsonObject CloudEvent(JsonObject data) => new()
    {
        ["specversion"] = "1.0",
        ["id"] = Guid.NewGuid().ToString(),
        ["source"] = "autofix",
        ["type"] = "com.dapr.event.sent",
        ["datacontenttype"] = "application/json",
        ["topic"] = "autofix-run-completed",
        ["pubsubname"] = "pubsub",
        ["data"] = data.DeepClone(),
    };
}
