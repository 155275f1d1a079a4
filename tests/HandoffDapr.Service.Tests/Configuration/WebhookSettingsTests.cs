using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Providers;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Testing;

namespace HandoffDapr.Service.Tests.Configuration;

/// <summary>Webhooks need both a public address and a secret: half of them is said at start, not left to polling silently.</summary>
public sealed class WebhookSettingsTests : IDisposable
{
    private const string Secret = "webhook-secret-0123456789abcdef-0123456789";
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();

    [Theory]
    [InlineData("https://handoff.example.com", null, "WebhookSecret")]
    [InlineData(null, Secret, "Handoff:PublicBaseUrl")]
    public void Half_of_the_webhook_settings_is_a_warning_naming_the_missing_one(string? publicBaseUrl, string? secret, string missing)
    {
        var logs = StartWith(publicBaseUrl, secret, out var webhook);

        Assert.Null(webhook);
        var warning = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "WebhooksOff");
        Assert.Contains(missing, warning.Message);
    }

    [Theory]
    [InlineData("https://handoff.example.com", Secret)]
    [InlineData(null, null)]
    public void Both_or_neither_of_the_webhook_settings_is_no_warning(string? publicBaseUrl, string? secret)
    {
        var logs = StartWith(publicBaseUrl, secret, out var webhook);

        Assert.Equal(publicBaseUrl is not null, webhook is not null);
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "WebhooksOff");
    }

    [Fact]
    public void A_webhook_secret_on_a_copilot_integration_is_a_warning_that_it_is_not_used()
    {
        var logs = new FakeLogCollector();
        var settings = new Dictionary<string, string?>
        {
            ["Handoff:PublicBaseUrl"] = "https://handoff.example.com",
            [$"Handoff:Integrations:{EmbeddedServiceFactory.IntegrationId}:WebhookSecret"] = Secret,
            [$"Handoff:Integrations:{EmbeddedServiceFactory.CopilotIntegrationId}:WebhookSecret"] = Secret,
        };
        using var factory = new EmbeddedServiceFactory(temp.File($"webhooks-{Guid.NewGuid():N}.db"), cursor.Url, settings: settings) { Logs = logs };
        var catalog = factory.Services.GetRequiredService<IIntegrationCatalog>();

        Assert.Null(catalog.Find(EmbeddedServiceFactory.CopilotIntegrationId)!.Webhook);
        var warning = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "WebhookSecretUnused");
        Assert.Contains($"Integration {EmbeddedServiceFactory.CopilotIntegrationId} ", warning.Message);
        Assert.DoesNotContain(logs.GetSnapshot(), record => LogLines.Carry(record, Secret));
        Assert.DoesNotContain(logs.GetSnapshot(), record => record.Id.Name == "WebhooksOff");
    }

    /// <summary>
    /// A provider reached over plain http on another host gets the API key in a readable header: allowed (a proxy that
    /// adds TLS), but said at start. Loopback (a local fake, the tests') and https are not.
    /// </summary>
    [Theory]
    [InlineData("http://cursor-proxy.internal:8080", true)]
    [InlineData("http://10.0.0.7/", true)]
    [InlineData("https://api.cursor.com", false)]
    [InlineData("http://127.0.0.1:5352", false)]
    [InlineData("http://localhost:5352", false)]
    [InlineData("http://[::1]:5352", false)]
    public void A_provider_called_over_plain_http_on_another_host_is_a_warning_without_its_key(string baseUrl, bool warned)
    {
        var logs = new FakeLogCollector();
        var settings = new Dictionary<string, string?> { [$"Handoff:Integrations:{EmbeddedServiceFactory.IntegrationId}:BaseUrl"] = baseUrl };
        using var factory = new EmbeddedServiceFactory(temp.File($"http-{Guid.NewGuid():N}.db"), cursor.Url, settings: settings) { Logs = logs };

        Assert.NotNull(factory.Services.GetRequiredService<IIntegrationCatalog>().Find(EmbeddedServiceFactory.IntegrationId));

        var warnings = logs.GetSnapshot().Where(record => record.Id.Name == "PlainHttpProvider").ToList();
        Assert.Equal(warned ? 1 : 0, warnings.Count);
        if (warned)
        {
            Assert.Contains($"Integration {EmbeddedServiceFactory.IntegrationId} calls {new Uri(baseUrl).Authority} over plain http", warnings[0].Message);
            Assert.DoesNotContain(logs.GetSnapshot(), record => LogLines.Carry(record, EmbeddedServiceFactory.ApiKey));
        }
    }

    /// <summary>
    /// Each Cursor integration's launches carry a webhook URL naming that integration (on the public address, whatever its
    /// trailing slash), so the provider's webhooks for it are checked against its own secret; Copilot sends none.
    /// </summary>
    [Fact]
    public void Each_cursor_integrations_webhook_url_names_that_integration_and_carries_its_own_secret()
    {
        const string otherSecret = "webhook-secret-of-integration-44-0123456789";
        var settings = new Dictionary<string, string?>
        {
            ["Handoff:PublicBaseUrl"] = "https://handoff.example.com/",
            [$"Handoff:Integrations:{EmbeddedServiceFactory.IntegrationId}:WebhookSecret"] = Secret,
            ["Handoff:Integrations:44:Provider"] = "cursor_background_agent",
            ["Handoff:Integrations:44:BaseUrl"] = cursor.Url,
            ["Handoff:Integrations:44:ApiKey"] = "key-44",
            ["Handoff:Integrations:44:WebhookSecret"] = otherSecret,
        };
        using var factory = new EmbeddedServiceFactory(temp.File($"webhooks-{Guid.NewGuid():N}.db"), cursor.Url, settings: settings);
        var catalog = factory.Services.GetRequiredService<IIntegrationCatalog>();

        Assert.Equal(new AgentWebhook(new Uri($"https://handoff.example.com/webhooks/cursor/{EmbeddedServiceFactory.IntegrationId}"), Secret), catalog.Find(EmbeddedServiceFactory.IntegrationId)!.Webhook);
        Assert.Equal(new AgentWebhook(new Uri("https://handoff.example.com/webhooks/cursor/44"), otherSecret), catalog.Find(44)!.Webhook);
        Assert.Null(catalog.Find(EmbeddedServiceFactory.CopilotIntegrationId)!.Webhook);
    }

    private FakeLogCollector StartWith(string? publicBaseUrl, string? secret, out AgentWebhook? webhook)
    {
        var logs = new FakeLogCollector();
        var settings = new Dictionary<string, string?>
        {
            ["Handoff:PublicBaseUrl"] = publicBaseUrl,
            [$"Handoff:Integrations:{EmbeddedServiceFactory.IntegrationId}:WebhookSecret"] = secret,
        };
        using var factory = new EmbeddedServiceFactory(temp.File($"webhooks-{Guid.NewGuid():N}.db"), cursor.Url, settings: settings) { Logs = logs };
        webhook = factory.Services.GetRequiredService<IIntegrationCatalog>().Find(EmbeddedServiceFactory.IntegrationId)!.Webhook;
        return logs;
    }

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
