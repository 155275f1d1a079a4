using System.Text.Json.Nodes;

namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>
/// The promises the randomized tests check once a run has settled, on the run's view as the API answers it, and the
/// pieces their harnesses share.
/// </summary>
public static class HandoffInvariants
{
    /// <summary>
    /// Every repository of the latest solution ends launched with an agent or failed with a failure type; no launch is
    /// left in another phase; an agent a launch names is in <c>coding_agents</c>; a generation past the first follows one
    /// that had an agent (a failed agent relaunched); each launch's phase, agent, <c>next_attempt_at</c> and failure type
    /// agree (<see cref="LaunchFieldsDisagree"/>).
    /// </summary>
    public static void CheckLaunches(long run, JsonObject view, JsonObject latestSolution, Action<string> violation)
    {
        var agents = view["coding_agents"]!.AsObject();
        var launches = view["launches"]!.AsArray().Select(l => l!.AsObject()).ToList();
        foreach (var repoNode in latestSolution["preferences"]!["repositories"]!.AsArray())
        {
            var repo = $"{repoNode!["owner"]}/{repoNode["name"]}";
            var latest = launches.Where(l => l["repository"]!.GetValue<string>() == repo).MaxBy(l => l["generation"]!.GetValue<int>());
            if (latest is null)
            {
                violation($"run {run}: {repo} of the latest solution has no launch");
            }
            else if (latest["phase"]!.GetValue<string>() == "launched" ? latest["agent_id"] is null : latest["failure_type"] is null)
            {
                violation($"run {run}: {repo} ended without agent or failure type: {latest.ToJsonString()}");
            }
        }

        foreach (var launch in launches)
        {
            var phase = launch["phase"]!.GetValue<string>();
            if (phase is not ("launched" or "failed"))
            {
                violation($"run {run}: launch left {phase}: {launch.ToJsonString()}");
            }

            if (phase == "failed" && launch["failure_type"] is null)
            {
                violation($"run {run}: failed launch without failure_type: {launch.ToJsonString()}");
            }

            if (LaunchFieldsDisagree(launch, agents) is { } disagreement)
            {
                violation($"run {run}: {disagreement}: {launch.ToJsonString()}");
            }

            if (launch["agent_id"]?.GetValue<string>() is { } agentId && !agents.ContainsKey(agentId))
            {
                violation($"run {run}: launch names agent {agentId} missing from coding_agents");
            }

            var generation = launch["generation"]!.GetValue<int>();
            if (generation > 1)
            {
                var previous = launches.FirstOrDefault(l => l["repository"]!.GetValue<string>() == launch["repository"]!.GetValue<string>() && l["generation"]!.GetValue<int>() == generation - 1);
                if (previous?["agent_id"] is null)
                {
                    violation($"run {run}: generation {generation} of {launch["repository"]} without an agent in generation {generation - 1}");
                }
            }
        }
    }

    // The failure types api.md's table gives a launch that ended: failed, only one that ends a launch (a retried failure on
    // its last attempt is retries_exhausted; the refusals a trigger answers are never stored); launched, only its agent's.
    private static readonly string[] FailedLaunchTypes = ["invalid_credentials", "repository_access", "invalid_request", "retries_exhausted", "no_copilot_license", "quota_exceeded", "superseded"];
    private static readonly string[] AgentFailureTypes = ["agent_failed", "timed_out"];

    /// <summary>
    /// Why an ended launch's fields do not agree as the runbook reads them, or null: <c>launched</c> is the phase of a
    /// launch with an agent, and only of one; <c>next_attempt_at</c> is null once a launch is launched or failed; a failed
    /// one's failure type ends a launch, and a launched one's, if any, says how its agent (failed) ended.
    /// </summary>
    public static string? LaunchFieldsDisagree(JsonObject launch, JsonObject agents)
    {
        var phase = launch["phase"]!.GetValue<string>();
        var agentId = launch["agent_id"]?.GetValue<string>();
        var failureType = launch["failure_type"]?.GetValue<string>();
        return phase is not ("launched" or "failed") ? null
            : (phase == "launched") != (agentId is not null) ? "launched is the phase of a launch with an agent"
            : launch["next_attempt_at"] is not null ? $"{phase} with a next_attempt_at"
            : phase == "failed" && !FailedLaunchTypes.Contains(failureType) ? $"failed with failure_type {failureType ?? "null"}, not one that ends a launch"
            : phase == "launched" && failureType is not null && !(AgentFailureTypes.Contains(failureType) && agents[agentId!]?["status"]?.GetValue<string>() == "failed")
                ? $"launched with failure_type {failureType}, its agent {agents[agentId!]?["status"]}"
            : null;
    }

