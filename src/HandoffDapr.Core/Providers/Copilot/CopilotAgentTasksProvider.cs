using System.Globalization;
using System.Net;
using System.Text.Json;
using System.Text.Json.Serialization;
using HandoffDapr.Core.Model;
using HandoffDapr.Core.Repositories;
using HandoffDapr.Core.Serialization;
using Microsoft.Extensions.Logging;

namespace HandoffDapr.Core.Providers.Copilot;

/// <summary>
/// GitHub Copilot coding agent through GitHub's agent tasks REST API (public preview). No webhooks: status comes
/// from the polling fallback. No stop or follow-up in the API: those answer <c>not_supported</c>.
/// </summary>
public sealed class CopilotAgentTasksProvider(
    IProviderTransport transport,
    TimeProvider timeProvider,
    ILogger<CopilotAgentTasksProvider> logger,
    string? model = null) : ICodingAgentProvider
{
    private readonly ProviderExchange exchange = new(transport, timeProvider, logger, "GitHub agent tasks", Classify, Message);

    public const string Name = "github_copilot_agent";
    public const string ApiVersion = "2026-03-10";
    private const int ListPageSize = 100;
    // As Cursor's: bounds one lookup's calls (a judgment, not an API limit); running out of pages leaves the launch
    // unknown and retried, never "not launched".
    private const int MaxListPages = 10;

    /// <summary>
    /// Candidate tasks read one by one per lookup, at most. Lookups are rare (only after a lost answer); the engine starts
    /// the window at the first attempt that may have made ours (not at a refused one before it), but a busy repository may
    /// still start tens of tasks between that attempt and a later one whose answer was lost.
    /// </summary>
    private const int MaxTaskReads = 50;

    private const string PullRequestUrlQuery = "query($id: ID!) { node(id: $id) { ... on PullRequest { url } } }";

    private static readonly IReadOnlyDictionary<string, string> GitHubHeaders = new Dictionary<string, string>
    {
        ["Accept"] = "application/vnd.github+json",
        ["X-GitHub-Api-Version"] = ApiVersion,
    };

    public string ProviderName => Name;

    /// <summary>The handoff reference line and the blank line before it, for the longest branch name we make.</summary>
    public int PromptReserve => ReferenceReserve;

    private static readonly int ReferenceReserve = 2 + HandoffReference(new string('x', Repositories.BranchNamer.MaxLength)).Length;

    public async Task<ProviderResult<ProviderAgent>> LaunchAsync(AgentLaunchRequest request, CancellationToken cancellationToken)
    {
        // GitHub names the task's branch itself (its API takes no new branch name), so the prompt carries our branch name
        // as the handoff's reference: a launch whose answer was lost is found again by it, in the task's session prompt.
        var body = JsonSerializer.SerializeToUtf8Bytes(
            new CopilotTaskRequest($"{request.Prompt}\n\n{HandoffReference(request.BranchName)}", request.BaseRef, request.AutoCreatePr, model),
            CopilotJsonContext.Default.CopilotTaskRequest);
        return await exchange.SendAndReadAsync(
            new ProviderRequest(HttpMethod.Post, $"agents/repos/{request.Repository.Owner}/{request.Repository.Name}/tasks", body, GitHubHeaders), "launch", ReadTaskElement, cancellationToken);
    }

    public async Task<ProviderResult<ProviderAgent>> GetAgentAsync(string agentId, CancellationToken cancellationToken)
    {
        if (!AgentIds.IsValid(agentId))
        {
            return ProviderResult<ProviderAgent>.Failed(new ProviderFailure(FailureTypes.InvalidRequest, Retryable: false, RequestSent: false, Attempted: false));
        }

        var read = await ReadTaskAsync(agentId, cancellationToken);
        // Only an ended task's pull request is looked up (one more call; a task at work would cost one at every poll). A
        // failed, timed-out or cancelled task's too: Copilot opens its pull request as it starts work, and the engine keeps
        // a failed agent's, for the person deciding whether to launch again.
        if (read.Value is not { } agent || !agent.Agent.Status.HasEnded() || agent.Agent.PrUrl is not null)
        {
            return read.IsSuccess ? ProviderResult<ProviderAgent>.Success(read.Value!.Agent) : ProviderResult<ProviderAgent>.Failed(read.Failure!);
        }

        if (PullRequestNodeId(agent.Artifacts) is not { } nodeId)
        {
            return await WithPullRequestFromRestAsync(agent, cancellationToken);
        }

        // A pull request artifact names the PR by its node id only: GraphQL's node gives its URL. A lookup that fails
        // for now fails the read, so the poll asks again rather than record a finished task without its pull request;
        // one GitHub refuses for good records the task finished without it.
        var lookup = await exchange.SendAndReadAsync(
            new ProviderRequest(HttpMethod.Post, "graphql", JsonSerializer.SerializeToUtf8Bytes(new GraphQlRequest(PullRequestUrlQuery, new Dictionary<string, string> { ["id"] = nodeId }), CopilotJsonContext.Default.GraphQlRequest), GitHubHeaders),
            "pull request",
            PullRequestUrlOf,
            cancellationToken);
        return WithPullRequest(agent.Agent, lookup);
    }

    /// <summary>
    /// The ended task with what a pull request lookup found. A refusal asking again would not change (any failure not
    /// retryable: the token may not see the pull request, a 403 or 404 <c>repository_access</c>; a 401 for a token the
    /// task's own read just took; a 422), as GraphQL's NOT_FOUND and FORBIDDEN are, leaves the task finished without it:
    /// unread at every poll it would be timed out as failed. A failure that may pass (a rate limit, GitHub's 5xx, an
    /// answer of another shape) fails a finished task's read, asked again; a failed task's end is not held back for it
    /// (its status is what a person acts on, and a lookup that kept failing would have it timed out instead).
    /// </summary>
    private static ProviderResult<ProviderAgent> WithPullRequest(ProviderAgent task, ProviderResult<string> lookup) =>
        lookup.IsSuccess ? ProviderResult<ProviderAgent>.Success(task with { PrUrl = lookup.Value is { Length: > 0 } url ? url : null })
        : !lookup.Failure!.Retryable || task.Status != ProviderAgentStatus.Finished ? ProviderResult<ProviderAgent>.Success(task)
        : ProviderResult<ProviderAgent>.Failed(lookup.Failure);

    /// <summary>
    /// The pull request's URL in GraphQL's answer. Empty when GitHub says the token cannot see it (no node, or only
    /// NOT_FOUND and FORBIDDEN errors, which GraphQL answers with 200) or that the id is not a pull request's (a node
    /// without <c>url</c>: the query's <c>... on PullRequest</c> selected nothing): asking again would not change that,
    /// and the task, finished, would otherwise be timed out as if it had never answered. Null (a failed read, asked
    /// again) for any other error, such as a rate limit or GitHub's own "Something went wrong while executing your query"
    /// (a timeout, with no type), after which a completed task would never be read again; and for an answer of another
    /// shape.
    /// </summary>
    private static string? PullRequestUrlOf(JsonElement root)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            return null;
        }

        var node = root.TryGetProperty("data", out var data) && data.ValueKind == JsonValueKind.Object && data.TryGetProperty("node", out var found) ? found : default;
        if (node.ValueKind == JsonValueKind.Object && JsonElements.String(node, "url") is { } url)
        {
            return LinkOrNone(url);
        }

        if (root.TryGetProperty("errors", out var listed) && listed.ValueKind is not (JsonValueKind.Array or JsonValueKind.Null))
        {
            // GraphQL's errors are a list (null taken as none): anything else is an answer of another shape.
            return null;
        }

        var errors = listed.ValueKind == JsonValueKind.Array ? listed.EnumerateArray().ToList() : [];
        var refused = errors.Count == 0
            ? node.ValueKind == JsonValueKind.Null || (node.ValueKind == JsonValueKind.Object && !node.TryGetProperty("url", out _))
            : errors.All(error => JsonElements.String(error, "type") is "NOT_FOUND" or "FORBIDDEN");
        return refused ? string.Empty : null;
    }

    /// <summary>
    /// A pull request artifact may carry only the PR's id (GitHub documents <c>global_id</c> as optional): the PR is then
    /// looked for among the repository's pull requests from the task's branch. Not found there, the task is finished
    /// without one, as when it has no artifact at all.
    /// </summary>
    private async Task<ProviderResult<ProviderAgent>> WithPullRequestFromRestAsync(TaskRead task, CancellationToken cancellationToken)
    {
        if (PullRequestId(task.Artifacts) is not { } pullId || task.Agent.BranchName is not { } branch || RepositoryOf(task.Agent.AgentUrl) is not { } repository)
        {
            return ProviderResult<ProviderAgent>.Success(task.Agent);
        }

        var head = Uri.EscapeDataString($"{repository.Owner}:{branch}");
        var lookup = await exchange.SendAndReadAsync(
            new ProviderRequest(HttpMethod.Get, $"repos/{repository.Owner}/{repository.Name}/pulls?head={head}&state=all&per_page=100", Headers: GitHubHeaders),
            "pull request",
            root => PullRequestUrlAmong(root, pullId),
            cancellationToken);
        return WithPullRequest(task.Agent, lookup);
    }

    /// <summary>
    /// The URL of the pull request with this id in a list of pull requests; empty when it is not there or its URL is
    /// not https, null for another shape.
    /// </summary>
    private static string? PullRequestUrlAmong(JsonElement pulls, long pullId)
    {
        if (pulls.ValueKind != JsonValueKind.Array)
        {
            return null;
        }

        foreach (var pull in pulls.EnumerateArray())
        {
            if (JsonElements.Int64(pull, "id") == pullId)
            {
                // A URL that is not https is no link to show, as for GraphQL's node: null would fail every poll of the
                // finished task.
                return JsonElements.String(pull, "html_url") is { } url ? LinkOrNone(url) : null;
            }
        }

        return string.Empty;
    }

    /// <summary>A pull request's URL as its link, or empty (no link, for good) when it is not https.</summary>
    private static string LinkOrNone(string url) => IsHttps(url) ? url : string.Empty;

    /// <summary>Whether a URL GitHub gave may be shown as a link: only https ones are.</summary>
    private static bool IsHttps(string url) => url.StartsWith("https://", StringComparison.OrdinalIgnoreCase);

    private static long? PullRequestId(JsonElement artifacts) =>
        PullRequestArtifacts(artifacts).Select(data => JsonElements.Int64(data, "id")).FirstOrDefault(id => id > 0);

    /// <summary>The repository a task's web URL names (<c>https://github.com/{owner}/{repo}/copilot/tasks/{id}</c>).</summary>
    private static RepositoryName? RepositoryOf(string? taskUrl) =>
        Uri.TryCreate(taskUrl, UriKind.Absolute, out var url) && url.Segments is { Length: >= 3 } segments
            && RepositoryName.TryParse($"{segments[1].TrimEnd('/')}/{segments[2].TrimEnd('/')}", out var repository) ? repository : null;

    private Task<ProviderResult<TaskRead>> ReadTaskAsync(string taskId, CancellationToken cancellationToken) =>
        exchange.SendAndReadAsync(
            new ProviderRequest(HttpMethod.Get, $"agents/tasks/{taskId}", Headers: GitHubHeaders),
            "get",
            task => ReadTaskElement(task) is { } agent
                ? new TaskRead(agent, task.TryGetProperty("artifacts", out var artifacts) ? artifacts.Clone() : default, SessionPrompts(task))
                : null,
            cancellationToken);

    /// <param name="Prompts">The prompts of the task's sessions (only a read by id returns sessions).</param>
    private sealed record TaskRead(ProviderAgent Agent, JsonElement Artifacts, IReadOnlyList<string> Prompts);

    /// <summary>The line a launch's prompt ends with, naming the launch: GitHub keeps the prompt on the task's sessions.</summary>
    public static string HandoffReference(string branchName) => $"Handoff reference: {branchName}";

    private static List<string> SessionPrompts(JsonElement task)
    {
        var prompts = new List<string>();
        if (task.TryGetProperty("sessions", out var sessions) && sessions.ValueKind == JsonValueKind.Array)
        {
            foreach (var session in sessions.EnumerateArray())
            {
                if (JsonElements.String(session, "prompt") is { } prompt)
                {
                    prompts.Add(prompt);
                }
            }
        }

        return prompts;
    }

    /// <summary>
    /// A lost launch is one of the repository's tasks created since its first attempt (newest first): one shown on our
    /// branch is ours (should GitHub ever keep the name we asked for); the others are read by id (see <see cref="InReadingOrder"/>), up to
    /// <see cref="MaxTaskReads"/>, and ours is the one whose session prompt ends with our <see cref="HandoffReference"/>.
    /// Candidates left unread, a task that cannot be read, or one without a session prompt yet make the lookup
    /// incomplete, never "not found".
    /// </summary>
    public async Task<ProviderResult<ProviderAgent?>> FindAgentByBranchAsync(RepositoryName repository, string branchName, DateTimeOffset? firstSentAt, CancellationToken cancellationToken)
    {
        // GitHub lists archived tasks apart (is_archived defaults to false): ours may have been archived meanwhile.
        var found = await FindAsync(repository, branchName, firstSentAt, archived: false, cancellationToken);
        if (found is { IsSuccess: true, Value: null })
        {
            found = await FindAsync(repository, branchName, firstSentAt, archived: true, cancellationToken);
        }

        return found.Value is { PrUrl: null } ended && ended.Status.HasEnded() ? await WithPullRequestAsync(ended, cancellationToken) : found;
    }

    /// <summary>
    /// A task found ended is adopted ended, and an ended agent is not read again: its pull request, which the task names
    /// by id only, is looked up now, as a poll's read does (a failed task's too). Should that read fail, the task is
    /// reported still running, so the next poll reads it and learns the pull request, rather than adopted ended without it.
    /// </summary>
    private async Task<ProviderResult<ProviderAgent?>> WithPullRequestAsync(ProviderAgent ended, CancellationToken cancellationToken)
    {
        var read = await GetAgentAsync(ended.Id, cancellationToken);
        return ProviderResult<ProviderAgent?>.Success(read.Value ?? ended with { Status = ProviderAgentStatus.Running });
    }

    private async Task<ProviderResult<ProviderAgent?>> FindAsync(RepositoryName repository, string branchName, DateTimeOffset? firstSentAt, bool archived, CancellationToken cancellationToken)
    {
        var candidates = new List<ProviderAgent>();
        var unreadableListed = 0;
        // Clocks differ: a task stamped a little before our first attempt may still be its own. Unknown (a launch stored
        // before its first attempt was kept), the window is the last UnknownStartWindow.
        var since = (firstSentAt ?? timeProvider.GetUtcNow() - UnknownStartWindow) - ClockSlack;
        for (var page = 1; page <= MaxListPages; page++)
        {
            var path = $"agents/repos/{repository.Owner}/{repository.Name}/tasks?sort=created_at&direction=desc&per_page={ListPageSize}&page={page}"
                + (archived ? "&is_archived=true" : string.Empty);
            var answer = await SendAsync(new ProviderRequest(HttpMethod.Get, path, Headers: GitHubHeaders), "list", cancellationToken);
            if (answer.Failure is { } failure)
            {
                return ProviderResult<ProviderAgent?>.Failed(failure);
            }

            bool listEnds;
            try
            {
                using var document = JsonDocument.Parse(answer.Response!.Body);
                if (ScreenPage(
                        document.RootElement, answer.Response.StatusCode, branchName, since, candidates,
                        ref unreadableListed, out listEnds) is { } decided)
                {
                    return decided;
                }
            }
            catch (Exception exception) when (ProviderExchange.IsUnreadable(exception))
            {
                return Malformed<ProviderAgent?>(answer.Response!.StatusCode, "list");
            }

            // Outside the page's parse: a fault while reading the candidates is not this page's shape.
            if (listEnds)
            {
                return await FindAmongAsync(
                    InReadingOrder(candidates, firstSentAt), candidates.Count, unreadableListed, branchName,
                    cancellationToken);
            }
        }

        return exchange.ListExhausted(MaxListPages);
    }

    /// <summary>
    /// One page of the list (newest first) screened: the lookup's answer when the page decides it (a task shown on our
    /// branch, or a page that is not a list of tasks), else null, with the tasks created since <paramref name="since"/>
    /// added to <paramref name="candidates"/> (counted in <paramref name="unreadableListed"/> when they cannot be read),
    /// and whether the list ends here (a task older than the launch reached, or a page short of full).
    /// </summary>
    private ProviderResult<ProviderAgent?>? ScreenPage(
        JsonElement page, int statusCode, string branchName, DateTimeOffset since, List<ProviderAgent> candidates,
        ref int unreadableListed, out bool listEnds)
    {
        listEnds = false;
        if (page.ValueKind != JsonValueKind.Object
            || !page.TryGetProperty("tasks", out var tasks) || tasks.ValueKind != JsonValueKind.Array)
        {
            return Malformed<ProviderAgent?>(statusCode, "list");
        }

        var reachedOlder = false;
        foreach (var task in tasks.EnumerateArray())
        {
            if (task.ValueKind != JsonValueKind.Object)
            {
                // Not a list of tasks: passing over what may be ours would answer "none" and launch it again.
                return Malformed<ProviderAgent?>(statusCode, "list");
            }

            var agent = ReadTaskElement(task);
            var shownBranch = HeadRef(task);
            if (string.Equals(shownBranch, branchName, StringComparison.Ordinal))
            {
                // Ours, but unreadable (no usable id): "none" would launch a second task beside it.
                return agent is not null
                    ? ProviderResult<ProviderAgent?>.Success(agent)
                    : Malformed<ProviderAgent?>(statusCode, "list");
            }

            if (agent is null)
            {
                // Not readable: it may be ours, unless it is older than the launch. The branch it is shown on says
                // nothing, as GitHub names a task's branch itself.
                unreadableListed += CreatedAt(task) < since ? 0 : 1;
            }
            else if (agent.CreatedAt < since)
            {
                // Newest first: this task and every later one are older than the launch we look for.
                reachedOlder = true;
                break;
            }
            else
            {
                candidates.Add(agent);
            }
        }

        listEnds = reachedOlder || tasks.GetArrayLength() < ListPageSize;
        return null;
    }

    /// <summary>Clocks differ: a task stamped a little before our first attempt may still be its own.</summary>
    private static readonly TimeSpan ClockSlack = TimeSpan.FromMinutes(5);

    /// <summary>
    /// A launch stored without its first attempt is looked for as far back as every lookup once was: retries come at
    /// most RetryMaxDelay (30 min) apart, unless a Retry-After asks for longer. Not tied to AgentMaxAge.
    /// </summary>
    private static readonly TimeSpan UnknownStartWindow = TimeSpan.FromHours(6);

    /// <summary>
    /// The order to read candidates in, most likely ours first. With the first attempt known: nearest to it first (ours
    /// came at one of the attempts; a stamp to the whole second or a clock behind ours may put it a little before).
    /// Unknown: newest first, as lost launches are recent.
    /// </summary>
    private static IEnumerable<string> InReadingOrder(List<ProviderAgent> newestFirst, DateTimeOffset? firstSentAt) =>
        firstSentAt is not { } first
            ? newestFirst.Select(task => task.Id)
            : newestFirst.OrderBy(task => task.CreatedAt is { } created ? (created - first).Duration() : TimeSpan.Zero).Select(task => task.Id);

    private async Task<ProviderResult<ProviderAgent?>> FindAmongAsync(
        IEnumerable<string> inReadingOrder, int candidates, int unreadableListed, string branchName, CancellationToken cancellationToken)
    {
        var reference = HandoffReference(branchName);
        var unreadable = unreadableListed;
        foreach (var taskId in inReadingOrder.Take(MaxTaskReads))
        {
            var read = await ReadTaskAsync(taskId, cancellationToken);
            if (read.Failure is { } failure)
            {
                if (failure.FailureType == FailureTypes.RateLimited)
                {
                    return ProviderResult<ProviderAgent?>.Failed(failure with { OutcomeUnknown = true });
                }

                // Another user's task in the repository may not be readable by id (404), or one may be deleted meanwhile:
                // whether it is ours stays unknown, so look on; ours may still be among the rest.
                unreadable++;
                continue;
            }

            var (task, _, prompts) = read.Value!;
            if (string.Equals(task.BranchName, branchName, StringComparison.Ordinal) || prompts.Any(prompt => EndsWithLine(prompt, reference)))
            {
                return ProviderResult<ProviderAgent?>.Success(task);
            }

            if (prompts.Count == 0)
            {
                // No session prompt to tell by (a task just queued, or an answer without its sessions, whatever the task's
                // state): it may be ours. Only tasks created since the launch's first attempt get here.
                unreadable++;
            }
        }

        // Candidates past MaxTaskReads were never read: as undecided as one that could not be read. The list itself was
        // read to its end (ListExhausted is for a list longer than the pages read).
        unreadable += Math.Max(0, candidates - MaxTaskReads);
        return unreadable > 0 ? exchange.ReadsIncomplete(unreadable) : ProviderResult<ProviderAgent?>.Success(null);
    }

    /// <summary>Whether the text's last line is exactly <paramref name="line"/>: another branch name that merely starts with ours is not ours.</summary>
    private static bool EndsWithLine(string text, string line)
    {
        var trimmed = text.TrimEnd();
        return trimmed.EndsWith(line, StringComparison.Ordinal)
            && (trimmed.Length == line.Length || trimmed[trimmed.Length - line.Length - 1] == '\n');
    }

    public bool CanStop => false;

    /// <summary>GitHub names a task's branch itself: the lookup reads the reference the prompt ends with.</summary>
    public bool FindsAgentsByBranch => false;

    public Task<ProviderResult<bool>> StopAsync(string agentId, CancellationToken cancellationToken) => NotSupported();

    public Task<ProviderResult<bool>> AddFollowupAsync(string agentId, string text, CancellationToken cancellationToken) => NotSupported();

    private static Task<ProviderResult<bool>> NotSupported() =>
        Task.FromResult(ProviderResult<bool>.Failed(new ProviderFailure(FailureTypes.NotSupported, Retryable: false, RequestSent: false, Attempted: false)));

    /// <summary>GitHub's task states onto the provider-neutral statuses.</summary>
    public static ProviderAgentStatus MapState(string? state) => state?.ToLowerInvariant() switch
    {
        "queued" => ProviderAgentStatus.Creating,
        "in_progress" or "idle" or "waiting_for_user" => ProviderAgentStatus.Running,
        "completed" => ProviderAgentStatus.Finished,
        "failed" => ProviderAgentStatus.Error,
        "timed_out" => ProviderAgentStatus.Expired,
        "cancelled" => ProviderAgentStatus.Stopped,
        _ => ProviderAgentStatus.Unknown,
    };

    /// <summary>
    /// What GitHub's answers mean for a handoff: 401 a rejected token; 402 no quota left; a 403 or 429 a rate limit when no
    /// requests remain (<c>x-ratelimit-remaining: 0</c>), else no quota left when its message says so, else a rate limit
    /// for a 429 or a message naming one; any other 403 a missing Copilot licence or repository permission; 404 a
    /// repository the token cannot see.
    /// </summary>
    public static ProviderFailure Classify(ProviderResponse response, DateTimeOffset now)
    {
        var message = Message(response.Body);
        return response.StatusCode switch
        {
            (int)HttpStatusCode.PaymentRequired => new ProviderFailure(FailureTypes.QuotaExceeded, Retryable: false, StatusCode: response.StatusCode),
            // GitHub's documented sign of its primary rate limit is the header, whatever the message says.
            (int)HttpStatusCode.Forbidden or (int)HttpStatusCode.TooManyRequests when response.RateLimitRemaining?.Trim() == "0" => RateLimited(response, now),
            (int)HttpStatusCode.Forbidden or (int)HttpStatusCode.TooManyRequests when Mentions(message, "quota", "premium request", "usage limit") =>
                new ProviderFailure(FailureTypes.QuotaExceeded, Retryable: false, StatusCode: response.StatusCode),
            (int)HttpStatusCode.TooManyRequests or (int)HttpStatusCode.Forbidden when response.StatusCode == 429 || Mentions(message, "rate limit") =>
                RateLimited(response, now),
            (int)HttpStatusCode.Forbidden when Mentions(message, "licen", "copilot is not", "not enabled", "subscription") =>
                new ProviderFailure(FailureTypes.NoCopilotLicense, Retryable: false, StatusCode: response.StatusCode),
            (int)HttpStatusCode.Forbidden or (int)HttpStatusCode.NotFound =>
                new ProviderFailure(FailureTypes.RepositoryAccess, Retryable: false, StatusCode: response.StatusCode),
            _ => ProviderFailureClassifier.FromResponse(response, now),
        };
    }

    private static ProviderFailure RateLimited(ProviderResponse response, DateTimeOffset now) =>
        new(FailureTypes.RateLimited, Retryable: true, RetryAfter: RateLimitWait(response, now), StatusCode: response.StatusCode);

    /// <summary>
    /// GitHub's rule for a rate-limited request: <c>Retry-After</c> if sent; else, with no requests remaining, until
    /// <c>x-ratelimit-reset</c> (epoch seconds); else at least a minute.
    /// </summary>
    private static TimeSpan RateLimitWait(ProviderResponse response, DateTimeOffset now)
    {
        if (ProviderFailureClassifier.ParseRetryAfter(response.RetryAfter, now) is { } retryAfter)
        {
            return retryAfter;
        }

        if (response.RateLimitRemaining?.Trim() == "0"
            && long.TryParse(response.RateLimitReset, NumberStyles.None, CultureInfo.InvariantCulture, out var resetSeconds)
            && resetSeconds < DateTimeOffset.MaxValue.ToUnixTimeSeconds())
        {
            var untilReset = DateTimeOffset.FromUnixTimeSeconds(resetSeconds) - now;
            return untilReset < TimeSpan.FromMinutes(1) ? TimeSpan.FromMinutes(1)
                : untilReset > ProviderFailureClassifier.MaxRetryAfter ? ProviderFailureClassifier.MaxRetryAfter : untilReset;
        }

        return TimeSpan.FromMinutes(1);
    }

    private static ProviderAgent? ReadTaskElement(JsonElement task)
    {
        if (task.ValueKind != JsonValueKind.Object || JsonElements.String(task, "id") is not { } id || !AgentIds.IsValid(id))
        {
            return null;
        }

        return new ProviderAgent(
            id,
            MapState(JsonElements.String(task, "state")),
            JsonElements.String(task, "name"),
            JsonElements.String(task, "html_url"),
            HeadRef(task),
            PullRequestUrl(task),
            Summary: null,
            CreatedAt(task));
    }

    private static DateTimeOffset? CreatedAt(JsonElement task) =>
        JsonElements.String(task, "created_at") is { } text && DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var parsed)
            ? parsed
            : null;

    /// <summary>The task's head branch: on a branch artifact, else on the task itself, else on its latest session (GitHub's model).</summary>
    private static string? HeadRef(JsonElement task)
    {
        var artifacts = task.TryGetProperty("artifacts", out var found) ? found : default;
        foreach (var data in ArtifactData(artifacts, type => type == "branch"))
        {
            if (JsonElements.String(data, "head_ref") is { } branch)
            {
                return branch;
            }
        }

        if (JsonElements.String(task, "head_ref") is { } head)
        {
            return head;
        }

        if (task.TryGetProperty("sessions", out var sessions) && sessions.ValueKind == JsonValueKind.Array)
        {
            foreach (var session in sessions.EnumerateArray().Reverse())
            {
                if (JsonElements.String(session, "head_ref") is { } sessionHead)
                {
                    return sessionHead;
                }
            }
        }

        return null;
    }

    /// <summary>
    /// A pull request artifact's URL, when the artifact carries one (GitHub's model gives only ids: see
    /// <see cref="PullRequestNodeId"/>). Only a pull request's page (<c>/{owner}/{repo}/pull/{number}</c>): a REST
    /// object's <c>url</c> is GitHub's API address, which would be dropped as no link to the repository's pull request,
    /// and the task recorded finished without it; its ids are looked up instead.
    /// </summary>
    private static string? PullRequestUrl(JsonElement task)
    {
        foreach (var data in PullRequestArtifacts(task.TryGetProperty("artifacts", out var artifacts) ? artifacts : default))
        {
            if ((JsonElements.String(data, "html_url") ?? JsonElements.String(data, "url")) is { } url
                && IsHttps(url) && IsPullRequestPage(url))
            {
                return url;
            }
        }

        return null;
    }

    private static bool IsPullRequestPage(string url) =>
        Uri.TryCreate(url, UriKind.Absolute, out var uri) && uri.AbsolutePath.Split('/') is [_, _, _, "pull", ..];

    private static string? PullRequestNodeId(JsonElement artifacts) =>
        PullRequestArtifacts(artifacts).Select(data => JsonElements.String(data, "global_id")).FirstOrDefault(id => id is { Length: > 0 and <= 200 });

    /// <summary>
    /// The data of the task's pull request artifacts: <c>{"type":"pull"}</c> (go-github's model), or a
    /// <c>github_resource</c> whose data says <c>"type":"pull"</c> (as Sentry's client sees them).
    /// </summary>
    private static IEnumerable<JsonElement> PullRequestArtifacts(JsonElement artifacts) =>
        ArtifactData(artifacts, type => type.Contains("pull", StringComparison.OrdinalIgnoreCase));

    /// <summary>The data objects of the artifacts whose kind (see <see cref="ArtifactType"/>) matches.</summary>
    private static IEnumerable<JsonElement> ArtifactData(JsonElement artifacts, Func<string, bool> kindMatches)
    {
        if (artifacts.ValueKind != JsonValueKind.Array)
        {
            yield break;
        }

        foreach (var artifact in artifacts.EnumerateArray())
        {
            if (ArtifactType(artifact) is { } type && kindMatches(type)
                && artifact.TryGetProperty("data", out var data) && data.ValueKind == JsonValueKind.Object)
            {
                yield return data;
            }
        }
    }

    /// <summary>An artifact's kind: its own <c>type</c>, or its data's for a generic <c>github_resource</c>.</summary>
    private static string? ArtifactType(JsonElement artifact)
    {
        var type = JsonElements.String(artifact, "type");
        return type == "github_resource" && artifact.TryGetProperty("data", out var data) ? JsonElements.String(data, "type") : type;
    }

    private Task<(ProviderResponse? Response, ProviderFailure? Failure)> SendAsync(ProviderRequest request, string operation, CancellationToken cancellationToken) =>
        exchange.SendAsync(request, operation, cancellationToken);

    private ProviderResult<T> Malformed<T>(int statusCode, string operation) => exchange.Malformed<T>(statusCode, operation);

    private static string? Message(ReadOnlyMemory<byte> body)
    {
        try
        {
            using var document = JsonDocument.Parse(body);
            return JsonElements.String(document.RootElement, "message");
        }
        catch (Exception exception) when (ProviderExchange.IsUnreadable(exception))
        {
            return null;
        }
    }

    private static bool Mentions(string? message, params string[] words) =>
        message is not null && words.Any(word => message.Contains(word, StringComparison.OrdinalIgnoreCase));
}

internal sealed record CopilotTaskRequest(
    string Prompt,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? BaseRef,
    bool CreatePullRequest,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Model);

internal sealed record GraphQlRequest(string Query, IReadOnlyDictionary<string, string> Variables);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(CopilotTaskRequest))]
[JsonSerializable(typeof(GraphQlRequest))]
internal sealed partial class CopilotJsonContext : JsonSerializerContext;
