using System.Collections.Concurrent;
using System.Text;
using System.Text.Json.Nodes;
using HandoffDapr.Core.Providers;

namespace HandoffDapr.FakeProvider;

public sealed class FakeProviderOptions
{
    /// <summary>How long a launch takes to answer.</summary>
    public TimeSpan LaunchLatency { get; set; } = TimeSpan.Zero;

    /// <summary>How long after creating the agent the answer is sent: a caller that dies meanwhile never learns of it.</summary>
    public TimeSpan AnswerDelay { get; set; } = TimeSpan.Zero;

    /// <summary>Age at which an agent moves from CREATING to RUNNING, and then to FINISHED.</summary>
    public TimeSpan RunningAfter { get; set; } = TimeSpan.FromSeconds(2);

    public TimeSpan FinishAfter { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Send signed statusChange webhooks when an agent finishes and was given a webhook.</summary>
    public bool Webhooks { get; set; } = true;
}

/// <summary>
/// Cursor's v0 agents API in memory: launches (Bearer key required), reads, paged lists, stop, follow-up; agents
/// progress with age and report FINISHED by a signed webhook. <c>GET /_fake/stats</c> counts what was launched.
/// </summary>
public static class FakeProviderApp
{
    public static WebApplication Build(string[] args, Action<FakeProviderOptions>? configure = null)
    {
        var builder = WebApplication.CreateSlimBuilder(args);
        // In code, not an appsettings.json: the service's tests reference this project, and its appsettings.json would
        // be copied over the service's in their output folder, where the service is started from.
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning).AddFilter("System.Net.Http.HttpClient", LogLevel.Warning);
        if (builder.Configuration["urls"] is null && builder.Configuration["ASPNETCORE_URLS"] is null)
        {
            builder.WebHost.UseUrls("http://localhost:5090");
        }

        builder.Services.AddOptions<FakeProviderOptions>().BindConfiguration("FakeProvider").Configure(options => configure?.Invoke(options));
        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<AgentStore>();
        builder.Services.AddHostedService<WebhookSender>();
        builder.Services.AddHttpClient();
        var app = builder.Build();

        app.MapPost("/v0/agents", async (HttpRequest request, AgentStore store, Microsoft.Extensions.Options.IOptions<FakeProviderOptions> options, CancellationToken token) =>
        {
            if (!request.Headers.Authorization.ToString().StartsWith("Bearer ", StringComparison.Ordinal) || request.Headers.Authorization.ToString().Length <= 7)
            {
                return Error(401, "Unauthorized");
            }

            JsonNode? body;
            try
            {
                body = await JsonNode.ParseAsync(request.Body, cancellationToken: token);
            }
            catch (System.Text.Json.JsonException)
            {
                return Error(400, "Invalid JSON");
            }

            var prompt = body?["prompt"]?["text"]?.GetValue<string>();
            var repository = body?["source"]?["repository"]?.GetValue<string>();
            var branch = body?["target"]?["branchName"]?.GetValue<string>();
            if (string.IsNullOrEmpty(prompt) || string.IsNullOrEmpty(repository) || string.IsNullOrEmpty(branch))
            {
                return Error(400, "prompt.text, source.repository and target.branchName are required");
            }

            store.Received();
            await Task.Delay(options.Value.LaunchLatency, token);
            // The agent's page is on this fake, at the address the launch was sent to (its port is any the fake runs on).
            var agent = store.Create(prompt, repository, body!["source"]?["ref"]?.GetValue<string>(), branch,
                body["target"]?["autoCreatePr"]?.GetValue<bool>() ?? false,
                body["webhook"]?["url"]?.GetValue<string>(), body["webhook"]?["secret"]?.GetValue<string>(),
                pageBase: $"{request.Scheme}://{request.Host}");
            // Not cancelled with the request: the agent exists whether or not the caller hears about it.
            await Task.Delay(options.Value.AnswerDelay, CancellationToken.None);
            // Only an answer a caller is still there to read counts: the crash test reads this after its kill, maybe
            // seconds later, and must not take answers sent to the dead process for answers it received.
            if (!token.IsCancellationRequested)
            {
                store.Answered();
            }
            return Results.Json(store.View(agent), statusCode: 201);
        });
        app.MapGet("/v0/agents/{id}", (string id, AgentStore store) =>
            store.Find(id) is { } agent ? Results.Json(store.View(agent)) : Error(404, "Agent not found"));
        app.MapGet("/agents/{id}", (string id, AgentStore store) => store.Find(id) is { } agent
            ? Results.Text($"Agent {agent.Id} (fake provider): {store.View(agent)["status"]} on {agent.Repository}, branch {agent.BranchName}\n")
            : Results.NotFound());
        app.MapGet("/v0/agents", (int? limit, string? cursor, AgentStore store) =>
        {
            var page = store.Page(Math.Clamp(limit ?? 20, 1, 100), cursor, out var next);
            return Results.Json(new JsonObject { ["agents"] = new JsonArray(page.Select(a => (JsonNode)store.View(a)).ToArray()), ["nextCursor"] = next });
        });
        // As Cursor, it stops only an agent at work (the status code of its refusal is not documented: a 400 here).
        app.MapPost("/v0/agents/{id}/stop", (string id, AgentStore store) => store.Find(id) switch
        {
            null => Error(404, "Agent not found"),
            var agent when !store.Stop(agent) => Error(400, "Agent is not running"),
            _ => Results.Json(new JsonObject { ["id"] = id }),
        });
        app.MapPost("/v0/agents/{id}/followup", (string id, AgentStore store) =>
            store.Find(id) is not null ? Results.Json(new JsonObject { ["id"] = id }) : Error(404, "Agent not found"));
        app.MapDelete("/v0/agents/{id}", (string id, AgentStore store) =>
            store.Delete(id) ? Results.Json(new JsonObject { ["id"] = id }) : Error(404, "Agent not found"));
        app.MapGet("/healthz", () => Results.Text("Healthy"));
        app.MapGet("/_fake/stats", (AgentStore store) => Results.Json(store.Stats()));
        app.MapPost("/_fake/reset", (AgentStore store) => { store.Reset(); return Results.NoContent(); });
        return app;
    }

