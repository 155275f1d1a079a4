using System.Net;
using System.Text.Json.Nodes;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Providers.Copilot;
using HandoffDapr.Core.Repositories;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.Tests.Infrastructure;
using HandoffDapr.Service.Transport;
using Microsoft.Extensions.Logging.Abstractions;

namespace HandoffDapr.Service.Tests.Copilot;

/// <summary>The Copilot client against a WireMock.Net GitHub, through the same HTTP transport the service uses.</summary>
public sealed class CopilotProviderTests : IDisposable
{
    private const string Token = "ghp-test-token-0123";
    private readonly FakeCopilot github = new();
    private readonly ProviderHttpClients clients = new(TimeProvider.System);
    private readonly CopilotAgentTasksProvider provider;

    public CopilotProviderTests()
    {
        var client = clients.Create(new IntegrationOptions { Provider = CopilotAgentTasksProvider.Name, BaseUrl = github.Url, ApiKey = Token, RequestTimeout = TimeSpan.FromSeconds(20) });
        provider = new CopilotAgentTasksProvider(new HttpProviderTransport(client), TimeProvider.System, NullLogger<CopilotAgentTasksProvider>.Instance);
    }

    [Fact]
    public async Task Launch_posts_the_prompt_with_its_handoff_reference_base_branch_and_pull_request_flag_with_github_headers()
    {
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.LaunchAsync(new AgentLaunchRequest("Fix it", repository!.Value, "main", "fix-abc123", AutoCreatePr: true, Webhook: null), CancellationToken.None);

        Assert.True(result.IsSuccess);
        Assert.Equal(ProviderAgentStatus.Creating, result.Value!.Status);
        var request = Assert.Single(github.Server.LogEntries).RequestMessage;
        Assert.Equal("/agents/repos/acme/shop/tasks", request.Path);
        Assert.Equal($"Bearer {Token}", request.Headers!["Authorization"].Single());
        Assert.Equal("application/vnd.github+json", request.Headers["Accept"].Single());
        Assert.Equal(CopilotAgentTasksProvider.ApiVersion, request.Headers["X-GitHub-Api-Version"].Single());
        Assert.StartsWith("HandoffDapr", request.Headers["User-Agent"].Single());
        var body = JsonNode.Parse(request.Body!)!.AsObject();
        // GitHub's create call takes no branch name (it names the branch): our branch name rides in the prompt instead.
        Assert.Equal("Fix it\n\nHandoff reference: fix-abc123", body["prompt"]!.GetValue<string>());
        Assert.Equal("main", body["base_ref"]!.GetValue<string>());
        Assert.False(body.ContainsKey("head_ref"));
        Assert.True(body["create_pull_request"]!.GetValue<bool>());
        Assert.False(body.ContainsKey("model"));
    }

    [Fact]
    public async Task Launch_without_automatic_pull_request_asks_github_for_none()
    {
        var result = await provider.LaunchAsync(Request() with { AutoCreatePr = false }, CancellationToken.None);

        Assert.True(result.IsSuccess);
        var body = JsonNode.Parse(Assert.Single(github.Server.LogEntries).RequestMessage.Body!)!.AsObject();
        Assert.False(body["create_pull_request"]!.GetValue<bool>());
    }

    [Fact]
    public async Task Every_request_of_a_lookup_and_its_pull_request_reads_carries_githubs_media_type_and_api_version()
    {
        // GitHub answers a request without X-GitHub-Api-Version as its oldest version: reads by id, list pages and the pull
        // request lookups (GraphQL and REST) must name the version the launch used, as the launch does.
        var byNodeId = await Launch("fix-abc124");
        github.SetState(byNodeId, "completed", "https://github.com/acme/shop/pull/9");
        var byRestId = await Launch("fix-abc125");
        github.SetState(byRestId, "completed", "https://github.com/acme/shop/pull/10", withGlobalId: false);

        var found = await provider.FindAgentByBranchAsync(Request().Repository, "fix-abc124", null, CancellationToken.None);
        var read = await provider.GetAgentAsync(byRestId, CancellationToken.None);

        Assert.Equal("https://github.com/acme/shop/pull/9", found.Value!.PrUrl);
        Assert.Equal("https://github.com/acme/shop/pull/10", read.Value!.PrUrl);
        var requests = github.Server.LogEntries.Select(entry => entry.RequestMessage).ToList();
        Assert.Superset(
            new HashSet<string> { "/agents/repos/acme/shop/tasks", "/agents/tasks/" + byNodeId, "/graphql", "/repos/acme/shop/pulls" },
            requests.Select(request => request.Path).ToHashSet());
        Assert.All(requests, request =>
        {
            Assert.Equal("application/vnd.github+json", request.Headers!["Accept"].Single());
            Assert.Equal(CopilotAgentTasksProvider.ApiVersion, request.Headers["X-GitHub-Api-Version"].Single());
            Assert.Equal($"Bearer {Token}", request.Headers["Authorization"].Single());
        });
    }

