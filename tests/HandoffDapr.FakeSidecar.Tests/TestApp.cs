using Dapr.Actors.Client;
using Dapr.Client;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace HandoffDapr.FakeSidecar.Tests;

/// <summary>
/// A minimal Dapr app on TestServer wired to a fake sidecar the way a real one is wired to daprd:
/// DAPR_HTTP_ENDPOINT / DAPR_GRPC_ENDPOINT / DAPR_API_TOKEN / APP_API_TOKEN in IConfiguration, and the
/// sidecar's app channel set to the TestServer's handler.
/// </summary>
public sealed class TestApp : IAsyncDisposable
{
    private readonly WebApplication app;

    private TestApp(WebApplication app) => this.app = app;

    public IServiceProvider Services => app.Services;

    public IActorProxyFactory ProxyFactory => app.Services.GetRequiredService<IActorProxyFactory>();

    public DaprClient DaprClient => app.Services.GetRequiredService<DaprClient>();

    public ConcurrencyProbe Probe => app.Services.GetRequiredService<ConcurrencyProbe>();

    /// <summary>The deactivations that reached the app, with the calls inside the actor as each arrived.</summary>
    public IReadOnlyList<(string Id, int CallsInside)> Deactivations() => Arrivals.Deactivations.ToList();

    public ReminderLog ReminderLog => app.Services.GetRequiredService<ReminderLog>();

    public EventLog Events => app.Services.GetRequiredService<EventLog>();

    public AppArrivals Arrivals => app.Services.GetRequiredService<AppArrivals>();

    public static async Task<TestApp> StartAsync(
        FakeDaprSidecar sidecar,
        string? daprApiToken = null,
        string? appApiToken = null,
        Action<WebApplication>? map = null)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { EnvironmentName = "Testing" });
        builder.WebHost.UseTestServer();
        builder.Logging.ClearProviders();
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["DAPR_HTTP_ENDPOINT"] = sidecar.HttpEndpoint.ToString(),
            ["DAPR_GRPC_ENDPOINT"] = sidecar.GrpcEndpoint.ToString(),
            ["DAPR_API_TOKEN"] = daprApiToken ?? "",
            ["APP_API_TOKEN"] = appApiToken ?? "",
        });
        builder.Services.AddSingleton<ConcurrencyProbe>();
        builder.Services.AddSingleton<ReminderLog>();
        builder.Services.AddSingleton<EventLog>();
        builder.Services.AddSingleton<AppArrivals>();
        builder.Services.AddDaprClient();
        builder.Services.AddActors(o =>
        {
            o.Actors.RegisterActor<TestActor>();
            o.UseJsonSerialization = true;
        });
        if (appApiToken is not null)
        {
            builder.Services.AddAuthentication().AddDapr(o => o.Token = appApiToken);
            builder.Services.AddAuthorization(o => o.AddDapr());
        }

        var app = builder.Build();
        var arrivals = app.Services.GetRequiredService<AppArrivals>();
        var probe = app.Services.GetRequiredService<ConcurrencyProbe>();
        app.Use((context, next) =>
        {
            var path = context.Request.Path.Value ?? "";
            arrivals.Count(path);
            if (HttpMethods.IsDelete(context.Request.Method) && path.Split('/') is ["", "actors", _, var id])
            {
                arrivals.Deactivations.Enqueue((id, probe.Inside(id)));
            }

            return next(context);
        });
        app.UseRouting();
        app.UseCloudEvents();
        if (appApiToken is not null)
        {
            app.UseAuthentication();
            app.UseAuthorization();
        }

        app.MapActorsHandlers();
        app.MapSubscribeHandler();
        var events = app.MapPost("/events/run-completed", (RunCompleted e, EventLog log) =>
        {
            log.Received.Enqueue(e);
            return e.Reply switch
            {
                "retry" => Results.Json(new { status = "RETRY" }),
                "drop" => Results.Json(new { status = "DROP" }),
                "success" => Results.Json(new { status = "SUCCESS" }),
                "unknown" => Results.Json(new { status = "retry" }),
                "missing" => Results.NotFound(),
                "boom" => Results.StatusCode(500),
                _ => Results.Ok(),
            };
        }).WithTopic("pubsub", "run-completed");
        if (appApiToken is not null)
        {
            events.RequireAuthorization("Dapr");
        }

        app.MapPost("events/with-dlq", (RunCompleted e) => e.Reply switch
            {
                "drop" => Results.Json(new { status = "DROP" }),
                "missing" => Results.NotFound(),
                _ => Results.Json(new { status = "RETRY" }),
            })
            .WithTopic(new Dapr.TopicOptions { PubsubName = "pubsub", Name = "with-dlq", DeadLetterTopic = "dead-letters" });
        app.MapPost("/hello", () => Results.Text("hi from app"));
        map?.Invoke(app);

        await app.StartAsync();
        sidecar.AppChannel = app.GetTestServer().CreateHandler();
        return new TestApp(app);
    }

    public async ValueTask DisposeAsync()
    {
        await app.StopAsync();
        await app.DisposeAsync();
    }
}

public sealed record RunCompleted(int RunId, string Reply);

public sealed class EventLog
{
    public System.Collections.Concurrent.ConcurrentQueue<RunCompleted> Received { get; } = new();
}

/// <summary>Requests that reached the app, by path, counted as they arrive (before the actor runtime has them).</summary>
public sealed class AppArrivals
{
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, int> counts = new(StringComparer.Ordinal);

    public int this[string path] => counts.GetValueOrDefault(path);

    /// <summary>Each <c>DELETE actors/{type}/{id}</c> as it arrives: the id, and how many of its calls were inside the actor then.</summary>
    public System.Collections.Concurrent.ConcurrentQueue<(string Id, int CallsInside)> Deactivations { get; } = new();

    internal void Count(string path) => counts.AddOrUpdate(path, 1, (_, n) => n + 1);
}