    private static IResult Error(int status, string message) =>
        Results.Json(new JsonObject { ["error"] = new JsonObject { ["message"] = message } }, statusCode: status);
}

public sealed class FakeAgent
{
    public required string Id { get; init; }
    public required string Prompt { get; init; }
    public required string Repository { get; init; }
    public string? Ref { get; init; }
    public required string BranchName { get; init; }
    public bool AutoCreatePr { get; init; }
    public string? WebhookUrl { get; init; }
    public string? WebhookSecret { get; init; }
    public DateTimeOffset CreatedAt { get; init; }

    /// <summary>The agent's page, <c>target.url</c>: on the fake, as Cursor's is on cursor.com.</summary>
    public required string PageUrl { get; init; }
    public bool Stopped { get; set; }
    public bool WebhookSent { get; set; }
}

public sealed class AgentStore(Microsoft.Extensions.Options.IOptions<FakeProviderOptions> options, TimeProvider time)
{
    private readonly ConcurrentDictionary<string, FakeAgent> agents = new();
    private int launches;
    private int received;
    private int answered;

    /// <summary>A launch request arrived (before any latency): what the crash test waits for to kill "before create".</summary>
    public void Received() => Interlocked.Increment(ref received);

    /// <summary>A launch's answer is being sent (after any answer delay) to a caller still connected.</summary>
    public void Answered() => Interlocked.Increment(ref answered);

    public FakeAgent Create(string prompt, string repository, string? reference, string branch, bool autoCreatePr, string? webhookUrl, string? webhookSecret, string pageBase)
    {
        var id = "bc-" + Guid.NewGuid().ToString("N")[..8];
        var agent = new FakeAgent
        {
            Id = id,
            PageUrl = $"{pageBase}/agents/{id}",
            Prompt = prompt,
            Repository = repository,
            Ref = reference,
            BranchName = branch,
            AutoCreatePr = autoCreatePr,
            WebhookUrl = webhookUrl,
            WebhookSecret = webhookSecret,
            CreatedAt = time.GetUtcNow(),
        };
        agents[agent.Id] = agent;
        Interlocked.Increment(ref launches);
        return agent;
    }

    public FakeAgent? Find(string id) => agents.GetValueOrDefault(id);

    /// <summary>Stops an agent at work; false for one that ended (finished, or stopped before).</summary>
    public bool Stop(FakeAgent agent)
    {
        lock (agent)
        {
            if (Status(agent) is not ("CREATING" or "RUNNING"))
            {
                return false;
            }

            agent.Stopped = true;
            return true;
        }
    }

    public bool Delete(string id) => agents.TryRemove(id, out _);

    public void Reset()
    {
        agents.Clear();
        launches = 0;
        received = 0;
        answered = 0;
    }

    public IReadOnlyList<FakeAgent> Page(int limit, string? cursor, out string? next)
    {
        var ordered = agents.Values.OrderByDescending(a => a.CreatedAt).ThenBy(a => a.Id).ToList();
        var start = cursor is not null && int.TryParse(cursor, out var offset) ? offset : 0;
        var page = ordered.Skip(start).Take(limit).ToList();
        next = start + limit < ordered.Count ? (start + limit).ToString(System.Globalization.CultureInfo.InvariantCulture) : null;
        return page;
    }

    /// <summary>As Cursor documents its webhooks: sent for ERROR and FINISHED only (a stopped agent is learned by polling).</summary>
    public IEnumerable<FakeAgent> FinishedWithUnsentWebhook() =>
        agents.Values.Where(a => !a.WebhookSent && a.WebhookUrl is not null && a.WebhookSecret is not null && Status(a) is "FINISHED" or "ERROR");

