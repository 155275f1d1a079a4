using System.Net;
using System.Text.Json.Nodes;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Testing;

namespace HandoffDapr.Service.Tests.Security;

/// <summary>
/// Drives every failure path, then scans every response body and every log line for what must never show:
/// keys, secrets, provider bodies, exception text, stack traces, internal URLs.
/// </summary>
public sealed class LeakTests : IDisposable
{
    private const string ApiToken = "api-token-never-shown-3e8d1f";
    private const string WebhookSecret = "webhook-secret-never-shown-0123456789abcdef";
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();
    private readonly FakeLogCollector logs = new();
    private readonly EmbeddedServiceFactory factory;
    private readonly HttpClient client;
    private readonly List<(string What, string Body)> answers = [];

    public LeakTests()
    {
        factory = new EmbeddedServiceFactory(temp.File("handoff.db"), cursor.Url, settings: new Dictionary<string, string?>
        {
            ["Handoff:ApiToken"] = ApiToken,
            ["Handoff:PublicBaseUrl"] = "https://handoff.example.com",
            ["Handoff:Integrations:42:WebhookSecret"] = WebhookSecret,
            // Real time, for each of the trigger's launches, eight at once: only the held one may reach it, also on a
            // loaded machine.
            ["Handoff:Integrations:42:RequestTimeout"] = "00:00:05",
        })
        {
            Logs = logs,
        };
        client = factory.CreateClient();
        client.DefaultRequestHeaders.Authorization = new("Bearer", ApiToken);
    }

    [Fact]
    public async Task No_response_or_log_line_of_a_faulty_handoff_carries_secrets_or_internals()
    {
        cursor.Script("acme/unauthorized", FakeCursor.Status(401));
        cursor.Script("acme/forbidden", FakeCursor.Status(403));
        cursor.Script("acme/bad", FakeCursor.Status(400));
        cursor.Script("acme/limited", FakeCursor.Status(429, retryAfter: "30"));
        cursor.Script("acme/down", FakeCursor.Status(500));
        cursor.Script("acme/garbage", FakeCursor.Status(200, "<html>" + FakeCursor.ProviderSecretText + "</html>"));
        using var slow = cursor.Hold("acme/slow"); // answered only after the test, past the time-out
        var run = Payloads.Run(900, ["acme/ok", "acme/unauthorized", "acme/forbidden", "acme/bad", "acme/limited", "acme/down", "acme/garbage", "acme/slow", "not a repo"], automation: false);

        await Record("trigger with provider failures", client.PostJsonAsync("/runs/900/handoff", Payloads.Trigger(run)));
        await Record("repeated trigger", client.PostJsonAsync("/runs/900/handoff", Payloads.Trigger()));
        await Record("read", client.GetAsync("/runs/900/handoff"));
        await Record("unknown run", client.PostJsonAsync("/runs/901/handoff", Payloads.Trigger()));
        await Record("unknown integration", client.PostJsonAsync("/runs/900/handoff", Payloads.Trigger(integrationId: 77)));
        await Record("bad json", client.PostRawAsync("/runs/900/handoff", "{\"group_id\": [" + FakeCursor.ProviderSecretText));
        await Record("bad event", client.PostRawAsync("/events/autofix-run-completed", "{\"run_id\":\"" + FakeCursor.ProviderSecretText + "\"}"));
        await Record("no credentials", new HttpClient(factory.Server.CreateHandler()) { BaseAddress = client.BaseAddress }.GetAsync("/runs/900/handoff"));
        var agentId = cursor.Agents.Keys.First();
        cursor.NextCommandAnswer = FakeCursor.Status(500);
        await Record("stop failure", client.PostAsync($"/runs/900/agents/{agentId}/stop", null));
        await Record("followup failure", client.PostJsonAsync($"/runs/900/agents/{agentId}/followup", new JsonObject { ["text"] = "again" }));
        await Record("unsigned webhook", client.PostRawAsync("/webhooks/cursor/42?run_id=900", "{}"));
        var body = new JsonObject { ["event"] = "statusChange", ["id"] = agentId, ["status"] = "ERROR", ["source"] = new JsonObject { ["repository"] = "https://github.com/acme/ok" } }.ToJsonString();
        var signed = Payloads.SignedWebhook("/webhooks/cursor/42?run_id=900", body, WebhookSecret);
        await Record("signed webhook", client.SendAsync(signed));
        await Record("read after", client.GetAsync("/runs/900/handoff"));

        // The failures really happened (so the scan below scanned something).
        var first = JsonNode.Parse(answers[0].Body[..(answers[0].Body.LastIndexOf('}') + 1)])!;
        Assert.Equal(
            ["invalid_credentials", "invalid_repository", "invalid_request", "repository_access"],
            first["failures"]!.AsArray().Select(f => f!["failure_type"]!.GetValue<string>()).Order());
        Assert.Equal(
            ["invalid_response", "provider_unavailable", "provider_unavailable", "rate_limited"],
            first["retries"]!.AsArray().Select(f => f!["failure_type"]!.GetValue<string>()).Order());
        Assert.Contains(logs.GetSnapshot(), record => record.Level >= Microsoft.Extensions.Logging.LogLevel.Warning);
        // The records carry fields beside their message (the scan below reads them too).
        Assert.Contains(logs.GetSnapshot(), record => record.StructuredState?.Any(field => field.Key == "RunId") == true);

        string[] forbidden =
        [
            EmbeddedServiceFactory.ApiKey, ApiToken, WebhookSecret, FakeCursor.ProviderSecretText,
            cursor.Url, "Exception", "   at ", "StackTrace", "Bearer", "Authorization",
        ];
        foreach (var (what, text) in answers)
        {
            foreach (var secret in forbidden)
            {
                Assert.False(text.Contains(secret, StringComparison.OrdinalIgnoreCase), $"the answer to '{what}' contains '{secret}': {text}");
            }
        }

        foreach (var record in logs.GetSnapshot())
        {
            // The whole record, a dictionary scope's pairs included (its ToString names only its type).
            var line = LogLines.Whole(record);
            foreach (var secret in new[] { EmbeddedServiceFactory.ApiKey, ApiToken, WebhookSecret })
            {
                Assert.False(line.Contains(secret, StringComparison.Ordinal), $"a log line contains a secret: {line}");
            }

            // Prompts are never logged.
            Assert.DoesNotContain("Please fix the following issue", line);
        }
    }

    private async Task Record(string what, Task<HttpResponseMessage> call)
    {
        var response = await call;
        Assert.True((int)response.StatusCode < 500 || response.StatusCode is HttpStatusCode.BadGateway or HttpStatusCode.ServiceUnavailable or HttpStatusCode.GatewayTimeout, $"{what}: {(int)response.StatusCode}");
        // A 401's challenge names the scheme ("Bearer") by design; everything else the answer carries is scanned.
        var headers = response.Headers.Where(h => h.Key != "WWW-Authenticate").Select(h => $"{h.Key}: {string.Join(",", h.Value)}");
        answers.Add((what, await response.Content.ReadAsStringAsync() + " " + string.Join(" ", headers)));
    }

    public void Dispose()
    {
        client.Dispose();
        factory.Dispose();
        cursor.Dispose();
        temp.Dispose();
    }
}
