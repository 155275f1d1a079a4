using System.Globalization;
using System.Text.Json;

namespace HandoffDapr.FakeSidecar;

/// <summary>
/// The actor state store (the component with <c>actorStateStore: "true"</c>), in memory.
/// Values are kept as daprd stores them: decoded into Go <c>any</c> and marshalled again (see <see cref="GoJson"/>).
/// </summary>
/// <param name="redis">Whether it treats a TTL as Redis does (<see cref="FakeSidecarOptions.StateStoreType"/>).</param>
internal sealed class ActorStateStore(TimeProvider clock, Func<bool> redis)
{
    private readonly object gate = new();
    private readonly Dictionary<(string Type, string Id), Dictionary<string, Entry>> actors = new();

    private sealed record Entry(byte[] Value, DateTimeOffset? ExpiresAt);

    public (byte[] Value, DateTimeOffset? ExpiresAt)? Get(string type, string id, string key)
    {
        lock (gate)
        {
            if (actors.TryGetValue((type, id), out var keys) && keys.TryGetValue(key, out var entry))
            {
                if (entry.ExpiresAt is { } exp && exp <= clock.GetUtcNow())
                {
                    keys.Remove(key);
                    return null;
                }

                return (entry.Value, entry.ExpiresAt);
            }

            return null;
        }
    }

    public IReadOnlyDictionary<string, string> Snapshot(string type, string id)
    {
        lock (gate)
        {
            var now = clock.GetUtcNow();
            return actors.TryGetValue((type, id), out var keys)
                ? keys.Where(kv => kv.Value.ExpiresAt is null || kv.Value.ExpiresAt > now)
                    .ToDictionary(kv => kv.Key, kv => System.Text.Encoding.UTF8.GetString(kv.Value.Value), StringComparer.Ordinal)
                : new Dictionary<string, string>(StringComparer.Ordinal);
        }
    }

    /// <summary>When each of the actor's live keys expires (null: never).</summary>
    public IReadOnlyDictionary<string, DateTimeOffset?> Expiries(string type, string id)
    {
        lock (gate)
        {
            var now = clock.GetUtcNow();
            return actors.TryGetValue((type, id), out var keys)
                ? keys.Where(kv => kv.Value.ExpiresAt is null || kv.Value.ExpiresAt > now).ToDictionary(kv => kv.Key, kv => kv.Value.ExpiresAt, StringComparer.Ordinal)
                : new Dictionary<string, DateTimeOffset?>(StringComparer.Ordinal);
        }
    }

    public void Set(string type, string id, string key, byte[] value)
    {
        lock (gate)
        {
            Keys(type, id)[key] = new Entry(value, null);
        }
    }

    public void Remove(string type, string id, string key)
    {
        lock (gate)
        {
            Keys(type, id).Remove(key);
        }
    }

    public void Clear()
    {
        lock (gate)
        {
            actors.Clear();
        }
    }

    /// <summary>Applies a parsed state transaction all-or-nothing.</summary>
    public void ApplyTransaction(string type, string id, IReadOnlyList<ParsedOperation> ops)
    {
        lock (gate)
        {
            var keys = Keys(type, id);
            var now = clock.GetUtcNow();
            foreach (var op in ops)
            {
                if (op.Upsert)
                {
                    // As the Redis state store (components-contrib state/redis/redis.go) does and the docs say ("When a
                    // TTL is not specified, the default behavior of the state store is retained"): a write without
                    // ttlInSeconds keeps the expiry the key had (its Lua script HSETs the hash, which keeps a key's
                    // TTL; EXPIRE is sent only for ttl > 0, PERSIST only for ttl <= 0); "-1" (or "0") makes it never
                    // expire. Other stores (SQL Server, MongoDB, DynamoDB) write now + ttl whatever its sign, and no
                    // expiry without one.
                    var kept = keys.TryGetValue(op.Key, out var old) && (old.ExpiresAt is null || old.ExpiresAt > now) ? old.ExpiresAt : null;
                    keys[op.Key] = new Entry(op.Value!, (op.TtlSeconds, redis()) switch
                    {
                        (null, true) => kept,
                        (null, false) => null,
                        (<= 0, true) => null,
                        ({ } ttl, _) => now.AddSeconds(ttl),
                    });
                }
                else
                {
                    keys.Remove(op.Key);
                }
            }
        }
    }