    [Fact]
    public async Task Pull_request_is_asked_of_graphql_by_its_node_id_for_a_pull_requests_url()
    {
        var id = await Launch();
        github.SetState(id, "completed", "https://github.com/acme/shop/pull/7");

        await provider.GetAgentAsync(id, CancellationToken.None);

        var graphQl = JsonNode.Parse(github.Server.LogEntries.Single(entry => entry.RequestMessage.Path == "/graphql").RequestMessage.Body!)!;
        Assert.Equal("PR_kwDO" + id, graphQl["variables"]!["id"]!.GetValue<string>());
        // A fragment on another type (an Issue's, say) would give an empty node for a pull request: no URL, ever.
        var query = graphQl["query"]!.GetValue<string>();
        Assert.Contains("node(id: $id)", query, StringComparison.Ordinal);
        Assert.Contains("... on PullRequest { url }", query, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("queued", ProviderAgentStatus.Creating)]
    [InlineData("in_progress", ProviderAgentStatus.Running)]
    [InlineData("waiting_for_user", ProviderAgentStatus.Running)]
    [InlineData("idle", ProviderAgentStatus.Running)]
    [InlineData("completed", ProviderAgentStatus.Finished)]
    [InlineData("failed", ProviderAgentStatus.Error)]
    [InlineData("timed_out", ProviderAgentStatus.Expired)]
    [InlineData("cancelled", ProviderAgentStatus.Stopped)]
    [InlineData("COMPLETED", ProviderAgentStatus.Finished)] // read whatever its case
    [InlineData("something_new", ProviderAgentStatus.Unknown)]
    public async Task Task_state_maps_onto_the_agent_status(string state, ProviderAgentStatus expected)
    {
        var id = await Launch();
        github.SetState(id, state);

        var read = await provider.GetAgentAsync(id, CancellationToken.None);

        Assert.Equal(expected, read.Value!.Status);
    }

    [Fact]
    public async Task Pull_request_is_found_in_the_task_artifacts()
    {
        var id = await Launch();
        github.SetState(id, "completed", "https://github.com/acme/shop/pull/7");

        var read = await provider.GetAgentAsync(id, CancellationToken.None);

        // The artifact names the pull request by its node id only; GraphQL's node gives its URL.
        Assert.Equal("https://github.com/acme/shop/pull/7", read.Value!.PrUrl);
        Assert.Equal(["/agents/tasks/" + id, "/graphql"], github.Server.LogEntries.TakeLast(2).Select(entry => entry.RequestMessage.Path));
    }

    [Fact]
    public async Task Pull_request_named_by_its_id_alone_is_found_among_the_pull_requests_from_the_tasks_branch()
    {
        var id = await Launch();
        // GitHub documents the artifact's global_id as optional: its examples carry only {"id": 42}.
        github.SetState(id, "completed", "https://github.com/acme/shop/pull/8", withGlobalId: false);

        var read = await provider.GetAgentAsync(id, CancellationToken.None);

        Assert.Equal("https://github.com/acme/shop/pull/8", read.Value!.PrUrl);
        var lookup = github.Server.LogEntries.Last().RequestMessage;
        Assert.Equal("/repos/acme/shop/pulls", lookup.Path);
        Assert.Equal($"acme:{read.Value.BranchName}", lookup.Query!["head"].Single());
        Assert.Equal(0, github.GraphQlRequests);
    }

    [Fact]
    public async Task Pull_request_named_by_its_id_alone_is_found_though_merged_before_the_task_was_read()
    {
        // GitHub lists only open pull requests unless asked for every state: one merged (or closed) between the task's
        // end and the poll that reads it would be missing, and the finished task recorded without its pull request.
        var id = await Launch();
        github.SetState(id, "completed", "https://github.com/acme/shop/pull/8", withGlobalId: false);
        github.MergePullRequest(id);

        var read = await provider.GetAgentAsync(id, CancellationToken.None);

        Assert.Equal("https://github.com/acme/shop/pull/8", read.Value!.PrUrl);
    }

    [Fact]
    public async Task Pull_request_lookup_that_fails_leaves_the_task_unread_rather_than_finished_without_its_pull_request()
    {
        var id = await Launch();
        github.SetState(id, "completed", "https://github.com/acme/shop/pull/7");
        github.Server.Given(WireMock.RequestBuilders.Request.Create().WithPath("/graphql").UsingPost()).AtPriority(-1)
            .RespondWith(WireMock.ResponseBuilders.Response.Create().WithStatusCode(502));

        var read = await provider.GetAgentAsync(id, CancellationToken.None);

        Assert.False(read.IsSuccess);
        Assert.True(read.Failure!.Retryable);
    }

    [Fact]
    public async Task Lost_launch_is_found_by_the_handoff_reference_in_its_session_prompt_on_a_branch_github_named()
    {
        await Launch("other-branch");
        var id = await Launch("fix-abc124");
        await Launch("newer-branch");
        RepositoryName.TryParse("acme/shop", out var repository);

        var found = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc124", null, CancellationToken.None);

        Assert.Equal(id, found.Value!.Id);
        Assert.Contains(github.Server.LogEntries, entry => entry.RequestMessage.Path == "/agents/tasks/" + id);
    }

    /// <summary>
    /// GitHub lists a repository's tasks by <c>updated_at</c> unless asked otherwise
    /// (docs.github.com/en/rest/agent-tasks/agent-tasks, "List tasks for repository"). An older task updated after ours
    /// was created comes first in that order; a lookup that stops at the first task older than the launch would stop there.
    /// </summary>
    [Fact]
    public async Task Lost_launch_is_found_though_an_older_task_was_updated_after_it()
    {
        var older = await Launch("other-branch");
        github.Tasks[older]["created_at"] = DateTimeOffset.UtcNow.AddHours(-1).ToString("O");
        var id = await Launch("fix-abc124");
        var firstSentAt = DateTimeOffset.UtcNow;
        await Task.Delay(20);
        github.SetState(older, "in_progress");

        var found = await provider.FindAgentByBranchAsync(Request().Repository, "fix-abc124", firstSentAt, CancellationToken.None);

        Assert.Equal(id, found.Value!.Id);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Lost_launch_found_finished_comes_with_its_pull_request(bool withGlobalId)
    {
        // A lost launch adopted as finished is not read again: its pull request, named in the artifact by id only, is
        // looked up as a poll's read would.
        var id = await Launch("fix-abc124");
        github.SetState(id, "completed", "https://github.com/acme/shop/pull/9", withGlobalId);

        var found = await provider.FindAgentByBranchAsync(Request().Repository, "fix-abc124", null, CancellationToken.None);

        Assert.Equal(id, found.Value!.Id);
        Assert.Equal(ProviderAgentStatus.Finished, found.Value.Status);
        Assert.Equal("https://github.com/acme/shop/pull/9", found.Value.PrUrl);
    }

    [Fact]
    public async Task Lost_launch_found_finished_whose_pull_request_lookup_fails_is_reported_running_to_be_read_again()
    {
        var id = await Launch("fix-abc124");
        github.SetState(id, "completed", "https://github.com/acme/shop/pull/9");
        github.Server.Given(WireMock.RequestBuilders.Request.Create().WithPath("/graphql").UsingPost()).AtPriority(-1)
            .RespondWith(WireMock.ResponseBuilders.Response.Create().WithStatusCode(502));

        var found = await provider.FindAgentByBranchAsync(Request().Repository, "fix-abc124", null, CancellationToken.None);

        // Adopted finished without it, the pull request would never be learnt: the poll reads a running agent again.
        Assert.Equal(id, found.Value!.Id);
        Assert.Equal(ProviderAgentStatus.Running, found.Value.Status);
        Assert.Null(found.Value.PrUrl);
    }

    [Fact]
    public async Task Task_the_list_shows_on_our_branch_is_ours_without_a_read()
    {
        // Should GitHub ever keep the branch name a request asks for (its newer docs take a head_ref for existing branches).
        github.ListAnswer = () => WireMockMessages.Json(200, """{"tasks":[{"id":"task-9","state":"in_progress","head_ref":"fix-abc123","created_at":"2026-01-01T00:00:00Z"}]}""");
        RepositoryName.TryParse("acme/shop", out var repository);

        var found = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", null, CancellationToken.None);

        Assert.Equal("task-9", found.Value!.Id);
        Assert.DoesNotContain(github.Server.LogEntries, entry => entry.RequestMessage.Path.StartsWith("/agents/tasks/", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Lookup_with_more_recent_tasks_than_it_reads_one_by_one_is_incomplete_not_not_found()
    {
        for (var i = 0; i < 51; i++)
        {
            await Launch($"other-{i}");
        }

        RepositoryName.TryParse("acme/shop", out var repository);
        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-missing", null, CancellationToken.None);

        // The 50 newest are read and none is ours; the 51st, unread, could be.
        Assert.Equal(FailureTypes.ReconcileIncomplete, result.Failure!.FailureType);
        Assert.True(result.Failure.OutcomeUnknown);
        Assert.Equal(50, github.Server.LogEntries.Count(entry => entry.RequestMessage.Path.StartsWith("/agents/tasks/", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task Task_list_longer_than_we_read_leaves_the_outcome_unknown_instead_of_not_found()
    {
        // Every page is full of other branches: the task could be on a page we did not read.
        var page = new JsonArray(Enumerable.Range(0, 100).Select(i => (JsonNode)new JsonObject { ["id"] = $"task-{i}", ["state"] = "queued", ["head_ref"] = $"other-{i}" }).ToArray());
        github.ListAnswer = () => WireMockMessages.Json(200, new JsonObject { ["tasks"] = page.DeepClone() }.ToJsonString());
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", null, CancellationToken.None);

        Assert.Equal(FailureTypes.ReconcileIncomplete, result.Failure!.FailureType);
        Assert.True(result.Failure.OutcomeUnknown);
        Assert.Equal(10, github.Server.LogEntries.Count());
    }

    [Fact]
    public async Task Forbidden_with_no_requests_remaining_is_a_rate_limit_whatever_its_message_says()
    {
        // GitHub documents the header as the sign of its primary rate limit; the message wording is not specified.
        var reset = DateTimeOffset.UtcNow.AddMinutes(10).ToUnixTimeSeconds();
        github.NextLaunchAnswer = () => WithHeaders(WireMockMessages.Json(403, """{"message":"Forbidden"}"""), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", reset.ToString()));

        var result = await provider.LaunchAsync(Request(), CancellationToken.None);

        Assert.Equal(FailureTypes.RateLimited, result.Failure!.FailureType);
        Assert.True(result.Failure.Retryable);
        Assert.InRange(result.Failure.RetryAfter!.Value, TimeSpan.FromMinutes(9), TimeSpan.FromMinutes(11));
    }

    [Theory]
    [InlineData(403, """{"message":"API rate limit exceeded for user ID 1."}""")]
    [InlineData(429, """{"message":"You have exceeded a secondary rate limit."}""")]
    [InlineData(429, """{"message":"Too Many Requests"}""")] // a 429 is a rate limit whatever its wording
    public async Task Rate_limited_answer_waits_as_github_says_reset_time_else_at_least_a_minute(int status, string body)
    {
        var reset = DateTimeOffset.UtcNow.AddMinutes(20).ToUnixTimeSeconds();
        github.NextLaunchAnswer = () => WithHeaders(WireMockMessages.Json(status, body), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", reset.ToString()));
        var untilReset = await provider.LaunchAsync(Request(), CancellationToken.None);
        github.NextLaunchAnswer = () => WireMockMessages.Json(status, body);
        var bare = await provider.LaunchAsync(Request(), CancellationToken.None);

        Assert.Equal(FailureTypes.RateLimited, untilReset.Failure!.FailureType);
        Assert.InRange(untilReset.Failure.RetryAfter!.Value, TimeSpan.FromMinutes(19), TimeSpan.FromMinutes(21));
        Assert.Equal((FailureTypes.RateLimited, TimeSpan.FromMinutes(1)), (bare.Failure!.FailureType, bare.Failure.RetryAfter));
    }

    [Theory]
    [InlineData(10)] // a reset seconds away
    [InlineData(-3600)] // a reset already past (a clock behind GitHub's)
    public async Task Rate_limit_whose_reset_is_less_than_a_minute_away_still_waits_a_minute(int resetInSeconds)
    {
        // GitHub's rule: at least a minute. A wait of seconds (or none) would spend the launch's attempts on the same limit.
        var reset = DateTimeOffset.UtcNow.AddSeconds(resetInSeconds).ToUnixTimeSeconds();
        github.NextLaunchAnswer = () => WithHeaders(WireMockMessages.Json(403, """{"message":"Forbidden"}"""), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", reset.ToString()));

        var result = await provider.LaunchAsync(Request(), CancellationToken.None);

        Assert.Equal((FailureTypes.RateLimited, TimeSpan.FromMinutes(1)), (result.Failure!.FailureType, result.Failure.RetryAfter));
    }

    private static WireMock.ResponseMessage WithHeaders(WireMock.ResponseMessage response, params (string Name, string Value)[] headers)
    {
        foreach (var (name, value) in headers)
        {
            response.Headers![name] = new WireMock.Types.WireMockList<string>(value);
        }

        return response;
    }

    [Theory]
    [InlineData(401, """{"message":"Bad credentials"}""", FailureTypes.InvalidCredentials)]
    [InlineData(403, """{"message":"Copilot is not enabled for this user: no Copilot license"}""", FailureTypes.NoCopilotLicense)]
    [InlineData(402, """{"message":"Payment required"}""", FailureTypes.QuotaExceeded)]
    [InlineData(403, """{"message":"You have exceeded your premium request quota"}""", FailureTypes.QuotaExceeded)]
    [InlineData(429, """{"message":"You have exceeded your premium request quota"}""", FailureTypes.QuotaExceeded)]
    [InlineData(403, """{"message":"Copilot coding agent usage limit reached"}""", FailureTypes.QuotaExceeded)]
    [InlineData(403, """{"message":"Resource not accessible by personal access token"}""", FailureTypes.RepositoryAccess)]
    [InlineData(404, """{"message":"Not Found"}""", FailureTypes.RepositoryAccess)]
    [InlineData(422, """{"message":"Validation Failed"}""", FailureTypes.InvalidRequest)]
    [InlineData(503, """{"message":"unavailable"}""", FailureTypes.ProviderUnavailable)]
    public async Task Github_answers_map_to_failure_types(int status, string body, string expected)
    {
        github.NextLaunchAnswer = () => WireMockMessages.Json(status, body);

        var result = await provider.LaunchAsync(Request(), CancellationToken.None);

        Assert.Equal(expected, result.Failure!.FailureType);
        Assert.Equal(expected == FailureTypes.ProviderUnavailable, result.Failure.Retryable);
    }

    [Theory]
    [InlineData("not json")]
    [InlineData("""{"state":"queued"}""")]
    [InlineData("""{"id":"../etc","state":"queued"}""")]
    [InlineData("[]")]
    public async Task Malformed_answer_is_an_unknown_outcome(string body)
    {
        github.NextLaunchAnswer = () => WireMockMessages.Json(201, body);

        var result = await provider.LaunchAsync(Request(), CancellationToken.None);

        Assert.Equal(FailureTypes.InvalidResponse, result.Failure!.FailureType);
        Assert.True(result.Failure.OutcomeUnknown);
    }

    [Fact]
    public async Task Stop_and_followup_are_not_supported_and_call_nobody()
    {
        var stop = await provider.StopAsync("task-0001", CancellationToken.None);
        var followup = await provider.AddFollowupAsync("task-0001", "more", CancellationToken.None);

        Assert.Equal(FailureTypes.NotSupported, stop.Failure!.FailureType);
        Assert.Equal(FailureTypes.NotSupported, followup.Failure!.FailureType);
        Assert.Empty(github.Server.LogEntries);
    }

    [Theory]
    [InlineData("""{"data":null,"errors":[{"type":"FORBIDDEN","message":"Resource not accessible by personal access token"}]}""")]
    [InlineData("""{"data":{"node":null},"errors":[{"type":"NOT_FOUND","message":"Could not resolve to a node"}]}""")]
    [InlineData("""{"data":{"node":null}}""")]
    [InlineData("""{"data":{"node":{}}}""")]
    public async Task Pull_request_github_will_not_show_the_token_leaves_the_task_finished_without_it_not_unread(string graphQl)
    {
        // GraphQL answers errors with 200. Asking again would not change them; unread, the finished task would be timed
        // out as failed once its time-out passed. An id that names no pull request (`{}`: `... on PullRequest` selected
        // nothing) is as definite; it failed every read.
        var id = await Launch();
        github.SetState(id, "completed", "https://github.com/acme/shop/pull/7");
        github.Server.Given(WireMock.RequestBuilders.Request.Create().WithPath("/graphql").UsingPost()).AtPriority(-1)
            .RespondWith(WireMock.ResponseBuilders.Response.Create().WithStatusCode(200).WithHeader("Content-Type", "application/json").WithBody(graphQl));

        var read = await provider.GetAgentAsync(id, CancellationToken.None);

        Assert.True(read.IsSuccess, read.Failure?.FailureType);
        Assert.Equal(ProviderAgentStatus.Finished, read.Value!.Status);
        Assert.Null(read.Value.PrUrl);
    }

    [Theory]
    [InlineData(true, 403, """{"message":"Resource not accessible by personal access token"}""")]
    [InlineData(true, 404, """{"message":"Not Found"}""")]
    [InlineData(false, 403, """{"message":"Resource not accessible by personal access token"}""")]
    [InlineData(false, 404, """{"message":"Not Found"}""")]
    [InlineData(true, 401, """{"message":"Bad credentials"}""")]
    [InlineData(false, 422, """{"message":"Validation Failed"}""")]
    public async Task Pull_request_lookup_github_refuses_for_good_leaves_the_task_finished_without_it_not_unread(bool withGlobalId, int status, string body)
    {
        // GitHub says, with a 403 or 404, that the token may not see the pull request (a token without pull request
        // access), or refuses the lookup otherwise for good (a 401 for a token its task's read just took, a 422): asking
        // again would not change it, and unread, the finished task would be timed out as failed.
        var read = await ReadFinishedTaskWhosePullRequestLookupAnswers(withGlobalId, status, body);

        Assert.True(read.IsSuccess, read.Failure?.FailureType);
        Assert.Equal(ProviderAgentStatus.Finished, read.Value!.Status);
        Assert.Null(read.Value.PrUrl);
    }

    [Theory]
    [InlineData(true, 429)]
    [InlineData(false, 429)]
    [InlineData(false, 503)]
    public async Task Pull_request_lookup_rate_limited_or_unavailable_fails_the_finished_tasks_read_to_be_asked_again(bool withGlobalId, int status)
    {
        var read = await ReadFinishedTaskWhosePullRequestLookupAnswers(withGlobalId, status, """{"message":"Try again later"}""");

        Assert.False(read.IsSuccess);
        Assert.True(read.Failure!.Retryable);
    }

    /// <summary>Reads a finished task whose pull request lookup (GraphQL by node id, or the branch's pull requests) GitHub answers so.</summary>
    private async Task<ProviderResult<ProviderAgent>> ReadFinishedTaskWhosePullRequestLookupAnswers(bool withGlobalId, int status, string body)
    {
        var id = await Launch();
        github.SetState(id, "completed", "https://github.com/acme/shop/pull/7", withGlobalId);
        var lookup = withGlobalId
            ? WireMock.RequestBuilders.Request.Create().WithPath("/graphql").UsingPost()
            : WireMock.RequestBuilders.Request.Create().WithPath("/repos/acme/shop/pulls").UsingGet();
        github.Server.Given(lookup).AtPriority(-1)
            .RespondWith(WireMock.ResponseBuilders.Response.Create().WithStatusCode(status).WithHeader("Content-Type", "application/json").WithBody(body));
        return await provider.GetAgentAsync(id, CancellationToken.None);
    }

    [Theory]
    [InlineData("""{"data":null,"errors":[{"type":"RATE_LIMITED","message":"API rate limit exceeded"}]}""")]
    // GitHub's own failure, with no type, with or without a null node: the task, recorded completed without its pull
    // request, would never be read again.
    [InlineData("""{"data":{"node":null},"errors":[{"message":"Something went wrong while executing your query. This may be the result of a timeout, or it could be a GitHub bug."}]}""")]
    [InlineData("""{"data":null,"errors":[{"message":"Something went wrong while executing your query. This may be the result of a timeout, or it could be a GitHub bug."}]}""")]
    [InlineData("""{"data":{"node":null},"errors":[{"type":"NOT_FOUND","message":"Could not resolve"},{"type":"INTERNAL","message":"Internal error"}]}""")]
    [InlineData("[]")]
    [InlineData("""{"data":{"viewer":{}}}""")]
    public async Task Pull_request_lookup_rate_limited_failed_at_github_or_of_another_shape_is_a_failed_read_not_an_exception(string graphQl)
    {
        var id = await Launch();
        github.SetState(id, "completed", "https://github.com/acme/shop/pull/7");
        github.Server.Given(WireMock.RequestBuilders.Request.Create().WithPath("/graphql").UsingPost()).AtPriority(-1)
            .RespondWith(WireMock.ResponseBuilders.Response.Create().WithStatusCode(200).WithHeader("Content-Type", "application/json").WithBody(graphQl));

        var read = await provider.GetAgentAsync(id, CancellationToken.None);

        Assert.Equal(FailureTypes.InvalidResponse, read.Failure!.FailureType);
    }

    [Fact]
    public async Task Task_list_that_is_not_an_object_is_an_unknown_outcome_not_an_exception()
    {
        github.ListAnswer = () => WireMockMessages.Json(200, "[]");

        var result = await provider.FindAgentByBranchAsync(Request().Repository, "fix-abc123", null, CancellationToken.None);

        Assert.Equal(FailureTypes.InvalidResponse, result.Failure!.FailureType);
        Assert.True(result.Failure.OutcomeUnknown);
    }

    [Fact]
    public async Task Task_that_cannot_be_read_by_id_is_passed_over_and_ours_is_still_found()
    {
        var mine = await Launch("fix-abc123");
        var other = await Launch("someone-elses-branch");
        // Newest first, the other task is read first; by id it answers 404 (another user's task, or deleted meanwhile).
        AnswerReadOf(other, 404, """{"message":"Not Found"}""");

        var result = await provider.FindAgentByBranchAsync(Request().Repository, "fix-abc123", null, CancellationToken.None);

        Assert.True(result.IsSuccess, result.Failure?.ToString());
        Assert.Equal(mine, result.Value!.Id);
    }

    [Fact]
    public async Task Lookup_with_an_unreadable_task_and_no_match_is_incomplete_not_not_found()
    {
        var other = await Launch("someone-elses-branch");
        AnswerReadOf(other, 404, """{"message":"Not Found"}""");

        var result = await provider.FindAgentByBranchAsync(Request().Repository, "fix-abc123", null, CancellationToken.None);

        // The unreadable task may be ours: "not found" would launch a second agent.
        Assert.Equal(FailureTypes.ReconcileIncomplete, result.Failure!.FailureType);
        Assert.True(result.Failure.Retryable);
        Assert.True(result.Failure.OutcomeUnknown);
    }

    [Theory]
    [InlineData("graphql")]
    [InlineData("pulls")]
    [InlineData("artifact")]
    public async Task Pull_request_url_that_is_not_https_is_never_recorded_whichever_answer_names_it(string namedBy)
    {
        // A pull request URL is shown to the caller as a link: only an https one is taken, from GraphQL's node, from
        // the REST list of pull requests, or from the artifact itself.
        var id = await Launch();
        const string url = "http://github.com/acme/shop/pull/7";
        if (namedBy == "artifact")
        {
            github.SetState(id, "completed");
            github.Tasks[id]["artifacts"] = new JsonArray(new JsonObject { ["type"] = "pull", ["data"] = new JsonObject { ["html_url"] = url } });
        }
        else
        {
            github.SetState(id, "completed", url, withGlobalId: namedBy == "graphql");
        }

        var read = await provider.GetAgentAsync(id, CancellationToken.None);

        Assert.True(read.IsSuccess, read.Failure?.ToString());
        Assert.Equal(ProviderAgentStatus.Finished, read.Value!.Status);
        Assert.Null(read.Value.PrUrl);
    }

    [Fact]
    public async Task Pull_request_artifact_that_carries_its_url_is_taken_without_a_graphql_lookup()
    {
        var id = await Launch();
        github.SetState(id, "completed");
        github.Tasks[id]["artifacts"] = new JsonArray(new JsonObject
        {
            ["type"] = "pull",
            ["data"] = new JsonObject { ["global_id"] = "PR_kwDOunknown", ["html_url"] = "https://github.com/acme/shop/pull/9" },
        });

        var read = await provider.GetAgentAsync(id, CancellationToken.None);

        Assert.Equal("https://github.com/acme/shop/pull/9", read.Value!.PrUrl);
        Assert.Equal(0, github.GraphQlRequests);
    }

    [Fact]
    public async Task Pull_request_in_a_github_resource_artifact_is_found_by_its_data_type()
    {
        var id = await Launch();
        github.SetState(id, "completed", "https://github.com/acme/shop/pull/7");
        // The generic shape (as Sentry's client sees it): the artifact's own type is github_resource, its data says pull.
        github.Tasks[id]["artifacts"] = new JsonArray(new JsonObject
        {
            ["type"] = "github_resource",
            ["data"] = new JsonObject { ["type"] = "pull", ["global_id"] = $"PR_kwDO{id}" },
        });

        var read = await provider.GetAgentAsync(id, CancellationToken.None);

        Assert.Equal("https://github.com/acme/shop/pull/7", read.Value!.PrUrl);
    }

    [Fact]
    public async Task Task_branch_is_its_latest_sessions_when_neither_an_artifact_nor_the_task_names_it()
    {
        var id = await Launch();
        ((JsonArray)github.Tasks[id]["sessions"]!).Add(new JsonObject { ["id"] = "session-later", ["state"] = "in_progress", ["head_ref"] = "copilot/fix-later" });

        var read = await provider.GetAgentAsync(id, CancellationToken.None);

        Assert.Equal("copilot/fix-later", read.Value!.BranchName);
    }

    [Fact]
    public async Task Lookup_whose_task_read_is_rate_limited_stops_there_with_githubs_wait_and_an_unknown_outcome()
    {
        var mine = await Launch("fix-abc123");
        var other = await Launch("someone-elses-branch");
        // Newest first, the other task is read first, and GitHub answers it with its rate limit.
        github.Server.Given(WireMock.RequestBuilders.Request.Create().WithPath("/agents/tasks/" + other).UsingGet()).AtPriority(-1)
            .RespondWith(WireMock.ResponseBuilders.Response.Create().WithStatusCode(429).WithHeader("Retry-After", "120")
                .WithHeader("Content-Type", "application/json").WithBody("""{"message":"You have exceeded a secondary rate limit."}"""));

        var result = await provider.FindAgentByBranchAsync(Request().Repository, "fix-abc123", null, CancellationToken.None);

        // Reading on would spend more requests on the limit; passing the task over would leave a retry at our pace, not GitHub's.
        Assert.Equal((FailureTypes.RateLimited, TimeSpan.FromMinutes(2)), (result.Failure!.FailureType, result.Failure.RetryAfter));
        Assert.True(result.Failure.OutcomeUnknown);
        Assert.DoesNotContain(github.Server.LogEntries, entry => entry.RequestMessage.Path == "/agents/tasks/" + mine);
    }

    [Theory]
    [InlineData("0", 2 * 24 * 3600, 24 * 60)] // a reset days away waits at most the longest wait we take
    [InlineData("0", null, 1)] // a reset past any date: a minute, not an exception
    [InlineData("5", 20 * 60, 1)] // requests remain: the reset is not this limit's end
    public async Task Rate_limit_reset_is_waited_for_only_with_no_requests_remaining_and_within_the_longest_wait(string remaining, int? resetInSeconds, int expectedMinutes)
    {
        var reset = resetInSeconds is { } seconds ? DateTimeOffset.UtcNow.AddSeconds(seconds).ToUnixTimeSeconds().ToString() : "99999999999999";
        github.NextLaunchAnswer = () => WithHeaders(WireMockMessages.Json(429, """{"message":"Too Many Requests"}"""), ("x-ratelimit-remaining", remaining), ("x-ratelimit-reset", reset));

        var result = await provider.LaunchAsync(Request(), CancellationToken.None);

        Assert.Equal((FailureTypes.RateLimited, TimeSpan.FromMinutes(expectedMinutes)), (result.Failure!.FailureType, result.Failure.RetryAfter));
    }

    [Fact]
    public async Task Pull_request_artifact_whose_global_id_is_too_long_to_send_is_found_by_its_id_instead()
    {
        var id = await Launch();
        github.SetState(id, "completed", "https://github.com/acme/shop/pull/8", withGlobalId: false);
        // No node id GitHub makes is this long: it is not sent to GraphQL; the artifact's numeric id still names the PR.
        github.Tasks[id]["artifacts"]![0]!["data"]!["global_id"] = new string('P', 201);

        var read = await provider.GetAgentAsync(id, CancellationToken.None);

        Assert.Equal("https://github.com/acme/shop/pull/8", read.Value!.PrUrl);
        Assert.Equal(0, github.GraphQlRequests);
    }

    [Fact]
    public void Forbidden_whose_remaining_requests_header_is_zero_within_spaces_is_still_a_rate_limit()
    {
        // A transport may pass a header's value as it came (a Dapr binding's metadata is not HTTP's parsed header).
        var response = new ProviderResponse(403, """{"message":"Forbidden"}"""u8.ToArray(), RateLimitRemaining: " 0 ");

        var failure = CopilotAgentTasksProvider.Classify(response, DateTimeOffset.UtcNow);

        Assert.Equal((FailureTypes.RateLimited, TimeSpan.FromMinutes(1)), (failure.FailureType, failure.RetryAfter));
    }

    private void AnswerReadOf(string taskId, int status, string body) =>
        github.Server.Given(WireMock.RequestBuilders.Request.Create().WithPath("/agents/tasks/" + taskId).UsingGet()).AtPriority(-1)
            .RespondWith(WireMock.ResponseBuilders.Response.Create().WithStatusCode(status).WithHeader("Content-Type", "application/json").WithBody(body));

    private async Task<string> Launch(string branch = "fix-abc123") =>
        (await provider.LaunchAsync(Request(branch), CancellationToken.None)).Value!.Id;

    private static AgentLaunchRequest Request(string branch = "fix-abc123")
    {
        RepositoryName.TryParse("acme/shop", out var repository);
        return new AgentLaunchRequest("Fix it", repository!.Value, null, branch, AutoCreatePr: true, Webhook: null);
    }

    public void Dispose()
    {
        clients.Dispose();
        github.Dispose();
    }
}
