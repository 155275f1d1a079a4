using HandoffDapr.FakeSidecar;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// The service in Dapr mode against the in-process fake sidecar: the real actor runtime, proxies, DaprClient and
/// subscription handlers talk to it over loopback, and it reaches the app through the test server. The output
/// binding <c>coding-agent-cursor</c> forwards to a <see cref="FakeCursor"/> as <c>bindings.http</c> would,
/// adding the API key from its own metadata.
/// </summary>
public sealed class DaprServiceFactory : WebApplicationFactory<Program>
{
    public const string BindingName = "coding-agent-cursor";
    public const string CopilotBindingName = "coding-agent-copilot";
    public const string BindingApiKey = "binding-held-api-key-6d2e";

    /// <summary>
    /// Both integrations' bindings, holding the key as a binding's <c>securityToken</c> does, as <c>components/</c> loads
    /// both (else readiness logs one missing); without a Copilot fake, Copilot's points at the Cursor fake, which a test
    /// of Cursor alone never calls through it.
    /// </summary>
    public static void AddBindings(FakeDaprSidecar sidecar, string cursorUrl, string? copilotUrl = null)
    {
        foreach (var (name, url) in new[] { (BindingName, cursorUrl), (CopilotBindingName, copilotUrl ?? cursorUrl) })
        {
            sidecar.AddHttpBinding(name, new Uri(url), new Dictionary<string, string>
            {
                ["securityToken"] = "Bearer " + BindingApiKey,
                ["securityTokenHeader"] = "Authorization",
            });
        }
    }

    private readonly FakeDaprSidecar sidecar;
    private readonly string? appApiToken;
    private readonly FakeTimeProvider? time;
    private readonly IDictionary<string, string?> settings;
    private readonly FakeLogCollector? logs;

    private DaprServiceFactory(FakeDaprSidecar sidecar, string? appApiToken, FakeTimeProvider? time, IDictionary<string, string?> settings, FakeLogCollector? logs)
    {
        this.sidecar = sidecar;
        this.appApiToken = appApiToken;
        this.time = time;
        this.settings = settings;
        this.logs = logs;
    }

    public FakeDaprSidecar Sidecar => sidecar;

    public static async Task<DaprServiceFactory> StartAsync(
        string cursorUrl, string? appApiToken = null, FakeTimeProvider? time = null, IDictionary<string, string?>? settings = null, string? copilotUrl = null,
        FakeLogCollector? logs = null, string? sidecarApiToken = null, bool kestrel = false, bool actorResiliency = false, TimeProvider? sidecarTime = null,
        TimeSpan? actorCallTimeout = null)
    {
        var options = new FakeSidecarOptions
        {
            // The sidecar's own clock (its reminders, its state's expiry): the system's unless a test moves it.
            TimeProvider = sidecarTime ?? TimeProvider.System,
            AppApiToken = appApiToken,
            ApiToken = sidecarApiToken,
            // As components/resiliency.yaml configures daprd: with an inbound retry on the pub/sub component,
            // an event answered RETRY goes back for redelivery instead of to the dead-letter topic.
            DeadLetterRetriableFailures = !DaprFiles.DaprFiles.HasInboundRetry("components/resiliency.yaml", "pubsub"),
            // As components/config.yaml configures daprd: actor state may carry ttlInSeconds (Handoff:RunRetention) only
            // with the ActorStateTTL preview feature on; without it daprd refuses the whole save.
            ActorStateTtlEnabled = DaprFiles.DaprFiles.EnablesFeature("components/config.yaml", "ActorStateTTL"),
        };
        // Off by default, so a test can fail a single actor call: with it, actor calls are retried and counted by a
        // circuit breaker as components/resiliency.yaml has daprd do.
        if (actorResiliency && DaprFiles.DaprFiles.ActorCallPolicy("components/resiliency.yaml", DaprHost.HandoffRunActor.ActorTypeName) is { } policy)
        {
            // actorCallTimeout shortens the file's timeout (actorCall: 120 s) so a test can outlast it.
            options.ActorCallPolicies[DaprHost.HandoffRunActor.ActorTypeName] =
                actorCallTimeout is { } shorter ? policy with { CallTimeout = shorter } : policy;
        }

        var sidecar = await FakeDaprSidecar.StartAsync(options);
        AddBindings(sidecar, cursorUrl, copilotUrl);

        var factory = new DaprServiceFactory(sidecar, appApiToken, time, settings ?? new Dictionary<string, string?>(), logs);
        if (kestrel)
        {
            // The app on a real Kestrel port, reached by the sidecar over a socket as daprd reaches it: Kestrel's limits
            // (its request body size among them) apply to the sidecar's calls, which the test server does not enforce.
            sidecar.Options.AppBaseAddress = factory.StartOnKestrel();
            sidecar.AppChannel = null;
        }
        else
        {
            // Building the server starts the app; the sidecar then reaches it through the test server.
            sidecar.AppChannel = factory.Server.CreateHandler();
        }

        await factory.StartUpEndedAsync();
        return factory;
    }

