using System.Net;
using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using HandoffDapr.Service.Security;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Testing;

namespace HandoffDapr.Service.Tests.Security;

/// <summary>Every endpoint but health and webhooks wants credentials: without, wrong, right.</summary>
public sealed class CallerAuthenticationTests : IDisposable
{
    private const string Token = "embedded-api-token-5b1c9e";
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();

    public static TheoryData<string, string> ProtectedEndpoints => new()
    {
        { "POST", "/runs/1/handoff" },
        { "GET", "/runs/1/handoff" },
        { "GET", "/runs" },
        // HEAD is mapped apart from GET (left out of the OpenAPI document): its own routes, behind the same check.
        { "HEAD", "/runs/1/handoff" },
        { "HEAD", "/runs" },
        { "POST", "/events/autofix-run-completed" },
        { "POST", "/runs/1/agents/bc-1/stop" },
        { "POST", "/runs/1/agents/bc-1/followup" },
    };

    [Theory]
    [MemberData(nameof(ProtectedEndpoints))]
    public async Task Endpoint_without_token_is_401(string method, string path)
    {
        using var factory = WithToken();
        var response = await factory.CreateClient().SendAsync(Request(method, path));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        // RFC 9110 §11.6.1: a 401 names the scheme that would be accepted.
        var challenge = Assert.Single(response.Headers.WwwAuthenticate);
        Assert.Equal("Bearer", challenge.Scheme);
        Assert.Equal("realm=\"handoff-dapr\"", challenge.Parameter);
    }

    /// <summary>
    /// A caller without credentials learns nothing of what an endpoint takes: a body it would refuse (not JSON, or
    /// compressed) is still a 401, not the 415 an authenticated caller gets.
    /// </summary>
    [Theory]
    [InlineData("/runs/1/handoff", "text/plain", null)]
    [InlineData("/events/autofix-run-completed", "application/xml", null)]
    [InlineData("/runs/1/agents/bc-1/followup", "text/plain", null)]
    [InlineData("/runs/1/handoff", "application/json", "gzip")]
    public async Task Endpoint_without_token_is_401_whatever_its_body(string path, string contentType, string? encoding)
    {
        using var factory = WithToken();
        var client = factory.CreateClient();
        HttpRequestMessage Unacceptable()
        {
            var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent("x", System.Text.Encoding.UTF8, contentType) };
            if (encoding is not null)
            {
                request.Content.Headers.ContentEncoding.Add(encoding);
            }

            return request;
        }