    public string Status(FakeAgent agent)
    {
        // Under the lock Stop holds: read between its check and its write, the flag and the clock could say an agent
        // the stop was granted for finished, and its FINISHED webhook would follow the stop.
        lock (agent)
        {
            if (agent.Stopped)
            {
                return "STOPPED";
            }

            var age = time.GetUtcNow() - agent.CreatedAt;
            return age >= options.Value.FinishAfter ? "FINISHED" : age >= options.Value.RunningAfter ? "RUNNING" : "CREATING";
        }
    }

    public JsonObject View(FakeAgent agent)
    {
        var status = Status(agent);
        var repositoryPath = agent.Repository.Replace("https://github.com/", string.Empty, StringComparison.Ordinal);
        return new JsonObject
        {
            ["id"] = agent.Id,
            ["name"] = agent.Prompt.Split('\n')[0] is var first && first.Length > 40 ? first[..40] : agent.Prompt.Split('\n')[0],
            ["status"] = status,
            ["source"] = new JsonObject { ["repository"] = agent.Repository, ["ref"] = agent.Ref },
            ["target"] = new JsonObject
            {
                ["branchName"] = agent.BranchName,
                ["url"] = agent.PageUrl,
                ["autoCreatePr"] = agent.AutoCreatePr,
                ["prUrl"] = status == "FINISHED" && agent.AutoCreatePr ? $"https://github.com/{repositoryPath}/pull/{PullRequestNumber(agent)}" : null,
            },
            ["summary"] = status == "FINISHED" ? "Fixed the issue (fake provider)" : null,
            ["createdAt"] = agent.CreatedAt.ToString("O"),
        };
    }

    /// <summary>1–1000, the same for an agent in every process (a pull request number is never 0, which the service rightly refuses).</summary>
    private static int PullRequestNumber(FakeAgent agent) =>
        1 + (int)(uint.Parse(agent.Id.AsSpan(3), System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture) % 1000);

    public JsonObject Stats() => new()
    {
        ["launches_received"] = received,
        ["launches_accepted"] = launches,
        ["launches_answered"] = answered,
        ["agents"] = new JsonArray(agents.Values.OrderBy(a => a.CreatedAt).Select(a => (JsonNode)new JsonObject
        {
            ["id"] = a.Id,
            ["repository"] = a.Repository,
            ["branch_name"] = a.BranchName,
            ["status"] = Status(a),
        }).ToArray()),
    };
}

/// <summary>Posts a signed statusChange webhook when an agent finishes; a failed delivery is tried again on the next tick.</summary>
public sealed class WebhookSender(AgentStore store, IHttpClientFactory clients, Microsoft.Extensions.Options.IOptions<FakeProviderOptions> options, ILogger<WebhookSender> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(500));
        while (options.Value.Webhooks && await timer.WaitForNextTickAsync(stoppingToken))
        {
            foreach (var agent in store.FinishedWithUnsentWebhook().ToList())
            {
                var view = store.View(agent);
                var body = Encoding.UTF8.GetBytes(new JsonObject
                {
                    ["event"] = "statusChange",
                    ["timestamp"] = DateTimeOffset.UtcNow.ToString("O"),
                    ["id"] = agent.Id,
                    ["status"] = view["status"]!.GetValue<string>(),
                    ["source"] = view["source"]!.DeepClone(),
                    ["target"] = view["target"]!.DeepClone(),
                    ["summary"] = view["summary"]?.DeepClone(),
                }.ToJsonString());
                using var request = new HttpRequestMessage(HttpMethod.Post, agent.WebhookUrl) { Content = new ByteArrayContent(body) };
                request.Content.Headers.ContentType = new("application/json");
                request.Headers.Add("X-Webhook-Signature", WebhookSignature.Sign(agent.WebhookSecret!, body));
                request.Headers.Add("X-Webhook-ID", Guid.NewGuid().ToString());
                request.Headers.Add("X-Webhook-Event", "statusChange");
                request.Headers.TryAddWithoutValidation("User-Agent", "Cursor-Agent-Webhook/1.0");
                try
                {
                    using var response = await clients.CreateClient().SendAsync(request, stoppingToken);
                    agent.WebhookSent = response.IsSuccessStatusCode;
                }
                catch (HttpRequestException exception)
                {
                    logger.LogWarning("Webhook for {AgentId} not delivered ({Error}); trying again", agent.Id, exception.HttpRequestError);
                }
                catch (TaskCanceledException) when (!stoppingToken.IsCancellationRequested)
                {
                    // HttpClient's timeout: left uncaught it would end this BackgroundService and with it the whole fake.
                    logger.LogWarning("Webhook for {AgentId} not answered in time; trying again", agent.Id);
                }
            }
        }
    }
}
