using System.Collections.Concurrent;
using System.Text.Json.Nodes;
using WireMock;
using WireMock.RequestBuilders;
using WireMock.ResponseBuilders;
using WireMock.Server;
using static HandoffDapr.Service.Tests.Infrastructure.WireMockMessages;

namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>
/// GitHub's agent tasks API on WireMock.Net, in GitHub's shapes (its REST docs, 2026-03-10, and go-github's AgentTask
/// model): a task has no top-level <c>head_ref</c>; its branch, which GitHub names, and its prompt are on its
/// <c>sessions</c>, which only the read by id returns; a pull
/// request artifact is <c>{"type":"pull","data":{"id","global_id"}}</c>, whose URL only GraphQL's <c>node</c> gives.
/// </summary>
public sealed class FakeCopilot : IDisposable
{
    private readonly ConcurrentDictionary<string, JsonObject> tasks = new();
    private readonly ConcurrentDictionary<string, string> pullRequestUrls = new();
    private int sequence;

    public FakeCopilot()
    {
        Server = WireMockServer.Start(new WireMock.Settings.WireMockServerSettings { Urls = ["http://127.0.0.1:0"] });
        Server.Given(Request.Create().WithPath(new WireMock.Matchers.RegexMatcher("^/agents/repos/[^/]+/[^/]+/tasks$")).UsingPost())
            .RespondWith(Response.Create().WithCallback(Create));
        Server.Given(Request.Create().WithPath(new WireMock.Matchers.RegexMatcher("^/agents/repos/[^/]+/[^/]+/tasks$")).UsingGet())
            .RespondWith(Response.Create().WithCallback(List));
        Server.Given(Request.Create().WithPath(new WireMock.Matchers.RegexMatcher("^/agents/tasks/[^/]+$")).UsingGet())
            .RespondWith(Response.Create().WithCallback(Get));
        Server.Given(Request.Create().WithPath("/graphql").UsingPost())
            .RespondWith(Response.Create().WithCallback(GraphQl));
        Server.Given(Request.Create().WithPath(new WireMock.Matchers.RegexMatcher("^/repos/[^/]+/[^/]+/pulls$")).UsingGet())
            .RespondWith(Response.Create().WithCallback(Pulls));
    }

    public int GraphQlRequests => Server.LogEntries.Count(e => e.RequestMessage.Path == "/graphql");

    public WireMockServer Server { get; }

    public string Url => Server.Url!;

    public IReadOnlyDictionary<string, JsonObject> Tasks => tasks;

    /// <summary>When set, the next launch answers this instead of creating a task.</summary>
    public Func<ResponseMessage>? NextLaunchAnswer { get; set; }

    /// <summary>When set, every list request answers this instead of the tasks created so far.</summary>
    public Func<ResponseMessage>? ListAnswer { get; set; }

    /// <summary>Review: when set, the next launch creates its task but answers this status (the answer is lost).</summary>
    public int? CreateButAnswerStatus { get; set; }

    public int LaunchRequests => Server.LogEntries.Count(e => e.RequestMessage.Method == "POST" && e.RequestMessage.Path != "/graphql");

    /// <param name="withGlobalId">GitHub documents the artifact's <c>global_id</c> as optional; without it, only the REST list of pull requests names the PR.</param>
    public void SetState(string taskId, string state, string? pullRequestUrl = null, bool withGlobalId = true)
    {
        var task = tasks[taskId];
        task["state"] = state;
        task["updated_at"] = DateTimeOffset.UtcNow.ToString("O");
        if (pullRequestUrl is not null)
        {
            var globalId = $"PR_kwDO{taskId}";
            var pullId = 4000 + int.Parse(taskId.Split('-')[1], System.Globalization.CultureInfo.InvariantCulture);
            pullRequestUrls[globalId] = pullRequestUrl;
            pulls[taskId] = new JsonObject
            {
                ["id"] = pullId,
                ["html_url"] = pullRequestUrl,
                ["state"] = "open",
                ["head"] = new JsonObject { ["ref"] = task["sessions"]![0]!["head_ref"]!.GetValue<string>() },
            };
            var data = new JsonObject { ["id"] = pullId };
            if (withGlobalId)
            {
                data["global_id"] = globalId;
            }

            task["artifacts"] = new JsonArray(new JsonObject { ["provider"] = "github", ["type"] = "pull", ["data"] = data });
        }
    }

    private readonly ConcurrentDictionary<string, JsonObject> pulls = new();

    /// <summary>The task's pull request merged (closed): GitHub's list of pulls shows it only when asked for <c>state=closed</c> or <c>all</c>.</summary>
    public void MergePullRequest(string taskId) => pulls[taskId]["state"] = "closed";