        var anonymous = await client.SendAsync(Unacceptable());
        var authenticated = Unacceptable();
        authenticated.Headers.Authorization = new AuthenticationHeaderValue("Bearer", Token);
        var refused = await client.SendAsync(authenticated);

        Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
        Assert.Equal("Bearer", Assert.Single(anonymous.Headers.WwwAuthenticate).Scheme);
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, refused.StatusCode);
    }

    [Theory]
    [MemberData(nameof(ProtectedEndpoints))]
    public async Task Endpoint_with_wrong_token_is_401(string method, string path)
    {
        using var factory = WithToken();
        var request = Request(method, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", Token + "x");

        var response = await factory.CreateClient().SendAsync(request);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("Bearer", Assert.Single(response.Headers.WwwAuthenticate).Scheme);
    }

    [Theory]
    [MemberData(nameof(ProtectedEndpoints))]
    public async Task Endpoint_with_the_right_token_is_let_through(string method, string path)
    {
        using var factory = WithToken();
        var request = Request(method, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", Token);

        var response = await factory.CreateClient().SendAsync(request);

        // Past authentication: the endpoint itself answers (404 unknown run, 400 body…), never 401/403.
        Assert.NotEqual(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.NotEqual(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.InRange((int)response.StatusCode, 200, 499);
    }

    /// <summary>
    /// Only <c>Bearer</c>, a space and the token is a bearer token: the scheme alone, the token run on to it, or another
    /// scheme with the token is a 401 with the challenge, never a 500 nor let through.
    /// </summary>
    [Theory]
    [InlineData("Bearer")]
    [InlineData("Bearer" + Token)]
    [InlineData("Basic " + Token)]
    public async Task Authorization_that_is_not_a_bearer_token_is_401(string authorization)
    {
        using var factory = WithToken();
        var request = Request("GET", "/runs/1/handoff");
        request.Headers.TryAddWithoutValidation("Authorization", authorization);

        var response = await factory.CreateClient().SendAsync(request);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("Bearer", Assert.Single(response.Headers.WwwAuthenticate).Scheme);
    }

    /// <summary>RFC 9110 §11.1: an authentication scheme's name is case-insensitive; a client that writes "bearer" is let through.</summary>
    [Theory]
    [InlineData("bearer")]
    [InlineData("BEARER")]
    public async Task Token_is_accepted_whatever_the_letter_case_of_the_scheme(string scheme)
    {
        using var factory = WithToken();
        var request = Request("GET", "/runs/1/handoff");
        request.Headers.TryAddWithoutValidation("Authorization", $"{scheme} {Token}");

        var response = await factory.CreateClient().SendAsync(request);

        // Past authentication: the run is unknown.
        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
    }

    /// <summary>
    /// In embedded mode Handoff:ApiToken is what guards the API: start-up says callers are checked by it, and never the
    /// warning of Dapr mode, where the token is set but guards nothing.
    /// </summary>
    [Fact]
    public async Task An_api_token_set_in_embedded_mode_is_said_at_start_to_be_the_check_not_ignored()
    {
        var logs = new FakeLogCollector();
        using var factory = new EmbeddedServiceFactory(temp.File("token-log.db"), cursor.Url, settings: new Dictionary<string, string?> { ["Handoff:ApiToken"] = Token }) { Logs = logs };

        Assert.Equal(HttpStatusCode.OK, (await factory.CreateClient().GetAsync("/healthz")).StatusCode);

        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "ApiTokenIgnored");
        var check = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "CallerCheck");
        Assert.Equal("BearerToken", check.GetStructuredStateValue("Check"));
    }

    /// <summary>
    /// Embedded mode without Handoff:ApiToken serves loopback callers only: start-up warns of it once (6001,
    /// LoopbackOnly), so an operator who meant to guard the API with a token learns it is not set. With a token, no such
    /// warning.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Embedded_mode_without_an_api_token_warns_once_at_start_that_only_loopback_callers_are_served(bool withToken)
    {
        var logs = new FakeLogCollector();
        var settings = withToken ? new Dictionary<string, string?> { ["Handoff:ApiToken"] = Token } : null;
        using var factory = new EmbeddedServiceFactory(temp.File("loopback-log.db"), cursor.Url, settings: settings) { Logs = logs };

        Assert.Equal(HttpStatusCode.OK, (await factory.CreateClient().GetAsync("/healthz")).StatusCode);

        var warnings = logs.GetSnapshot().Where(record => record.Id.Id == 6001 || record.Id.Name == "LoopbackOnly").ToList();
        if (withToken)
        {
            Assert.Empty(warnings);
        }
        else
        {
            var warning = Assert.Single(warnings);
            Assert.Equal(6001, warning.Id.Id);
            Assert.Equal("LoopbackOnly", warning.Id.Name);
            Assert.Equal(Microsoft.Extensions.Logging.LogLevel.Warning, warning.Level);
        }
    }

    [Fact]
    public async Task Health_and_webhooks_need_no_token()
    {
        using var factory = WithToken();
        var client = factory.CreateClient();

        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/healthz")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/readyz")).StatusCode);
        // Rejected by signature, not by caller authentication.
        var webhook = await client.PostRawAsync("/webhooks/cursor/42?run_id=1", "{}");
        Assert.Equal(HttpStatusCode.Unauthorized, webhook.StatusCode);
        Assert.EndsWith("unauthorized", (await webhook.ReadJsonAsync())["type"]!.GetValue<string>());
        Assert.Equal("HMAC-SHA256", Assert.Single(webhook.Headers.WwwAuthenticate).Scheme);
        Assert.Equal("header=\"X-Webhook-Signature\"", Assert.Single(webhook.Headers.WwwAuthenticate).Parameter);
    }

    [Fact]
    public async Task Without_a_token_only_loopback_callers_are_accepted()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("open.db"), cursor.Url);
        var client = factory.CreateClient();

        var remote = Request("GET", "/runs/1/handoff");
        remote.Headers.Add(EmbeddedServiceFactory.RemoteAddressHeader, "10.1.2.3");
        var local = Request("GET", "/runs/1/handoff");
        local.Headers.Add(EmbeddedServiceFactory.RemoteAddressHeader, "127.0.0.1");
        var remoteHealth = new HttpRequestMessage(HttpMethod.Get, "/healthz");
        remoteHealth.Headers.Add(EmbeddedServiceFactory.RemoteAddressHeader, "10.1.2.3");

        var refused = await client.SendAsync(remote);
        Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
        Assert.Empty(refused.Headers.WwwAuthenticate);
        Assert.Equal(ForbiddenDetail, (await refused.ReadJsonAsync())["detail"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.NotFound, (await client.SendAsync(local)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.SendAsync(remoteHealth)).StatusCode);
    }

    /// <summary>
    /// An empty Handoff:ApiToken (an environment variable set to nothing) is no token, as the README says: loopback callers
    /// are served and others refused, not every caller asked for a bearer token that no one could send.
    /// </summary>
    [Fact]
    public async Task An_empty_api_token_is_none_and_only_loopback_callers_are_accepted()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("empty-token.db"), cursor.Url, settings: new Dictionary<string, string?> { ["Handoff:ApiToken"] = string.Empty });
        var client = factory.CreateClient();
        var local = Request("GET", "/runs/1/handoff");
        local.Headers.Add(EmbeddedServiceFactory.RemoteAddressHeader, "127.0.0.1");
        var remote = Request("GET", "/runs/1/handoff");
        remote.Headers.Add(EmbeddedServiceFactory.RemoteAddressHeader, "10.1.2.3");

        Assert.Equal(HttpStatusCode.NotFound, (await client.SendAsync(local)).StatusCode);
        var refused = await client.SendAsync(remote);
        Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
        Assert.Empty(refused.Headers.WwwAuthenticate);
    }

    public static TheoryData<string, string?, string?> BrowserRequestsForOtherSites => new()
    {
        // A page on another site: fetch(url, {method: "POST", body: new Blob([json])}) has no Content-Type, so no preflight.
        { "http://localhost/runs/1/handoff", "https://evil.example", "cross-site" },
        { "http://localhost/runs/1/handoff", null, "same-site" },
        // Sec-Fetch-Site alone says so: no Origin is needed to refuse it.
        { "http://localhost/runs/1/handoff", null, "cross-site" },
        { "http://localhost/runs/1/handoff", "https://evil.example", null },
        // An opaque origin (a sandboxed frame, a file: or data: page) is sent as "Origin: null": no site it could be checked as.
        { "http://localhost/runs/1/handoff", "null", null },
        // DNS rebinding: the attacker's own name resolved to 127.0.0.1, so the browser sends it as Host.
        { "http://evil.example/runs/1/handoff", null, null },
    };

    [Theory]
    [MemberData(nameof(BrowserRequestsForOtherSites))]
    public async Task Without_a_token_a_browser_request_on_behalf_of_another_site_is_refused(string url, string? origin, string? fetchSite)
    {
        using var factory = new EmbeddedServiceFactory(temp.File("csrf.db"), cursor.Url);
        var request = new HttpRequestMessage(HttpMethod.Post, url)
        {
            Content = new ByteArrayContent(System.Text.Encoding.UTF8.GetBytes(Payloads.Trigger(Payloads.Run(1, ["acme/shop"], automation: false), instruction: "attacker text").ToJsonString())),
        };
        request.Headers.Add(EmbeddedServiceFactory.RemoteAddressHeader, "127.0.0.1");
        if (origin is not null)
        {
            request.Headers.Add("Origin", origin);
        }

        if (fetchSite is not null)
        {
            request.Headers.Add("Sec-Fetch-Site", fetchSite);
        }

        var response = await factory.CreateClient().SendAsync(request);

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        // A loopback caller: the detail says what else is required, not that remote callers need a token.
        Assert.Equal(ForbiddenDetail, (await response.ReadJsonAsync())["detail"]!.GetValue<string>());
        Assert.Equal(0, cursor.LaunchRequests);
    }

    private const string ForbiddenDetail = "This caller may not use the API: without Handoff:ApiToken only a loopback caller may, addressed "
        + "to localhost or a loopback address and not on behalf of another site. Configure Handoff:ApiToken to accept others.";

    [Theory]
    [InlineData("http://localhost/runs/1/handoff", "same-origin", "http://localhost:5080")]
    [InlineData("http://127.0.0.1/runs/1/handoff", null, null)]
    [InlineData("http://[::1]/runs/1/handoff", "none", null)]
    [InlineData("http://localhost./runs/1/handoff", null, "http://localhost.:5080")]
    public async Task Without_a_token_the_status_page_and_local_tools_are_still_accepted(string url, string? fetchSite, string? origin)
    {
        using var factory = new EmbeddedServiceFactory(temp.File("local.db"), cursor.Url);
        var request = new HttpRequestMessage(HttpMethod.Get, url);
        request.Headers.Add(EmbeddedServiceFactory.RemoteAddressHeader, "127.0.0.1");
        if (fetchSite is not null)
        {
            request.Headers.Add("Sec-Fetch-Site", fetchSite);
        }

        if (origin is not null)
        {
            request.Headers.Add("Origin", origin);
        }

        // An unknown run: 404 means the caller was let through.
        Assert.Equal(HttpStatusCode.NotFound, (await factory.CreateClient().SendAsync(request)).StatusCode);
    }

    [Fact]
    public async Task Manual_trigger_over_the_group_limit_is_429_with_retry_after()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("limits.db"), cursor.Url, settings: new Dictionary<string, string?>
        {
            ["Handoff:RateLimits:TriggersPerGroupPerMinute"] = "2",
        });
        var client = factory.CreateClient();
        var body = Payloads.Trigger(Payloads.Run(1, ["acme/shop"], automation: false));

        var first = await client.PostJsonAsync("/runs/1/handoff", body);
        var second = await client.PostJsonAsync("/runs/1/handoff", Payloads.Trigger());
        var third = await client.PostJsonAsync("/runs/1/handoff", Payloads.Trigger());
        var otherGroup = await client.PostJsonAsync("/runs/2/handoff", Payloads.Trigger(Payloads.Run(2, ["acme/shop"], automation: false, groupId: 457), groupId: 457));

        Assert.Equal(HttpStatusCode.Accepted, first.StatusCode);
        Assert.Equal(HttpStatusCode.Accepted, second.StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, third.StatusCode);
        Assert.True(int.Parse(third.Headers.RetryAfter!.ToString()) > 0);
        Assert.Equal("application/problem+json", third.Content.Headers.ContentType?.MediaType);
        Assert.Equal(
            "This group_id has had its 2 triggers of this minute (Handoff:RateLimits:TriggersPerGroupPerMinute). Try again after the Retry-After delay.",
            (await third.ReadJsonAsync())["detail"]!.GetValue<string>());
        // Another group has its own budget: its trigger is served.
        Assert.Equal(HttpStatusCode.Accepted, otherGroup.StatusCode);
    }

    /// <summary>
    /// The limit is per minute: a group over it is still refused a moment later, and each refusal says to wait the
    /// limiter's whole window, 60 s, however much of it is left (docs/api.md): the fixed window's RetryAfter is its length.
    /// </summary>
    [Fact]
    public async Task Group_over_its_limit_stays_refused_within_the_minute_and_is_told_the_whole_window()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("window.db"), cursor.Url, settings: new Dictionary<string, string?>
        {
            ["Handoff:RateLimits:TriggersPerGroupPerMinute"] = "1",
        });
        var client = factory.CreateClient();
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/1/handoff", Payloads.Trigger(Payloads.Run(1, ["acme/shop"], automation: false)))).StatusCode);

        var refused = await client.PostJsonAsync("/runs/1/handoff", Payloads.Trigger());
        await Task.Delay(TimeSpan.FromSeconds(1.5));
        var later = await client.PostJsonAsync("/runs/1/handoff", Payloads.Trigger());

        Assert.Equal(HttpStatusCode.TooManyRequests, refused.StatusCode);
        Assert.Equal("60", refused.Headers.GetValues("Retry-After").Single());
        Assert.Equal(HttpStatusCode.TooManyRequests, later.StatusCode);
        Assert.Equal("60", later.Headers.GetValues("Retry-After").Single());
    }

    /// <summary>
    /// A trigger refused for its body (a 400) is the caller's mistake, told as such however many it sends: it does not
    /// use up the group's budget, so the group's next valid trigger is served.
    /// </summary>
    [Fact]
    public async Task Triggers_refused_as_invalid_do_not_use_up_the_group_limit()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("invalid-limits.db"), cursor.Url, settings: new Dictionary<string, string?>
        {
            ["Handoff:RateLimits:TriggersPerGroupPerMinute"] = "2",
        });
        var client = factory.CreateClient();

        for (var i = 0; i < 3; i++)
        {
            var invalid = await client.PostJsonAsync("/runs/1/handoff", Payloads.Trigger(Payloads.Run(2, ["acme/shop"], automation: false)));
            Assert.Equal(HttpStatusCode.BadRequest, invalid.StatusCode);
        }

        var valid = await client.PostJsonAsync("/runs/1/handoff", Payloads.Trigger(Payloads.Run(1, ["acme/shop"], automation: false)));

        Assert.Equal(HttpStatusCode.Accepted, valid.StatusCode);
    }

    /// <summary>
    /// Retry-After is whole seconds (RFC 9110 §10.2.3), rounded up: a wait of a fraction of a second is told as one second,
    /// never as 0, which a client would take as "try again at once" into the same exhausted window.
    /// </summary>
    [Theory]
    [InlineData(0, "1")]
    [InlineData(400, "1")]
    [InlineData(1_200, "2")]
    [InlineData(59_001, "60")]
    public void Retry_after_is_the_wait_in_whole_seconds_rounded_up_and_never_zero(int milliseconds, string expected)
    {
        Assert.Equal(expected, RetryAfterHeader.Format(TimeSpan.FromMilliseconds(milliseconds)));
    }

    [Fact]
    public async Task Webhooks_over_the_integration_limit_are_429_with_retry_after()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("hooks.db"), cursor.Url, settings: new Dictionary<string, string?>
        {
            ["Handoff:RateLimits:WebhooksPerIntegrationPerMinute"] = "3",
            ["Handoff:Integrations:42:WebhookSecret"] = "webhook-secret-of-integration-42-0123456789",
        });
        var client = factory.CreateClient();

        var answers = new List<HttpResponseMessage>();
        for (var i = 0; i < 4; i++)
        {
            answers.Add(await client.PostRawAsync("/webhooks/cursor/42?run_id=1", "{}"));
        }

        Assert.All(answers.Take(3), answer => Assert.Equal(HttpStatusCode.Unauthorized, answer.StatusCode));
        Assert.Equal(HttpStatusCode.TooManyRequests, answers[3].StatusCode);
        // The whole window, as for triggers (docs/api.md).
        Assert.Equal("60", answers[3].Headers.GetValues("Retry-After").Single());
        Assert.Equal(
            // Unsigned callers are told neither the limit nor the setting that holds it.
            "This integration's webhooks are over their limit for this minute. Try again after the Retry-After delay.",
            (await answers[3].ReadJsonAsync())["detail"]!.GetValue<string>());
    }

    [Fact]
    public async Task Unsigned_webhooks_cannot_use_up_the_budget_of_signed_ones()
    {
        const string secret = "webhook-secret-of-integration-42-0123456789";
        using var factory = new EmbeddedServiceFactory(temp.File("hook-budget.db"), cursor.Url, settings: new Dictionary<string, string?>
        {
            ["Handoff:RateLimits:WebhooksPerIntegrationPerMinute"] = "2",
            ["Handoff:Integrations:42:WebhookSecret"] = secret,
        });
        var client = factory.CreateClient();
        var body = new JsonObject { ["event"] = "statusChange", ["id"] = "bc-unknown", ["status"] = "RUNNING" }.ToJsonString();

        var forged = new List<HttpResponseMessage>();
        for (var i = 0; i < 3; i++)
        {
            forged.Add(await client.PostRawAsync("/webhooks/cursor/42?run_id=1", body));
        }

        var signed = new List<HttpResponseMessage>();
        for (var i = 0; i < 3; i++)
        {
            using var request = Payloads.SignedWebhook("/webhooks/cursor/42?run_id=1", body, secret);
            signed.Add(await client.SendAsync(request));
        }

        Assert.Equal([HttpStatusCode.Unauthorized, HttpStatusCode.Unauthorized, HttpStatusCode.TooManyRequests], forged.Select(answer => answer.StatusCode));
        Assert.Equal([HttpStatusCode.NoContent, HttpStatusCode.NoContent, HttpStatusCode.TooManyRequests], signed.Select(answer => answer.StatusCode));
    }

    /// <summary>
    /// Each integration has its own webhook budget: one flooded (here with unsigned requests) leaves another's intact.
    /// </summary>
    [Fact]
    public async Task Webhooks_over_one_integrations_limit_leave_anothers_budget_intact()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("hook-partitions.db"), cursor.Url, settings: new Dictionary<string, string?>
        {
            ["Handoff:RateLimits:WebhooksPerIntegrationPerMinute"] = "1",
            ["Handoff:Integrations:42:WebhookSecret"] = "webhook-secret-of-integration-42-0123456789",
            ["Handoff:Integrations:44:Provider"] = "cursor_background_agent",
            ["Handoff:Integrations:44:BaseUrl"] = cursor.Url,
            ["Handoff:Integrations:44:ApiKey"] = "key-of-integration-44",
            ["Handoff:Integrations:44:WebhookSecret"] = "webhook-secret-of-integration-44-0123456789",
        });
        var client = factory.CreateClient();

        var first = await client.PostRawAsync("/webhooks/cursor/42?run_id=1", "{}");
        var over = await client.PostRawAsync("/webhooks/cursor/42?run_id=1", "{}");
        var another = await client.PostRawAsync("/webhooks/cursor/44?run_id=1", "{}");

        Assert.Equal(HttpStatusCode.Unauthorized, first.StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, over.StatusCode);
        // Refused for its signature, not for 42's budget.
        Assert.Equal(HttpStatusCode.Unauthorized, another.StatusCode);
    }

    /// <summary>
    /// A webhook body over 256 KiB is a 413 though under the API's 1 MiB: Cursor's reports are small, and the open route
    /// reads no more than that before the signature is checked.
    /// </summary>
    [Fact]
    public async Task Webhook_body_over_256_kib_is_413_though_under_the_apis_limit()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("hook-size.db"), cursor.Url, settings: new Dictionary<string, string?>
        {
            ["Handoff:Integrations:42:WebhookSecret"] = "webhook-secret-of-integration-42-0123456789",
        });

        var response = await factory.CreateClient().PostRawAsync("/webhooks/cursor/42?run_id=1", new string(' ', (256 * 1024) + 1));

        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
    }

    /// <summary>
    /// Cursor's route reads Cursor's statuses: a Copilot integration given a WebhookSecret (the settings allow one) is not
    /// opened by it, and a webhook signed with that secret is refused like any other unusable one.
    /// </summary>
    [Fact]
    public async Task Webhook_signed_for_an_integration_that_is_not_cursors_is_401()
    {
        const string secret = "webhook-secret-of-integration-43-0123456789";
        using var factory = new EmbeddedServiceFactory(temp.File("hook-copilot.db"), cursor.Url, settings: new Dictionary<string, string?>
        {
            ["Handoff:Integrations:43:WebhookSecret"] = secret,
        });
        var body = new JsonObject { ["event"] = "statusChange", ["id"] = "bc-1", ["status"] = "FINISHED" }.ToJsonString();
        using var request = Payloads.SignedWebhook("/webhooks/cursor/43?run_id=1", body, secret);

        var response = await factory.CreateClient().SendAsync(request);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("HMAC-SHA256", Assert.Single(response.Headers.WwwAuthenticate).Scheme);
    }

    /// <summary>A loopback name is one whatever its letter case (RFC 9110 §4.2.3): a tool sending <c>Host: LOCALHOST</c> is local.</summary>
    [Fact]
    public async Task Without_a_token_localhost_is_a_loopback_name_in_any_letter_case()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("host-case.db"), cursor.Url);
        var request = new HttpRequestMessage(HttpMethod.Get, "http://localhost/runs/1/handoff");
        request.Headers.Host = "LocalHost";
        request.Headers.Add(EmbeddedServiceFactory.RemoteAddressHeader, "127.0.0.1");

        // An unknown run: 404 means the caller was let through.
        Assert.Equal(HttpStatusCode.NotFound, (await factory.CreateClient().SendAsync(request)).StatusCode);
    }

    /// <summary>
    /// Only a loopback address is a loopback Host: a request from this machine sent to another address (a proxy here
    /// passing on an outside caller's Host, a page of that address) is refused like one sent to another name.
    /// </summary>
    [Theory]
    [InlineData("192.0.2.10")]
    [InlineData("[2001:db8::1]")]
    public async Task Without_a_token_a_loopback_request_sent_to_an_address_that_is_not_loopback_is_refused(string host)
    {
        using var factory = new EmbeddedServiceFactory(temp.File("address-host.db"), cursor.Url);
        var request = new HttpRequestMessage(HttpMethod.Get, "http://localhost/runs/1/handoff");
        request.Headers.Host = host;
        request.Headers.Add(EmbeddedServiceFactory.RemoteAddressHeader, "127.0.0.1");

        Assert.Equal(HttpStatusCode.Forbidden, (await factory.CreateClient().SendAsync(request)).StatusCode);
    }

    /// <summary>
    /// HTTP/1.0 needs no Host (RFC 1945), and a browser always sends one: a loopback request without it is a local tool.
    /// A real Kestrel on a raw socket, as HttpClient always writes a Host.
    /// </summary>
    [Fact]
    public async Task Without_a_token_a_loopback_http_1_0_request_without_host_is_local()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("no-host.db"), cursor.Url);
        var port = factory.StartOnKestrel().Port;

        var answer = await HttpExtensions.SendRawAsync(port, "GET /runs/1/handoff HTTP/1.0\r\n\r\n");

        // An unknown run: 404 means the caller was let through.
        Assert.StartsWith("HTTP/1.1 404 ", answer, StringComparison.Ordinal);
    }

    /// <summary>
    /// RFC 9110 §11.4: one or more spaces follow the scheme. Sent over a raw socket, so that these are the bytes Kestrel
    /// reads.
    /// </summary>
    [Fact]
    public async Task A_bearer_token_after_several_spaces_is_accepted()
    {
        using var factory = WithToken();
        var port = factory.StartOnKestrel().Port;

        var answer = await HttpExtensions.SendRawAsync(port, $"GET /runs/1/handoff HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer   {Token}\r\nConnection: close\r\n\r\n");

        Assert.StartsWith("HTTP/1.1 404 ", answer, StringComparison.Ordinal);
    }

    private EmbeddedServiceFactory WithToken() =>
        new(temp.File($"{Guid.NewGuid():N}.db"), cursor.Url, settings: new Dictionary<string, string?> { ["Handoff:ApiToken"] = Token });

    private static HttpRequestMessage Request(string method, string path) => new(new HttpMethod(method), path)
    {
        Content = method == "POST" ? new StringContent(new JsonObject { ["text"] = "x" }.ToJsonString(), System.Text.Encoding.UTF8, "application/json") : null,
    };

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
