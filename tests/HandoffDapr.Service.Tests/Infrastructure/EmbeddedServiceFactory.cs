using HandoffDapr.Service.Embedded;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>The service in embedded mode, on a real SQLite file, with integration 42 pointing at a <see cref="FakeCursor"/>.</summary>
public sealed class EmbeddedServiceFactory(string dataPath, string providerUrl, FakeTimeProvider? time = null, IDictionary<string, string?>? settings = null)
    : WebApplicationFactory<Program>
{
    public const long IntegrationId = 42;
    public const string ApiKey = "test-api-key-0123456789";
    public const long CopilotIntegrationId = 43;
    public const string CopilotToken = "test-github-token-9876543210";

    public string DataPath => dataPath;

    /// <summary>Set before the first request to capture every log line the service writes.</summary>
    public FakeLogCollector? Logs { get; init; }

    /// <summary>
    /// When false (the default) a completion event's launches wait for the test to run the schedule
    /// (<see cref="RunScheduleAsync"/>); when true the scheduler is woken at once, as in production.
    /// </summary>
    public bool WakeOnSignal { get; init; }

    /// <summary>
    /// When false the schedule never runs on its own, not even its pass at start: only <see cref="RunScheduleAsync"/>
    /// claims wake-ups. For a test that needs another process on the file, not this one, to make a launch.
    /// </summary>
    public bool ScheduleRunsOnItsOwn { get; init; } = true;

    public const string RemoteAddressHeader = "X-Test-Remote-Address";

    /// <summary>Never wakes the scheduler before its poll interval; tells when the scheduler has ended its pass at start.</summary>
    private sealed class SilentWakeupSignal : WakeupSignal
    {
        private readonly TaskCompletionSource firstWait = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>The scheduler's first wait for a signal, which follows its pass at start.</summary>
        public Task StartPassEnded => firstWait.Task;

        public override void Notify()
        {
        }

        public override Task WaitAsync(TimeSpan interval, TimeProvider timeProvider, CancellationToken cancellationToken)
        {
            firstWait.TrySetResult();
            return base.WaitAsync(interval, timeProvider, cancellationToken);
        }
    }

    private readonly SilentWakeupSignal silentSignal = new();

    private sealed class RemoteAddressFromHeader : IStartupFilter
    {
        public Action<IApplicationBuilder> Configure(Action<IApplicationBuilder> next) => app =>
        {
            app.Use((context, nextMiddleware) =>
            {
                if (context.Request.Headers.TryGetValue(RemoteAddressHeader, out var value) && System.Net.IPAddress.TryParse(value, out var address))
                {
                    context.Connection.RemoteIpAddress = address;
                }

                return nextMiddleware(context);
            });
            next(app);
        };
    }

    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
        builder.UseEnvironment("Production");
        builder.UseSetting("Handoff:Mode", "Embedded");
        builder.UseSetting("Handoff:DataPath", dataPath);
        builder.UseSetting($"Handoff:Integrations:{IntegrationId}:Provider", "cursor_background_agent");
        builder.UseSetting($"Handoff:Integrations:{IntegrationId}:BaseUrl", providerUrl);
        builder.UseSetting($"Handoff:Integrations:{IntegrationId}:ApiKey", ApiKey);
        builder.UseSetting($"Handoff:Integrations:{IntegrationId}:RequestTimeout", "00:00:20");
        // appsettings.json also declares a Copilot integration (43); it needs a key to pass validation.
        builder.UseSetting($"Handoff:Integrations:{CopilotIntegrationId}:BaseUrl", providerUrl);
        builder.UseSetting($"Handoff:Integrations:{CopilotIntegrationId}:ApiKey", CopilotToken);
        // The schedule is driven by the tests (WakeupScheduler.RunDueAsync), not by the clock: the longest interval allowed.
        builder.UseSetting("Handoff:Embedded:SchedulePollInterval", "30.00:00:00");
        foreach (var (key, value) in settings ?? new Dictionary<string, string?>())
        {
            builder.UseSetting(key, value);
        }

        // Lets a test pose as a remote caller: TestServer connections have no address of their own.
        builder.ConfigureServices(services => services.AddSingleton<IStartupFilter, RemoteAddressFromHeader>());

        if (Logs is not null)
        {
            builder.ConfigureLogging(logging => logging.SetMinimumLevel(LogLevel.Trace).AddProvider(new FakeLoggerProvider(Logs)));
        }

        if (!WakeOnSignal)
        {
            builder.ConfigureServices(services => services.Replace(ServiceDescriptor.Singleton<WakeupSignal>(silentSignal)));
        }

        if (!ScheduleRunsOnItsOwn)
        {
            builder.ConfigureServices(services =>
            {
                // Registered as a hosted service by a factory that returns the WakeupScheduler singleton.
                var loop = services.Single(descriptor => descriptor.ServiceType == typeof(Microsoft.Extensions.Hosting.IHostedService)
                    && descriptor.ImplementationFactory?.Method.ReturnType == typeof(WakeupScheduler));
                services.Remove(loop);
            });
        }

        if (time is not null)
        {
            builder.ConfigureServices(services => services.Replace(ServiceDescriptor.Singleton<TimeProvider>(time)));
        }
    }

    /// <summary>
    /// Starts the host and, when its schedule runs on its own but is never signalled, waits for the schedule's pass at
    /// start to end. Since .NET 10 a BackgroundService's ExecuteAsync starts on the thread pool after the host has started,
    /// so that pass could otherwise come after a test's first request and claim, in the background, the launch the test
    /// means to make with <see cref="RunScheduleAsync"/>. Overdue work the pass claims is still under way afterwards.
    /// </summary>
    protected override IHost CreateHost(IHostBuilder builder)
    {
        var host = base.CreateHost(builder);
        if (ScheduleRunsOnItsOwn && !WakeOnSignal && !silentSignal.StartPassEnded.Wait(TimeSpan.FromSeconds(30)))
        {
            host.Dispose();
            throw new TimeoutException("The schedule's pass at start did not end within 30 s.");
        }

        return host;
    }

    public WakeupScheduler Scheduler => Services.GetRequiredService<WakeupScheduler>();

    /// <summary>Runs what is due now: the launches of the completion events posted so far, and due retries.</summary>
    public Task<int> RunScheduleAsync() => Scheduler.RunDueAsync(CancellationToken.None);

    public SqliteRunStore Store => Services.GetRequiredService<SqliteRunStore>();
}
