using System.Collections.Concurrent;
using System.Text.Json;
using System.Text.Json.Nodes;
using WireMock;
using WireMock.RequestBuilders;
using WireMock.ResponseBuilders;
using WireMock.Server;
using WireMock.Types;
using static HandoffDapr.Service.Tests.Infrastructure.WireMockMessages;

namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>
/// Cursor's agents API on a real WireMock.Net server (127.0.0.1): launches create agents with ids and remember
/// their branch, so tests count what reached the provider and reconciliation can list them. Per repository,
/// tests can script failures.
/// </summary>
public sealed class FakeCursor : IDisposable
{
    public const string ProviderSecretText = "provider-internal-detail-7f3a";
    private readonly ConcurrentDictionary<string, JsonObject> agents = new();
    private readonly ConcurrentDictionary<string, ConcurrentQueue<Func<Task<ResponseMessage>>>> scripted = new(StringComparer.OrdinalIgnoreCase);
    private int sequence;

    public FakeCursor()
    {
        Server = WireMockServer.Start(new WireMock.Settings.WireMockServerSettings { Urls = ["http://127.0.0.1:0"] });
        Server.Given(Request.Create().WithPath("/v0/agents").UsingPost()).RespondWith(Response.Create().WithCallback(LaunchCallback));
        Server.Given(Request.Create().WithPath("/v0/agents").UsingGet()).RespondWith(Response.Create().WithCallback(List));
        Server.Given(Request.Create().WithPath(new WireMock.Matchers.RegexMatcher("^/v0/agents/[^/]+$")).UsingGet())
            .RespondWith(Response.Create().WithCallback(Get));
        Server.Given(Request.Create().WithPath(new WireMock.Matchers.RegexMatcher("^/v0/agents/[^/]+/(stop|followup)$")).UsingPost())
            .RespondWith(Response.Create().WithCallback(CommandCallback));
    }

    private static WireMock.RequestBuilders.IRequestBuilder LaunchRequestFor(string repository) =>
        Request.Create().WithPath("/v0/agents").UsingPost().WithBody(new WireMock.Matchers.WildcardMatcher($"*github.com/{repository}\"*"));

    /// <summary>Launches for <paramref name="repository"/> are answered only after <paramref name="delay"/>.</summary>
    public void Slow(string repository, TimeSpan delay) =>
        Server.Given(LaunchRequestFor(repository))
            .AtPriority(-1)
            .RespondWith(Response.Create().WithDelay(delay).WithCallback(LaunchCallback));

    /// <summary>
    /// Launches for <paramref name="repository"/> wait (up to 30 s) until <see cref="HeldLaunches.Release"/>. They wait
    /// without a thread: a blocked thread-pool thread per held launch starves the pool that the service's timeouts and
    /// the test's own waits run on.
    /// </summary>
    public HeldLaunches Hold(string repository)
    {
        var held = new HeldLaunches();
        Server.Given(LaunchRequestFor(repository))
            .AtPriority(-1)
            .RespondWith(Response.Create().WithCallback(async request =>
            {
                Interlocked.Increment(ref held.Unanswered);
                try
                {
                    held.Arrived.Set();
                    await held.ReleasedWithin(TimeSpan.FromSeconds(30));
                    return await LaunchAsync(request);
                }
                finally
                {
                    Interlocked.Decrement(ref held.Unanswered);
                }
            }));
        return held;
    }

    public sealed class HeldLaunches : IDisposable
    {
        /// <summary>Set once a held launch has reached the provider.</summary>
        public ManualResetEventSlim Arrived { get; } = new();

        private readonly TaskCompletionSource released = new(TaskCreationOptions.RunContinuationsAsynchronously);

        internal int Unanswered;

        public void Release() => released.TrySetResult();

        /// <summary>Completes once released, or after <paramref name="limit"/> (the held call then goes on anyway).</summary>
        internal async Task ReleasedWithin(TimeSpan limit)
        {
            try
            {
                await released.Task.WaitAsync(limit);
            }
            catch (TimeoutException)
            {
            }
        }

        /// <summary>
        /// Waits (up to 10 s) until every held launch that arrived has reached the fake's state (its agent created).
        /// A released launch goes on in the background: its caller may have been answered, or given up, long before.
        /// </summary>
        public async Task AnsweredAsync() =>
            Assert.True(
                await Eventually.Within(TimeSpan.FromSeconds(10), () => Volatile.Read(ref Unanswered) == 0),
                "a released launch has not reached the fake provider's state within 10 s");

        public void Dispose()
        {
            Release();
            Arrived.Dispose();
        }
    }

