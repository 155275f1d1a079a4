using System.Text.Json;

namespace HandoffDapr.FakeSidecar;

/// <summary>
/// Which actor types the app hosts, from its <c>GET dapr/config</c> (<c>entities</c>), read once per app
/// channel like daprd reads it at startup.
/// </summary>
internal sealed class ActorHosting(AppChannelClient app)
{
    private readonly SemaphoreSlim gate = new(1, 1);
    private (int Generation, HashSet<string> Types)? cached;

    public async Task<IReadOnlySet<string>> GetHostedTypesAsync(CancellationToken ct)
    {
        var current = cached;
        if (current is { } c && c.Generation == app.Generation)
        {
            return c.Types;
        }

        await gate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (cached is { } again && again.Generation == app.Generation)
            {
                return again.Types;
            }

            var generation = app.Generation;
            var types = new HashSet<string>(StringComparer.Ordinal);
            try
            {
                using var response = await app.GetAsync("dapr/config", ct).ConfigureAwait(false);
                if (response.IsSuccessStatusCode)
                {
                    using var doc = JsonDocument.Parse(await response.Content.ReadAsByteArrayAsync(ct).ConfigureAwait(false));
                    if (doc.RootElement.ValueKind == JsonValueKind.Object
                        && doc.RootElement.TryGetProperty("entities", out var entities)
                        && entities.ValueKind == JsonValueKind.Array)
                    {
                        foreach (var e in entities.EnumerateArray())
                        {
                            if (e.GetString() is { } name)
                            {
                                types.Add(name);
                            }
                        }
                    }
                }
            }
            catch (Exception ex) when (ex is HttpRequestException or JsonException or InvalidOperationException)
            {
                return types; // app not reachable: host nothing, and ask again next time
            }

            cached = (generation, types);
            return types;
        }
        finally
        {
            gate.Release();
        }
    }

    public async Task<bool> IsHostedAsync(string actorType, CancellationToken ct) =>
        (await GetHostedTypesAsync(ct).ConfigureAwait(false)).Contains(actorType);
}
