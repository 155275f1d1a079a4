using System.Collections.Concurrent;
using System.Text.Json.Nodes;
using WireMock;
using WireMock.RequestBuilders;
using WireMock.ResponseBuilders;
using WireMock.Server;
using WireMock.Types;
using WireMock.Util;

namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>GitHub's agent tasks API on WireMock.Net: tasks are created, read and listed; tests move their state.</summary>
public sealed class FakeCopilot : IDisposable
{
    private readonly ConcurrentDictionary<string, JsonObject> tasks = new();
    private int sequence;

    public FakeCopilot()
    {
        Server = WireMockServer.Start();
        Server.Given(Request.Create().WithPath(new WireMock.Matchers.RegexMatcher("^/agents/repos/[^/]+/[^/]+/tasks$")).UsingPost())
            .RespondWith(Response.Create().WithCallback(Create));
        Server.Given(Request.Create().WithPath(new WireMock.Matchers.RegexMatcher("^/agents/repos/[^/]+/[^/]+/tasks$")).UsingGet())
            .RespondWith(Response.Create().WithCallback(List));
        Server.Given(Request.Create().WithPath(new WireMock.Matchers.RegexMatcher("^/agents/tasks/[^/]+$")).UsingGet())
            .RespondWith(Response.Create().WithCallback(Get));
    }

    public WireMockServer Server { get; }

    public string Url => Server.Url!;

    public IReadOnlyDictionary<string, JsonObject> Tasks => tasks;

    /// <summary>When set, the next launch answers this instead of creating a task.</summary>
    public Func<ResponseMessage>? NextLaunchAnswer { get; set; }

    /// <summary>When set, every list request answers this instead of the tasks created so far.</summary>
    public Func<ResponseMessage>? ListAnswer { get; set; }

    public int LaunchRequests => Server.LogEntries.Count(e => e.RequestMessage.Method == "POST");

    public void SetState(string taskId, string state, string? pullRequestUrl = null)
    {
        var task = tasks[taskId];
        task["state"] = state;
        if (pullRequestUrl is not null)
        {
            task["artifacts"] = new JsonArray(
                new JsonObject { ["provider"] = "github", ["type"] = "branch", ["data"] = new JsonObject { ["head_ref"] = task["head_ref"]!.GetValue<string>() } },
                new JsonObject { ["provider"] = "github", ["type"] = "pull_request", ["data"] = new JsonObject { ["html_url"] = pullRequestUrl, ["number"] = 7 } });
        }
    }

    private ResponseMessage Create(IRequestMessage request)
    {
        if (NextLaunchAnswer is { } answer)
        {
            NextLaunchAnswer = null;
            return answer();
        }

        var body = JsonNode.Parse(request.Body!)!;
        var segments = request.Path.Split('/');
        var id = $"task-{Interlocked.Increment(ref sequence):d4}";
        var task = new JsonObject
        {
            ["id"] = id,
            ["name"] = "Fix the issue",
            ["state"] = "queued",
            ["html_url"] = $"https://github.com/{segments[3]}/{segments[4]}/tasks/{id}",
            ["head_ref"] = body["head_ref"]?.GetValue<string>(),
            ["base_ref"] = body["base_ref"]?.GetValue<string>(),
            ["repository"] = new JsonObject { ["full_name"] = $"{segments[3]}/{segments[4]}" },
            ["artifacts"] = new JsonArray(),
            ["created_at"] = DateTimeOffset.UtcNow.ToString("O"),
        };
        tasks[id] = task;
        return Json(201, task.ToJsonString());
    }

    private ResponseMessage List(IRequestMessage request)
    {
        if (ListAnswer is { } answer)
        {
            return answer();
        }

        var repository = string.Join('/', request.Path.Split('/')[3..5]);
        var mine = tasks.Values.Where(t => t["repository"]!["full_name"]!.GetValue<string>() == repository).Select(t => (JsonNode)t.DeepClone()).ToArray();
        return Json(200, new JsonObject { ["tasks"] = new JsonArray(mine), ["total_active_count"] = mine.Length }.ToJsonString());
    }

    private ResponseMessage Get(IRequestMessage request) =>
        tasks.TryGetValue(request.Path.Split('/').Last(), out var task) ? Json(200, task.ToJsonString()) : Json(404, """{"message":"Not Found"}""");

    public static ResponseMessage Json(int status, string body) => new()
    {
        StatusCode = status,
        Headers = new Dictionary<string, WireMockList<string>> { ["Content-Type"] = new("application/json") },
        BodyData = new BodyData { BodyAsString = body, DetectedBodyType = BodyType.String, Encoding = System.Text.Encoding.UTF8 },
    };

    public void Dispose() => Server.Stop();
}
