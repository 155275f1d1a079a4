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
                // http_channel.go GetAppConfig: any status but 200 is an empty config (nothing hosted).
                if (response.StatusCode == System.Net.HttpStatusCode.OK)
                {
                    using var doc = JsonDocument.Parse(await response.Content.ReadAsByteArrayAsync(ct).ConfigureAwait(false));
                    if (Entities(doc.RootElement) is { } entities)
                    {
                        types.UnionWith(entities);
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

    /// <summary>
    /// The hosted types daprd takes from the app's config, or null when it takes none: the body must decode into
    /// pkg/config/app_configuration.go ApplicationConfig (Go's json: field names matched case-insensitively, a member of the
    /// wrong type fails the whole decode, so GetAppConfig errs and runtime.go loadAppConfiguration keeps no config), and
    /// pkg/actors/actors.go RegisterHosted parses drainOngoingCallTimeout and actorIdleTimeout with time.ParseDuration when
    /// set: a bad one fails the registration, and no type is hosted.
    /// </summary>
    internal static IReadOnlyList<string>? Entities(JsonElement config)
    {
        if (config.ValueKind == JsonValueKind.Null)
        {
            return [];
        }

        if (config.ValueKind != JsonValueKind.Object)
        {
            return null;
        }

        static bool Is(JsonElement obj, string name, params JsonValueKind[] kinds) =>
            !GoJson.TryGetField(obj, name, out var v) || v.ValueKind == JsonValueKind.Null || kinds.Contains(v.ValueKind);
        static bool IsInt(JsonElement obj, string name) =>
            !GoJson.TryGetField(obj, name, out var v) || v.ValueKind == JsonValueKind.Null || (v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out _));
        static bool IsStrings(JsonElement obj, string name) =>
            !GoJson.TryGetField(obj, name, out var v) || v.ValueKind == JsonValueKind.Null
            || (v.ValueKind == JsonValueKind.Array && v.EnumerateArray().All(e => e.ValueKind is JsonValueKind.String or JsonValueKind.Null));
        static bool IsReentrancy(JsonElement obj) =>
            !GoJson.TryGetField(obj, "reentrancy", out var r) || r.ValueKind == JsonValueKind.Null
            || (r.ValueKind == JsonValueKind.Object && Is(r, "enabled", JsonValueKind.True, JsonValueKind.False) && IsInt(r, "maxStackDepth"));
        static bool Decodes(JsonElement obj) =>
            IsStrings(obj, "entities") && Is(obj, "actorIdleTimeout", JsonValueKind.String) && Is(obj, "drainOngoingCallTimeout", JsonValueKind.String)
            && Is(obj, "drainRebalancedActors", JsonValueKind.True, JsonValueKind.False) && IsReentrancy(obj) && IsInt(obj, "remindersStoragePartitions");

        var entityConfigsDecode = !GoJson.TryGetField(config, "entitiesConfig", out var entityConfigs) || entityConfigs.ValueKind == JsonValueKind.Null
            || (entityConfigs.ValueKind == JsonValueKind.Array && entityConfigs.EnumerateArray().All(e => e.ValueKind == JsonValueKind.Null || (e.ValueKind == JsonValueKind.Object && Decodes(e))));
        if (!Decodes(config) || !entityConfigsDecode)
        {
            return null;
        }

        foreach (var duration in new[] { "drainOngoingCallTimeout", "actorIdleTimeout" })
        {
            if (GoJson.StringField(config, duration) is { Length: > 0 } text && !DaprDurationParser.TryParseGoDuration(text, out _))
            {
                return null;
            }
        }

        return GoJson.TryGetField(config, "entities", out var entities) && entities.ValueKind == JsonValueKind.Array
            ? entities.EnumerateArray().Select(e => e.GetString() ?? "").ToList()
            : [];
    }

    public async Task<bool> IsHostedAsync(string actorType, CancellationToken ct) =>
        (await GetHostedTypesAsync(ct).ConfigureAwait(false)).Contains(actorType);
}
