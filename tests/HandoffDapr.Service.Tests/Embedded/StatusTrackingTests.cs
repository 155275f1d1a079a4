using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using HandoffDapr.Core.Providers;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>Following each agent to its pull request: signed webhooks, the polling fallback, stop and follow-up.</summary>
public sealed class StatusTrackingTests : IDisposable
{
    public const string Secret = "webhook-secret-of-integration-42-0123456789";
    private const string OtherSecret = "webhook-secret-of-integration-43-9876543210";
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero));
    private readonly FakeLogCollector logs = new();
    private readonly EmbeddedServiceFactory factory;
    private readonly HttpClient client;

    public StatusTrackingTests()
    {
        factory = new EmbeddedServiceFactory(temp.File("handoff.db"), cursor.Url, time, new Dictionary<string, string?>
        {
            ["Handoff:PublicBaseUrl"] = "https://handoff.example.com",
            ["Handoff:Integrations:42:WebhookSecret"] = Secret,
            ["Handoff:Integrations:43:Provider"] = "cursor_background_agent",
            ["Handoff:Integrations:43:BaseUrl"] = cursor.Url,
            ["Handoff:Integrations:43:ApiKey"] = "other-key",
            ["Handoff:Integrations:43:WebhookSecret"] = OtherSecret,
        })
        { Logs = logs };
        client = factory.CreateClient();
    }

    [Fact]
    public async Task Launch_sends_the_webhook_url_with_the_run_and_the_integration_secret()
    {
        await Launch(400);

        var webhook = Assert.Single(cursor.LaunchBodies)["webhook"]!;
        Assert.Equal("https://handoff.example.com/webhooks/cursor/42?run_id=400", webhook["url"]!.GetValue<string>());
        Assert.Equal(Secret, webhook["secret"]!.GetValue<string>());
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Signed_finished_webhook_completes_the_agent_with_its_pull_request(bool withPrefix)
    {
        var agentId = await Launch(401);
        var body = StatusChange(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/7");
        var signature = WebhookSignature.Sign(Secret, Encoding.UTF8.GetBytes(body));

        var response = await PostWebhook(401, body, withPrefix ? signature : signature["sha256=".Length..]);

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        var agent = await Agent(401, agentId);
        Assert.Equal("completed", agent["status"]!.GetValue<string>());
        var result = Assert.Single(agent["results"]!.AsArray())!;
        Assert.Equal("https://github.com/acme/shop/pull/7", result["pr_url"]!.GetValue<string>());
        Assert.Equal("acme/shop", result["repo_full_name"]!.GetValue<string>());
        Assert.Equal("Fixed the pool", result["description"]!.GetValue<string>());
    }

    /// <summary>
    /// The webhook's target.url and target.branchName are what the view shows as the agent's link and its result's branch,
    /// not what the launch's answer said: the agent may have moved or renamed its branch since.
    /// </summary>
    [Fact]
    public async Task Signed_finished_webhook_records_its_agent_url_and_branch_name_over_the_launch_s()
    {
        var agentId = await Launch(406);
        var launched = await Agent(406, agentId);
        var body = JsonNode.Parse(StatusChange(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/8"))!;
        body["target"]!["url"] = $"https://cursor.com/agents/{agentId}/reported";
        body["target"]!["branchName"] = "pool-fix-renamed-by-agent";

        var response = await SignedWebhook(406, body.ToJsonString());

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        var agent = await Agent(406, agentId);
        Assert.Equal("completed", agent["status"]!.GetValue<string>());
        Assert.NotEqual($"https://cursor.com/agents/{agentId}/reported", launched["agent_url"]?.GetValue<string>());
        Assert.Equal($"https://cursor.com/agents/{agentId}/reported", agent["agent_url"]?.GetValue<string>());
        var result = Assert.Single(agent["results"]!.AsArray())!;
        Assert.Equal("pool-fix-renamed-by-agent", result["branch_name"]?.GetValue<string>());
        Assert.Equal("https://github.com/acme/shop/pull/8", result["pr_url"]?.GetValue<string>());
    }

    [Fact]
    public async Task Webhook_without_signature_is_401_and_changes_nothing()
    {
        var agentId = await Launch(402);

        var response = await PostWebhook(402, StatusChange(agentId, "FINISHED"), signature: null);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("pending", (await Agent(402, agentId))["status"]!.GetValue<string>());
    }

    [Fact]
    public async Task Webhook_signed_with_a_wrong_secret_is_401()
    {
        var agentId = await Launch(403);
        var body = StatusChange(agentId, "FINISHED");

        var response = await PostWebhook(403, body, WebhookSignature.Sign("not-the-secret-of-this-integration-000", Encoding.UTF8.GetBytes(body)));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("pending", (await Agent(403, agentId))["status"]!.GetValue<string>());
    }

    [Fact]
    public async Task Webhook_whose_body_changed_by_one_byte_is_401()
    {
        var agentId = await Launch(404);
        var body = StatusChange(agentId, "FINISHED");
        var signature = WebhookSignature.Sign(Secret, Encoding.UTF8.GetBytes(body));
        var tampered = body.Replace("FINISHED", "FINISHEE", StringComparison.Ordinal);

        var response = await PostWebhook(404, tampered, signature);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
    }

    [Fact]
    public async Task Webhook_signed_with_another_integrations_secret_is_401()
    {
        var agentId = await Launch(405);
        var body = StatusChange(agentId, "FINISHED");

        var response = await PostWebhook(405, body, WebhookSignature.Sign(OtherSecret, Encoding.UTF8.GetBytes(body)));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
    }

    [Fact]
    public async Task Webhook_for_an_unknown_integration_is_401_like_a_bad_signature()
    {
        var body = StatusChange("bc-000001", "FINISHED");

        var unknown = await client.PostRawAsync("/webhooks/cursor/999?run_id=1", body);
        var badSignature = await PostWebhook(1, body, "sha256=" + new string('0', 64));

        Assert.Equal(HttpStatusCode.Unauthorized, unknown.StatusCode);
        Assert.Equal(await badSignature.Content.ReadAsStringAsync() is var bad ? Strip(bad) : null, Strip(await unknown.Content.ReadAsStringAsync()));
    }

    /// <summary>
    /// The line said only "Webhook rejected: {Reason}": an operator could not tell which integration was misconfigured or
    /// posted to by someone else. It names the URL's integration, configured or not, and which check refused it.
    /// </summary>
    [Theory]
    [InlineData("999", null, "no such integration is configured")]
    [InlineData("abc", null, "no such integration is configured")]
    [InlineData("42", "sha256=0000000000000000000000000000000000000000000000000000000000000000", "missing or bad signature")]
    [InlineData("42", null, "missing or bad signature")]
    public async Task Webhook_rejection_is_logged_with_its_integration_and_why(string integrationId, string? signature, string reason)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, $"/webhooks/cursor/{integrationId}?run_id=1") { Content = new StringContent(StatusChange("bc-000001", "FINISHED")) };
        if (signature is not null)
        {
            request.Headers.Add("X-Webhook-Signature", signature);
        }

        var response = await client.SendAsync(request);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        var line = Assert.Single(logs.GetSnapshot(), entry => entry.Id.Name == "WebhookRejected");
        Assert.Equal(integrationId, line.GetStructuredStateValue("IntegrationId"));
        Assert.Equal(reason, line.GetStructuredStateValue("Reason"));
        Assert.DoesNotContain(line.StructuredState!, field => field.Key == "RunId");
    }

    /// <summary>
    /// A body refused before its signature could be checked was answered and logged nothing: should Cursor's reports grow
    /// past the limit or come compressed, every one would be refused unseen, the agents followed by polling alone.
    /// </summary>
    [Theory]
    [InlineData("too large", HttpStatusCode.RequestEntityTooLarge, "body over the webhook limit (413)")]
    [InlineData("compressed", HttpStatusCode.UnsupportedMediaType, "compressed body (415)")]
    [InlineData("empty", HttpStatusCode.BadRequest, "empty or broken body (400)")]
    public async Task Webhook_body_refused_before_its_signature_is_logged_with_why(string body, HttpStatusCode status, string reason)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/webhooks/cursor/42?run_id=1")
        {
            Content = new StringContent(body switch { "too large" => new string('x', 300 * 1024), "empty" => string.Empty, _ => "{}" }),
        };
        if (body == "compressed")
        {
            request.Content.Headers.ContentEncoding.Add("gzip");
        }

        var response = await client.SendAsync(request);

        Assert.Equal(status, response.StatusCode);
        var line = Assert.Single(logs.GetSnapshot(), entry => entry.Id.Name == "WebhookRejected");
        Assert.Equal(("42", reason), (line.GetStructuredStateValue("IntegrationId"), line.GetStructuredStateValue("Reason")));
    }

    /// <summary>
    /// The URL's integration id is anyone's text: the rejection line carries its first 32 characters, a line break in it
    /// made '?' and the cut marked, so a caller can neither forge a line after it nor fill the log with it.
    /// </summary>
    [Fact]
    public async Task Webhook_rejection_logs_the_urls_integration_id_bounded_and_without_control_characters()
    {
        var response = await client.PostRawAsync("/webhooks/cursor/42%0AWebhookRejected-forged-line-0123456789?run_id=1", StatusChange("bc-000001", "FINISHED"));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        var line = Assert.Single(logs.GetSnapshot(), entry => entry.Id.Name == "WebhookRejected");
        Assert.Equal("42?WebhookRejected-forged-line-0…", line.GetStructuredStateValue("IntegrationId"));
        Assert.Equal("no such integration is configured", line.GetStructuredStateValue("Reason"));
    }

    [Theory]
    [InlineData(42, "the integration has no webhook secret")]
    [InlineData(43, "the integration is not a Cursor one")]
    public async Task Webhook_for_a_configured_integration_that_takes_none_is_logged_with_why(long integrationId, string reason)
    {
        // The factory's own settings: 42 is Cursor's without a WebhookSecret, 43 Copilot's (appsettings.json).
        var plainLogs = new FakeLogCollector();
        using var plain = new EmbeddedServiceFactory(temp.File("no-webhooks.db"), cursor.Url, time) { Logs = plainLogs };

        var response = await plain.CreateClient().PostRawAsync($"/webhooks/cursor/{integrationId}?run_id=1", StatusChange("bc-000001", "FINISHED"));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        var line = Assert.Single(plainLogs.GetSnapshot(), entry => entry.Id.Name == "WebhookRejected");
        Assert.Equal($"Webhook for integration {integrationId} rejected: {reason}; 0 more refused for this reason since the last such line were not logged (one line a minute)", line.Message);
    }

    /// <summary>
    /// Configured integrations that take no webhooks are each their own integration on the one-line-a-minute limit, as the
    /// runbook says (only the ids not configured count together): two Cursor integrations without a webhook secret, both
    /// posted to within the minute, each get their line.
    /// </summary>
    [Fact]
    public async Task Webhook_rejections_of_two_configured_integrations_without_a_secret_are_each_logged()
    {
        var plainLogs = new FakeLogCollector();
        using var plain = new EmbeddedServiceFactory(temp.File("no-secrets.db"), cursor.Url, time, new Dictionary<string, string?>
        {
            ["Handoff:Integrations:44:Provider"] = "cursor_background_agent",
            ["Handoff:Integrations:44:BaseUrl"] = cursor.Url,
            ["Handoff:Integrations:44:ApiKey"] = "key-of-integration-44",
        })
        { Logs = plainLogs };
        var plainClient = plain.CreateClient();

        Assert.Equal(HttpStatusCode.Unauthorized, (await plainClient.PostRawAsync("/webhooks/cursor/42?run_id=1", StatusChange("bc-000001", "FINISHED"))).StatusCode);
        Assert.Equal(HttpStatusCode.Unauthorized, (await plainClient.PostRawAsync("/webhooks/cursor/44?run_id=1", StatusChange("bc-000001", "FINISHED"))).StatusCode);

        var lines = plainLogs.GetSnapshot().Where(entry => entry.Id.Name == "WebhookRejected").ToList();
        Assert.Equal([("42", "0"), ("44", "0")], lines.Select(line => (line.GetStructuredStateValue("IntegrationId"), line.GetStructuredStateValue("Unlogged"))));
        Assert.All(lines, line => Assert.Equal("the integration has no webhook secret", line.GetStructuredStateValue("Reason")));
    }

    /// <summary>
    /// 650 unsigned requests to an integration that is not configured wrote 650 warnings: such refusals come before any
    /// rate limiter. One line a minute per integration and reason, with the count of those not logged; the ids that are
    /// not configured count together (anyone can make up more), the configured ones each apart.
    /// </summary>
    [Fact]
    public async Task Webhook_rejections_are_logged_once_a_minute_per_integration_and_reason_with_the_count_of_the_others()
    {
        var body = StatusChange("bc-000001", "FINISHED");
        async Task Post(string integrationId, int times)
        {
            for (var i = 0; i < times; i++)
            {
                Assert.Equal(HttpStatusCode.Unauthorized, (await client.PostRawAsync($"/webhooks/cursor/{integrationId}?run_id=1", body)).StatusCode);
            }
        }

        await Post("999", 5);
        await Post("998", 5);
        await Post("42", 3);
        await Post("43", 2);
        List<Microsoft.Extensions.Logging.Testing.FakeLogRecord> Lines() => [.. logs.GetSnapshot().Where(entry => entry.Id.Name == "WebhookRejected")];
        Assert.Equal([("999", "0"), ("42", "0"), ("43", "0")], Lines().Select(line => (line.GetStructuredStateValue("IntegrationId"), line.GetStructuredStateValue("Unlogged"))));

        time.Advance(TimeSpan.FromSeconds(59));
        await Post("998", 1);
        Assert.Equal(3, Lines().Count);

        time.Advance(TimeSpan.FromSeconds(1));
        await Post("998", 1);
        await Post("42", 1);

        Assert.Equal([("998", "10"), ("42", "2")], Lines().Skip(3).Select(line => (line.GetStructuredStateValue("IntegrationId"), line.GetStructuredStateValue("Unlogged"))));

        // The count starts again from each line: none were refused since these.
        time.Advance(TimeSpan.FromMinutes(1));
        await Post("999", 1);
        await Post("42", 1);

        Assert.Equal([("999", "0"), ("42", "0")], Lines().Skip(5).Select(line => (line.GetStructuredStateValue("IntegrationId"), line.GetStructuredStateValue("Unlogged"))));
    }

    [Theory]
    [InlineData("{not json")]
    [InlineData("{\"event\":\"statusChange\",\"id\":\"bc-1\",\"status\":\"RUNNING\"} trailing")]
    [InlineData("{\"event\":\"statusChange\",\"id\":\"bc-1\",\"status\":\"RUNNING\"}{}")]
    public async Task Signed_webhook_that_is_not_one_json_document_is_400_and_logged(string body)
    {
        var response = await PostWebhook(1, body, WebhookSignature.Sign(Secret, Encoding.UTF8.GetBytes(body)));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        // The api's words, not the JSON reader's message about where it stopped.
        var problem = await response.ReadJsonAsync();
        Assert.Equal("https://handoff-dapr.dev/problems/invalid-body", problem["type"]!.GetValue<string>());
        Assert.Equal("The webhook body is not a Cursor event.", problem["detail"]!.GetValue<string>());
        // Logged, with the integration and never the body: Cursor sends it again, and nothing else would show it.
        var line = Assert.Single(logs.GetSnapshot(), entry => entry.Id.Name == "WebhookMalformed");
        Assert.Equal("42", line.GetStructuredStateValue("IntegrationId"));
        Assert.DoesNotContain(body, line.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Signed_webhook_of_256_KiB_is_read_and_one_byte_more_is_a_413_though_the_api_limit_is_higher()
    {
        // Cursor's reports are small: the webhook has its own cap, under Handoff:MaxRequestBodyBytes (1 MiB by default).
        var agentId = await Launch(420);
        static string PaddedTo(string json, int bytes) => json + new string(' ', bytes - Encoding.UTF8.GetByteCount(json));

        var atLimit = await SignedWebhook(420, PaddedTo(StatusChange(agentId, "RUNNING"), 256 * 1024));
        var overLimit = await SignedWebhook(420, PaddedTo(StatusChange(agentId, "FINISHED"), 256 * 1024 + 1));

        Assert.Equal(HttpStatusCode.NoContent, atLimit.StatusCode);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, overLimit.StatusCode);
        Assert.Equal("running", (await Agent(420, agentId))["status"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("ERROR", "failed")]
    [InlineData("EXPIRED", "failed")]
    [InlineData("STOPPED", "failed")]
    [InlineData("RUNNING", "running")]
    [InlineData("CREATING", "running")]
    [InlineData("FINISHED", "completed")]
    public async Task Webhook_status_maps_onto_the_agent_status(string cursorStatus, string expected)
    {
        var agentId = await Launch(410);

        await SignedWebhook(410, StatusChange(agentId, cursorStatus, prUrl: "https://github.com/acme/shop/pull/1"));

        var agent = await Agent(410, agentId);
        Assert.Equal(expected, agent["status"]!.GetValue<string>());
        // A pull request is recorded with the agent's end, completed or failed; not while it is at work.
        Assert.Equal(expected == "running" ? 0 : 1, agent["results"]!.AsArray().Count);
    }

    /// <summary>A status Cursor may add one day is no status of ours: the agent stays as it was, as docs/api.md says.</summary>
    [Fact]
    public async Task Webhook_with_a_status_not_mapped_leaves_the_agent_as_it_was()
    {
        var agentId = await Launch(411);
        var before = (await Agent(411, agentId))["status"]!.GetValue<string>();

        var response = await SignedWebhook(411, StatusChange(agentId, "PAUSED", prUrl: "https://github.com/acme/shop/pull/1"));

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        var agent = await Agent(411, agentId);
        Assert.Equal(before, agent["status"]!.GetValue<string>());
        Assert.Empty(agent["results"]!.AsArray());
    }

    [Theory]
    [InlineData("acme/shop", "https://github.com/acme/shop", true)]
    [InlineData("acme/shop", "github.com/acme/shop", true)]
    [InlineData("acme/my.repo", "https://github.com/acme/my.repo", true)]
    [InlineData("acme/shop", "https://gitlab.com/acme/shop", false)]
    [InlineData("acme/shop", "https://github.com/acme", false)]
    [InlineData("acme/shop", "https://github.com/acme/shop/tree/main", false)]
    public async Task Webhook_repository_must_be_a_github_repository(string launched, string repository, bool applied)
    {
        var agentId = await Launch(420, launched);

        var response = await SignedWebhook(420, StatusChange(agentId, "FINISHED", prUrl: $"https://github.com/{launched}/pull/1", repository: repository));

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        Assert.Equal(applied ? "completed" : "pending", (await Agent(420, agentId))["status"]!.GetValue<string>());
    }

    [Theory]
    [InlineData(""","status":"FINISHED"}""")]
    [InlineData(""","id":"bc-999999"}""")]
    [InlineData(""","source":{"repository":"https://github.com/acme/web"}}""")]
    [InlineData(""","more":{"prUrl":"https://github.com/acme/shop/pull/8","prUrl":"https://github.com/acme/shop/pull/9"}}""")]
    [InlineData(""","STATUS":"FINISHED"}""")]
    [InlineData(""","more":{"prUrl":"https://github.com/acme/shop/pull/8","PRURL":"https://github.com/acme/shop/pull/9"}}""")]
    public async Task Signed_webhook_naming_a_property_twice_is_a_400_and_changes_nothing_not_read_last_wins(string ending)
    {
        // As every other body (README: a property named twice is a 400): a log or proxy reading the first copy would
        // see another report than the one applied.
        var agentId = await Launch(436);
        var body = StatusChange(agentId, "RUNNING")[..^1] + ending;

        var response = await SignedWebhook(436, body);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("https://handoff-dapr.dev/problems/invalid-body", (await response.ReadJsonAsync())["type"]!.GetValue<string>());
        Assert.Equal("pending", (await Agent(436, agentId))["status"]!.GetValue<string>());
    }

    [Fact]
    public async Task Webhook_for_an_agent_the_run_does_not_have_is_204_changes_nothing_and_is_logged_with_the_run()
    {
        var agentId = await Launch(430);

        var response = await SignedWebhook(431, StatusChange(agentId, "FINISHED"));

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        Assert.Equal("pending", (await Agent(430, agentId))["status"]!.GetValue<string>());
        var ignored = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "WebhookForUnknownAgent");
        Assert.Equal("431", ignored.GetStructuredStateValue("RunId"));
        Assert.Equal(agentId, ignored.GetStructuredStateValue("AgentId"));
    }

    [Fact]
    public async Task Webhook_signed_by_another_integration_about_this_integrations_agent_changes_nothing()
    {
        var agentId = await Launch(432);
        var body = StatusChange(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/3");

        var response = await PostWebhook(432, body, WebhookSignature.Sign(OtherSecret, Encoding.UTF8.GetBytes(body)), integrationId: 43);

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        Assert.Equal("pending", (await Agent(432, agentId))["status"]!.GetValue<string>());
    }

    [Fact]
    public async Task Webhook_about_a_known_agent_is_applied_only_when_it_names_the_launch_repository_in_any_letter_case()
    {
        var agentId = await Launch(433);

        // Signed by the integration that launched the agent and about that agent, but naming another repository and its pull request.
        var other = await SignedWebhook(433, StatusChange(agentId, "FINISHED", prUrl: "https://github.com/evil/other/pull/1", repository: "https://github.com/evil/other"));

        Assert.Equal(HttpStatusCode.NoContent, other.StatusCode);
        var agent = await Agent(433, agentId);
        Assert.Equal("pending", agent["status"]!.GetValue<string>());
        Assert.Empty(agent["results"]!.AsArray());
        var ignored = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "AgentReportOfAnotherRepository");
        Assert.Equal(agentId, ignored.GetStructuredStateValue("AgentId"));
        Assert.Equal("evil/other", ignored.GetStructuredStateValue("ReportedRepository"));
        Assert.Equal("acme/shop", ignored.GetStructuredStateValue("Repository"));

        var own = await SignedWebhook(433, StatusChange(agentId, "FINISHED", prUrl: "https://github.com/Acme/Shop/pull/2", repository: "https://github.com/ACME/shop.git"));

        Assert.Equal(HttpStatusCode.NoContent, own.StatusCode);
        agent = await Agent(433, agentId);
        Assert.Equal("completed", agent["status"]!.GetValue<string>());
        Assert.Equal("https://github.com/Acme/Shop/pull/2", Assert.Single(agent["results"]!.AsArray())!["pr_url"]?.GetValue<string>());
    }

    [Theory]
    [InlineData("https://gitlab.com/acme/shop", "https://gitlab.com/acme/shop")]
    [InlineData("https://github.com/acme/shop/tree/main", "https://github.com/acme/shop/tree/main")]
    public async Task Signed_webhook_about_a_known_agent_naming_a_repository_not_on_github_is_logged_as_another_repository(string repository, string logged)
    {
        var agentId = await Launch(436);

        var response = await SignedWebhook(436, StatusChange(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/1", repository: repository));

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        Assert.Equal("pending", (await Agent(436, agentId))["status"]!.GetValue<string>());
        // The runbook's sign that someone else holds the webhook secret, whatever the host the report names.
        var ignored = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "AgentReportOfAnotherRepository");
        Assert.Equal("436", ignored.GetStructuredStateValue("RunId"));
        Assert.Equal(agentId, ignored.GetStructuredStateValue("AgentId"));
        Assert.Equal(logged, ignored.GetStructuredStateValue("ReportedRepository"));
        Assert.Equal("acme/shop", ignored.GetStructuredStateValue("Repository"));
    }

    [Fact]
    public async Task Pull_request_of_another_repository_is_never_recorded_as_the_agents()
    {
        var agentId = await Launch(434);

        var response = await SignedWebhook(434, StatusChange(agentId, "FINISHED", prUrl: "https://github.com/evil/other/pull/1"));

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        // The report names the launch's repository, but the pull request it names is not one of it: as a finish without
        // the pull request the agent was asked for, it is confirmed by a read, made at once.
        Assert.Equal("running", (await Agent(434, agentId))["status"]!.GetValue<string>());
        Assert.Contains(logs.GetSnapshot(), record => record.Id.Name == "PullRequestOfAnotherRepository");
        cursor.SetStatus(agentId, "FINISHED", prUrl: "https://github.com/evil/other/pull/1");
        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        var agent = await Agent(434, agentId);
        Assert.Equal(1, cursor.GetRequests(agentId));
        Assert.Equal("completed", agent["status"]!.GetValue<string>());
        Assert.Null(Assert.Single(agent["results"]!.AsArray())!["pr_url"]?.GetValue<string>());
    }

    [Fact]
    public async Task Finished_webhook_without_the_pull_request_the_agent_was_asked_for_is_confirmed_by_a_read_that_carries_it()
    {
        // Cursor's webhooks can leave target.prUrl out; an agent completed without one would not be read again.
        var agentId = await Launch(437);

        var response = await SignedWebhook(437, StatusChange(agentId, "FINISHED"));

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        Assert.Equal("running", (await Agent(437, agentId))["status"]!.GetValue<string>());
        Assert.Equal(time.GetUtcNow(), await factory.Store.GetWakeupAsync(437, CancellationToken.None));
        var logged = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "AgentFinishToConfirm");
        Assert.Equal($"Run 437: agent {agentId} for acme/shop reported finished by webhook without its pull request; read now to confirm", logged.Message);
        cursor.SetStatus(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/37");

        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        var agent = await Agent(437, agentId);
        Assert.Equal("completed", agent["status"]!.GetValue<string>());
        Assert.Equal("https://github.com/acme/shop/pull/37", Assert.Single(agent["results"]!.AsArray())!["pr_url"]!.GetValue<string>());
        Assert.Null(await factory.Store.GetWakeupAsync(437, CancellationToken.None));
    }

    [Fact]
    public async Task Finished_webhook_without_its_pull_request_of_an_agent_that_had_failed_completes_it_and_a_read_learns_the_pull_request()
    {
        var agentId = await Launch(438);
        await SignedWebhook(438, StatusChange(agentId, "ERROR"));
        Assert.Null(await factory.Store.GetWakeupAsync(438, CancellationToken.None));

        // Resumed in Cursor's own UI, it finishes; the webhook leaves target.prUrl out.
        cursor.SetStatus(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/38");
        var response = await SignedWebhook(438, StatusChange(agentId, "FINISHED"));

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        Assert.Equal("completed", (await Agent(438, agentId))["status"]!.GetValue<string>());
        Assert.Equal(time.GetUtcNow(), await factory.Store.GetWakeupAsync(438, CancellationToken.None));
        await factory.Scheduler.RunDueAsync(CancellationToken.None);
        var agent = await Agent(438, agentId);
        Assert.Equal("completed", agent["status"]!.GetValue<string>());
        Assert.Equal("https://github.com/acme/shop/pull/38", Assert.Single(agent["results"]!.AsArray())!["pr_url"]!.GetValue<string>());
        Assert.Equal(1, cursor.GetRequests(agentId));
        Assert.Null(await factory.Store.GetWakeupAsync(438, CancellationToken.None));
    }

    [Fact]
    public async Task Poll_answer_naming_another_repository_is_not_applied_and_the_agent_is_read_on()
    {
        var agentId = await Launch(435);
        cursor.Agents[agentId]["source"]!["repository"] = "https://github.com/evil/other";
        cursor.SetStatus(agentId, "FINISHED", prUrl: "https://github.com/evil/other/pull/1");

        time.Advance(TimeSpan.FromMinutes(1));
        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        Assert.Equal("pending", (await Agent(435, agentId))["status"]!.GetValue<string>());
        Assert.Contains(logs.GetSnapshot(), record => record.Id.Name == "AgentReportOfAnotherRepository");
        var next = await factory.Store.GetWakeupAsync(435, CancellationToken.None);
        Assert.NotNull(next);

        cursor.Agents[agentId]["source"]!["repository"] = "https://github.com/acme/shop";
        cursor.SetStatus(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/4");
        time.Advance(next.Value - time.GetUtcNow());
        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        var agent = await Agent(435, agentId);
        Assert.Equal("completed", agent["status"]!.GetValue<string>());
        Assert.Equal("https://github.com/acme/shop/pull/4", Assert.Single(agent["results"]!.AsArray())!["pr_url"]?.GetValue<string>());
    }

    [Fact]
    public async Task Late_running_after_finished_and_a_replayed_webhook_change_nothing()
    {
        var agentId = await Launch(440);
        var finished = StatusChange(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/9");
        await SignedWebhook(440, finished);
        var afterFirst = await (await client.GetAsync("/runs/440/handoff")).Content.ReadAsStringAsync();

        await SignedWebhook(440, StatusChange(agentId, "RUNNING"));
        await SignedWebhook(440, finished);

        Assert.Equal(afterFirst, await (await client.GetAsync("/runs/440/handoff")).Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Agent_whose_webhook_never_arrives_is_completed_by_polling_and_polling_then_stops()
    {
        var agentId = await Launch(450);
        cursor.SetStatus(agentId, "RUNNING");

        time.Advance(TimeSpan.FromMinutes(1));
        await factory.Scheduler.RunDueAsync(CancellationToken.None);
        Assert.Equal("running", (await Agent(450, agentId))["status"]!.GetValue<string>());

        cursor.SetStatus(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/3", summary: "done");
        time.Advance(TimeSpan.FromMinutes(1));
        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        var agent = await Agent(450, agentId);
        Assert.Equal("completed", agent["status"]!.GetValue<string>());
        Assert.Equal("https://github.com/acme/shop/pull/3", agent["results"]![0]!["pr_url"]!.GetValue<string>());
        Assert.Equal(2, cursor.GetRequests(agentId));
        Assert.Null(await factory.Store.GetWakeupAsync(450, CancellationToken.None));

        time.Advance(TimeSpan.FromHours(1));
        await factory.Scheduler.RunDueAsync(CancellationToken.None);
        Assert.Equal(2, cursor.GetRequests(agentId));
    }

    [Fact]
    public async Task Polling_backs_off_while_nothing_changes()
    {
        var agentId = await Launch(455);

        time.Advance(TimeSpan.FromMinutes(1));
        await factory.Scheduler.RunDueAsync(CancellationToken.None);
        var firstInterval = (await factory.Store.GetWakeupAsync(455, CancellationToken.None))!.Value - time.GetUtcNow();
        time.Advance(firstInterval);
        await factory.Scheduler.RunDueAsync(CancellationToken.None);
        var secondInterval = (await factory.Store.GetWakeupAsync(455, CancellationToken.None))!.Value - time.GetUtcNow();

        Assert.Equal(2, cursor.GetRequests(agentId));
        Assert.Equal(TimeSpan.FromMinutes(2), firstInterval);
        Assert.Equal(TimeSpan.FromMinutes(4), secondInterval);
    }

    [Fact]
    public async Task Agent_unfinished_after_the_maximum_age_is_failed_as_timed_out_and_stopped_at_the_provider()
    {
        var agentId = await Launch(460);
        time.Advance(TimeSpan.FromHours(7));

        await factory.Scheduler.RunDueAsync(CancellationToken.None);

        var view = await (await client.GetAsync("/runs/460/handoff")).ReadJsonAsync();
        Assert.Equal("failed", view["coding_agents"]![agentId]!["status"]!.GetValue<string>());
        Assert.Equal("timed_out", view["launches"]![0]!["failure_type"]!.GetValue<string>());
        // Given up on, it must not keep working (and open a pull request nobody follows) beside a later retry's agent.
        Assert.Equal([$"/v0/agents/{agentId}/stop"], cursor.CommandRequests.Select(command => command.Path));

        // It is read once more, until the provider shows the stop took; then nothing is left to wake up for.
        var watch = await factory.Store.GetWakeupAsync(460, CancellationToken.None);
        Assert.NotNull(watch);
        var readsBefore = cursor.GetRequests(agentId);
        time.Advance(watch.Value - time.GetUtcNow());
        await factory.Scheduler.RunDueAsync(CancellationToken.None);
        Assert.Equal(readsBefore + 1, cursor.GetRequests(agentId));
        Assert.Null(await factory.Store.GetWakeupAsync(460, CancellationToken.None));
    }

    [Fact]
    public async Task Stop_calls_the_provider_and_fails_the_agent()
    {
        var agentId = await Launch(470);

        var response = await client.PostAsync($"/runs/470/agents/{agentId}/stop", null);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal($"/v0/agents/{agentId}/stop", Assert.Single(cursor.CommandRequests).Path);
        Assert.Equal("failed", (await Agent(470, agentId))["status"]!.GetValue<string>());
        var view = await (await client.GetAsync("/runs/470/handoff")).ReadJsonAsync();
        Assert.Contains(view["timeline"]!.AsArray(), entry => entry!["event"]!.GetValue<string>() == "stopped");
    }

    [Fact]
    public async Task Followup_sends_the_text_as_a_prompt()
    {
        var agentId = await Launch(471);

        var response = await client.PostJsonAsync($"/runs/471/agents/{agentId}/followup", new JsonObject { ["text"] = "Also add a test" });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var request = Assert.Single(cursor.CommandRequests);
        Assert.Equal($"/v0/agents/{agentId}/followup", request.Path);
        Assert.Equal("Also add a test", JsonNode.Parse(request.Body!)!["prompt"]!["text"]!.GetValue<string>());
    }

    /// <summary>
    /// A follow-up of nothing an agent could read (control characters, zero-width or other format characters, spaces of any
    /// kind) passed the check for blank text and reached the agent: a 400, with nothing sent.
    /// </summary>
    [Theory]
    [InlineData("\u0000")]
    [InlineData(" \u200b ")]
    [InlineData("\u2028\u00a0\u0007")]
    [InlineData("\ufeff\u200d")]
    public async Task Followup_of_no_visible_text_is_a_400_and_nothing_is_sent(string text)
    {
        var agentId = await Launch(474);

        var response = await client.PostJsonAsync($"/runs/474/agents/{agentId}/followup", new JsonObject { ["text"] = text });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Empty(cursor.CommandRequests);
    }

    [Fact]
    public async Task Agent_of_another_run_is_404_and_the_provider_is_not_called()
    {
        var agentId = await Launch(472);
        await Launch(473);

        var stop = await client.PostAsync($"/runs/473/agents/{agentId}/stop", null);
        var followup = await client.PostJsonAsync($"/runs/473/agents/{agentId}/followup", new JsonObject { ["text"] = "x" });

        Assert.Equal(HttpStatusCode.NotFound, stop.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, followup.StatusCode);
        Assert.Empty(cursor.CommandRequests);
    }

    [Fact]
    public async Task Provider_failure_on_stop_is_a_generic_problem()
    {
        var agentId = await Launch(474);
        // 503: the provider turned the stop away, so it was not carried out.
        cursor.NextCommandAnswer = FakeCursor.Status(503);

        var response = await client.PostAsync($"/runs/474/agents/{agentId}/stop", null);
        var text = await response.Content.ReadAsStringAsync();

        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        Assert.Equal("provider_unavailable", JsonNode.Parse(text)!["failure_type"]!.GetValue<string>());
        Assert.DoesNotContain(FakeCursor.ProviderSecretText, text);
        Assert.Equal("pending", (await Agent(474, agentId))["status"]!.GetValue<string>());
    }

    [Theory]
    [InlineData(500)]
    [InlineData(504)]
    [InlineData(524)]
    public async Task Stop_whose_outcome_the_provider_left_unknown_is_a_504_that_says_it_may_have_been_carried_out(int providerStatus)
    {
        var agentId = await Launch(475);
        // A 500 mid-request, or a gateway's 504 (Cloudflare's 524): the provider may have stopped the agent before the
        // answer was lost.
        cursor.NextCommandAnswer = FakeCursor.Status(providerStatus);

        var response = await client.PostAsync($"/runs/475/agents/{agentId}/stop", null);
        var text = await response.Content.ReadAsStringAsync();

        Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
        var problem = JsonNode.Parse(text)!;
        Assert.EndsWith("/outcome-unknown", problem["type"]!.GetValue<string>());
        Assert.Equal("provider_unavailable", problem["failure_type"]!.GetValue<string>());
        // No more than is known: a client that threw (also a 504) may not have sent it at all.
        Assert.Contains("may have reached the coding agent provider", problem["detail"]!.GetValue<string>(), StringComparison.Ordinal);
        Assert.DoesNotContain(FakeCursor.ProviderSecretText, text);
        // Not failed: the poll, which still reads the agent, learns whether it was stopped.
        Assert.Equal("pending", (await Agent(475, agentId))["status"]!.GetValue<string>());
    }

    [Fact]
    public async Task Agent_that_finished_without_a_pull_request_and_again_with_one_keeps_it()
    {
        var agentId = await Launch(900);

        await SignedWebhook(900, StatusChange(agentId, "FINISHED", prUrl: null));
        // The agent finished without a pull request; asked to open one, it finishes again, this time with it.
        Assert.Equal(HttpStatusCode.OK, (await client.PostJsonAsync($"/runs/900/agents/{agentId}/followup", new JsonObject { ["text"] = "Open the pull request" })).StatusCode);
        var response = await SignedWebhook(900, StatusChange(agentId, "FINISHED", prUrl: "https://github.com/acme/shop/pull/11"));

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        var agent = await Agent(900, agentId);
        Assert.Equal("completed", agent["status"]!.GetValue<string>());
        Assert.Equal("https://github.com/acme/shop/pull/11", Assert.Single(agent["results"]!.AsArray())!["pr_url"]?.GetValue<string>());
    }

    [Fact]
    public async Task Provider_links_that_are_not_http_are_neither_stored_nor_returned()
    {
        // A planted javascript: link would run in whatever renders the API's links (the autofix UI).
        var agentId = await Launch(901);
        var body = JsonNode.Parse(StatusChange(agentId, "FINISHED", prUrl: "javascript:alert(1)//https://github.com/acme/shop/pull/1"))!;
        body["target"]!["url"] = "javascript:alert(document.cookie)";

        Assert.Equal(HttpStatusCode.NoContent, (await SignedWebhook(901, body.ToJsonString())).StatusCode);

        // Its pull request no link, the finish waits for a read to confirm it; the report is applied all the same.
        var agent = await Agent(901, agentId);
        Assert.Equal("running", agent["status"]!.GetValue<string>());
        Assert.DoesNotContain("javascript:", agent.ToJsonString(), StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>The runbook: every line about a run carries its RunId. A report without a repository, for a run the URL named, did not.</summary>
    [Fact]
    public async Task Webhook_ignored_for_naming_no_repository_is_logged_with_its_run()
    {
        var agentId = await Launch(440);
        var body = $$$"""{"event": "statusChange", "id": "{{{agentId}}}", "status": "FINISHED"}""";

        var response = await PostWebhook(440, body, WebhookSignature.Sign(Secret, Encoding.UTF8.GetBytes(body)));

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        var line = Assert.Single(logs.GetSnapshot(), entry => entry.Id.Name == "WebhookIgnored");
        Assert.Contains(line.StructuredState!, field => field.Key == "RunId" && field.Value == "440");
        Assert.Equal("pending", (await Agent(440, agentId))["status"]!.GetValue<string>());
    }

    /// <summary>
    /// A source.repository of blanks names no repository, as an absent one does: ignored as such (logged and counted
    /// no_repository), not handed to the run as a report of some other repository.
    /// </summary>
    [Fact]
    public async Task Webhook_whose_source_repository_is_blank_is_ignored_as_naming_no_repository()
    {
        var agentId = await Launch(441);
        var body = $$$"""{"event": "statusChange", "id": "{{{agentId}}}", "status": "FINISHED", "source": {"repository": " \t "}}""";

        var response = await PostWebhook(441, body, WebhookSignature.Sign(Secret, Encoding.UTF8.GetBytes(body)));

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        var line = Assert.Single(logs.GetSnapshot(), entry => entry.Id.Name == "WebhookIgnored");
        Assert.Equal("no source repository", line.GetStructuredStateValue("Reason"));
        Assert.Equal("pending", (await Agent(441, agentId))["status"]!.GetValue<string>());
    }

    /// <summary>
    /// A report on a URL without run_id was logged "Webhook for agent bc-… of run (null) ignored: no run id on the webhook
    /// URL". It has a line of its own, without a RunId (the other lines keep theirs, a number).
    /// </summary>
    [Theory]
    [InlineData(true, "no run id on the webhook URL")]
    [InlineData(false, "no source repository, and no run id on the webhook URL")]
    public async Task Webhook_ignored_for_want_of_a_run_id_is_logged_without_a_null_run(bool withRepository, string reason)
    {
        var agentId = await Launch(442);
        var json = JsonNode.Parse(StatusChange(agentId, "FINISHED"))!.AsObject();
        if (!withRepository)
        {
            json.Remove("source");
        }

        var body = json.ToJsonString();
        var response = await PostWebhook(442, body, WebhookSignature.Sign(Secret, Encoding.UTF8.GetBytes(body)), query: "");

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        var line = Assert.Single(logs.GetSnapshot(), entry => entry.Id.Name is "WebhookIgnored" or "WebhookWithoutRunIgnored");
        Assert.Equal("WebhookWithoutRunIgnored", line.Id.Name);
        Assert.Equal($"Webhook for agent {agentId} ignored: {reason}", line.Message);
        Assert.DoesNotContain(line.StructuredState!, field => field.Key == "RunId");
    }

    /// <summary>
    /// A run_id given twice was read joined ("441,441") and logged as "no run id on the webhook URL", sending the
    /// operator to look for a URL that lost its run id rather than one that names it twice.
    /// </summary>
    [Fact]
    public async Task Webhook_whose_url_names_run_id_twice_is_ignored_and_logged_as_such()
    {
        var agentId = await Launch(441);

        var response = await PostWebhook(441, StatusChange(agentId, "FINISHED"), WebhookSignature.Sign(Secret, Encoding.UTF8.GetBytes(StatusChange(agentId, "FINISHED"))), query: "?run_id=441&run_id=441");

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        Assert.Equal("pending", (await Agent(441, agentId))["status"]!.GetValue<string>());
        var line = Assert.Single(logs.GetSnapshot(), entry => entry.Message.Contains(agentId, StringComparison.Ordinal) && entry.Message.Contains("ignored", StringComparison.Ordinal));
        Assert.Contains(line.StructuredState!, field => field.Key == "Reason" && field.Value == "run_id given more than once on the webhook URL");
    }

    /// <summary>
    /// A run_id that is there but not a valid run id was logged "no run id on the webhook URL", sending the operator to
    /// look for a URL that lost its run id. It is still a 204 (the URL is the one the launch gave Cursor, which delivers
    /// again on any answer but 2xx), counted no_run_id, but the line says the id is not valid.
    /// </summary>
    [Theory]
    [InlineData("?run_id=abc")]
    [InlineData("?run_id=0")]
    [InlineData("?run_id=9007199254740992")]
    [InlineData("?run_id=")]
    public async Task Webhook_whose_url_names_an_invalid_run_id_is_ignored_and_logged_as_such(string query)
    {
        var agentId = await Launch(443);
        var body = StatusChange(agentId, "FINISHED");

        var response = await PostWebhook(443, body, WebhookSignature.Sign(Secret, Encoding.UTF8.GetBytes(body)), query: query);

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        Assert.Equal("pending", (await Agent(443, agentId))["status"]!.GetValue<string>());
        var line = Assert.Single(logs.GetSnapshot(), entry => entry.Id.Name is "WebhookIgnored" or "WebhookWithoutRunIgnored");
        Assert.Equal($"Webhook for agent {agentId} ignored: run_id on the webhook URL is not a valid run id", line.Message);
    }

    private async Task<string> Launch(long runId, string repository = "acme/shop")
    {
        var response = await client.PostJsonAsync($"/runs/{runId}/handoff", Payloads.Trigger(Payloads.Run(runId, [repository], automation: false)));
        return await response.ReadFirstLaunchedAgentIdAsync();
    }

    private async Task<JsonObject> Agent(long runId, string agentId) =>
        (await (await client.GetAsync($"/runs/{runId}/handoff")).ReadJsonAsync())["coding_agents"]![agentId]!.AsObject();

    private static string StatusChange(string agentId, string status, string? prUrl = null, string repository = "https://github.com/acme/shop") =>
        new JsonObject
        {
            ["event"] = "statusChange",
            ["timestamp"] = "2026-11-24T10:05:00Z",
            ["id"] = agentId,
            ["status"] = status,
            ["source"] = new JsonObject { ["repository"] = repository, ["ref"] = "main" },
            ["target"] = new JsonObject { ["url"] = $"https://cursor.com/agents?id={agentId}", ["branchName"] = "database-connection-timeout-abc123", ["prUrl"] = prUrl },
            ["summary"] = "Fixed the pool",
        }.ToJsonString();

    private Task<HttpResponseMessage> SignedWebhook(long runId, string body) =>
        PostWebhook(runId, body, WebhookSignature.Sign(Secret, Encoding.UTF8.GetBytes(body)));

    private Task<HttpResponseMessage> PostWebhook(long runId, string body, string? signature, long integrationId = 42, string? query = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, $"/webhooks/cursor/{integrationId}{query ?? $"?run_id={runId}"}")
        {
            Content = new StringContent(body, Encoding.UTF8, "application/json"),
        };
        if (signature is not null)
        {
            request.Headers.Add("X-Webhook-Signature", signature);
        }

        request.Headers.Add("X-Webhook-ID", Guid.NewGuid().ToString());
        return client.SendAsync(request);
    }

    private static string Strip(string problem)
    {
        var node = JsonNode.Parse(problem)!.AsObject();
        node.Remove("trace_id");
        node.Remove("traceId");
        return node.ToJsonString();
    }

    public void Dispose()
    {
        client.Dispose();
        factory.Dispose();
        cursor.Dispose();
        temp.Dispose();
    }
}
