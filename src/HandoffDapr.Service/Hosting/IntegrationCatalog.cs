using Dapr.Client;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Core.Providers;
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
            // The settings were validated at start: the provider is one of the known kinds.
            var kind = ProviderKinds.Find(integration.Provider)!;
            // A blank model means the provider's default: Cursor refuses an empty "model" (minimum length 1), so it is left out.
            var model = string.IsNullOrWhiteSpace(integration.Model) ? null : integration.Model;
            var provider = kind.CreateClient(transport, services.GetRequiredService<TimeProvider>(), services.GetRequiredService<ILoggerFactory>(), model);
            var webhook = Webhook(settings.PublicBaseUrl, kind, key, integration);
            if (kind.WebhookPath is not null && webhook is null && (!string.IsNullOrWhiteSpace(settings.PublicBaseUrl) || !string.IsNullOrEmpty(integration.WebhookSecret)))
            {
                // Half of what webhooks need, so presumably meant: without a word, agents would be followed by polling alone.
                LogWebhooksOff(logger, id, string.IsNullOrWhiteSpace(settings.PublicBaseUrl) ? "Handoff:PublicBaseUrl" : $"Handoff:Integrations:{id}:WebhookSecret");
            }
            else if (kind.WebhookPath is null && !string.IsNullOrEmpty(integration.WebhookSecret))
            {
                // A secret for a provider that sends no webhooks (Copilot) is presumably meant to turn them on: said, not ignored silently.
                LogWebhookSecretUnused(logger, id, kind.Name);
            }

            if (mode == HostingMode.Embedded && IsPlainHttpToAnotherHost(integration.EffectiveBaseUrl))
            {
                // Allowed (a provider on a local network, a proxy that adds TLS), but the key goes out readable.
                LogPlainHttpProvider(logger, id, new Uri(integration.EffectiveBaseUrl!).Authority);
            }

            integrations[id] = new Integration(id, provider, integration.AutoCreatePr, webhook, integration.PromptMaxLength);
        }
    }

    public Integration? Find(long integrationId) => integrations.GetValueOrDefault(integrationId);

    [LoggerMessage(EventId = 4401, EventName = "WebhooksOff", Level = LogLevel.Warning, Message = "Integration {IntegrationId} gets no webhooks, {Missing} is not set: its agents are followed by polling alone")]
    private static partial void LogWebhooksOff(ILogger logger, long integrationId, string missing);

    [LoggerMessage(EventId = 4402, EventName = "WebhookSecretUnused", Level = LogLevel.Warning,
        Message = "Integration {IntegrationId} has a WebhookSecret, but {Provider} sends no webhooks: it is not used, and its agents are followed by polling alone")]
    private static partial void LogWebhookSecretUnused(ILogger logger, long integrationId, string provider);

    [LoggerMessage(EventId = 4403, EventName = "PlainHttpProvider", Level = LogLevel.Warning,
        Message = "Integration {IntegrationId} calls {Host} over plain http: its API key, and the webhook secret each launch carries, cross the network unencrypted")]
    private static partial void LogPlainHttpProvider(ILogger logger, long integrationId, string host);

    /// <summary>An <c>http</c> address of a host other than this machine's loopback (validated at start as absolute).</summary>
    private static bool IsPlainHttpToAnotherHost(string? baseUrl) =>
        Uri.TryCreate(baseUrl, UriKind.Absolute, out var uri) && uri.Scheme == Uri.UriSchemeHttp && !uri.IsLoopback;

    /// <summary>
    /// The provider reports status to us only when it sends webhooks at all, and we know our public address and a secret
    /// to sign with; otherwise its agents are followed by polling alone.
    /// </summary>
    private static AgentWebhook? Webhook(string? publicBaseUrl, ProviderKind kind, string id, IntegrationOptions integration) =>
        string.IsNullOrWhiteSpace(publicBaseUrl) || string.IsNullOrEmpty(integration.WebhookSecret) || kind.WebhookUrl(publicBaseUrl, id) is not { } url
            ? null
            : new AgentWebhook(url, integration.WebhookSecret);
}
