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