    /// <summary>
    /// Waits for the app's start-up wait for its sidecar (<see cref="SidecarStartup"/>) to end. Since .NET 10 a
    /// BackgroundService's ExecuteAsync starts on the thread pool after the host has started, so that wait could end at
    /// any moment of a test: its <c>SidecarReady</c> line (or <c>SidecarRefusedCalls</c>) after the test had looked for
    /// it, its read of daprd's metadata (which has the fake read the app's <c>dapr/config</c>) in the middle of the
    /// test's calls. A test is handed the app once that line is written and that read made, as daprd's first calls find
    /// an app that has long been up.
    /// </summary>
    private async Task StartUpEndedAsync()
    {
        try
        {
            await StartUpEndedAsync(Services);
        }
        catch (TimeoutException)
        {
            await DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// Waits for a started Dapr-mode app's start-up wait for its sidecar to end (see the instance method). The wait runs
    /// on the app's clock: a test that moves that clock before the wait has ended may run it out, and the app stops as
    /// if no sidecar had come.
    /// </summary>
    public static async Task StartUpEndedAsync(IServiceProvider services)
    {
        var startUp = services.GetServices<IHostedService>().OfType<SidecarStartup>().Single().ExecuteTask ?? Task.CompletedTask;
        try
        {
            await startUp.WaitAsync(TimeSpan.FromSeconds(30));
        }
        catch (TimeoutException)
        {
            throw new TimeoutException("The app's start-up wait for its sidecar did not end within 30 s.");
        }
    }

    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
        builder.UseEnvironment("Production");
        builder.UseSetting("Handoff:Mode", "Dapr");
        builder.UseSetting("DAPR_HTTP_ENDPOINT", sidecar.HttpEndpoint.ToString());
        builder.UseSetting("DAPR_GRPC_ENDPOINT", sidecar.GrpcEndpoint.ToString());
        builder.UseSetting("APP_API_TOKEN", appApiToken ?? string.Empty);
        builder.UseSetting("Handoff:Integrations:42:Provider", "cursor_background_agent");
        builder.UseSetting("Handoff:Integrations:42:Binding", BindingName);
        builder.UseSetting("Handoff:Integrations:43:Binding", CopilotBindingName);
        foreach (var (key, value) in settings)
        {
            builder.UseSetting(key, value);
        }

        if (time is not null)
        {
            builder.ConfigureServices(services => services.Replace(ServiceDescriptor.Singleton<TimeProvider>(time)));
        }

        if (logs is not null)
        {
            builder.ConfigureLogging(logging => logging.SetMinimumLevel(LogLevel.Trace).AddProvider(new FakeLoggerProvider(logs)));
        }
    }

    /// <summary>A client that calls as daprd would (with the app token when one is set).</summary>
    public HttpClient CreateSidecarClient()
    {
        var client = CreateClient();
        if (!string.IsNullOrEmpty(appApiToken))
        {
            client.DefaultRequestHeaders.Add("dapr-api-token", appApiToken);
        }

        return client;
    }

    public override async ValueTask DisposeAsync()
    {
        await base.DisposeAsync();
        await sidecar.DisposeAsync();
    }
}
