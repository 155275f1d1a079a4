using System.Text;
using System.Text.Json.Nodes;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Providers.Copilot;
using HandoffDapr.Core.Repositories;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Core.Tests;

/// <summary>The Copilot provider inside the real engine, against an in-memory GitHub in its documented shapes (REST docs, 2026-03-10).</summary>
public sealed class CopilotReconcileTests
{
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 11, 24, 10, 0, 0, TimeSpan.Zero));
    private readonly RecordingWriter writer = new();

    private (HandoffEngine Engine, ScriptedGitHub GitHub) Create(int promptMaxLength = PromptBuilderDefault)
    {
        var github = new ScriptedGitHub(time);
        var provider = new CopilotAgentTasksProvider(github, time, NullLogger<CopilotAgentTasksProvider>.Instance);
        var engine = new HandoffEngine(new SingleIntegrationCatalog(new Integration(43, provider, PromptMaxLength: promptMaxLength)), new HandoffEngineOptions(),
            new RetryPolicy(new RetryOptions(), () => 0.5), time, NullLogger<HandoffEngine>.Instance);
        return (engine, github);
    }

    private const int PromptBuilderDefault = Prompts.PromptBuilder.DefaultMaxLength;

    [Theory]
    [InlineData(5)]
    [InlineData(7)]
    public async Task Lost_launch_reconciled_more_than_six_hours_later_is_found_not_launched_again(int hours)
    {
        var (engine, github) = Create();
        // The create call reaches GitHub (task-1 exists) but its answer is lost.
        github.LoseNextLaunchAnswer = true;
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        Assert.Equal(LaunchPhase.OutcomeUnknown, writer.Saved.Last().Launches[0].Phase);

        // The reconcile's list is rate limited; GitHub asks for a wait of 7 h (Retry-After is honoured up to a day).
        github.NextListAnswer = SecondaryRateLimit(TimeSpan.FromHours(hours));
        time.Advance(TimeSpan.FromMinutes(1));
        await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(LaunchPhase.OutcomeUnknown, writer.Saved.Last().Launches[0].Phase);

        time.Advance(TimeSpan.FromHours(hours));
        await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.Equal(1, github.LaunchRequests);
        Assert.Equal("task-1", writer.Saved.Last().Launches[0].AgentId);
    }

    [Fact]
    public async Task Lookup_finds_our_task_even_when_the_repository_had_more_than_twenty_tasks_in_six_hours()
    {
        var (_, github) = Create();
        for (var i = 0; i < 21; i++)
        {
            github.AddTask($"other work {i}\n\nHandoff reference: other-{i}");
            time.Advance(TimeSpan.FromMinutes(1));
        }

        var ours = github.AddTask("Fix it\n\nHandoff reference: pool-timeout-abc123");
        var provider = new CopilotAgentTasksProvider(github, time, NullLogger<CopilotAgentTasksProvider>.Instance);
        RepositoryName.TryParse("acme/shop", out var repository);

        // Ours is the newest task, the first one a read by id would look at.
        var found = await provider.FindAgentByBranchAsync(repository!.Value, "pool-timeout-abc123", null, CancellationToken.None);

        Assert.True(found.IsSuccess, found.Failure?.FailureType);
        Assert.Equal(ours, found.Value!.Id);
    }

    [Theory]
    [InlineData(19)]
    [InlineData(21)]
    public async Task Lost_launch_in_a_busy_repository_is_reconciled_not_failed_beside_its_running_task(int others)
    {
        var (engine, github) = Create();
        // Others started their tasks in the minutes before ours (within the lookup's clock slack, so they are candidates too).
        for (var i = 0; i < others; i++)
        {
            github.AddTask($"other work {i}\n\nHandoff reference: other-{i}");
            time.Advance(TimeSpan.FromSeconds(10));
        }

        github.LoseNextLaunchAnswer = true;
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        for (var i = 0; i < 6; i++)
        {
            time.Advance(TimeSpan.FromMinutes(31));
            await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        }

        var launch = writer.Saved.Last().Launches[0];
        Assert.Equal(1, github.LaunchRequests);
        // Its own task, not merely one: another's adopted would leave ours running unseen.
        Assert.True(launch.AgentId == github.LastTaskId, $"launch ended {launch.Phase} ({launch.FailureType}), agent {launch.AgentId ?? "none"}, while its task {github.LastTaskId} runs on GitHub");
    }

    [Fact]
    public async Task Prompt_sent_to_github_stays_within_the_integrations_prompt_cap()
    {
        var (engine, github) = Create(promptMaxLength: 8192);
        var trigger = Trigger("acme/shop") with
        {
            Snapshot = Trigger("acme/shop").Snapshot! with { Artifacts = new RunArtifacts(new RootCauseArtifact(new string('x', 20_000))) },
        };

        await engine.TriggerAndFinishAsync(1, null, trigger, writer, CancellationToken.None);

        var prompt = Assert.Single(github.LaunchPrompts);
        Assert.True(prompt.Length <= 8192, $"prompt sent is {prompt.Length} characters, over the integration's cap of 8192");
    }

    [Fact]
    public async Task Prompt_sent_to_github_stays_within_the_cap_with_the_longest_branch_name_in_its_reference()
    {
        // A one-word title of 80 letters makes the longest branch name BranchNamer gives (its 60-character prefix): the
        // reference line and the blank line before it still fit within the cap.
        var (engine, github) = Create(promptMaxLength: 8192);
        var trigger = Trigger("acme/shop") with
        {
            Snapshot = Trigger("acme/shop").Snapshot! with
            {
                Group = new RunGroup(456, new string('p', 80), "SHOP-1"),
                Artifacts = new RunArtifacts(new RootCauseArtifact(new string('x', 20_000))),
            },
        };

        await engine.TriggerAndFinishAsync(1, null, trigger, writer, CancellationToken.None);

        var prompt = Assert.Single(github.LaunchPrompts);
        Assert.EndsWith("\n\n" + CopilotAgentTasksProvider.HandoffReference(new string('p', 60) + prompt[^7..]), prompt, StringComparison.Ordinal);
        Assert.True(prompt.Length <= 8192, $"prompt sent is {prompt.Length} characters, over the integration's cap of 8192");
    }

    [Fact]
    public async Task Lookup_does_not_take_a_task_whose_reference_only_starts_with_our_branch_name()
    {
        var (_, github) = Create();
        // Another run's branch: BranchNamer gives "<first three title words>-<6 chars>", and a title can begin with what our whole branch name is.
        github.AddTask("Other fix\n\nHandoff reference: pool-abc123-zz9x8w");
        var provider = new CopilotAgentTasksProvider(github, time, NullLogger<CopilotAgentTasksProvider>.Instance);
        RepositoryName.TryParse("acme/shop", out var repository);

        var found = await provider.FindAgentByBranchAsync(repository!.Value, "pool-abc123", null, CancellationToken.None);

        Assert.True(found.IsSuccess);
        Assert.Null(found.Value);
    }

    [Fact]
    public async Task Launch_stored_before_FirstAttemptAt_existed_is_reconciled_not_launched_again()
    {
        var (engine, github) = Create();
        github.LoseNextLaunchAnswer = true;
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        var stored = writer.Saved.Last();
        Assert.Equal(LaunchPhase.OutcomeUnknown, stored.Launches[0].Phase);

        // The same state as the previous version stored it: no first_attempt_at.
        var json = System.Text.Json.Nodes.JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(stored, Serialization.HandoffJsonContext.Default.RunHandoffState))!;
        Assert.True(json["launches"]![0]!.AsObject().Remove("first_attempt_at"));
        var legacy = System.Text.Json.JsonSerializer.Deserialize(json.ToJsonString(), Serialization.HandoffJsonContext.Default.RunHandoffState)!;

        time.Advance(TimeSpan.FromMinutes(31));
        await engine.WakeAndFinishAsync(legacy, writer, CancellationToken.None);

        Assert.Equal(1, github.LaunchRequests);
        Assert.Equal("task-1", writer.Saved.Last().Launches[0].AgentId);
    }

    [Fact]
    public async Task Lookup_without_first_attempt_concludes_none_in_a_repository_with_old_tasks()
    {
        var (_, github) = Create();
        for (var i = 0; i < 25; i++)
        {
            github.AddTask($"other work {i}\n\nHandoff reference: other-{i}");
        }

        time.Advance(TimeSpan.FromDays(2));
        var provider = new CopilotAgentTasksProvider(github, time, NullLogger<CopilotAgentTasksProvider>.Instance);
        RepositoryName.TryParse("acme/shop", out var repository);

        var found = await provider.FindAgentByBranchAsync(repository!.Value, "pool-timeout-abc123", null, CancellationToken.None);

        Assert.True(found.IsSuccess, found.Failure?.FailureType);
        Assert.Null(found.Value);
    }

    [Theory]
    [InlineData(false)]
    // The first attempt starts at 10:00:00.600; GitHub creates the task within that second and stamps it 10:00:00Z.
    [InlineData(true)]
    public async Task Lost_launch_is_found_in_a_repository_busy_after_it(bool wholeSecondStamps)
    {
        var (engine, github) = Create();
        github.WholeSecondStamps = wholeSecondStamps;
        time.Advance(TimeSpan.FromMilliseconds(600));
        github.LoseNextLaunchAnswer = true;
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);

        // The reconcile is told to wait 7 h; meanwhile others start 25 tasks in the repository (one every 10 minutes).
        github.NextListAnswer = SecondaryRateLimit(TimeSpan.FromHours(7));
        time.Advance(TimeSpan.FromMinutes(1));
        await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        for (var i = 0; i < 25; i++)
        {
            time.Advance(TimeSpan.FromMinutes(10));
            github.AddTask($"other work {i}\n\nHandoff reference: other-{i}");
        }

        time.Advance(TimeSpan.FromHours(3));
        for (var i = 0; i < 6; i++)
        {
            await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
            time.Advance(TimeSpan.FromMinutes(31));
        }

        var launch = writer.Saved.Last().Launches[0];
        Assert.Equal(1, github.LaunchRequests);
        Assert.True(launch.AgentId == "task-1", $"launch ended {launch.Phase} ({launch.FailureType}), agent {launch.AgentId ?? "none"}, while task-1 runs on GitHub");
    }

    [Theory]
    [InlineData(21)]
    [InlineData(60)]
    public async Task Lost_second_attempt_after_a_rate_limited_first_is_found_in_a_busy_repository(int others)
    {
        var (engine, github) = Create();
        github.WholeSecondStamps = true;
        // The first attempt is refused with a 429 (nothing created); GitHub asks for an hour's wait.
        github.NextLaunchAnswer = SecondaryRateLimit(TimeSpan.FromHours(1));
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        Assert.Null(github.LastTaskId);

        // During that hour others start tasks in the repository (one every 2.5 minutes).
        for (var i = 0; i < others; i++)
        {
            time.Advance(TimeSpan.FromSeconds(150));
            github.AddTask($"other work {i}\n\nHandoff reference: other-{i}");
        }

        // The second attempt creates our task, but its answer is lost.
        time.Advance(TimeSpan.FromMinutes(10));
        github.LoseNextLaunchAnswer = true;
        await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        Assert.Equal(2, github.LaunchRequests);
        var ours = github.LastTaskId;
        Assert.Equal(LaunchPhase.OutcomeUnknown, writer.Saved.Last().Launches[0].Phase);

        for (var i = 0; i < 8; i++)
        {
            time.Advance(TimeSpan.FromMinutes(31));
            await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        }

        var launch = writer.Saved.Last().Launches[0];
        Assert.Equal(2, github.LaunchRequests);
        Assert.True(launch.AgentId == ours, $"launch ended {launch.Phase} ({launch.FailureType}, {launch.Attempts} attempts), agent {launch.AgentId ?? "none"}, while {ours} runs on GitHub");
    }

    [Fact]
    public async Task Relaunch_of_a_launch_github_refused_is_sent_in_a_repository_busy_since()
    {
        var (engine, github) = Create();
        // GitHub refuses the first launch for good (403: no access, no task created): the launch fails.
        github.NextLaunchAnswer = new ProviderResponse(403, Encoding.UTF8.GetBytes("""{"message":"Resource not accessible by integration"}"""));
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        Assert.Equal(LaunchPhase.Failed, writer.Saved.Last().Launches[0].Phase);
        Assert.Null(github.LastTaskId);

        // Others start 60 tasks in the repository; then access is fixed and a person relaunches it.
        for (var i = 0; i < 60; i++)
        {
            time.Advance(TimeSpan.FromMinutes(1));
            github.AddTask($"other work {i}\n\nHandoff reference: other-{i}");
        }

        time.Advance(TimeSpan.FromMinutes(10));
        await engine.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/shop"), writer, CancellationToken.None);
        for (var i = 0; i < 8; i++)
        {
            time.Advance(TimeSpan.FromMinutes(31));
            await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        }

        var launch = writer.Saved.Last().Launches[0];
        Assert.True(launch.AgentId == github.LastTaskId, $"launch ended {launch.Phase} ({launch.FailureType}, {launch.Attempts} attempts), agent {launch.AgentId ?? "none"}");
        Assert.Equal(2, github.LaunchRequests);
    }

    [Fact]
    public async Task Lost_answer_of_a_relaunch_github_refused_before_is_found_in_a_repository_busy_since()
    {
        var (engine, github) = Create();
        github.NextLaunchAnswer = new ProviderResponse(403, Encoding.UTF8.GetBytes("""{"message":"Resource not accessible by integration"}"""));
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        for (var i = 0; i < 60; i++)
        {
            time.Advance(TimeSpan.FromMinutes(1));
            github.AddTask($"other work {i}\n\nHandoff reference: other-{i}");
        }

        // The relaunch creates our task, but its answer is lost.
        time.Advance(TimeSpan.FromMinutes(10));
        github.LoseNextLaunchAnswer = true;
        await engine.TriggerAndFinishAsync(1, writer.Saved.Last(), Trigger("acme/shop"), writer, CancellationToken.None);
        var ours = github.LastTaskId;
        for (var i = 0; i < 8; i++)
        {
            time.Advance(TimeSpan.FromMinutes(31));
            await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        }

        var launch = writer.Saved.Last().Launches[0];
        Assert.True(launch.AgentId == ours, $"launch ended {launch.Phase} ({launch.FailureType}, {launch.Attempts} attempts), agent {launch.AgentId ?? "none"}, while {ours} runs on GitHub");
        Assert.Equal(2, github.LaunchRequests);
    }

    [Fact]
    public async Task Lost_launch_whose_task_was_archived_meanwhile_is_not_launched_again()
    {
        // The reconcile is told to wait 7 h; meanwhile our task finishes and someone archives it in Copilot's task list.
        var (engine, github) = await LoseLaunchAndDelayItsLookupAsync(TimeSpan.FromHours(7));
        time.Advance(TimeSpan.FromHours(1));
        github.Archive("task-1");

        time.Advance(TimeSpan.FromHours(6));
        await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        Assert.Equal(1, github.LaunchRequests);
        Assert.Equal("task-1", writer.Saved.Last().Launches[0].AgentId);
    }

    [Theory]
    [InlineData("completed", CodingAgentStatus.Completed)]
    [InlineData("failed", CodingAgentStatus.Failed)]
    [InlineData("timed_out", CodingAgentStatus.Failed)]
    public async Task Lost_launch_whose_task_ended_meanwhile_is_reconciled_ended_with_its_pull_request(string ended, CodingAgentStatus status)
    {
        // The reconcile is told to wait an hour; meanwhile our task ends with the pull request it opened (Copilot opens
        // it as it starts: a task that then failed has one too), which its artifact names by node id only (GraphQL's
        // node gives the URL).
        var (engine, github) = await LoseLaunchAndDelayItsLookupAsync(TimeSpan.FromHours(1));
        github.End("task-1", ended, "https://github.com/acme/shop/pull/77");

        time.Advance(TimeSpan.FromHours(1));
        await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);

        // Adopted ended, the agent is never read again: the pull request must come with the adoption.
        var state = writer.Saved.Last();
        Assert.Equal("task-1", state.Launches[0].AgentId);
        Assert.Equal(status, state.CodingAgents["task-1"].Status);
        Assert.Equal("https://github.com/acme/shop/pull/77", Assert.Single(state.CodingAgents["task-1"].Results).PrUrl);
    }

    /// <summary>
    /// A launch whose answer is lost, then the lookup for it told by GitHub's secondary rate limit to wait
    /// <paramref name="wait"/>: what happens to the task meanwhile is found by the lookup made after it.
    /// </summary>
    private async Task<(HandoffEngine Engine, ScriptedGitHub GitHub)> LoseLaunchAndDelayItsLookupAsync(TimeSpan wait)
    {
        var (engine, github) = Create();
        github.LoseNextLaunchAnswer = true;
        await engine.TriggerAndFinishAsync(1, null, Trigger("acme/shop"), writer, CancellationToken.None);
        github.NextListAnswer = SecondaryRateLimit(wait);
        time.Advance(TimeSpan.FromMinutes(1));
        await engine.WakeAndFinishAsync(writer.Saved.Last(), writer, CancellationToken.None);
        return (engine, github);
    }

    private static HandoffTrigger Trigger(params string[] repositories) => new(456, 43, Snapshot: new RunSnapshot(
        1,
        Group: new RunGroup(456, "Pool timeout", "SHOP-1"),
        Artifacts: new RunArtifacts(new RootCauseArtifact("x")),
        Preferences: new HandoffPreferences(repositories.Select(r => (RepositoryPreference?)new RepositoryPreference("github", r.Split('/')[0], r.Split('/')[1])).ToList())));

    private static ProviderResponse SecondaryRateLimit(TimeSpan retryAfter) => new(
        429, Encoding.UTF8.GetBytes("""{"message":"You have exceeded a secondary rate limit."}"""), RetryAfter: ((long)retryAfter.TotalSeconds).ToString(System.Globalization.CultureInfo.InvariantCulture));

    /// <summary>acme/shop's agent tasks as GitHub's 2026-03-10 docs show them: list items without sessions, reads by id with them.</summary>
    private sealed class ScriptedGitHub(TimeProvider time) : IProviderTransport
    {
        private readonly List<JsonObject> tasks = [];

        public bool LoseNextLaunchAnswer { get; set; }

        public ProviderResponse? NextListAnswer { get; set; }

        /// <summary>Answers the next create call without creating a task (a rejection such as a 429).</summary>
        public ProviderResponse? NextLaunchAnswer { get; set; }

        /// <summary>Stamps created_at to the whole second, as GitHub's documented examples do ("2025-01-01T00:00:00Z").</summary>
        public bool WholeSecondStamps { get; set; }

        private string Stamp() => WholeSecondStamps
            ? time.GetUtcNow().ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture)
            : time.GetUtcNow().ToString("O");

        public int LaunchRequests { get; private set; }

        public List<string> LaunchPrompts { get; } = [];

        public string? LastTaskId => tasks.LastOrDefault()?["id"]!.GetValue<string>();

        /// <summary>Archives a task (GitHub's list leaves archived tasks out unless is_archived=true).</summary>
        public void Archive(string id)
        {
            var task = tasks.Single(t => t["id"]!.GetValue<string>() == id);
            task["state"] = "completed";
            task["archived_at"] = Stamp();
        }

        /// <summary>
        /// Ends a task in <paramref name="state"/> (completed, failed, timed_out, cancelled) with a pull request artifact as
        /// GitHub's model shows it: <c>{"type":"pull","data":{"id","global_id"}}</c>.
        /// </summary>
        public void End(string id, string state, string pullRequestUrl)
        {
            var task = tasks.Single(t => t["id"]!.GetValue<string>() == id);
            task["state"] = state;
            task["artifacts"] = new JsonArray(new JsonObject
            {
                ["provider"] = "github",
                ["type"] = "pull",
                ["data"] = new JsonObject { ["id"] = 4001, ["global_id"] = $"PR_{id}" },
            });
            pullRequests[$"PR_{id}"] = pullRequestUrl;
        }

        private readonly Dictionary<string, string> pullRequests = [];

        public string AddTask(string prompt)
        {
            lock (tasks)
            {
                var id = $"task-{tasks.Count + 1}";
                tasks.Add(new JsonObject
                {
                    ["id"] = id,
                    ["state"] = "in_progress",
                    ["html_url"] = $"https://github.com/acme/shop/copilot/tasks/{id}",
                    ["artifacts"] = new JsonArray(),
                    ["created_at"] = Stamp(),
                    ["sessions"] = new JsonArray(new JsonObject
                    {
                        ["id"] = $"s-{id}",
                        ["state"] = "in_progress",
                        ["created_at"] = Stamp(),
                        ["prompt"] = prompt,
                        ["head_ref"] = $"copilot/fix-{tasks.Count + 1}",
                        ["base_ref"] = "main",
                    }),
                });
                return id;
            }
        }

        public Task<ProviderResponse> SendAsync(ProviderRequest request, CancellationToken cancellationToken)
        {
            var path = request.Path.Split('?')[0];
            if (request.Method == HttpMethod.Post && path == "agents/repos/acme/shop/tasks")
            {
                LaunchRequests++;
                if (NextLaunchAnswer is { } rejected)
                {
                    NextLaunchAnswer = null;
                    return Task.FromResult(rejected);
                }

                var prompt = JsonNode.Parse(request.Body.Span)!["prompt"]!.GetValue<string>();
                LaunchPrompts.Add(prompt);
                var id = AddTask(prompt);
                if (LoseNextLaunchAnswer)
                {
                    LoseNextLaunchAnswer = false;
                    throw new ProviderTransportException(TransportFailureKind.Timeout, requestSent: true);
                }

                return Answer(201, WithoutSessions(tasks.Single(t => t["id"]!.GetValue<string>() == id)));
            }

            if (request.Method == HttpMethod.Get && path == "agents/repos/acme/shop/tasks")
            {
                if (NextListAnswer is { } answer)
                {
                    NextListAnswer = null;
                    return Task.FromResult(answer);
                }

                var query = request.Path.Split('?').ElementAtOrDefault(1)?.Split('&').Select(p => p.Split('=')).ToDictionary(p => p[0], p => p[1]) ?? [];
                var perPage = int.Parse(query.GetValueOrDefault("per_page", "30"));
                var page = int.Parse(query.GetValueOrDefault("page", "1"));
                var archived = query.GetValueOrDefault("is_archived", "false") == "true";
                var items = tasks.AsEnumerable().Reverse().Where(t => (t["archived_at"] is not null) == archived).Skip((page - 1) * perPage).Take(perPage).Select(t => (JsonNode)JsonNode.Parse(WithoutSessions(t))!).ToArray();
                return Answer(200, new JsonObject { ["tasks"] = new JsonArray(items) }.ToJsonString());
            }

            if (request.Method == HttpMethod.Get && path.StartsWith("agents/tasks/", StringComparison.Ordinal))
            {
                var task = tasks.SingleOrDefault(t => t["id"]!.GetValue<string>() == path["agents/tasks/".Length..]);
                return task is null ? Answer(404, """{"message":"Not Found"}""") : Answer(200, task.ToJsonString());
            }

            if (request.Method == HttpMethod.Post && path == "graphql")
            {
                var nodeId = JsonNode.Parse(request.Body.Span)!["variables"]!["id"]!.GetValue<string>();
                var node = pullRequests.TryGetValue(nodeId, out var url) ? new JsonObject { ["url"] = url } : null;
                return Answer(200, new JsonObject { ["data"] = new JsonObject { ["node"] = node } }.ToJsonString());
            }

            return Answer(404, """{"message":"Not Found"}""");
        }

        private static string WithoutSessions(JsonObject task)
        {
            var copy = task.DeepClone().AsObject();
            copy.Remove("sessions");
            return copy.ToJsonString();
        }

        private static Task<ProviderResponse> Answer(int status, string body) => Task.FromResult(new ProviderResponse(status, Encoding.UTF8.GetBytes(body)));
    }
}
