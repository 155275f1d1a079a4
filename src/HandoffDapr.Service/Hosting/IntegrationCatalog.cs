using Dapr.Client;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Providers.Copilot;
using HandoffDapr.Core.Providers.Cursor;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.Transport;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Hosting;

/// <summary>Builds each configured integration once, on the transport of the current mode.</summary>
public sealed partial class IntegrationCatalog : IIntegrationCatalog
{
    private readonly Dictionary<long, Integration> integrations = new();

    public IntegrationCatalog(IOptions<HandoffOptions> options, HostingMode mode, IServiceProvider services)
    {
        var settings = options.Value;
        var logger = services.GetRequiredService<ILogger<IntegrationCatalog>>();
        foreach (var (key, integration) in settings.Integrations)
        {
            var id = long.Parse(key, System.Globalization.CultureInfo.InvariantCulture);
            IProviderTransport transport = mode == HostingMode.Dapr
                ? new DaprBindingTransport(services.GetRequiredService<DaprClient>(), integration.Binding!, services.GetRequiredService<ILogger<DaprBindingTransport>>())
                : new HttpProviderTransport(services.GetRequiredService<ProviderHttpClients>().Create(integration));
            var time = services.GetRequiredService<TimeProvider>();
            // A blank model means the provider's default: Cursor refuses an empty "model" (minimum length 1), so it is left out.
            var model = string.IsNullOrWhiteSpace(integration.Model) ? null : integration.Model;
            ICodingAgentProvider provider = integration.Provider == CopilotAgentTasksProvider.Name
                ? new CopilotAgentTasksProvider(transport, time, services.GetRequiredService<ILogger<CopilotAgentTasksProvider>>(), model)
                : new CursorAgentsProvider(transport, time, services.GetRequiredService<ILogger<CursorAgentsProvider>>(), model);
            // Copilot sends no webhooks: its agents are followed by polling alone.
            var webhook = provider is CursorAgentsProvider ? Webhook(settings.PublicBaseUrl, id, integration) : null;
            if (provider is CursorAgentsProvider && webhook is null && (!string.IsNullOrWhiteSpace(settings.PublicBaseUrl) || !string.IsNullOrEmpty(integration.WebhookSecret)))
            {
                // Half of what webhooks need, so presumably meant: without a word, agents would be followed by polling alone.
                LogWebhooksOff(logger, id, string.IsNullOrWhiteSpace(settings.PublicBaseUrl) ? "Handoff:PublicBaseUrl" : $"Handoff:Integrations:{id}:WebhookSecret");
            }

            integrations[id] = new Integration(id, provider, integration.AutoCreatePr, webhook, integration.PromptMaxLength);
        }
    }

    public Integration? Find(long integrationId) => integrations.GetValueOrDefault(integrationId);

    [LoggerMessage(EventId = 4401, EventName = "WebhooksOff", Level = LogLevel.Warning, Message = "Integration {IntegrationId} gets no webhooks, {Missing} is not set: its agents are followed by polling alone")]
    private static partial void LogWebhooksOff(ILogger logger, long integrationId, string missing);

    /// <summary>The provider reports status to us only when we know our public address and a secret to sign with.</summary>
    private static AgentWebhook? Webhook(string? publicBaseUrl, long id, IntegrationOptions integration) =>
        string.IsNullOrWhiteSpace(publicBaseUrl) || string.IsNullOrEmpty(integration.WebhookSecret)
            ? null
            : new AgentWebhook(new Uri($"{publicBaseUrl.TrimEnd('/')}/webhooks/cursor/{id}"), integration.WebhookSecret);
}
