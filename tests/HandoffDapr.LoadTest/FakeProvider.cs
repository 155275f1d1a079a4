using System.Collections.Concurrent;
using System.Text.Json.Nodes;

namespace HandoffDapr.LoadTest;

/// <summary>An in-process Cursor stand-in with a configurable launch latency; counts launches per repository.</summary>
public sealed class FakeProvider : IAsyncDisposable
{
    private readonly WebApplication app;
    private readonly ConcurrentDictionary<string, int> launchesByRepository = new();
    private int sequence;
    private int launches;

    private FakeProvider(WebApplication app) => this.app = app;

    public TimeSpan LaunchLatency { get; set; }

    public string Url => app.Urls.First();

    public int Launches => Volatile.Read(ref launches);

    public int DistinctRepositories => launchesByRepository.Count;

    public int DuplicatedRepositories => launchesByRepository.Values.Count(count => count > 1);

    public static async Task<FakeProvider> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        var app = builder.Build();
        var provider = new FakeProvider(app);
        app.MapPost("/v0/agents", provider.LaunchAsync);
        app.MapGet("/v0/agents", () => Results.Text("""{"agents":[]}""", "application/json"));
        app.MapGet("/v0/agents/{id}", (string id) => Results.Text($$"""{"id":"{{id}}","status":"RUNNING"}""", "application/json"));
        await app.StartAsync();
        return provider;
    }

    private async Task<IResult> LaunchAsync(HttpRequest request)
    {
        var body = (await JsonNode.ParseAsync(request.Body))!;
        var repository = body["source"]!["repository"]!.GetValue<string>();
        var branch = body["target"]!["branchName"]!.GetValue<string>();
        if (LaunchLatency > TimeSpan.Zero)
        {
            await Task.Delay(LaunchLatency);
        }

        launchesByRepository.AddOrUpdate(repository, 1, (_, count) => count + 1);
        Interlocked.Increment(ref launches);
        var id = $"bc-{Interlocked.Increment(ref sequence):x8}";
        return Results.Text(
            $$"""{"id":"{{id}}","name":"Fix","status":"CREATING","source":{"repository":"{{repository}}"},"target":{"branchName":"{{branch}}","url":"https://cursor.com/agents?id={{id}}"},"createdAt":"2026-11-24T10:00:00Z"}""",
            "application/json",
            statusCode: 201);
    }

    public void Reset()
    {
        launchesByRepository.Clear();
        Volatile.Write(ref launches, 0);
    }

    public async ValueTask DisposeAsync() => await app.DisposeAsync();
}
