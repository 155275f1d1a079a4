using System.Text;
using System.Text.Json.Nodes;

namespace HandoffDapr.LoadTest;

public static class Payloads
{
    public const long GroupId = 456;
    public const long IntegrationId = 42;

    /// <summary>A completion event that passes the automatic gate, for run <paramref name="runId"/> with distinct repositories.</summary>
    public static byte[] CompletionEvent(long runId, int repositories) => Encoding.UTF8.GetBytes(Run(runId, repositories).ToJsonString());

    public static JsonObject Run(long runId, int repositories) => new()
    {
        ["run_id"] = runId,
        ["organization_id"] = 1,
        ["project_id"] = 2,
        ["group"] = new JsonObject { ["id"] = GroupId, ["title"] = "Database connection timeout in checkout", ["short_id"] = "SHOP-1A2" },
        ["metadata"] = new JsonObject { ["stopping_point"] = "open_pr", ["group_id"] = GroupId },
        ["artifacts"] = new JsonObject
        {
            ["root_cause"] = new JsonObject
            {
                ["one_line_description"] = "Pool exhausted under load",
                ["five_whys"] = new JsonArray("Requests time out", "Pool is exhausted", "Connections are never released"),
                ["reproduction_steps"] = new JsonArray("Send 100 concurrent checkouts", "Watch the pool metrics"),
            },
        },
        ["preferences"] = new JsonObject
        {
            ["repositories"] = new JsonArray(Enumerable.Range(0, repositories)
                .Select(i => (JsonNode)new JsonObject { ["provider"] = "github", ["owner"] = $"org{runId}", ["name"] = $"repo{i}" }).ToArray()),
            ["automation_handoff"] = new JsonObject { ["handoff_point"] = "root_cause", ["target"] = "cursor_background_agent", ["integration_id"] = IntegrationId, ["auto_create_pr"] = false },
        },
    };

    public static byte[] Trigger() => Encoding.UTF8.GetBytes($$"""{"group_id":{{GroupId}},"integration_id":{{IntegrationId}}}""");
}