    /// <summary>
    /// From now on a seeded share of launches fails: 500 or 429 (no agent), a timeout or a garbled answer
    /// (agent created, answer lost). Reads stay reliable, so lost answers can be reconciled.
    /// </summary>
    public void Chaos(int seed, double failureRate, TimeSpan timeoutDelay)
    {
        chaos = new Random(seed);
        chaosRate = failureRate;
        chaosDelay = timeoutDelay;
    }

    private Random? chaos;
    private double chaosRate;
    private TimeSpan chaosDelay;

    private async Task<ResponseMessage?> ChaosAnswerAsync(JsonObject body, string repository)
    {
        if (chaos is null)
        {
            return null;
        }

        int pick;
        lock (chaos)
        {
            pick = chaos.NextDouble() < chaosRate ? chaos.Next(4) : -1;
        }

        switch (pick)
        {
            case 0:
                return Status(500)();
            case 1:
                return Status(429, retryAfter: "1")();
            case 2:
                Create(body, repository);
                // Awaited, not slept: the caller's timeout that this outlasts needs a pool thread to fire.
                await Task.Delay(chaosDelay);
                return Json(201, "{}");
            case 3:
                Create(body, repository);
                return Json(201, "{\"id\": 12, \"status\": [");
            default:
                return null;
        }
    }

    /// <summary>
    /// Stop and follow-up calls wait (up to 10 s, without a thread, as <see cref="Hold"/>'s) until
    /// <see cref="HeldLaunches.Release"/>, then succeed. Until <see cref="NextCommandAnswer"/> is set again.
    /// </summary>
    public HeldLaunches HoldCommands()
    {
        var held = new HeldLaunches();
        NextCommandAnswer = null;
        heldCommands = held;
        return held;
    }

    private HeldLaunches? heldCommands;
    private Func<ResponseMessage>? nextCommandAnswer;

    /// <summary>Answer for the next stop or follow-up calls; null means success. Setting it ends <see cref="HoldCommands"/>.</summary>
    public Func<ResponseMessage>? NextCommandAnswer
    {
        get => nextCommandAnswer;
        set
        {
            heldCommands = null;
            nextCommandAnswer = value;
        }
    }

    /// <summary>A follow-up resumes an agent that ended, as Cursor's does (off by default: most tests follow one agent's end).</summary>
    public bool FollowupResumes { get; set; }

    /// <summary>
    /// A stop of an agent that ended is refused, as Cursor's is (it stops only an agent at work; the status code it
    /// answers is not documented: a 400 here, which the service reports as the provider's refusal). Off by default:
    /// most tests stop one agent whatever its state.
    /// </summary>
    public bool RefusesStopOfEnded { get; set; }

    private readonly ConcurrentQueue<string> stopsRefused = new();

    /// <summary>
    /// Stops of <paramref name="agentId"/> refused because it had ended (<see cref="RefusesStopOfEnded"/>).
    /// </summary>
    public int StopsRefused(string agentId) => stopsRefused.Count(id => id == agentId);

    /// <summary>Cursor's statuses of an agent that ended (one <see cref="FollowupResumes"/> sets to work again).</summary>
    public static bool HasEnded(string? status) => status is "FINISHED" or "ERROR" or "EXPIRED" or "STOPPED";

    public IEnumerable<(string Path, string? Body)> CommandRequests => Server.LogEntries
        .Where(entry => entry.RequestMessage.Method == "POST" && (entry.RequestMessage.Path.EndsWith("/stop") || entry.RequestMessage.Path.EndsWith("/followup")))
        .Select(entry => (entry.RequestMessage.Path, entry.RequestMessage.Body));

    public int GetRequests(string agentId) => Server.LogEntries.Count(entry => entry.RequestMessage.Method == "GET" && entry.RequestMessage.Path == $"/v0/agents/{agentId}");

    /// <summary>Moves an agent at the provider, as Cursor's own progress would.</summary>
    public void SetStatus(string agentId, string status, string? prUrl = null, string? summary = null)
    {
        var agent = agents[agentId];
        lock (agent)
        {
            agent["status"] = status;
            if (prUrl is not null)
            {
                agent["target"]!["prUrl"] = prUrl;
            }

            if (summary is not null)
            {
                agent["summary"] = summary;
            }
        }
    }

    private int pullRequests;

    /// <summary>
    /// The pull request a finishing agent reports: the one it opened before, if a follow-up resumed it (its branch's is
    /// still the one), else a new one of its repository, numbered as they are asked for.
    /// </summary>
    public string PullRequestOf(string agentId)
    {
        var agent = agents[agentId];
        lock (agent)
        {
            return agent["target"]?["prUrl"]?.GetValue<string>()
                ?? $"{RepositoryOf(agent)}/pull/{Interlocked.Increment(ref pullRequests)}";
        }
    }