    /// <summary>What no answer or view may contain: exception text, stack frames, the provider's own error text, secrets.</summary>
    public static void CheckNoLeak(string where, string text, Action<string> violation, params string[] secrets)
    {
        foreach (var marker in new[] { "Exception", "   at ", "at HandoffDapr.", "System.", FakeCursor.ProviderSecretText }.Concat(secrets))
        {
            if (text.Contains(marker, StringComparison.Ordinal))
            {
                violation($"{where} contains '{marker}': {Truncate(text)}");
            }
        }
    }

    /// <summary>
    /// A run's view read through the API, checked for leaks; null when the run is unknown (404) or the read failed (a
    /// violation).
    /// </summary>
    public static async Task<JsonObject?> ReadViewAsync(HttpClient client, long run, string where, Action<string, string> checkLeak, Action<string> violation)
    {
        var response = await client.GetAsync($"/runs/{run}/handoff?group_id={Payloads.GroupId}");
        var body = await response.Content.ReadAsStringAsync();
        checkLeak($"GET run {run}{where}", body);
        if (response.StatusCode == System.Net.HttpStatusCode.NotFound)
        {
            return null;
        }

        if (response.StatusCode != System.Net.HttpStatusCode.OK)
        {
            violation($"GET run {run}{where}: {(int)response.StatusCode} {Truncate(body)}");
            return null;
        }

        return JsonNode.Parse(body)!.AsObject();
    }

    /// <summary>
    /// Each run <c>GET /runs</c> lists (the status page's data) is shown as <c>GET /runs/{id}/handoff</c> shows it, field
    /// by field: the list is of the runs' views (in Dapr mode as this replica last saw them, which once the runs are
    /// settled is as they are). <paramref name="prefix"/> is put before each path (daprd's service invocation, say).
    /// </summary>
    public static async Task CheckListedAsViewedAsync(HttpClient client, string prefix, string where, Action<string, string> checkLeak, Action<string> violation)
    {
        var response = await client.GetAsync($"{prefix}/runs?limit=200");
        var body = await response.Content.ReadAsStringAsync();
        checkLeak($"GET /runs{where}", body);
        if (response.StatusCode != System.Net.HttpStatusCode.OK)
        {
            violation($"GET /runs{where}: {(int)response.StatusCode} {Truncate(body)}");
            return;
        }

        foreach (var listed in JsonNode.Parse(body)!.AsArray().Select(node => node!.AsObject()))
        {
            var run = listed["run_id"]!.GetValue<long>();
            var read = await client.GetAsync($"{prefix}/runs/{run}/handoff?group_id={listed["group_id"]}");
            var text = await read.Content.ReadAsStringAsync();
            if (read.StatusCode != System.Net.HttpStatusCode.OK)
            {
                violation($"GET /runs{where} lists run {run}, which answers {(int)read.StatusCode} {Truncate(text)}");
                continue;
            }

            var view = JsonNode.Parse(text)!.AsObject();
            foreach (var field in listed.Select(property => property.Key).Union(view.Select(property => property.Key))
                .Where(field => !JsonNode.DeepEquals(listed[field], view[field])))
            {
                violation($"GET /runs{where} lists run {run} with {field} {Truncate(listed[field]?.ToJsonString() ?? "missing")}, its view has {Truncate(view[field]?.ToJsonString() ?? "missing")}");
            }
        }
    }

    /// <summary>A launch still waiting, under way or of unknown outcome: the schedule has work left.</summary>
    public static bool HasUnsettledLaunch(JsonObject view) =>
        view["launches"]!.AsArray().Any(l => l!["phase"]!.GetValue<string>() is not ("launched" or "failed"));

    public static string Truncate(string text) => text.Length > 600 ? text[..600] + "…" : text;

    /// <summary>A Cursor <c>statusChange</c> webhook body.</summary>
    public static string CursorStatusChange(string agentId, string status, string? prUrl, string repository, string? branch) =>
        new JsonObject
        {
            ["event"] = "statusChange",
            ["timestamp"] = "2026-11-24T10:05:00Z",
            ["id"] = agentId,
            ["status"] = status,
            ["source"] = new JsonObject { ["repository"] = repository, ["ref"] = "main" },
            ["target"] = new JsonObject { ["url"] = $"https://cursor.com/agents?id={agentId}", ["branchName"] = branch, ["prUrl"] = prUrl },
            ["summary"] = "Fixed the pool",
        }.ToJsonString();
}
