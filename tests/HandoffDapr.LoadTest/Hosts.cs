using HandoffDapr.Service.Extensions;

namespace HandoffDapr.LoadTest;

/// <summary>The real service in embedded mode, built from the same registration as Program.cs, on a loopback port.</summary>
public sealed class ServiceHost(WebApplication app) : IAsyncDisposable
{
    public WebApplication App => app;

    public Uri Address => new(app.Urls.First());

    public static async Task<ServiceHost> StartAsync(IDictionary<string, string?> settings, Action<IServiceCollection>? configure = null)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { EnvironmentName = "Production", ContentRootPath = AppContext.BaseDirectory });
        builder.Configuration.AddInMemoryCollection(settings);
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.AddHandoffServices();
        configure?.Invoke(builder.Services);
        builder.Logging.ClearProviders();
        var app = builder.Build();
        app.MapHandoff();
        await app.StartAsync();
        return new ServiceHost(app);
    }

    public async ValueTask DisposeAsync() => await app.DisposeAsync();
}

/// <summary>A wake-up signal that wakes nobody: with a long poll interval, launches wait, so only acceptance is measured.</summary>
public sealed class HeldWakeupSignal : HandoffDapr.Service.Embedded.WakeupSignal
{
    public override void Notify()
    {
    }
}

/// <summary>The ceiling: a bare endpoint that reads the same JSON payload and answers 202.</summary>
public sealed class BareHost(WebApplication app) : IAsyncDisposable
{
    public Uri Address => new(app.Urls.First());

    public static async Task<BareHost> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        var app = builder.Build();
        app.MapPost("/events/autofix-run-completed", async (HttpRequest request) =>
        {
            using var document = await System.Text.Json.JsonDocument.ParseAsync(request.Body);
            return Results.Accepted();
        });
        await app.StartAsync();
        return new BareHost(app);
    }

    public async ValueTask DisposeAsync() => await app.DisposeAsync();
}