    /// <summary>
    /// <c>GET /repos/{owner}/{repo}/pulls?head={owner}:{branch}&amp;state=</c>: the repository's pull requests from that branch,
    /// only the open ones unless <c>state</c> asks otherwise (GitHub's default).
    /// </summary>
    private ResponseMessage Pulls(IRequestMessage request)
    {
        var repository = string.Join('/', request.Path.Split('/')[2..4]);
        var head = QueryValue(request, "head") ?? "";
        var branch = head.Contains(':') ? head[(head.IndexOf(':') + 1)..] : head;
        var state = QueryValue(request, "state") ?? "open";
        var matching = pulls.Where(pull => repositories[pull.Key] == repository && pull.Value["head"]!["ref"]!.GetValue<string>() == branch
                && (state == "all" || pull.Value["state"]!.GetValue<string>() == state))
            .Select(pull => pull.Value.DeepClone()).ToArray();
        return Json(200, new JsonArray(matching).ToJsonString());
    }

    /// <summary>A task created as the fake answers it (a test may put its own mapping in front and pass through to this).</summary>
    internal ResponseMessage Create(IRequestMessage request)
    {
        if (NextLaunchAnswer is { } answer)
        {
            NextLaunchAnswer = null;
            return answer();
        }

        var body = JsonNode.Parse(request.Body!)!;
        var segments = request.Path.Split('/');
        var number = Interlocked.Increment(ref sequence);
        var id = $"task-{number:d4}";
        var task = new JsonObject
        {
            ["id"] = id,
            ["name"] = "Fix the issue",
            ["state"] = "queued",
            ["html_url"] = $"https://github.com/{segments[3]}/{segments[4]}/copilot/tasks/{id}",
            ["repository"] = new JsonObject { ["id"] = 1296269 },
            ["artifacts"] = new JsonArray(),
            ["created_at"] = DateTimeOffset.UtcNow.ToString("O"),
            ["updated_at"] = DateTimeOffset.UtcNow.ToString("O"),
            ["sessions"] = new JsonArray(new JsonObject
            {
                ["id"] = $"session-{id}",
                ["state"] = "queued",
                // GitHub names the branch itself (its create call takes no branch name) and keeps the prompt.
                ["head_ref"] = $"copilot/fix-{number}",
                ["base_ref"] = body["base_ref"]?.GetValue<string>(),
                ["prompt"] = body["prompt"]?.GetValue<string>(),
            }),
        };
        tasks[id] = task;
        repositories[id] = $"{segments[3]}/{segments[4]}";
        if (CreateButAnswerStatus is { } lost)
        {
            CreateButAnswerStatus = null;
            return Json(lost, """{"message":"Bad Gateway"}""");
        }

        return Json(201, WithoutSessions(task));
    }

    private readonly ConcurrentDictionary<string, string> repositories = new();

    /// <summary>List items and the create answer carry no sessions (GitHub's example task has none).</summary>
    private static string WithoutSessions(JsonObject task)
    {
        var copy = task.DeepClone().AsObject();
        copy.Remove("sessions");
        return copy.ToJsonString();
    }

    private ResponseMessage GraphQl(IRequestMessage request)
    {
        var id = JsonNode.Parse(request.Body!)!["variables"]?["id"]?.GetValue<string>();
        var node = id is not null && pullRequestUrls.TryGetValue(id, out var url) ? new JsonObject { ["url"] = url } : null;
        return Json(200, new JsonObject { ["data"] = new JsonObject { ["node"] = node } }.ToJsonString());
    }

    private ResponseMessage List(IRequestMessage request)
    {
        if (ListAnswer is { } answer)
        {
            return answer();
        }

        var repository = string.Join('/', request.Path.Split('/')[3..5]);
        if (QueryValue(request, "is_archived") == "true")
        {
            // None of this fake's tasks is ever archived.
            return Json(200, """{"tasks":[],"total_active_count":0}""");
        }

        var perPage = int.TryParse(QueryValue(request, "per_page"), out var size) ? size : 30;
        var page = int.TryParse(QueryValue(request, "page"), out var number) ? number : 1;
        // GitHub's defaults: sort by updated_at, newest first. Sorted by creation whatever the request says, the fake
        // could not show a lookup that forgot to ask for created_at (it stops at the first task older than the launch).
        var sort = QueryValue(request, "sort") ?? "updated_at";
        var ascending = QueryValue(request, "direction") == "asc";
        if (sort is not ("updated_at" or "created_at"))
        {
            return Json(422, """{"message":"Validation Failed"}""");
        }

        var mine = tasks.Where(t => repositories[t.Key] == repository)
            .Select(t => (Task: t, At: DateTimeOffset.Parse(t.Value[sort]!.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture)))
            .ToList();
        var ordered = ascending
            ? mine.OrderBy(t => t.At).ThenBy(t => t.Task.Key, StringComparer.Ordinal)
            : mine.OrderByDescending(t => t.At).ThenByDescending(t => t.Task.Key, StringComparer.Ordinal);
        var listed = ordered.Select(t => t.Task)
            .Skip((page - 1) * perPage).Take(perPage)
            .Select(t => JsonNode.Parse(WithoutSessions(t.Value))).ToArray();
        return Json(200, new JsonObject { ["tasks"] = new JsonArray(listed), ["total_active_count"] = mine.Count }.ToJsonString());
    }

    private ResponseMessage Get(IRequestMessage request) =>
        tasks.TryGetValue(request.Path.Split('/').Last(), out var task) ? Json(200, task.ToJsonString()) : Json(404, """{"message":"Not Found"}""");

    public void Dispose() => Server.Stop();
}
