using System.Net;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.Security;

/// <summary>
/// Requests refused before their endpoint's work (a caller without credentials, a rate limit) were answered and logged
/// nothing: an operator could not tell a client with a stale token, or a caller retrying in a loop, from a quiet day.
/// Each kind is logged once a minute with the count of those not logged, as refused webhooks are.
/// </summary>
public sealed class RefusalLoggingTests : IDisposable
{
    private const string Token = "embedded-api-token-5b1c9e";
    private const string Secret = "webhook-secret-of-integration-42-0123456789";
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 12, 7, 9, 0, 0, TimeSpan.Zero));
    private readonly FakeLogCollector logs = new();

    [Fact]
    public async Task Triggers_over_the_group_limit_are_logged_once_a_minute_for_all_groups_with_the_count_of_the_others()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("triggers.db"), cursor.Url, time, new Dictionary<string, string?>
        {
            ["Handoff:RateLimits:TriggersPerGroupPerMinute"] = "1",
        })
        { Logs = logs };
        var client = factory.CreateClient();
        async Task<HttpStatusCode> Trigger(long runId, long groupId) =>
            (await client.PostJsonAsync($"/runs/{runId}/handoff", Payloads.Trigger(Payloads.Run(runId, ["acme/shop"], automation: false, groupId: groupId), groupId: groupId))).StatusCode;

        Assert.Equal(HttpStatusCode.Accepted, await Trigger(1, 456));
        Assert.Equal(HttpStatusCode.Accepted, await Trigger(2, 457));
        Assert.Equal(HttpStatusCode.TooManyRequests, await Trigger(1, 456));
        Assert.Equal(HttpStatusCode.TooManyRequests, await Trigger(1, 456));
        Assert.Equal(HttpStatusCode.TooManyRequests, await Trigger(2, 457));
        var first = Assert.Single(Lines("TriggerRateLimited"));

        // The limiter's window is the real clock's, the log's the service's: a minute later by the latter, still refused.
        time.Advance(TimeSpan.FromSeconds(61));
        Assert.Equal(HttpStatusCode.TooManyRequests, await Trigger(2, 457));

        Assert.Equal(
            "Run 1: manual trigger refused (429), group 456 past its 1 triggers a minute (Handoff:RateLimits:TriggersPerGroupPerMinute); "
            + "0 more triggers refused so, of any group, since the last such line were not logged (one line a minute)",
            first.Message);
        var next = Lines("TriggerRateLimited")[^1];
        Assert.Equal(2, Lines("TriggerRateLimited").Count);
        Assert.Equal(("2", "457", "2"), (next.GetStructuredStateValue("RunId"), next.GetStructuredStateValue("GroupId"), next.GetStructuredStateValue("Unlogged")));
    }

    [Fact]
    public async Task Webhooks_over_the_integration_limit_are_logged_apart_for_signed_and_unsigned_ones()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("webhooks.db"), cursor.Url, time, new Dictionary<string, string?>
        {
            ["Handoff:RateLimits:WebhooksPerIntegrationPerMinute"] = "1",
            ["Handoff:Integrations:42:WebhookSecret"] = Secret,
        })
        { Logs = logs };
        var client = factory.CreateClient();
        var body = new JsonObject { ["event"] = "statusChange", ["id"] = "bc-unknown", ["status"] = "RUNNING" }.ToJsonString();
        var answers = new List<HttpStatusCode>();
        for (var i = 0; i < 3; i++)
        {
            using var signed = Payloads.SignedWebhook("/webhooks/cursor/42?run_id=1", body, Secret);
            answers.Add((await client.SendAsync(signed)).StatusCode);
        }

        for (var i = 0; i < 2; i++)
        {
            answers.Add((await client.PostRawAsync("/webhooks/cursor/42?run_id=1", body)).StatusCode);
        }

        Assert.Equal(
            [HttpStatusCode.NoContent, HttpStatusCode.TooManyRequests, HttpStatusCode.TooManyRequests, HttpStatusCode.Unauthorized, HttpStatusCode.TooManyRequests],
            answers);
        var lines = Lines("WebhookRateLimited");
        Assert.Equal([("42", "signed", "0"), ("42", "unsigned", "0")], lines.Select(line =>
            (line.GetStructuredStateValue("IntegrationId"), line.GetStructuredStateValue("Signature"), line.GetStructuredStateValue("Unlogged"))));
        Assert.All(lines, line => Assert.Equal("1", line.GetStructuredStateValue("PermitsPerMinute")));
    }

    [Fact]
    public async Task Callers_refused_for_their_token_are_logged_once_a_minute_per_reason_never_with_the_token()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("tokens.db"), cursor.Url, time, new Dictionary<string, string?> { ["Handoff:ApiToken"] = Token })
        { Logs = logs };
        var client = factory.CreateClient();
        async Task<HttpStatusCode> Get(string? token, string address)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/runs/1/handoff");
            request.Headers.Add(EmbeddedServiceFactory.RemoteAddressHeader, address);
            if (token is not null)
            {
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            }

            return (await client.SendAsync(request)).StatusCode;
        }

        Assert.Equal(HttpStatusCode.Unauthorized, await Get(null, "10.1.2.3"));
        Assert.Equal(HttpStatusCode.Unauthorized, await Get("stale-token-7f3a", "10.1.2.4"));
        Assert.Equal(HttpStatusCode.Unauthorized, await Get(null, "10.1.2.5"));
        Assert.Equal(HttpStatusCode.NotFound, await Get(Token, "10.1.2.6"));
        time.Advance(TimeSpan.FromSeconds(61));
        Assert.Equal(HttpStatusCode.Unauthorized, await Get(null, "10.1.2.7"));

        var lines = Lines("CallerRefused");
        Assert.Equal(
            [("401", "no bearer token", "10.1.2.3", "0"), ("401", "wrong bearer token", "10.1.2.4", "0"), ("401", "no bearer token", "10.1.2.7", "1")],
            lines.Select(line => (line.GetStructuredStateValue("StatusCode"), line.GetStructuredStateValue("Reason"),
                line.GetStructuredStateValue("RemoteAddress"), line.GetStructuredStateValue("Unlogged"))));
        Assert.DoesNotContain(logs.GetSnapshot(), record => LogLines.Carry(record, "stale-token-7f3a") || LogLines.Carry(record, Token));
    }

    [Theory]
    [InlineData("10.1.2.3", "http://localhost/runs/1/handoff", null, "not a loopback caller")]
    [InlineData("127.0.0.1", "http://evil.example/runs/1/handoff", null, "sent to a host name that is not loopback")]
    [InlineData("127.0.0.1", "http://localhost/runs/1/handoff", "cross-site", "a browser request on behalf of another site")]
    public async Task Callers_refused_without_a_token_configured_are_logged_with_why(string address, string url, string? fetchSite, string reason)
    {
        using var factory = new EmbeddedServiceFactory(temp.File("loopback.db"), cursor.Url, time) { Logs = logs };
        using var request = new HttpRequestMessage(HttpMethod.Get, url);
        request.Headers.Add(EmbeddedServiceFactory.RemoteAddressHeader, address);
        if (fetchSite is not null)
        {
            request.Headers.Add("Sec-Fetch-Site", fetchSite);
        }

        Assert.Equal(HttpStatusCode.Forbidden, (await factory.CreateClient().SendAsync(request)).StatusCode);

        var line = Assert.Single(Lines("CallerRefused"));
        Assert.Equal(("403", reason, address), (line.GetStructuredStateValue("StatusCode"), line.GetStructuredStateValue("Reason"), line.GetStructuredStateValue("RemoteAddress")));
    }

    private List<FakeLogRecord> Lines(string eventName) => [.. logs.GetSnapshot().Where(record => record.Id.Name == eventName)];

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
