using HandoffDapr.Service.Embedded;
using Microsoft.AspNetCore.Hosting;
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

    public string DataPath => dataPath;

    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
        builder.UseEnvironment("Production");
        builder.UseSetting("Handoff:Mode", "Embedded");
        builder.UseSetting("Handoff:DataPath", dataPath);
        builder.UseSetting($"Handoff:Integrations:{IntegrationId}:Provider", "cursor_background_agent");
        builder.UseSetting($"Handoff:Integrations:{IntegrationId}:BaseUrl", providerUrl);
        builder.UseSetting($"Handoff:Integrations:{IntegrationId}:ApiKey", ApiKey);
        builder.UseSetting($"Handoff:Integrations:{IntegrationId}:RequestTimeout", "00:00:02");
        // The schedule is driven by the tests (WakeupScheduler.RunDueAsync), not by the clock.
        builder.UseSetting("Handoff:Embedded:SchedulePollInterval", "10.00:00:00");
        foreach (var (key, value) in settings ?? new Dictionary<string, string?>())
        {
            builder.UseSetting(key, value);
        }

        if (time is not null)
        {
            builder.ConfigureServices(services => services.Replace(ServiceDescriptor.Singleton<TimeProvider>(time)));
        }
    }

    public WakeupScheduler Scheduler => Services.GetRequiredService<WakeupScheduler>();

    public SqliteRunStore Store => Services.GetRequiredService<SqliteRunStore>();
}
