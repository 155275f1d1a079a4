using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Providers.Copilot;
using HandoffDapr.Core.Repositories;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Logging.Testing;

namespace HandoffDapr.Core.Tests;

/// <summary>Looking for a lost launch among GitHub's tasks: a task that may be ours is never taken for "none".</summary>
public sealed class CopilotLookupTests
{
    [Fact]
    public async Task Listed_task_on_our_branch_that_cannot_be_read_is_an_unknown_outcome_not_not_found()
    {
        // The list shows a task on the launch's own head branch, but its id is not a string we accept (a number):
        // it may well be ours, so "none" would launch a second agent.
        var transport = new ScriptedTransport(path => path.StartsWith("agents/repos/acme/shop/tasks", StringComparison.Ordinal)
            ? (200, """{"tasks":[{"id":7001,"state":"queued","head_ref":"fix-abc123"}]}""")
            : (404, """{"message":"Not Found"}"""));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", null, CancellationToken.None);

        Assert.False(result.IsSuccess, $"answered success with agent {result.Value?.Id ?? "null"} (\"not found\")");
        Assert.True(result.Failure!.OutcomeUnknown);
    }

    [Fact]
    public async Task Fault_while_reading_a_candidate_is_not_blamed_on_the_lists_shape()
    {
        // The list was read whole; the task read after it faults in the client. That is the engine's "provider faulted"
        // (logged by its type), not a list of another shape from GitHub.
        var created = DateTimeOffset.UtcNow.AddMinutes(-5).ToString("O");
        var transport = new ScriptedTransport(path =>
            path.StartsWith("agents/repos/acme/shop/tasks", StringComparison.Ordinal) ? (200, $$"""{"tasks":[{"id":"task-1","state":"in_progress","created_at":"{{created}}"}]}""")
            : throw new InvalidOperationException("the client faulted"));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();
        RepositoryName.TryParse("acme/shop", out var repository);

        await Assert.ThrowsAsync<InvalidOperationException>(
            () => provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", null, CancellationToken.None));
        Assert.Equal("agents/tasks/task-1", transport.Paths[^1]);
    }

    [Theory]
    [InlineData("Fix it\n\nHandoff reference: fix-abc123", true, "copilot/other")]
    [InlineData("Fix it\n\nHandoff reference: fix-abc123\n", true, "copilot/other")]
    [InlineData("Handoff reference: fix-abc123", true, "copilot/other")]
    [InlineData("Look at this\n\n> Handoff reference: fix-abc123", false, "copilot/other")]
    [InlineData("Fix it\n\nNot our Handoff reference: fix-abc123", false, "copilot/other")]
    [InlineData("Fix it\n\nHandoff reference: fix-abc123-2", false, "copilot/other")]
    [InlineData("Fix it", true, "fix-abc123")] // on our branch: ours, whatever its prompt says
    public async Task Task_is_ours_when_on_our_branch_or_its_prompt_ends_with_our_reference_as_a_line_of_its_own(string prompt, bool ours, string headRef)
    {
        // The reference is the prompt's last line; text that merely ends with it (someone quoting our handoff in their own
        // task) is another task, which adopting would have the run follow someone else's agent.
        var created = DateTimeOffset.UtcNow.AddMinutes(-5).ToString("O");
        var session = System.Text.Json.JsonSerializer.Serialize(prompt);
        var transport = new ScriptedTransport(path =>
            path.StartsWith("agents/repos/acme/shop/tasks", StringComparison.Ordinal) ? (200, $$"""{"tasks":[{"id":"task-1","state":"in_progress","created_at":"{{created}}"}]}""")
            : path == "agents/tasks/task-1" ? (200, $$"""{"id":"task-1","state":"in_progress","created_at":"{{created}}","sessions":[{"prompt":{{session}},"head_ref":"{{headRef}}"}]}""")
            : (404, """{"message":"Not Found"}"""));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", null, CancellationToken.None);

        Assert.True(result.IsSuccess, result.Failure?.FailureType);
        Assert.Equal(ours ? "task-1" : null, result.Value?.Id);
    }

    [Fact]
    public async Task Finished_task_the_list_shows_with_its_pull_requests_url_is_taken_without_another_read()
    {
        // Only a finished task found without its pull request is read again for it: one read again with it already known
        // would, were that read to fail, be reported still running rather than finished with its pull request.
        var transport = new ScriptedTransport(path => path.StartsWith("agents/repos/acme/shop/tasks", StringComparison.Ordinal)
            ? (200, """{"tasks":[{"id":"task-1","state":"completed","head_ref":"fix-abc123","artifacts":[{"type":"pull","data":{"html_url":"https://github.com/acme/shop/pull/8"}}]}]}""")
            : (404, """{"message":"Not Found"}"""));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", null, CancellationToken.None);

        Assert.Equal(("task-1", ProviderAgentStatus.Finished, "https://github.com/acme/shop/pull/8"), (result.Value?.Id, result.Value?.Status, result.Value?.PrUrl));
        Assert.DoesNotContain(transport.Paths, path => path.StartsWith("agents/tasks/", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Task_read_by_id_without_a_session_prompt_yet_is_not_taken_for_not_ours()
    {
        // Our lost launch created a task that is still queued: neither the list nor its read by id shows a branch yet
        // (no session). Its branch is unknown, so the lookup cannot say "not found".
        var transport = new ScriptedTransport(path =>
            path.StartsWith("agents/repos/acme/shop/tasks", StringComparison.Ordinal) ? (200, """{"tasks":[{"id":"task-1","state":"queued"}]}""")
            : path == "agents/tasks/task-1" ? (200, """{"id":"task-1","state":"queued","sessions":[]}""")
            : (404, """{"message":"Not Found"}"""));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", null, CancellationToken.None);

        Assert.Contains("agents/tasks/task-1", transport.Paths);
        Assert.False(result.IsSuccess, $"answered success with agent {result.Value?.Id ?? "null"} (\"not found\")");
        Assert.True(result.Failure!.OutcomeUnknown);
    }

    [Theory]
    [InlineData("completed")]
    [InlineData("failed")]
    [InlineData("queued")]
    public async Task Task_without_a_session_prompt_created_since_the_launch_is_not_taken_for_not_ours_whatever_its_state(string state)
    {
        // A task that ended shows no prompt either when GitHub's answer leaves its sessions out: it may be ours.
        var created = DateTimeOffset.UtcNow.AddMinutes(-30).ToString("O");
        var transport = new ScriptedTransport(path =>
            path.StartsWith("agents/repos/acme/shop/tasks", StringComparison.Ordinal) ? (200, $$"""{"tasks":[{"id":"task-1","state":"{{state}}","created_at":"{{created}}"}]}""")
            : path == "agents/tasks/task-1" ? (200, $$"""{"id":"task-1","state":"{{state}}","created_at":"{{created}}"}""")
            : (404, """{"message":"Not Found"}"""));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", DateTimeOffset.UtcNow.AddHours(-1), CancellationToken.None);

        Assert.False(result.IsSuccess, $"answered success with agent {result.Value?.Id ?? "null"} (\"not found\")");
        Assert.Equal(FailureTypes.ReconcileIncomplete, result.Failure!.FailureType);
    }

    [Theory]
    [InlineData("""{"id":101,"state":"queued","created_at":"{0}","artifacts":[{"type":"branch","data":{"head_ref":"copilot/fix-1"}}]}""")]
    [InlineData("""{"id":"task/1","state":"completed","created_at":"{0}","head_ref":"copilot/fix-1"}""")]
    [InlineData("""{"id":"","state":"queued"}""")]
    public async Task Listed_task_that_cannot_be_read_is_not_ruled_out_by_the_branch_github_named(string task)
    {
        // GitHub names a task's branch itself: ours is shown on "another" branch too.
        var listed = task.Replace("{0}", DateTimeOffset.UtcNow.AddMinutes(-30).ToString("O"), StringComparison.Ordinal);
        var transport = new ScriptedTransport(path => path.StartsWith("agents/repos/acme/shop/tasks", StringComparison.Ordinal)
            ? (200, $$"""{"tasks":[{{listed}}]}""")
            : (404, """{"message":"Not Found"}"""));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", DateTimeOffset.UtcNow.AddHours(-1), CancellationToken.None);

        Assert.False(result.IsSuccess, $"answered success with agent {result.Value?.Id ?? "null"} (\"not found\")");
        Assert.True(result.Failure!.OutcomeUnknown);
    }

    [Theory]
    [InlineData("completed", 7)]
    [InlineData("queued", 7)]
    public async Task Task_without_a_session_prompt_hours_older_than_any_lost_launch_does_not_block_the_lookup(string state, int hoursOld)
    {
        var created = DateTimeOffset.UtcNow.AddHours(-hoursOld).ToString("O");
        var transport = new ScriptedTransport(path =>
            path.StartsWith("agents/repos/acme/shop/tasks", StringComparison.Ordinal) ? (200, $$"""{"tasks":[{"id":"task-1","state":"{{state}}","created_at":"{{created}}"}]}""")
            : path == "agents/tasks/task-1" ? (200, $$"""{"id":"task-1","state":"{{state}}","created_at":"{{created}}","sessions":[]}""")
            : (404, """{"message":"Not Found"}"""));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", DateTimeOffset.UtcNow.AddHours(-1), CancellationToken.None);

        // A stuck task would otherwise keep every lookup in the repository incomplete, and nothing could launch there.
        Assert.True(result.IsSuccess);
        Assert.Null(result.Value);
    }

    [Fact]
    public async Task More_candidates_than_the_lookup_reads_are_logged_as_left_unread_not_as_a_list_past_its_pages()
    {
        // One page of 60 tasks, all since the launch, none ours: the list ended, but only 50 are read by id.
        var created = DateTimeOffset.UtcNow.AddMinutes(-30).ToString("O");
        var tasks = string.Join(',', Enumerable.Range(1, 60).Select(i => $$"""{"id":"task-{{i}}","state":"in_progress","created_at":"{{created}}"}"""));
        var transport = new ScriptedTransport(path =>
            path.StartsWith("agents/repos/acme/shop/tasks", StringComparison.Ordinal) ? (200, $$"""{"tasks":[{{tasks}}]}""")
            : path.StartsWith("agents/tasks/", StringComparison.Ordinal)
                ? (200, $$"""{"id":"{{path["agents/tasks/".Length..]}}","state":"in_progress","created_at":"{{created}}","sessions":[{"prompt":"other work\n\nHandoff reference: other"}]}""")
            : (404, """{"message":"Not Found"}"""));
        var logger = new FakeLogger<CopilotAgentTasksProvider>();
        var provider = new CopilotAgentTasksProvider(transport, TimeProvider.System, logger);
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", DateTimeOffset.UtcNow.AddHours(-1), CancellationToken.None);

        Assert.Equal(FailureTypes.ReconcileIncomplete, result.Failure?.FailureType);
        Assert.Single(transport.Paths, path => path.StartsWith("agents/repos/", StringComparison.Ordinal));
        // The list was read whole (one page): a line saying it "still had more after 10 pages" sends the operator the wrong way.
        var record = Assert.Single(logger.Collector.GetSnapshot());
        Assert.Equal("ProviderReadsIncomplete", record.Id.Name);
        // Copilot's tasks are told apart by their session prompt, not a branch: the line does not send the operator to one.
        Assert.Equal(
            "GitHub agent tasks: 10 candidate(s) could not be read or told apart from the launch's agent; the launch stays unknown rather than risk a second agent",
            record.Message);
    }

    [Fact]
    public async Task Ours_is_read_first_when_more_tasks_were_created_since_the_launch_than_the_lookup_reads()
    {
        // 60 tasks since the first attempt, ours the oldest of them (newest first in the list, so last): only 50 are read
        // by id, nearest to the first attempt first. Read newest first, ours would never be reached: the lookup would stay
        // incomplete at every attempt and the agent the launch made never be followed.
        var firstSent = DateTimeOffset.UtcNow.AddHours(-2);
        string Created(int i) => firstSent.AddMinutes(60 - i).ToString("O");
        var tasks = string.Join(',', Enumerable.Range(1, 60).Select(i => $$"""{"id":"task-{{i}}","state":"in_progress","created_at":"{{Created(i)}}"}"""));
        var transport = new ScriptedTransport(path =>
        {
            if (path.StartsWith("agents/repos/acme/shop/tasks", StringComparison.Ordinal))
            {
                return (200, $$"""{"tasks":[{{tasks}}]}""");
            }

            var id = path.StartsWith("agents/tasks/task-", StringComparison.Ordinal) ? int.Parse(path["agents/tasks/task-".Length..], System.Globalization.CultureInfo.InvariantCulture) : 0;
            var reference = id == 60 ? "fix-abc123" : $"other-{id}";
            return id == 0 ? (404, """{"message":"Not Found"}""")
                : (200, $$"""{"id":"task-{{id}}","state":"in_progress","created_at":"{{Created(id)}}","sessions":[{"prompt":"Fix it\n\nHandoff reference: {{reference}}"}]}""");
        });
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", firstSent, CancellationToken.None);

        Assert.True(result.IsSuccess, $"failed: {result.Failure?.FailureType}");
        Assert.Equal("task-60", result.Value?.Id);
        Assert.Equal("agents/tasks/task-60", Assert.Single(transport.Paths, path => path.StartsWith("agents/tasks/", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task Finished_task_whose_pull_request_is_not_among_its_branchs_pull_requests_is_finished_without_one_not_unread()
    {
        // The pull request artifact names the PR by its REST id only (no global_id), and GitHub's pulls from the task's
        // branch do not include it (closed and its branch gone, or another head): asking again changes nothing, and a read
        // failed for good would leave the finished task to be timed out as failed.
        var transport = new ScriptedTransport(path =>
            path == "agents/tasks/task-1" ? (200, """{"id":"task-1","state":"completed","html_url":"https://github.com/acme/shop/copilot/tasks/task-1","head_ref":"copilot/fix-1","artifacts":[{"provider":"github","type":"pull","data":{"id":4001}}]}""")
            : path.StartsWith("repos/acme/shop/pulls?", StringComparison.Ordinal) ? (200, """[{"id":4002,"html_url":"https://github.com/acme/shop/pull/8"}]""")
            : (404, """{"message":"Not Found"}"""));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();

        var result = await provider.GetAgentAsync("task-1", CancellationToken.None);

        Assert.Contains(transport.Paths, path => path.StartsWith("repos/acme/shop/pulls?head=acme%3Acopilot%2Ffix-1&", StringComparison.Ordinal));
        Assert.True(result.IsSuccess, $"failed: {result.Failure?.FailureType}");
        Assert.Equal(ProviderAgentStatus.Finished, result.Value!.Status);
        Assert.Null(result.Value.PrUrl);
    }

    [Theory]
    [InlineData("""{"pulls":[]}""")] // not a list
    [InlineData("""[{"id":4001}]""")] // ours, without its web address
    [InlineData("""[{"id":4001,"html_url":8}]""")]
    public async Task Pull_request_list_of_another_shape_fails_the_read_rather_than_finish_the_task_without_one(string pulls)
    {
        // Unlike a list that does not hold ours (no link), an answer that cannot be read says nothing: the read fails,
        // asked again, rather than record the finished task without the pull request it may have.
        var transport = new ScriptedTransport(path =>
            path == "agents/tasks/task-1" ? (200, """{"id":"task-1","state":"completed","html_url":"https://github.com/acme/shop/copilot/tasks/task-1","head_ref":"copilot/fix-1","artifacts":[{"provider":"github","type":"pull","data":{"id":4001}}]}""")
            : path.StartsWith("repos/acme/shop/pulls?", StringComparison.Ordinal) ? (200, pulls)
            : (404, """{"message":"Not Found"}"""));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();

        var result = await provider.GetAgentAsync("task-1", CancellationToken.None);

        Assert.Contains(transport.Paths, path => path.StartsWith("repos/acme/shop/pulls?", StringComparison.Ordinal));
        Assert.False(result.IsSuccess, $"answered success with pull request {result.Value?.PrUrl ?? "null"}");
        Assert.Equal(FailureTypes.InvalidResponse, result.Failure!.FailureType);
    }

    [Fact]
    public async Task Ours_is_found_on_the_second_page_of_a_list_longer_than_one_page()
    {
        // 100 tasks since the launch fill the first page; ours, the oldest since the launch, is on the second with an older
        // task after it. Asking for the first page again would never reach it: the lookup would stay incomplete.
        var firstSent = DateTimeOffset.UtcNow.AddHours(-3);
        string Created(int i) => firstSent.AddMinutes(101 - i).ToString("O");
        string Listed(int i) => $$"""{"id":"task-{{i}}","state":"in_progress","created_at":"{{Created(i)}}"}""";
        var transport = new ScriptedTransport(path =>
        {
            if (path.StartsWith("agents/repos/acme/shop/tasks?", StringComparison.Ordinal))
            {
                var page = path.Contains("&page=1", StringComparison.Ordinal) ? Enumerable.Range(1, 100)
                    : path.Contains("&page=2", StringComparison.Ordinal) ? [101, 102]
                    : [];
                return (200, $$"""{"tasks":[{{string.Join(',', page.Select(i => i == 102 ? $$"""{"id":"task-102","state":"completed","created_at":"{{firstSent.AddDays(-1):O}}"}""" : Listed(i)))}}]}""");
            }

            var id = path.StartsWith("agents/tasks/task-", StringComparison.Ordinal) ? int.Parse(path["agents/tasks/task-".Length..], System.Globalization.CultureInfo.InvariantCulture) : 0;
            return id == 0 ? (404, """{"message":"Not Found"}""")
                : (200, $$"""{"id":"task-{{id}}","state":"in_progress","created_at":"{{Created(id)}}","sessions":[{"prompt":"Fix it\n\nHandoff reference: {{(id == 101 ? "fix-abc123" : $"other-{id}")}}"}]}""");
        });
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", firstSent, CancellationToken.None);

        Assert.True(result.IsSuccess, $"failed: {result.Failure?.FailureType}");
        Assert.Equal("task-101", result.Value?.Id);
    }

    [Fact]
    public async Task Lookup_stops_at_the_first_task_older_than_the_launch_though_the_page_is_full()
    {
        // A full page: one task since the launch, then 99 older. The list is newest first, so nothing past the first older
        // task can be ours: asking for the next page instead would, in a repository with more tasks than the pages read,
        // never answer "none", and the launch would never be sent again.
        var firstSent = DateTimeOffset.UtcNow.AddHours(-1);
        var older = string.Join(',', Enumerable.Range(2, 99).Select(i => $$"""{"id":"task-{{i}}","state":"completed","created_at":"{{firstSent.AddDays(-1).AddMinutes(-i):O}}"}"""));
        var transport = new ScriptedTransport(path =>
            path.StartsWith("agents/repos/acme/shop/tasks", StringComparison.Ordinal)
                ? (200, $$"""{"tasks":[{"id":"task-1","state":"in_progress","created_at":"{{firstSent.AddMinutes(1):O}}"},{{older}}]}""")
            : path == "agents/tasks/task-1" ? (200, """{"id":"task-1","state":"in_progress","sessions":[{"prompt":"Other work\n\nHandoff reference: other"}]}""")
            : (404, """{"message":"Not Found"}"""));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", firstSent, CancellationToken.None);

        Assert.True(result.IsSuccess, $"failed: {result.Failure?.FailureType}");
        Assert.Null(result.Value);
        // One page of the unarchived list and one of the archived one, and the one task since the launch read by id.
        Assert.Equal(2, transport.Paths.Count(path => path.StartsWith("agents/repos/", StringComparison.Ordinal)));
        Assert.DoesNotContain(transport.Paths, path => path.Contains("&page=2", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Tasks_listed_after_the_first_one_older_than_the_launch_are_not_looked_at()
    {
        // Newest first: a task listed past an older one is older still, even one that cannot be read or shows no
        // creation time. Counting it would leave the lookup incomplete, and the launch never sent again.
        var firstSent = DateTimeOffset.UtcNow.AddHours(-1);
        var transport = new ScriptedTransport(path =>
            path.StartsWith("agents/repos/acme/shop/tasks", StringComparison.Ordinal)
                ? (200, $$"""
                    {"tasks":[{"id":"task-2","state":"completed","created_at":"{{firstSent.AddDays(-1):O}}"},
                      {"id":7001,"state":"completed"}]}
                    """)
            : (404, """{"message":"Not Found"}"""));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(
            repository!.Value, "fix-abc123", firstSent, CancellationToken.None);

        Assert.True(result.IsSuccess, $"failed: {result.Failure?.FailureType}");
        Assert.Null(result.Value);
    }

    /// <summary>
    /// Each call whose answer cannot be used is logged naming that call (the list's every unusable page, and an error
    /// answer to it, included): the runbook tells a lookup's lines from a launch's or a read's by it.
    /// </summary>
    [Theory]
    [InlineData("launch", 200, "[1]", "ProviderMalformedAnswer")]
    [InlineData("get", 200, "[1]", "ProviderMalformedAnswer")]
    [InlineData("graphql", 200, "[1]", "ProviderMalformedAnswer")]
    [InlineData("pulls", 200, "{}", "ProviderMalformedAnswer")]
    [InlineData("list", 200, "[]", "ProviderMalformedAnswer")]
    [InlineData("list", 200, """{"tasks":[1]}""", "ProviderMalformedAnswer")]
    [InlineData("list", 200, """{"tasks":[{"id":7001,"head_ref":"fix-abc123"}]}""", "ProviderMalformedAnswer")]
    [InlineData("list", 200, """{"tasks":[""", "ProviderMalformedAnswer")]
    [InlineData("list", 503, """{"message":"busy"}""", "ProviderErrorAnswer")]
    public async Task An_answer_that_cannot_be_used_is_logged_naming_the_call(
        string call, int status, string body, string line)
    {
        const string EndedTask = """
            {"id":"task-1","state":"completed","html_url":"https://github.com/acme/shop/copilot/tasks/task-1",
             "head_ref":"copilot/fix-1","artifacts":[{"type":"pull","data":{"id":4001,"global_id":"PR_1"}}]}
            """;
        var transport = new ScriptedTransport(path => call switch
        {
            "graphql" => path == "graphql" ? (status, body) : (200, EndedTask),
            "pulls" => path.StartsWith("repos/", StringComparison.Ordinal) ? (status, body)
                : (200, EndedTask.Replace(",\"global_id\":\"PR_1\"", "", StringComparison.Ordinal)),
            _ => (status, body),
        });
        var logger = new FakeLogger<CopilotAgentTasksProvider>();
        var provider = new CopilotAgentTasksProvider(transport, TimeProvider.System, logger);
        RepositoryName.TryParse("acme/shop", out var repository);

        _ = call switch
        {
            "launch" => (await provider.LaunchAsync(
                new AgentLaunchRequest("Fix it", repository!.Value, "main", "fix-abc123", AutoCreatePr: true, null),
                CancellationToken.None)).Failure,
            "list" => (await provider.FindAgentByBranchAsync(
                repository!.Value, "fix-abc123", null, CancellationToken.None)).Failure,
            _ => (await provider.GetAgentAsync("task-1", CancellationToken.None)).Failure,
        };

        var logged = Assert.Single(logger.Collector.GetSnapshot(), record => record.Id.Name == line);
        Assert.Equal(call is "graphql" or "pulls" ? "pull request" : call, logged.GetStructuredStateValue("Operation"));
    }

    [Theory]
    [InlineData(0, false)] // stamped exactly the slack (5 min) before the first attempt: still within it
    [InlineData(-1, true)] // a second earlier: older than the launch
    public async Task Listed_task_that_cannot_be_read_is_ruled_out_only_when_older_than_the_first_attempt_less_the_clock_slack(int secondsPastSlack, bool ruledOut)
    {
        // Its id is not one we accept (a number): it cannot be read to tell whether it is ours, unless its age says not.
        var firstSent = new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero);
        var created = firstSent.AddMinutes(-5).AddSeconds(secondsPastSlack);
        var transport = new ScriptedTransport(path => path.StartsWith("agents/repos/acme/shop/tasks", StringComparison.Ordinal)
            ? (200, $$"""{"tasks":[{"id":7001,"state":"in_progress","created_at":"{{created:O}}"}]}""")
            : (404, """{"message":"Not Found"}"""));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", firstSent, CancellationToken.None);

        Assert.Equal(ruledOut, result.IsSuccess);
        Assert.Equal(ruledOut ? null : FailureTypes.ReconcileIncomplete, result.Failure?.FailureType);
        Assert.Null(result.Value);
    }

    [Fact]
    public async Task Task_stamped_exactly_the_clock_slack_before_the_first_attempt_is_read_and_found_ours()
    {
        // GitHub's clock a little behind ours: ours may be stamped before our first attempt, up to the slack.
        var firstSent = new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero);
        var created = firstSent.AddMinutes(-5);
        var transport = new ScriptedTransport(path =>
            path.StartsWith("agents/repos/acme/shop/tasks", StringComparison.Ordinal) ? (200, $$"""{"tasks":[{"id":"task-1","state":"in_progress","created_at":"{{created:O}}"}]}""")
            : path == "agents/tasks/task-1" ? (200, $$"""{"id":"task-1","state":"in_progress","created_at":"{{created:O}}","sessions":[{"prompt":"Fix it\n\nHandoff reference: fix-abc123"}]}""")
            : (404, """{"message":"Not Found"}"""));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();
        RepositoryName.TryParse("acme/shop", out var repository);

        var result = await provider.FindAgentByBranchAsync(repository!.Value, "fix-abc123", firstSent, CancellationToken.None);

        Assert.True(result.IsSuccess, $"failed: {result.Failure?.FailureType}");
        Assert.Equal("task-1", result.Value?.Id);
    }

    [Theory]
    [InlineData("null")]
    [InlineData("{}")]
    public async Task Task_whose_sessions_are_not_a_list_is_still_read(string sessions)
    {
        // Read defensively, as the rest of GitHub's answer: sessions of another shape are no sessions (no prompt, no
        // branch from them), not an unreadable task, which a poll would never see end.
        var transport = new ScriptedTransport(path => path == "agents/tasks/task-1"
            ? (200, $$"""{"id":"task-1","state":"completed","sessions":{{sessions}}}""")
            : (404, """{"message":"Not Found"}"""));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();

        var read = await provider.GetAgentAsync("task-1", CancellationToken.None);

        Assert.True(read.IsSuccess, $"failed: {read.Failure?.FailureType}");
        Assert.Equal(ProviderAgentStatus.Finished, read.Value!.Status);
        Assert.Null(read.Value.BranchName);
    }

    [Theory]
    [InlineData(404, FailureTypes.RepositoryAccess)]
    [InlineData(503, FailureTypes.ProviderUnavailable)]
    public async Task Task_read_github_answers_with_an_error_is_that_failure_not_an_exception(int status, string expected)
    {
        var transport = new ScriptedTransport(_ => (status, """{"message":"no"}"""));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();

        var read = await provider.GetAgentAsync("task-1", CancellationToken.None);

        Assert.False(read.IsSuccess);
        Assert.Equal(expected, read.Failure!.FailureType);
    }

    [Fact]
    public async Task Task_read_carries_its_name_its_branch_artifacts_head_and_its_pull_requests_web_address()
    {
        // The branch artifact names the head before the task's own head_ref; a pull request artifact's html_url (the page
        // a person opens) before its url (GitHub's API address for it).
        var transport = new ScriptedTransport(path => path == "agents/tasks/task-1"
            ? (200, """
                {"id":"task-1","state":"completed","name":"Fix the pool","head_ref":"copilot/other",
                 "artifacts":[
                   {"type":"pull","data":{"head_ref":"copilot/not-a-branch-artifact","html_url":"https://github.com/acme/shop/pull/8","url":"https://api.github.com/repos/acme/shop/pulls/8"}},
                   {"type":"branch","data":{"head_ref":"copilot/fix-1"}}]}
                """)
            : (404, """{"message":"Not Found"}"""));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();

        var read = await provider.GetAgentAsync("task-1", CancellationToken.None);

        Assert.True(read.IsSuccess, $"failed: {read.Failure?.FailureType}");
        Assert.Equal(("Fix the pool", "copilot/fix-1", "https://github.com/acme/shop/pull/8"), (read.Value!.Name, read.Value.BranchName, read.Value.PrUrl));
        Assert.Equal(["agents/tasks/task-1"], transport.Paths);
    }

    [Fact]
    public async Task Pull_request_artifact_with_only_its_url_is_the_pull_request_and_a_branch_artifact_is_none()
    {
        var transport = new ScriptedTransport(path =>
            path == "agents/tasks/task-1" ? (200, """{"id":"task-1","state":"completed","artifacts":[{"type":"pull","data":{"url":"https://github.com/acme/shop/pull/8"}}]}""")
            : path == "agents/tasks/task-2" ? (200, """{"id":"task-2","state":"completed","artifacts":[{"type":"branch","data":{"head_ref":"copilot/fix-2","global_id":"REF_kwDOA","id":7}}]}""")
            : (404, """{"message":"Not Found"}"""));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();

        var withUrl = await provider.GetAgentAsync("task-1", CancellationToken.None);
        var branchOnly = await provider.GetAgentAsync("task-2", CancellationToken.None);

        Assert.Equal("https://github.com/acme/shop/pull/8", withUrl.Value?.PrUrl);
        // A branch's ids are not a pull request's: nothing is looked up for it.
        Assert.True(branchOnly.IsSuccess, $"failed: {branchOnly.Failure?.FailureType}");
        Assert.Null(branchOnly.Value!.PrUrl);
        Assert.Equal(["agents/tasks/task-1", "agents/tasks/task-2"], transport.Paths);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task Pull_request_artifact_whose_only_url_is_githubs_api_address_is_looked_up_by_its_ids(bool withGlobalId)
    {
        // A REST object's url is GitHub's API address, no pull request page: taken for the link, it was dropped as of
        // another repository and the task recorded finished without its pull request, never read again.
        var globalId = withGlobalId ? ",\"global_id\":\"PR_kwDO1\"" : "";
        var transport = TaskWithPullRequestEight("completed", $$"""{"id":4001{{globalId}},"url":"https://api.github.com/repos/acme/shop/pulls/8"}""");
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();

        var read = await provider.GetAgentAsync("task-1", CancellationToken.None);

        Assert.True(read.IsSuccess, $"failed: {read.Failure?.FailureType}");
        Assert.Equal("https://github.com/acme/shop/pull/8", read.Value!.PrUrl);
    }

    [Theory]
    [InlineData("queued")]
    [InlineData("in_progress")]
    [InlineData("waiting_for_user")]
    public async Task Pull_request_of_a_task_at_work_is_not_looked_up(string state)
    {
        // Only an ended task's pull request costs a call: one at work would be looked up at every poll.
        var transport = TaskWithPullRequestEight(state, """{"id":4001,"global_id":"PR_kwDO1"}""");
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();

        var read = await provider.GetAgentAsync("task-1", CancellationToken.None);

        Assert.True(read.IsSuccess, $"failed: {read.Failure?.FailureType}");
        Assert.Null(read.Value!.PrUrl);
        Assert.Equal(["agents/tasks/task-1"], transport.Paths);
    }

    [Theory]
    [InlineData("failed", ProviderAgentStatus.Error, true)]
    [InlineData("timed_out", ProviderAgentStatus.Expired, true)]
    [InlineData("cancelled", ProviderAgentStatus.Stopped, false)]
    public async Task Pull_request_of_a_task_that_failed_is_looked_up_as_a_finished_tasks_is(string state, ProviderAgentStatus status, bool withGlobalId)
    {
        // Copilot opens its pull request as it starts work: a task that then failed still has it, and a failed agent
        // keeps it (for the person deciding whether to launch again).
        var transport = TaskWithPullRequestEight(state, withGlobalId ? """{"id":4001,"global_id":"PR_kwDO1"}""" : """{"id":4001}""");
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();

        var read = await provider.GetAgentAsync("task-1", CancellationToken.None);

        Assert.True(read.IsSuccess, $"failed: {read.Failure?.FailureType}");
        Assert.Equal((status, "https://github.com/acme/shop/pull/8"), (read.Value!.Status, read.Value.PrUrl));
        Assert.Equal(withGlobalId ? "graphql" : "repos/acme/shop/pulls?head=acme%3Acopilot%2Ffix-1&state=all&per_page=100", transport.Paths[^1]);
    }

    [Theory]
    [InlineData("completed", false)]
    [InlineData("failed", true)]
    public async Task Pull_request_lookup_that_fails_for_now_fails_a_finished_tasks_read_but_not_a_failed_tasks(string state, bool readSucceeds)
    {
        // A finished task is not read again once recorded, so its read is asked again; a failed task's end is not held
        // back for its pull request (a lookup that kept failing would have it timed out instead).
        var transport = new ScriptedTransport(path =>
            path == "agents/tasks/task-1" ? (200, $$$"""{"id":"task-1","state":"{{{state}}}","html_url":"https://github.com/acme/shop/copilot/tasks/task-1","head_ref":"copilot/fix-1","artifacts":[{"type":"pull","data":{"id":4001,"global_id":"PR_kwDO1"}}]}""")
            : (502, """{"message":"Server Error"}"""));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();

        var read = await provider.GetAgentAsync("task-1", CancellationToken.None);

        Assert.Equal(readSucceeds, read.IsSuccess);
        Assert.Equal(["agents/tasks/task-1", "graphql"], transport.Paths);
        if (readSucceeds)
        {
            Assert.Equal((ProviderAgentStatus.Error, (string?)null), (read.Value!.Status, read.Value.PrUrl));
        }
    }

    [Theory]
    [InlineData(0, false)] // an empty global_id names nothing: the pull request is looked for by its id
    [InlineData(200, true)] // the longest sent to GraphQL
    [InlineData(201, false)]
    public async Task Pull_request_artifacts_global_id_is_asked_of_graphql_only_when_one_to_two_hundred_characters(int length, bool graphQl)
    {
        var globalId = new string('P', length);
        var transport = new ScriptedTransport(path =>
            path == "agents/tasks/task-1" ? (200, $$$"""{"id":"task-1","state":"completed","html_url":"https://github.com/acme/shop/copilot/tasks/task-1","head_ref":"copilot/fix-1","artifacts":[{"type":"pull","data":{"id":4001,"global_id":"{{{globalId}}}"}}]}""")
            : path == "graphql" ? (200, """{"data":{"node":{"url":"https://github.com/acme/shop/pull/8"}}}""")
            : path.StartsWith("repos/acme/shop/pulls?", StringComparison.Ordinal) ? (200, """[{"id":4001,"html_url":"https://github.com/acme/shop/pull/8"}]""")
            : (404, """{"message":"Not Found"}"""));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();

        var read = await provider.GetAgentAsync("task-1", CancellationToken.None);

        Assert.Equal("https://github.com/acme/shop/pull/8", read.Value?.PrUrl);
        Assert.Equal(graphQl, transport.Paths.Contains("graphql"));
    }

    [Theory]
    [InlineData("../repos/acme/shop")]
    [InlineData("task-1?state=all")]
    [InlineData("")]
    public async Task Agent_id_github_would_never_give_is_refused_without_a_request(string agentId)
    {
        // Ids go into the request path as they are: one that could name another resource is never sent.
        var transport = new ScriptedTransport(_ => (200, """{"id":"task-1","state":"in_progress"}"""));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();

        var result = await provider.GetAgentAsync(agentId, CancellationToken.None);

        Assert.Empty(transport.Paths);
        Assert.Equal((FailureTypes.InvalidRequest, false), (result.Failure?.FailureType, result.Failure?.RequestSent));
    }

    [Theory]
    [InlineData("5")]
    [InlineData("null")]
    [InlineData("{}")]
    public async Task Pull_request_node_whose_url_cannot_be_read_fails_the_finished_tasks_read_to_be_asked_again(
        string url)
    {
        // A node that names a url of another kind is an answer of another shape, not GitHub saying the token cannot see
        // the pull request: recording the task finished without it would never read it again.
        var result = await ReadFinishedTaskWhoseGraphQLAnswerIsAsync("""{"data":{"node":{"url":""" + url + "}}}");

        Assert.False(result.IsSuccess, $"answered the task {result.Value?.Status} without its pull request");
        Assert.Equal(FailureTypes.InvalidResponse, result.Failure!.FailureType);
    }

    [Fact]
    public async Task Pull_request_artifact_with_id_zero_is_passed_over_for_the_next_pull_request_artifact()
    {
        // Zero is no pull request's id: looked up, it would not be found, and the task would be recorded finished
        // without the pull request its next artifact names.
        var transport = TaskWithPullRequestEight("completed", """{"id":0}},{"type":"pull","data":{"id":4001}""");
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();

        var result = await provider.GetAgentAsync("task-1", CancellationToken.None);

        Assert.Equal("https://github.com/acme/shop/pull/8", result.Value?.PrUrl);
    }

    [Theory]
    [InlineData("{}")]
    [InlineData("\"NOT_FOUND\"")]
    [InlineData("1")]
    public async Task GraphQL_errors_that_are_not_a_list_fail_the_finished_tasks_read_to_be_asked_again(string errors)
    {
        // With a null node, a list of errors (or none) would say the token cannot see the pull request; errors of
        // another kind say nothing, and a task recorded finished without its pull request is never read again.
        var result = await ReadFinishedTaskWhoseGraphQLAnswerIsAsync("""{"data":{"node":null},"errors":""" + errors + "}");

        Assert.False(result.IsSuccess, $"answered the task {result.Value?.Status} without its pull request");
        Assert.Equal(FailureTypes.InvalidResponse, result.Failure!.FailureType);
    }

    [Fact]
    public async Task GraphQL_errors_null_with_a_null_node_finishes_the_task_without_its_pull_request()
    {
        var result = await ReadFinishedTaskWhoseGraphQLAnswerIsAsync("""{"data":{"node":null},"errors":null}""");

        Assert.True(result.IsSuccess, result.Failure?.FailureType);
        Assert.Equal((ProviderAgentStatus.Finished, null), (result.Value!.Status, result.Value.PrUrl));
    }

    /// <summary>A completed task with a pull request artifact, read when GraphQL answers its lookup with this body.</summary>
    private static Task<ProviderResult<ProviderAgent>> ReadFinishedTaskWhoseGraphQLAnswerIsAsync(string graphQlBody)
    {
        var transport = new ScriptedTransport(path =>
            path == "graphql" ? (200, graphQlBody)
            : TaskWithPullRequestEight("completed", """{"id":4001,"global_id":"PR_kwDO1"}""").Answer(path));
        return new CopilotAgentsTasksProviderFactory(transport).Create().GetAgentAsync("task-1", CancellationToken.None);
    }

    private sealed class CopilotAgentsTasksProviderFactory(IProviderTransport transport)
    {
        public CopilotAgentTasksProvider Create() => new(transport, TimeProvider.System, NullLogger<CopilotAgentTasksProvider>.Instance);
    }

    [Fact]
    public async Task A_stop_is_not_supported_and_nothing_is_sent_or_attempted()
    {
        // GitHub's agent tasks API has no stop: the person is told so (409 not_supported), and no call is made.
        var transport = new ScriptedTransport(_ => (200, "{}"));
        var provider = new CopilotAgentsTasksProviderFactory(transport).Create();

        var failure = (await provider.StopAsync("task-1", CancellationToken.None)).Failure!;

        Assert.Empty(transport.Paths);
        Assert.Equal((FailureTypes.NotSupported, false, false), (failure.FailureType, failure.RequestSent, failure.Attempted));
        // The engine re-stops a given-up agent still shown at work only where the provider says it can.
        Assert.False(provider.CanStop);
    }

    private sealed class ScriptedTransport(Func<string, (int Status, string Body)> answer) : IProviderTransport
    {
        public List<string> Paths { get; } = [];

        public (int Status, string Body) Answer(string path) => answer(path);

        public Task<ProviderResponse> SendAsync(ProviderRequest request, CancellationToken cancellationToken)
        {
            Paths.Add(request.Path);
            var (status, body) = answer(request.Path);
            return Task.FromResult(new ProviderResponse(status, System.Text.Encoding.UTF8.GetBytes(body)));
        }
    }

    /// <summary>
    /// GitHub with task-1 in <paramref name="state"/>, its pull artifact's data <paramref name="pullData"/>, and pull
    /// request 4001, acme/shop's #8, found both by GraphQL and in the branch's REST list.
    /// </summary>
    private static ScriptedTransport TaskWithPullRequestEight(string state, string pullData) => new(path =>
        path == "agents/tasks/task-1" ? (200, $$$"""{"id":"task-1","state":"{{{state}}}","html_url":"https://github.com/acme/shop/copilot/tasks/task-1","head_ref":"copilot/fix-1","artifacts":[{"type":"pull","data":{{{pullData}}}}]}""")
        : path == "graphql" ? (200, """{"data":{"node":{"url":"https://github.com/acme/shop/pull/8"}}}""")
        : path.StartsWith("repos/acme/shop/pulls?", StringComparison.Ordinal) ? (200, """[{"id":4001,"html_url":"https://github.com/acme/shop/pull/8"}]""")
        : (404, """{"message":"Not Found"}"""));
}
