using System.Text.Json;
using Dapr;

namespace HandoffDapr.Service.DaprHost;

/// <summary>
/// The preview features daprd's Configuration turns on, from <c>GET v1.0/metadata</c>'s <c>enabledFeatures</c>
/// (pkg/api/universal/metadata.go); the SDK's <c>DaprMetadata</c> leaves them out. <c>Handoff:RunRetention</c> needs
/// <see cref="ActorStateTtl"/>: without it daprd refuses every actor state save that carries <c>ttlInSeconds</c>
/// (pkg/actors/api/transactional.go), so no settled run could be saved.
/// </summary>
public sealed class SidecarFeatures(IConfiguration configuration) : IDisposable
{
    public const string ActorStateTtl = "ActorStateTTL";

    private readonly HttpClient http = CreateClient(configuration);

    /// <summary>The enabled features, or null when daprd's answer could not be had or read (nothing is concluded then).</summary>
    public async Task<IReadOnlyList<string>?> ReadAsync(CancellationToken cancellationToken)
    {
        try
        {
            using var response = await http.GetAsync("v1.0/metadata", cancellationToken);
            if (!response.IsSuccessStatusCode)
            {
                return null;
            }

            await using var body = await response.Content.ReadAsStreamAsync(cancellationToken);
            using var document = await JsonDocument.ParseAsync(body, cancellationToken: cancellationToken);
            return document.RootElement switch
            {
                { ValueKind: JsonValueKind.Object } root when !root.TryGetProperty("enabledFeatures", out _) => [], // omitempty: none
                { ValueKind: JsonValueKind.Object } root when root.GetProperty("enabledFeatures") is { ValueKind: JsonValueKind.Array } features =>
                    features.EnumerateArray().Where(feature => feature.ValueKind == JsonValueKind.String).Select(feature => feature.GetString()!).ToList(),
                _ => null,
            };
        }
        catch (Exception exception) when (exception is HttpRequestException or JsonException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
        {
            return null;
        }
    }

    public void Dispose() => http.Dispose();

    /// <summary>daprd's HTTP endpoint and API token, read as the Dapr client reads them (<c>DAPR_HTTP_ENDPOINT</c>/<c>DAPR_HTTP_PORT</c>, <c>DAPR_API_TOKEN</c>).</summary>
    private static HttpClient CreateClient(IConfiguration configuration)
    {
        var client = new HttpClient { BaseAddress = new Uri(DaprDefaults.GetDefaultHttpEndpoint(configuration)), Timeout = TimeSpan.FromSeconds(10) };
        if (DaprDefaults.GetDefaultDaprApiToken(configuration) is { Length: > 0 } token)
        {
            client.DefaultRequestHeaders.Add("dapr-api-token", token);
        }

        return client;
    }
}
