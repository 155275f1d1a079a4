using HandoffDapr.Core.Providers;

namespace HandoffDapr.Core.Handoff;

/// <summary>The configured integrations, by id. The hosts build providers on the right transport.</summary>
public interface IIntegrationCatalog
{
    Integration? Find(long integrationId);
}

/// <param name="AutoCreatePrDefault">Used by the manual trigger when the request does not say.</param>
/// <param name="Webhook">
/// Where the provider reports status, when it sends webhooks at all (Cursor; not Copilot) and the integration has a
/// webhook secret and a public URL.
/// </param>
public sealed record Integration(
    long Id,
    ICodingAgentProvider Provider,
    bool AutoCreatePrDefault = true,
    AgentWebhook? Webhook = null,
    int PromptMaxLength = Prompts.PromptBuilder.DefaultMaxLength);