    // An agent is written by the test's steps and by commands while reads serialize it on WireMock's threads: a
    // JsonObject is not safe to read while written, so each takes the agent's lock.
    private static string Serialized(JsonObject agent)
    {
        lock (agent)
        {
            return agent.ToJsonString();
        }
    }

    private static JsonNode Copied(JsonObject agent)
    {
        lock (agent)
        {
            return agent.DeepClone();
        }
    }

    private async Task<IResponseMessage> CommandCallback(IRequestMessage request)
    {
        if (heldCommands is { } held)
        {
            held.Arrived.Set();
            await held.ReleasedWithin(TimeSpan.FromSeconds(10));
            return Json(200, "{}");
        }

        if (NextCommandAnswer is { } answer)
        {
            return answer();
        }

        var id = request.Path.Split('/')[^2];
        if (!agents.TryGetValue(id, out var agent))
        {
            return Json(404, "{\"error\":{\"message\":\"Agent not found\"}}");
        }

        // One command at a time per agent: two stops of one at work would both find it so, and both stop it.
        lock (agent)
        {
            if (request.Path.EndsWith("/stop", StringComparison.Ordinal))
            {
                if (RefusesStopOfEnded && HasEnded(agent["status"]!.GetValue<string>()))
                {
                    stopsRefused.Enqueue(id);
                    return Json(400, "{\"error\":{\"message\":\"Agent is not running\"}}");
                }

                agent["status"] = "STOPPED";
            }
            else if (FollowupResumes && HasEnded(agent["status"]!.GetValue<string>()))
            {
                agent["status"] = "RUNNING";
            }
        }

        return Json(200, "{\"id\":\"" + id + "\"}");
    }

    public WireMockServer Server { get; }

    public string Url => Server.Url!;

    /// <summary>Agents the provider created, by id.</summary>
    public IReadOnlyDictionary<string, JsonObject> Agents => agents;

    public int LaunchRequests => Server.LogEntries.Count(entry => entry.RequestMessage.Method == "POST" && entry.RequestMessage.Path == "/v0/agents");

    public IEnumerable<JsonObject> LaunchBodies => Server.LogEntries
        .Where(entry => entry.RequestMessage.Method == "POST" && entry.RequestMessage.Path == "/v0/agents")
        .Select(entry => JsonNode.Parse(entry.RequestMessage.Body!)!.AsObject());

    public int AgentsFor(string repository) => agents.Values.Count(agent => RepositoryOf(agent) == $"https://github.com/{repository}");

    /// <summary>The next launches for <paramref name="repository"/> (owner/name) answer with these, in order; later ones succeed.</summary>
    public void Script(string repository, params Func<ResponseMessage>[] answers)
    {
        foreach (var answer in answers)
        {
            Script(repository, () => Task.FromResult(answer()));
        }
    }

    /// <summary>The next launch for <paramref name="repository"/> answers with this, awaited: an answer that takes its time without holding a thread.</summary>
    public void Script(string repository, Func<Task<ResponseMessage>> answer) =>
        scripted.GetOrAdd($"https://github.com/{repository}", _ => new ConcurrentQueue<Func<Task<ResponseMessage>>>()).Enqueue(answer);

    public static Func<ResponseMessage> Status(int status, string? body = null, string? retryAfter = null) => () =>
    {
        var message = Json(status, body ?? "{\"error\":{\"message\":\"" + ProviderSecretText + "\",\"code\":\"boom\"}}");
        if (retryAfter is not null)
        {
            message.Headers!["Retry-After"] = new WireMockList<string>(retryAfter);
        }

        return message;
    };

    /// <summary>The agent is created, but the answer is garbage: the outcome is unknown to the caller.</summary>
    public Func<ResponseMessage> CreatesButAnswersGarbage() => CreatesButAnswers(201, "{\"id\": ");

    /// <summary>The agent is created, but the caller gets <paramref name="status"/> (a gateway that lost the answer, say).</summary>
    public Func<ResponseMessage> CreatesButAnswers(int status, string body = "{}") => () =>
    {
        var message = Json(status, body);
        message.Headers![CreatesHeader] = new WireMockList<string>("1");
        return message;
    };

    // Marks a scripted answer whose launch creates the agent anyway; removed before the answer goes out.
    private const string CreatesHeader = "X-Fake-Creates-Agent";

    /// <summary>Once watched, launches the test gave up as lost (see <see cref="UnservedRequests"/>) are answered 503, not carried out.</summary>
    public UnservedRequests? Unserved { get; private set; }