    private Dictionary<string, Entry> Keys(string type, string id)
    {
        if (!actors.TryGetValue((type, id), out var keys))
        {
            keys = new Dictionary<string, Entry>(StringComparer.Ordinal);
            actors[(type, id)] = keys;
        }

        return keys;
    }

    /// <param name="TtlSeconds">Null without ttlInSeconds (the key keeps its expiry); zero or negative to never expire.</param>
    internal sealed record ParsedOperation(bool Upsert, string Key, byte[]? Value, int? TtlSeconds);

    /// <summary>
    /// Reads <c>[{"operation":"upsert"|"delete","request":{"key","value","metadata"}}]</c>
    /// as pkg/actors/api/transactional.go does; error text mirrors it.
    /// </summary>
    /// <param name="ttlEnabled">daprd's ActorStateTTL feature: without it, an upsert with <c>ttlInSeconds</c> metadata is an operation error.</param>
    /// <param name="refuseTtlBelowMinusOne">A store reading the TTL with state/utils ParseTTL: below -1 is an error.</param>
    public static (List<ParsedOperation>? Ops, string? MalformedError, string? OperationError) Parse(
        ReadOnlySpan<byte> body, bool ttlEnabled = true, bool refuseTtlBelowMinusOne = false)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(body.ToArray());
        }
        catch (JsonException ex)
        {
            return (null, ex.Message, null);
        }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Array)
            {
                return (null, "json: cannot unmarshal " + doc.RootElement.ValueKind.ToString().ToLowerInvariant() + " into Go value of type []api.TransactionalOperation", null);
            }

            var ops = new List<ParsedOperation>();
            foreach (var item in doc.RootElement.EnumerateArray())
            {
                var operation = GoJson.StringField(item, "operation");
                if (!GoJson.TryGetField(item, "request", out var req) || req.ValueKind == JsonValueKind.Null)
                {
                    return (null, null, "request data is empty");
                }

                if (operation.Length == 0)
                {
                    return (null, null, "operation is empty");
                }

                if (operation is not ("upsert" or "delete"))
                {
                    return (null, null, $"operation type {operation} not supported");
                }

                var key = GoJson.StringField(req, "key");
                if (key.Length == 0)
                {
                    return (null, null, "missing key");
                }

                if (operation == "delete")
                {
                    ops.Add(new ParsedOperation(false, key, null, null));
                    continue;
                }

                var value = GoJson.TryGetField(req, "value", out var v) ? GoJson.Reencode(v, preserveNumbers: false) : "null"u8.ToArray();
                int? ttl = null;
                // map[string]string keys are matched exactly; the check is for the key's presence, whatever its value.
                if (!ttlEnabled && GoJson.TryGetField(req, "metadata", out var anyMetadata) && anyMetadata.ValueKind == JsonValueKind.Object
                    && anyMetadata.EnumerateObject().Any(p => p.Name == "ttlInSeconds"))
                {
                    return (null, null, "ttlInSeconds is not supported without the \"ActorStateTTL\" feature enabled");
                }

                if (GoJson.TryGetField(req, "metadata", out var md) && md.ValueKind == JsonValueKind.Object
                    && md.TryGetProperty("ttlInSeconds", out var t) && t.ValueKind == JsonValueKind.String
                    && t.GetString() is { Length: > 0 }) // parseTTL: an empty value is no TTL
                {
                    if (!int.TryParse(t.GetString(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var secs))
                    {
                        return (null, null, $"incorrect value for metadata 'ttlInSeconds': {t.GetString()}");
                    }

                    if (refuseTtlBelowMinusOne && secs < -1)
                    {
                        return (null, null, "incorrect value for metadata 'ttlInSeconds': must be -1 or greater");
                    }

                    ttl = secs; // zero or negative: never expire (PERSIST; -1 is the documented value)
                }

                ops.Add(new ParsedOperation(true, key, value, ttl));
            }

            return (ops, null, null);
        }
    }
}
