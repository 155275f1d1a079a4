using System.Net.Http.Headers;
using System.Text.Json;
using System.Text.Json.Nodes;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Providers.Cursor;
using HandoffDapr.Core.Repositories;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Logging.Testing;
using WireMock.RequestBuilders;
using WireMock.ResponseBuilders;
using WireMock.Server;

namespace HandoffDapr.Core.Tests;

/// <summary>The Cursor client against a WireMock.Net server on loopback.</summary>
public sealed class CursorAgentsProviderTests : IDisposable
{
    private readonly WireMockServer cursor = WireMockServer.Start(new WireMock.Settings.WireMockServerSettings { Urls = ["http://127.0.0.1:0"] });
    private readonly HttpClient http;
    private readonly CursorAgentsProvider provider;

    public CursorAgentsProviderTests()
    {
        http = new HttpClient { BaseAddress = new Uri(cursor.Url! + "/"), Timeout = TimeSpan.FromSeconds(30) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "test-key");
        provider = new CursorAgentsProvider(new TestTransport(http), TimeProvider.System, NullLogger<CursorAgentsProvider>.Instance);
    }

    [Fact]
    public async Task Launch_sends_the_exact_body_path_and_bearer_key()
    {
        Answer("/v0/agents", 201, """{"id":"bc-1","name":"Fix","status":"CREATING","target":{"branchName":"fix-abc123","url":"https://cursor.com/agents?id=bc-1"},"createdAt":"2026-11-24T10:00:00Z"}""");

        var result = await provider.LaunchAsync(Launch(webhook: new AgentWebhook(new Uri("https://h.example/webhooks/cursor/42?run_id=1"), "s3cret-s3cret-s3cret-s3cret-s3cret")), CancellationToken.None);

        var request = Assert.Single(cursor.LogEntries).RequestMessage;
        Assert.Equal("POST", request.Method);
        Assert.Equal("/v0/agents", request.Path);
        Assert.Equal("Bearer test-key", request.Headers!["Authorization"].Single());
        var expected = JsonNode.Parse("""{"prompt":{"text":"Fix \"it\"\n<now>"},"source":{"repository":"https://github.com/acme/shop","ref":"main"},"target":{"autoCreatePr":true,"branchName":"fix-abc123"},"webhook":{"url":"https://h.example/webhooks/cursor/42?run_id=1","secret":"s3cret-s3cret-s3cret-s3cret-s3cret"}}""");
        Assert.True(JsonNode.DeepEquals(expected, JsonNode.Parse(request.Body!)), request.Body);
        Assert.True(result.IsSuccess);
        Assert.Equal("bc-1", result.Value!.Id);
        Assert.Equal(ProviderAgentStatus.Creating, result.Value.Status);
        Assert.Equal("https://cursor.com/agents?id=bc-1", result.Value.AgentUrl);
        Assert.Equal(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero), result.Value.CreatedAt);
    }

    /// <summary>
    /// An id that could not be Cursor's (it goes into the path) is refused before any call: nothing sent, nothing
    /// attempted, as the launch's own refusals before sending say, so whoever reads the failure may count on it.
    /// </summary>
    [Theory]
    [InlineData("../v0/agents")]
    [InlineData("bc 1")]
    public async Task A_stop_or_follow_up_for_an_id_of_another_shape_is_refused_without_a_call_or_an_attempt(string agentId)
    {
        var stop = await provider.StopAsync(agentId, CancellationToken.None);
        var followup = await provider.AddFollowupAsync(agentId, "Also fix the test", CancellationToken.None);

        Assert.Empty(cursor.LogEntries);
        Assert.All(new[] { stop.Failure!, followup.Failure! }, failure =>
            Assert.Equal((FailureTypes.InvalidRequest, false, false), (failure.FailureType, failure.RequestSent, failure.Attempted)));
    }

    /// <summary>
    /// Only a 2xx answer is the agent, to its last code: a 3xx (a redirect not followed, with no Location here) is
    /// refused as invalid_request whatever its body, though the body reads as an agent.
    /// </summary>
    [Theory]
    [InlineData(200, true)]
    [InlineData(299, true)]
    [InlineData(300, false)]
    [InlineData(307, false)]
    public async Task Launch_answer_is_read_as_the_agent_only_for_a_2xx_status(int status, bool read)
    {
        Answer("/v0/agents", status, """{"id":"bc-1","status":"CREATING"}""");

        var result = await provider.LaunchAsync(Launch(), CancellationToken.None);

        Assert.Equal(read, result.IsSuccess);
        Assert.Equal(read ? null : FailureTypes.InvalidRequest, result.Failure?.FailureType);
        Assert.False(result.Failure?.Retryable ?? false);
    }

    [Fact]
    public async Task Launch_leaves_out_ref_and_webhook_when_there_are_none()
    {
        Answer("/v0/agents", 201, """{"id":"bc-1","status":"CREATING"}""");

        await provider.LaunchAsync(Launch(baseRef: null), CancellationToken.None);

        var body = JsonNode.Parse(cursor.LogEntries.Single().RequestMessage.Body!)!.AsObject();
        Assert.False(body.ContainsKey("webhook"));
        Assert.False(body["source"]!.AsObject().ContainsKey("ref"));
    }

    [Fact]
    public async Task An_error_answer_with_a_property_name_that_cannot_be_read_is_still_classified_by_its_status()
    {
        // Well-formed JSON, but the name is a lone surrogate: looking up "error" meets it first and cannot compare it.
        Answer("/v0/agents", 401, """{"error":{"message":"bad key"},"\ud800":1}""");

        var result = await provider.LaunchAsync(Launch(), CancellationToken.None);

        Assert.Equal(FailureTypes.InvalidCredentials, result.Failure!.FailureType);
        Assert.False(result.Failure.OutcomeUnknown);
    }

    [Theory]
    [InlineData(401, FailureTypes.InvalidCredentials, false)]
    [InlineData(403, FailureTypes.RepositoryAccess, false)]
    [InlineData(404, FailureTypes.InvalidRequest, false)]
    [InlineData(500, FailureTypes.ProviderUnavailable, true)]
    public async Task Error_answers_become_failure_types(int status, string expected, bool retryable)
    {
        Answer("/v0/agents", status, """{"error":{"message":"secret provider detail","code":"x"}}""");

        var result = await provider.LaunchAsync(Launch(), CancellationToken.None);

        Assert.Equal(expected, result.Failure!.FailureType);
        Assert.Equal(retryable, result.Failure.Retryable);
    }

    [Fact]
    public async Task Rate_limit_carries_retry_after()
    {
        cursor.Given(Request.Create().WithPath("/v0/agents").UsingPost())
            .RespondWith(Response.Create().WithStatusCode(429).WithHeader("Retry-After", "120").WithBody("""{"error":"Too Many Requests","message":"slow down"}"""));

        var result = await provider.LaunchAsync(Launch(), CancellationToken.None);

        Assert.Equal(FailureTypes.RateLimited, result.Failure!.FailureType);
        Assert.Equal(TimeSpan.FromSeconds(120), result.Failure.RetryAfter);
    }

    [Theory]
    [InlineData("{not json")]
    [InlineData("""{"status":"CREATING"}""")]
    [InlineData("""{"id":"../../etc"}""")]
    [InlineData("[]")]
    public async Task Unreadable_success_is_an_unknown_outcome(string body)
    {
        Answer("/v0/agents", 201, body);

        var result = await provider.LaunchAsync(Launch(), CancellationToken.None);

        Assert.Equal(FailureTypes.InvalidResponse, result.Failure!.FailureType);
        Assert.True(result.Failure.OutcomeUnknown);
    }

    [Fact]
    public async Task Slow_answer_past_the_timeout_is_an_unknown_outcome()
    {
        cursor.Given(Request.Create().WithPath("/v0/agents").UsingPost())
            .RespondWith(Response.Create().WithStatusCode(201).WithBody("""{"id":"bc-1"}""").WithDelay(TimeSpan.FromSeconds(5)));
        using var impatient = new HttpClient { BaseAddress = http.BaseAddress, Timeout = TimeSpan.FromMilliseconds(500) };
        var shortTimeout = new CursorAgentsProvider(new TestTransport(impatient), TimeProvider.System, NullLogger<CursorAgentsProvider>.Instance);

        var result = await shortTimeout.LaunchAsync(Launch(), CancellationToken.None);

        Assert.Equal(FailureTypes.ProviderUnavailable, result.Failure!.FailureType);
        Assert.True(result.Failure.OutcomeUnknown);
    }

    [Fact]
    public async Task Lost_agent_is_found_by_branch_across_pages_and_not_in_another_repository()
    {
        cursor.Given(Request.Create().WithPath("/v0/agents").WithParam("cursor", "p2").UsingGet())
            .RespondWith(Response.Create().WithBody("""{"agents":[{"id":"bc-3","status":"RUNNING","source":{"repository":"https://github.com/acme/shop"},"target":{"branchName":"fix-abc123"}}]}"""));
        cursor.Given(Request.Create().WithPath("/v0/agents").UsingGet()).AtPriority(10)
            .RespondWith(Response.Create().WithBody("""{"agents":[{"id":"bc-2","status":"RUNNING","source":{"repository":"https://github.com/acme/web"},"target":{"branchName":"fix-abc123"}}],"nextCursor":"p2"}"""));
        RepositoryName.TryParse("acme/shop", out var repository);

        var found = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", null, CancellationToken.None);
        var missing = await provider.FindAgentByBranchAsync(repository.Value, "other-branch", null, CancellationToken.None);

        Assert.Equal("bc-3", found.Value!.Id);
        Assert.True(missing.IsSuccess);
        Assert.Null(missing.Value);
    }

    [Theory]
    [InlineData("github.com/acme/shop.git", "bc-3")]
    [InlineData("https://www.github.com/Acme/Shop.git/", "bc-3")]
    [InlineData("https://gitlab.com/acme/shop", null)]
    [InlineData("https://github.com/other/acme/shop", null)]
    public async Task Lost_agent_lookup_takes_a_source_for_the_launchs_repository_exactly_when_a_read_of_the_agent_does(string source, string? expected)
    {
        // The engine keeps a found agent only if its read names the launch's repository (RepositoryName.IsNamedBy): a
        // lookup that skips one the read takes for ours answers "none" and a second agent is launched; one that returns
        // an agent the read takes for another repository's makes every attempt fail on it.
        var agent = new JsonObject
        {
            ["id"] = "bc-3",
            ["status"] = "RUNNING",
            ["source"] = new JsonObject { ["repository"] = source },
            ["target"] = new JsonObject { ["branchName"] = "fix-abc123" },
        };
        Answer("/v0/agents", 200, new JsonObject { ["agents"] = new JsonArray(agent) }.ToJsonString());
        Answer("/v0/agents/bc-3", 200, agent.ToJsonString());
        RepositoryName.TryParse("acme/shop", out var repository);

        var found = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", null, CancellationToken.None);
        var read = await provider.GetAgentAsync("bc-3", CancellationToken.None);

        Assert.True(found.IsSuccess);
        Assert.Equal(expected, found.Value?.Id);
        Assert.Equal(expected is not null, repository.Value.IsNamedBy(read.Value!.Repository));
    }

    [Fact]
    public async Task Agent_list_that_never_ends_leaves_the_outcome_unknown_instead_of_not_found()
    {
        // Every page points at one more: the agent could be on a page we did not read.
        cursor.Given(Request.Create().WithPath("/v0/agents").UsingGet())
            .RespondWith(Response.Create().WithBody("""{"agents":[{"id":"bc-2","status":"RUNNING","source":{"repository":"https://github.com/acme/web"},"target":{"branchName":"other"}}],"nextCursor":"more"}"""));
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", null, CancellationToken.None);

        Assert.False(result.IsSuccess);
        Assert.Equal(FailureTypes.ReconcileIncomplete, result.Failure!.FailureType);
        Assert.True(result.Failure.OutcomeUnknown);
        Assert.True(result.Failure.Retryable);
        Assert.Equal(20, cursor.LogEntries.Count());
    }

    [Fact]
    public async Task Stop_and_followup_use_the_agents_endpoints()
    {
        Answer("/v0/agents/bc-1/stop", 200, """{"id":"bc-1"}""");
        Answer("/v0/agents/bc-1/followup", 200, """{"id":"bc-1"}""");

        Assert.True((await provider.StopAsync("bc-1", CancellationToken.None)).IsSuccess);
        Assert.True((await provider.AddFollowupAsync("bc-1", "Also add a test", CancellationToken.None)).IsSuccess);

        Assert.Equal("""{"prompt":{"text":"Also add a test"}}""", cursor.LogEntries.Last().RequestMessage.Body);
    }

    [Fact]
    public async Task A_stop_is_a_post_without_a_body_and_a_follow_up_a_post_of_its_prompt()
    {
        Answer("/v0/agents/bc-1/stop", 200, """{"id":"bc-1"}""");
        Answer("/v0/agents/bc-1/followup", 200, """{"id":"bc-1"}""");

        await provider.StopAsync("bc-1", CancellationToken.None);
        await provider.AddFollowupAsync("bc-1", "Also add a test", CancellationToken.None);

        var requests = cursor.LogEntries.Select(entry => entry.RequestMessage).ToList();
        Assert.Equal([("POST", "/v0/agents/bc-1/stop"), ("POST", "/v0/agents/bc-1/followup")], requests.Select(request => (request.Method, request.Path)));
        Assert.True(string.IsNullOrEmpty(requests[0].Body), requests[0].Body);
    }

    [Theory]
    [InlineData(404, FailureTypes.InvalidRequest)]
    [InlineData(500, FailureTypes.ProviderUnavailable)]
    public async Task A_stop_or_follow_up_cursor_answers_with_an_error_is_that_failure_not_taken(int status, string expected)
    {
        Answer("/v0/agents/bc-1/stop", status, """{"error":{"message":"agent not found"}}""");
        Answer("/v0/agents/bc-1/followup", status, """{"error":{"message":"agent not found"}}""");

        var stop = await provider.StopAsync("bc-1", CancellationToken.None);
        var followup = await provider.AddFollowupAsync("bc-1", "Also add a test", CancellationToken.None);

        Assert.Equal(expected, stop.Failure?.FailureType);
        Assert.Equal(expected, followup.Failure?.FailureType);
    }

    [Fact]
    public async Task Launch_sends_auto_create_pr_off_when_asked_and_the_configured_model()
    {
        Answer("/v0/agents", 201, """{"id":"bc-1","status":"CREATING"}""");
        var withModel = new CursorAgentsProvider(new TestTransport(http), TimeProvider.System, NullLogger<CursorAgentsProvider>.Instance, "claude-4-sonnet");

        await withModel.LaunchAsync(Launch() with { AutoCreatePr = false }, CancellationToken.None);

        var body = JsonNode.Parse(cursor.LogEntries.Single().RequestMessage.Body!)!;
        Assert.False(body["target"]!["autoCreatePr"]!.GetValue<bool>());
        Assert.Equal("claude-4-sonnet", body["model"]!.GetValue<string>());
    }

    /// <summary>The URL Cursor calls back is the one given, escapes and all: unescaped, a space or an escaped '?' in its path would send the webhook elsewhere.</summary>
    [Fact]
    public async Task Launch_sends_the_webhook_url_escaped_as_it_was_given()
    {
        Answer("/v0/agents", 201, """{"id":"bc-1","status":"CREATING"}""");
        var url = new Uri("https://h.example/handoff%20dapr/webhooks/cursor/42?run_id=1");

        await provider.LaunchAsync(Launch(webhook: new AgentWebhook(url, "s3cret-s3cret-s3cret-s3cret-s3cret")), CancellationToken.None);

        var body = JsonNode.Parse(cursor.LogEntries.Single().RequestMessage.Body!)!;
        Assert.Equal("https://h.example/handoff%20dapr/webhooks/cursor/42?run_id=1", body["webhook"]!["url"]!.GetValue<string>());
    }

    [Theory]
    [InlineData("../x")]
    [InlineData("a/b")]
    [InlineData("")]
    public async Task Invalid_agent_id_makes_no_request(string agentId)
    {
        var stop = await provider.StopAsync(agentId, CancellationToken.None);
        var read = await provider.GetAgentAsync(agentId, CancellationToken.None);

        Assert.False(stop.IsSuccess);
        Assert.False(read.IsSuccess);
        Assert.Empty(cursor.LogEntries);
    }

    [Theory]
    [InlineData("[]")]
    [InlineData("null")]
    [InlineData("\"maintenance\"")]
    [InlineData("""{"agents":[1,"x",null]}""")]
    public async Task Agent_list_of_another_shape_is_an_unknown_outcome_not_an_exception(string body)
    {
        // A proxy's page or a changed API answering 200: the agent may exist, so the lookup must neither throw nor say "none".
        Answer("/v0/agents", 200, body);
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", null, CancellationToken.None);

        Assert.Equal(FailureTypes.InvalidResponse, result.Failure!.FailureType);
        Assert.True(result.Failure.OutcomeUnknown);
    }

    [Theory]
    [InlineData("https://github.com/Acme/Shop", "Acme/Shop")]
    [InlineData("github.com/acme/shop.git", "acme/shop")]
    [InlineData("https://gitlab.com/acme/shop", "https://gitlab.com/acme/shop")]
    public async Task Agent_read_names_the_repository_its_source_shows_so_a_report_of_another_one_can_be_told(string source, string expected)
    {
        Answer("/v0/agents/bc-1", 200, new JsonObject { ["id"] = "bc-1", ["status"] = "FINISHED", ["source"] = new JsonObject { ["repository"] = source } }.ToJsonString());

        var result = await provider.GetAgentAsync("bc-1", CancellationToken.None);

        Assert.Equal(expected, result.Value!.Repository);
    }

    [Theory]
    [InlineData("[]")]
    [InlineData("""{"id":["bc-1"],"status":"RUNNING"}""")]
    public async Task Agent_read_of_another_shape_is_a_failed_read_not_an_exception(string body)
    {
        Answer("/v0/agents/bc-1", 200, body);

        var result = await provider.GetAgentAsync("bc-1", CancellationToken.None);

        Assert.Equal(FailureTypes.InvalidResponse, result.Failure!.FailureType);
    }

    [Theory]
    [InlineData("""{"agents":[{"id":12345,"status":"RUNNING","source":{"repository":"https://github.com/acme/shop"},"target":{"branchName":"fix-abc123"}}]}""")]
    [InlineData("""{"agents":[{"id":"bc:1","status":"RUNNING","source":{"repository":"https://github.com/acme/shop"},"target":{"branchName":"fix-abc123"}}]}""")]
    [InlineData("""{"agents":[{"status":"RUNNING","source":{"repository":"https://github.com/acme/shop"},"target":{"branchName":"fix-abc123"}}]}""")]
    public async Task listed_agent_on_our_branch_that_cannot_be_read_is_an_unknown_outcome_not_not_found(string body)
    {
        // The list shows an agent on the launch's own branch, in a shape we cannot read (its id): it may well be ours,
        // so "none" would launch a second agent on the repository.
        Answer("/v0/agents", 200, body);
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", null, CancellationToken.None);

        Assert.False(result.IsSuccess, $"answered success with agent {result.Value?.Id ?? "null"} (\"not found\")");
        Assert.True(result.Failure!.OutcomeUnknown);
    }

    [Theory]
    [InlineData("2")]
    [InlineData("""{"page":"2"}""")]
    [InlineData("\"\\ud800\"")]
    public async Task A_next_cursor_that_cannot_be_read_is_an_unknown_outcome_not_the_last_page(string nextCursor)
    {
        // Ours may be on the next page: taking the page for the last one would answer "none" and launch it again.
        Answer("/v0/agents", 200, """{"agents":[{"id":"bc-2","status":"RUNNING","source":{"repository":"https://github.com/acme/shop"},"target":{"branchName":"other"}}],"nextCursor":""" + nextCursor + "}");
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", null, CancellationToken.None);

        Assert.False(result.IsSuccess, $"answered success with agent {result.Value?.Id ?? "null"} (\"not found\")");
        Assert.Equal(FailureTypes.InvalidResponse, result.Failure!.FailureType);
        Assert.True(result.Failure.OutcomeUnknown);
    }

    [Theory]
    [InlineData("null")]
    [InlineData("""{"branchName":12}""")]
    [InlineData("""{"branchName":"\ud800"}""")]
    [InlineData("""{"url":"https://cursor.com/agents?id=bc-9"}""")]
    public async Task An_agent_of_the_repository_whose_branch_cannot_be_read_makes_the_lookup_incomplete_unless_it_is_older_than_the_launch(string target)
    {
        var firstSent = new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero);
        Answer("/v0/agents", 200, $$$"""
            {"agents":[
              {"id":"bc-9","status":"RUNNING","createdAt":"2026-11-24T10:00:02Z","source":{"repository":"https://github.com/acme/shop"},"target":{{{target}}}},
              {"id":"bc-8","status":"RUNNING","createdAt":"2026-11-24T10:00:03Z","source":{"repository":"https://github.com/acme/web"},"target":{{{target}}}}]}
            """);
        RepositoryName.TryParse("acme/shop", out var repository);

        var sinceItsLaunch = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", firstSent, CancellationToken.None);
        var olderThanTheLaunch = await provider.FindAgentByBranchAsync(repository.Value, "fix-abc123", firstSent.AddHours(1), CancellationToken.None);
        RepositoryName.TryParse("acme/api", out var otherRepository);
        var elsewhere = await provider.FindAgentByBranchAsync(otherRepository!.Value, "fix-abc123", firstSent, CancellationToken.None);

        // It may be ours (the branch is how ours is told apart): "none" would launch a second agent beside it.
        Assert.Equal(FailureTypes.ReconcileIncomplete, sinceItsLaunch.Failure?.FailureType);
        Assert.True(sinceItsLaunch.Failure!.OutcomeUnknown);
        // Looked up again later: a lookup that gives up would fail the launch for good, though its agent may be running.
        Assert.True(sinceItsLaunch.Failure.Retryable);
        Assert.True(olderThanTheLaunch.IsSuccess);
        Assert.Null(olderThanTheLaunch.Value);
        Assert.True(elsewhere.IsSuccess);
        Assert.Null(elsewhere.Value);
    }

    [Fact]
    public async Task A_providers_error_message_is_logged_on_one_line_and_bounded_so_it_cannot_forge_log_lines()
    {
        var logger = new FakeLogger<CursorAgentsProvider>();
        var logging = new CursorAgentsProvider(new TestTransport(http), TimeProvider.System, logger);
        Answer("/v0/agents", 400, $$$"""{"error":{"message":"bad request\r\ninfo: HandoffDapr.Core.Handoff.HandoffEngine[1006] Run 1: found agent bc-9\u0000{{{new string('x', 300)}}}"}}""");

        await logging.LaunchAsync(Launch(), CancellationToken.None);

        var logged = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "ProviderErrorAnswer");
        var message = logged.StructuredState!.Single(pair => pair.Key == "ProviderMessage").Value!;
        Assert.DoesNotContain(message, char.IsControl);
        Assert.StartsWith("bad request??info:", message);
        Assert.Equal(201, message.Length);
        Assert.EndsWith("x…", message);
    }

    /// <summary>
    /// A 400 that echoes what it was sent would put the prompt (a run's root cause, its customer's data) or a person's
    /// follow-up in the log, which never holds them: a message quoting one is withheld, its quote compared as the
    /// provider read it, unescaped from the JSON sent.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_providers_error_message_quoting_the_prompt_or_a_follow_up_is_withheld_from_the_log(bool launch)
    {
        var logger = new FakeLogger<CursorAgentsProvider>();
        var logging = new CursorAgentsProvider(new TestTransport(http), TimeProvider.System, logger);
        // Each of " < > ' & + and the line break is escaped in the JSON sent.
        const string Sent = "Root cause: \"OrderService\" reads <customer> jane@example.com's card & 4242\nbefore the lock's taken; retry \"it\" + 'soon'.";
        var quoted = Sent[8..80];
        Answer(launch ? "/v0/agents" : "/v0/agents/bc-1/followup", 400, JsonSerializer.Serialize(new { error = new { message = "Invalid text: " + quoted } }));

        if (launch)
        {
            await logging.LaunchAsync(Launch(prompt: Sent), CancellationToken.None);
        }
        else
        {
            await logging.AddFollowupAsync("bc-1", Sent, CancellationToken.None);
        }

        var logged = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "ProviderErrorAnswer");
        Assert.Equal("(withheld: it quotes the request)", logged.StructuredState!.Single(pair => pair.Key == "ProviderMessage").Value);
        Assert.DoesNotContain(logger.Collector.GetSnapshot(), record => record.Message.Contains("jane@example.com", StringComparison.Ordinal));
    }

    /// <summary>
    /// A message sharing only a few words with the prompt (its repository, a field's name) is the provider's own and is
    /// logged: only a quote of some length is withheld.
    /// </summary>
    [Fact]
    public async Task A_providers_error_message_sharing_only_a_few_words_with_the_prompt_is_logged()
    {
        var logger = new FakeLogger<CursorAgentsProvider>();
        var logging = new CursorAgentsProvider(new TestTransport(http), TimeProvider.System, logger);
        const string Prompt = "Fix the failing checkout in acme/shop: the cart total is computed before the discount is applied.";
        // The longest run both hold, " acme/shop: the cart total ", is 27 characters.
        const string Message = "Cannot create an agent for acme/shop: the cart total exceeds what a branch protection rule allows";
        Answer("/v0/agents", 400, JsonSerializer.Serialize(new { error = new { message = Message } }));

        await logging.LaunchAsync(Launch(prompt: Prompt), CancellationToken.None);

        var logged = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "ProviderErrorAnswer");
        Assert.Equal(Message, logged.StructuredState!.Single(pair => pair.Key == "ProviderMessage").Value);
    }

    /// <summary>Cursor's error bodies vary; the runbook's ProviderErrorAnswer line carries the provider's own message whichever it is.</summary>
    [Theory]
    [InlineData("""{"error":{"message":"Repository not found","error":"other","code":"other"}}""")]
    [InlineData("""{"error":{"error":"Repository not found","code":"other"}}""")]
    [InlineData("""{"error":{"code":"Repository not found"}}""")]
    [InlineData("""{"message":"Repository not found","error":"other"}""")]
    [InlineData("""{"error":"Repository not found"}""")]
    public async Task Cursors_error_message_is_logged_with_the_provider_and_call_whichever_shape_it_comes_in(string body)
    {
        var logger = new FakeLogger<CursorAgentsProvider>();
        var logging = new CursorAgentsProvider(new TestTransport(http), TimeProvider.System, logger);
        Answer("/v0/agents", 400, body);

        await logging.LaunchAsync(Launch(), CancellationToken.None);

        var logged = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "ProviderErrorAnswer");
        Assert.Equal(("Cursor", "launch", "Repository not found"),
            (logged.GetStructuredStateValue("Provider"), logged.GetStructuredStateValue("Operation"), logged.GetStructuredStateValue("ProviderMessage")));
    }

    /// <summary>The runbook's ProviderMalformedAnswer and ProviderListExhausted lines, naming the provider and the call.</summary>
    [Theory]
    [InlineData("launch")]
    [InlineData("get")]
    [InlineData("list")]
    public async Task An_answer_of_another_shape_is_logged_as_malformed_naming_the_call(string operation)
    {
        var logger = new FakeLogger<CursorAgentsProvider>();
        var logging = new CursorAgentsProvider(new TestTransport(http), TimeProvider.System, logger);
        Answer(operation == "get" ? "/v0/agents/bc-1" : "/v0/agents", 200, "[1]");
        RepositoryName.TryParse("acme/shop", out var repository);

        _ = operation switch
        {
            "launch" => (await logging.LaunchAsync(Launch(), CancellationToken.None)).Failure,
            "get" => (await logging.GetAgentAsync("bc-1", CancellationToken.None)).Failure,
            _ => (await logging.FindAgentByBranchAsync(repository!.Value, "fix-abc123", null, CancellationToken.None)).Failure,
        };

        var logged = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "ProviderMalformedAnswer");
        Assert.Equal(LogLevel.Warning, logged.Level);
        Assert.Equal(("Cursor", operation, "200"),
            (logged.GetStructuredStateValue("Provider"), logged.GetStructuredStateValue("Operation"), logged.GetStructuredStateValue("StatusCode")));
    }

    /// <summary>
    /// Each way a page of the agent list can be unusable, and an error answer to it, is logged naming the list: the
    /// runbook tells a lookup's lines from a launch's or a read's by it.
    /// </summary>
    [Theory]
    [InlineData(200, """{"agents":[1]}""", "ProviderMalformedAnswer")]
    [InlineData(200, """{"agents":[{"id":12345,"target":{"branchName":"fix-abc123"}}]}""", "ProviderMalformedAnswer")]
    [InlineData(200, """{"agents":[],"nextCursor":2}""", "ProviderMalformedAnswer")]
    [InlineData(200, """{"agents":[""", "ProviderMalformedAnswer")]
    [InlineData(503, """{"error":"busy"}""", "ProviderErrorAnswer")]
    public async Task A_list_page_that_cannot_be_used_is_logged_naming_the_list(int status, string body, string line)
    {
        var logger = new FakeLogger<CursorAgentsProvider>();
        var logging = new CursorAgentsProvider(new TestTransport(http), TimeProvider.System, logger);
        Answer("/v0/agents", status, body);
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await logging.FindAgentByBranchAsync(
            repository!.Value, "fix-abc123", null, CancellationToken.None);

        Assert.False(result.IsSuccess);
        var logged = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == line);
        Assert.Equal(("Cursor", "list"),
            (logged.GetStructuredStateValue("Provider"), logged.GetStructuredStateValue("Operation")));
    }

    /// <summary>
    /// An error body that is JSON without a message says so; one that is not JSON says it could not be read.
    /// </summary>
    [Theory]
    [InlineData("\"maintenance\"", "(no message)")]
    [InlineData("[1]", "(no message)")]
    [InlineData("<html>502 Bad Gateway</html>", "(unreadable body)")]
    public async Task Cursors_error_answer_without_a_message_to_read_is_logged_saying_which(
        string body, string expected)
    {
        var logger = new FakeLogger<CursorAgentsProvider>();
        var logging = new CursorAgentsProvider(new TestTransport(http), TimeProvider.System, logger);
        Answer("/v0/agents", 502, body);

        await logging.LaunchAsync(Launch(), CancellationToken.None);

        var logged = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "ProviderErrorAnswer");
        Assert.Equal(expected, logged.GetStructuredStateValue("ProviderMessage"));
    }

    [Fact]
    public async Task Agent_list_that_never_ends_is_logged_as_exhausted_after_its_pages()
    {
        var logger = new FakeLogger<CursorAgentsProvider>();
        var logging = new CursorAgentsProvider(new TestTransport(http), TimeProvider.System, logger);
        cursor.Given(Request.Create().WithPath("/v0/agents").UsingGet())
            .RespondWith(Response.Create().WithBody("""{"agents":[],"nextCursor":"more"}"""));
        RepositoryName.TryParse("acme/shop", out var repository);

        await logging.FindAgentByBranchAsync(repository!.Value, "fix-abc123", null, CancellationToken.None);

        var logged = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "ProviderListExhausted");
        Assert.Equal(("Cursor", "20"), (logged.GetStructuredStateValue("Provider"), logged.GetStructuredStateValue("Pages")));
    }

    [Fact]
    public async Task Agent_read_carries_its_name_branch_pull_request_and_summary()
    {
        Answer("/v0/agents/bc-1", 200, """{"id":"bc-1","name":"Fix the pool","status":"FINISHED","summary":"Bounded the pool","target":{"branchName":"fix-abc123","prUrl":"https://github.com/acme/shop/pull/8","url":"https://cursor.com/agents?id=bc-1"}}""");

        var read = await provider.GetAgentAsync("bc-1", CancellationToken.None);

        Assert.True(read.IsSuccess, read.Failure?.FailureType);
        Assert.Equal(("Fix the pool", "fix-abc123", "https://github.com/acme/shop/pull/8", "Bounded the pool"),
            (read.Value!.Name, read.Value.BranchName, read.Value.PrUrl, read.Value.Summary));
    }

    /// <summary>A bidi override in the provider's message showed the rest of the log line reordered; a zero-width character hid text.</summary>
    [Fact]
    public async Task A_providers_error_message_is_logged_without_bidi_or_zero_width_characters()
    {
        var logger = new FakeLogger<CursorAgentsProvider>();
        var logging = new CursorAgentsProvider(new TestTransport(http), TimeProvider.System, logger);
        Answer("/v0/agents", 400, """{"error":{"message":"bad \u202erequest\u200b for \u2066acme\u2069"}}""");

        await logging.LaunchAsync(Launch(), CancellationToken.None);

        var logged = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "ProviderErrorAnswer");
        Assert.Equal("bad ?request? for ?acme?", logged.StructuredState!.Single(pair => pair.Key == "ProviderMessage").Value);
    }

    /// <summary>
    /// Tag characters (U+E0000-U+E007F) are format characters outside the BMP, invisible in most fonts: checked by UTF-16
    /// unit, each half of the pair is a surrogate, not a format character, so they would hide text in the line.
    /// </summary>
    [Fact]
    public async Task A_providers_error_message_is_logged_without_invisible_tag_characters()
    {
        var logger = new FakeLogger<CursorAgentsProvider>();
        var logging = new CursorAgentsProvider(new TestTransport(http), TimeProvider.System, logger);
        Answer("/v0/agents", 400, """{"error":{"message":"bad\udb40\udc41\udb40\udc42 request"}}""");

        await logging.LaunchAsync(Launch(), CancellationToken.None);

        var logged = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == "ProviderErrorAnswer");
        Assert.Equal("bad?? request", logged.StructuredState!.Single(pair => pair.Key == "ProviderMessage").Value);
    }

    [Theory]
    // No creation time: it may be ours whenever the launch was sent.
    [InlineData(null, "2026-11-24T10:00:00Z")]
    // The launch's first attempt is not known (stored before it was kept): any such agent may be ours.
    [InlineData("2026-11-24T09:00:00Z", null)]
    // Stamped a little before our first attempt: another clock than ours, within the slack.
    [InlineData("2026-11-24T09:58:00Z", "2026-11-24T10:00:00Z")]
    // Stamped exactly the slack before it: still within it.
    [InlineData("2026-11-24T09:55:00Z", "2026-11-24T10:00:00Z")]
    // A creation time that cannot be read is no creation time, not one long ago.
    [InlineData("yesterday", "2026-11-24T10:00:00Z")]
    public async Task An_agent_of_the_repository_without_a_readable_branch_that_cannot_be_ruled_out_by_its_age_makes_the_lookup_incomplete(string? createdAt, string? firstSent)
    {
        var created = createdAt is null ? "" : $$""","createdAt":"{{createdAt}}" """;
        Answer("/v0/agents", 200, $$$"""{"agents":[{"id":"bc-9","status":"RUNNING"{{{created}}},"source":{"repository":"https://github.com/acme/shop"},"target":null}]}""");
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(
            repository!.Value, "fix-abc123", firstSent is null ? null : DateTimeOffset.Parse(firstSent, System.Globalization.CultureInfo.InvariantCulture), CancellationToken.None);

        // "None" would launch a second agent beside it, if it is ours.
        Assert.False(result.IsSuccess, $"answered success with agent {result.Value?.Id ?? "null"} (\"not found\")");
        Assert.Equal(FailureTypes.ReconcileIncomplete, result.Failure!.FailureType);
        Assert.True(result.Failure.OutcomeUnknown);
    }

    [Fact]
    public async Task Listed_agent_on_our_branch_without_a_source_is_found_not_passed_over()
    {
        // The list shows an agent on the launch's own branch but no source: the branch name carries the run and the
        // repository, so it is ours. Passed over as of another repository, "none" would launch a second agent beside it.
        Answer("/v0/agents", 200, """{"agents":[{"id":"bc-7","status":"RUNNING","target":{"branchName":"fix-abc123"}}]}""");
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", null, CancellationToken.None);

        Assert.True(result.IsSuccess, $"failed: {result.Failure?.FailureType}");
        Assert.Equal("bc-7", result.Value?.Id);
    }

    [Fact]
    public async Task Listed_agent_on_our_branch_in_another_letter_case_is_not_taken_for_ours()
    {
        // Branch names are compared as git compares them: FIX-abc123 is another branch, made by someone else. Taken for
        // ours, the engine would follow (and stop, or send follow-ups to) an agent the handoff never launched.
        Answer("/v0/agents", 200, """{"agents":[{"id":"bc-5","status":"RUNNING","source":{"repository":"https://github.com/acme/shop"},"target":{"branchName":"FIX-abc123"}}]}""");
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", null, CancellationToken.None);

        Assert.True(result.IsSuccess, $"failed: {result.Failure?.FailureType}");
        Assert.Null(result.Value);
    }

    [Theory]
    [InlineData(",\"nextCursor\":null")]
    [InlineData(",\"nextCursor\":\"\"")]
    public async Task A_next_cursor_that_is_null_or_empty_marks_the_last_page(string nextCursor)
    {
        // The end of the list: one call, and "none" when the branch is not on it. Read as one more page (or as an
        // unreadable cursor), every lookup of a lost launch would stay unknown and the launch could never be settled.
        Answer("/v0/agents", 200, """{"agents":[{"id":"bc-2","status":"RUNNING","source":{"repository":"https://github.com/acme/shop"},"target":{"branchName":"other"}}]""" + nextCursor + "}");
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", null, CancellationToken.None);

        Assert.True(result.IsSuccess, $"failed: {result.Failure?.FailureType}");
        Assert.Null(result.Value);
        Assert.Single(cursor.LogEntries);
    }

    [Theory]
    [InlineData("{}")]
    [InlineData("""{"repository":null}""")]
    [InlineData("""{"repository":12}""")]
    [InlineData("\"https://github.com/acme/shop\"")]
    public async Task Listed_agent_on_our_branch_whose_source_names_no_readable_repository_is_found_not_passed_over(string source)
    {
        // As an agent without a source: nothing rules it out, and the branch name carries the run and the repository.
        // Passed over as of another repository, "none" would launch a second agent beside it.
        Answer("/v0/agents", 200, $$$"""{"agents":[{"id":"bc-7","status":"RUNNING","source":{{{source}}},"target":{"branchName":"fix-abc123"}}]}""");
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", null, CancellationToken.None);

        Assert.True(result.IsSuccess, $"failed: {result.Failure?.FailureType}");
        Assert.Equal("bc-7", result.Value?.Id);
    }

    [Theory]
    [InlineData("finished", ProviderAgentStatus.Finished)]
    [InlineData("Running", ProviderAgentStatus.Running)]
    [InlineData("expired", ProviderAgentStatus.Expired)]
    [InlineData("ERROR", ProviderAgentStatus.Error)]
    [InlineData("stopped", ProviderAgentStatus.Stopped)]
    [InlineData("Creating", ProviderAgentStatus.Creating)]
    public async Task Agent_status_is_read_in_any_letter_case(string status, ProviderAgentStatus expected)
    {
        // An agent read as Unknown is never seen to end: a finished one would be polled until it timed out and was stopped.
        Answer("/v0/agents/bc-1", 200, $$"""{"id":"bc-1","status":"{{status}}"}""");

        var result = await provider.GetAgentAsync("bc-1", CancellationToken.None);

        Assert.Equal(expected, result.Value!.Status);
    }

    private void Answer(string path, int status, string body) =>
        cursor.Given(Request.Create().WithPath(path)).RespondWith(Response.Create().WithStatusCode(status).WithHeader("Content-Type", "application/json").WithBody(body));

    private static AgentLaunchRequest Launch(string? baseRef = "main", AgentWebhook? webhook = null, string prompt = "Fix \"it\"\n<now>")
    {
        RepositoryName.TryParse("acme/shop", out var repository);
        return new AgentLaunchRequest(prompt, repository!.Value, baseRef, "fix-abc123", AutoCreatePr: true, webhook);
    }

    public void Dispose()
    {
        http.Dispose();
        cursor.Stop();
    }

    /// <summary>A plain HttpClient transport, as the service's is without its resilience handlers.</summary>
    private sealed class TestTransport(HttpClient client) : IProviderTransport
    {
        public async Task<ProviderResponse> SendAsync(ProviderRequest request, CancellationToken cancellationToken)
        {
            using var message = new HttpRequestMessage(request.Method, request.Path);
            if (!request.Body.IsEmpty)
            {
                message.Content = new ReadOnlyMemoryContent(request.Body);
                message.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
            }

            try
            {
                using var response = await client.SendAsync(message, cancellationToken);
                return new ProviderResponse((int)response.StatusCode, await response.Content.ReadAsByteArrayAsync(cancellationToken),
                    response.Headers.TryGetValues("Retry-After", out var values) ? values.First() : null);
            }
            catch (TaskCanceledException exception) when (!cancellationToken.IsCancellationRequested)
            {
                throw new ProviderTransportException(TransportFailureKind.Timeout, requestSent: true, exception);
            }
            catch (HttpRequestException exception)
            {
                throw new ProviderTransportException(TransportFailureKind.Network, requestSent: true, exception);
            }
        }
    }
}