    /// <summary>Numbers the launches sent here from now on, so that a test can wait until they are carried out.</summary>
    public UnservedRequests WatchUnservedLaunches()
    {
        var port = new Uri(Url).Port;
        return Unserved = new UnservedRequests(request => request.Method == HttpMethod.Post
            && request.RequestUri is { } uri && uri.Port == port && uri.AbsolutePath == "/v0/agents");
    }

    private async Task<IResponseMessage> LaunchCallback(IRequestMessage request) => await LaunchAsync(request);

    /// <summary>A launch as the fake answers it (a test may put its own mapping in front and pass through to this).</summary>
    internal async Task<ResponseMessage> LaunchAsync(IRequestMessage request)
    {
        using var serving = Unserved?.Serve(request);
        if (serving is { Lost: true })
        {
            return Json(503, """{"error":"lost, not created"}""");
        }

        var body = JsonNode.Parse(request.Body!)!.AsObject();
        var repository = body["source"]?["repository"]?.GetValue<string>() ?? string.Empty;
        if (scripted.TryGetValue(repository, out var queue) && queue.TryDequeue(out var answer))
        {
            var scriptedAnswer = await answer();
            if (scriptedAnswer.Headers!.Remove(CreatesHeader))
            {
                Create(body, repository);
            }

            return scriptedAnswer;
        }

        if (await ChaosAnswerAsync(body, repository) is { } chaotic)
        {
            return chaotic;
        }

        var agent = Create(body, repository);
        return Json(201, Serialized(agent));
    }

    private JsonObject Create(JsonObject body, string repository)
    {
        var id = $"bc-{Interlocked.Increment(ref sequence):x6}";
        var agent = new JsonObject
        {
            ["id"] = id,
            ["name"] = "Fix the issue",
            ["status"] = "CREATING",
            ["source"] = new JsonObject { ["repository"] = repository },
            ["target"] = new JsonObject
            {
                ["branchName"] = body["target"]?["branchName"]?.GetValue<string>(),
                ["url"] = $"https://cursor.com/agents?id={id}",
                ["autoCreatePr"] = body["target"]?["autoCreatePr"]?.GetValue<bool>(),
            },
            ["createdAt"] = "2026-11-24T10:00:00Z",
        };
        agents[id] = agent;
        return agent;
    }

    /// <summary>
    /// The most agents one list page holds, whatever <c>limit</c> asks (Cursor documents <c>limit</c> as a maximum): a test
    /// lowers it to spread a few agents over several pages.
    /// </summary>
    public int MaxListPage { get; set; } = 100;

    /// <summary>
    /// <c>GET /v0/agents</c> as Cursor documents it (docs.cursor.com/background-agent/api/list-agents): <c>limit</c>
    /// 1 to 100, 20 when not given; <c>cursor</c> the previous page's <c>nextCursor</c>; <c>nextCursor</c> on a page with
    /// more after it. Agents in the order they were created; the cursor names the page's last one.
    /// </summary>
    private ResponseMessage List(IRequestMessage request)
    {
        var limitText = QueryValue(request, "limit");
        var limit = 20;
        if (limitText is not null && (!int.TryParse(limitText, out limit) || limit is < 1 or > 100))
        {
            return Json(400, """{"error":"Bad Request","message":"limit must be between 1 and 100"}""");
        }

        var ordered = agents.Values.OrderBy(agent => agent["id"]!.GetValue<string>(), StringComparer.Ordinal).ToList();
        var cursor = QueryValue(request, "cursor");
        var start = 0;
        if (cursor is not null)
        {
            var after = ordered.FindIndex(agent => agent["id"]!.GetValue<string>() == cursor);
            if (after < 0)
            {
                return Json(400, """{"error":"Bad Request","message":"invalid cursor"}""");
            }

            start = after + 1;
        }

        var page = ordered.Skip(start).Take(Math.Min(limit, MaxListPage)).ToList();
        var body = new JsonObject { ["agents"] = new JsonArray(page.Select(Copied).ToArray()) };
        if (start + page.Count < ordered.Count)
        {
            body["nextCursor"] = page[^1]["id"]!.GetValue<string>();
        }

        return Json(200, body.ToJsonString());
    }

    private ResponseMessage Get(IRequestMessage request)
    {
        var id = request.Path.Split('/').Last();
        return agents.TryGetValue(id, out var agent) ? Json(200, Serialized(agent)) : Json(404, """{"error":{"message":"Agent not found"}}""");
    }

    private static string? RepositoryOf(JsonObject agent) => agent["source"]?["repository"]?.GetValue<string>();

    public void Dispose() => Server.Stop();
}
