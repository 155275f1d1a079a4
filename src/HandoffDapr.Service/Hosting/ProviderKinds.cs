using HandoffDapr.Core.Providers;
using HandoffDapr.Core.Providers.Copilot;
using HandoffDapr.Core.Providers.Cursor;
using HandoffDapr.Service.Api;

namespace HandoffDapr.Service.Hosting;

/// <summary>
/// A provider the service can hand off to: the name an integration's <c>Provider</c> setting gives, the public API an
/// integration without a <c>BaseUrl</c> calls, the path of its webhook route (none: its agents are followed by polling
/// alone) and how its client is made on the mode's transport.
/// </summary>
public sealed record ProviderKind(
    string Name,
    string PublicApi,
    string? WebhookPath,
    Func<IProviderTransport, TimeProvider, ILoggerFactory, string?, ICodingAgentProvider> CreateClient)
{
    /// <summary>Where the provider reports an integration's agents (the launch adds the run's id as a query).</summary>
    public Uri? WebhookUrl(string publicBaseUrl, string integrationId) =>
        WebhookPath is null ? null : new Uri($"{publicBaseUrl.TrimEnd('/')}{WebhookPath}/{integrationId}");
}

/// <summary>
/// Every provider, in one list. The settings are checked against it, and an integration's client, default API and
/// webhook all come from its entry: nothing else chooses by a provider's name, so none can fall back to another's.
/// </summary>
public static class ProviderKinds
{
    public static readonly IReadOnlyList<ProviderKind> All =
    [
        new(CursorAgentsProvider.Name, "https://api.cursor.com", WebhookEndpoints.CursorPath,
            (transport, time, logs, model) => new CursorAgentsProvider(transport, time, logs.CreateLogger<CursorAgentsProvider>(), model)),
        // GitHub's agent tasks API sends no webhooks.
        new(CopilotAgentTasksProvider.Name, "https://api.github.com", WebhookPath: null,
            (transport, time, logs, model) => new CopilotAgentTasksProvider(transport, time, logs.CreateLogger<CopilotAgentTasksProvider>(), model)),
    ];

    public static ProviderKind? Find(string? name) => All.FirstOrDefault(kind => string.Equals(kind.Name, name, StringComparison.Ordinal));
}
