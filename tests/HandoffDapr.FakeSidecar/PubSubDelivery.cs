using System.Text.Json;

namespace HandoffDapr.FakeSidecar;

/// <summary>One entry of the app's <c>GET dapr/subscribe</c>, routes resolved as daprd does.</summary>
internal sealed record AppSubscription(
    string PubsubName, string Topic, string DeadLetterTopic, IReadOnlyDictionary<string, string> Metadata,
    IReadOnlyList<(string? Match, string Path)> Rules);

/// <summary>
/// Delivers events to the app's subscriptions like daprd: reads <c>GET dapr/subscribe</c>
/// (pkg/runtime/pubsub/subscriptions.go), picks the route, POSTs the CloudEvent and reads the reply
/// (pkg/runtime/subscription/postman/http/http.go), dead-lettering per pkg/runtime/subscription/subscription.go.
/// </summary>
internal sealed class PubSubDelivery(FakeSidecarOptions options, AppChannelClient app, PubSubBroker broker)
{
    private readonly SemaphoreSlim gate = new(1, 1);
    private (int Generation, List<AppSubscription> Subscriptions)? cached;

    public async Task<IReadOnlyList<AppSubscription>> GetSubscriptionsAsync(CancellationToken ct)
    {
        await gate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            if (cached is { } c && c.Generation == app.Generation)
            {
                return c.Subscriptions;
            }

            var generation = app.Generation;
            using var response = await app.GetAsync("dapr/subscribe", ct).ConfigureAwait(false);
            var subs = new List<AppSubscription>();
            if (response.StatusCode == System.Net.HttpStatusCode.OK)
            {
                var bytes = await response.Content.ReadAsByteArrayAsync(ct).ConfigureAwait(false);
                if (bytes.Length > 0)
                {
                    using var doc = JsonDocument.Parse(bytes);
                    // A body that does not decode into []SubscriptionJSON is deserializeTopicsError: no subscription at all.
                    if (Decodes(doc.RootElement))
                    {
                        subs.AddRange(doc.RootElement.EnumerateArray().Where(s => s.ValueKind == JsonValueKind.Object)
                            .Select(Parse).Where(s => s.Rules.Count > 0)); // filterSubscriptions
                    }
                }
            }

            cached = (generation, subs);
            return subs;
        }
        finally
        {
            gate.Release();
        }
    }

    public void ForgetSubscriptions() => cached = null;

    /// <summary>
    /// Whether Go's encoding/json decodes the app's answer into pkg/runtime/pubsub/subscriptions.go []SubscriptionJSON:
    /// strings where it has strings (pubsubname, topic, route, deadLetterTopic, routes.default, a rule's match and path),
    /// string values in metadata, bulkSubscribe's bool and int32s. One member of another type fails the whole decode, and
    /// GetSubscriptionsHTTP returns the error: daprd then subscribes the app to nothing.
    /// </summary>
    internal static bool Decodes(JsonElement subscriptions)
    {
        static bool Null(JsonElement e) => e.ValueKind == JsonValueKind.Null;
        static bool Field(JsonElement obj, string name, Func<JsonElement, bool> ok) => !GoJson.TryGetField(obj, name, out var v) || Null(v) || ok(v);
        static bool String(JsonElement e) => e.ValueKind == JsonValueKind.String;
        static bool Int32(JsonElement e) => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out _);
        static bool Bool(JsonElement e) => e.ValueKind is JsonValueKind.True or JsonValueKind.False;
        static bool Object(JsonElement e, Func<JsonElement, bool> members) => e.ValueKind == JsonValueKind.Object && members(e);
        static bool Rule(JsonElement r) => Null(r) || Object(r, o => Field(o, "match", String) && Field(o, "path", String));
        static bool Subscription(JsonElement s) => Null(s) || Object(s, o =>
            Field(o, "pubsubname", String) && Field(o, "topic", String) && Field(o, "deadLetterTopic", String) && Field(o, "route", String)
            && Field(o, "metadata", m => Object(m, mm => mm.EnumerateObject().All(p => String(p.Value) || Null(p.Value))))
            && Field(o, "routes", r => Object(r, rr => Field(rr, "default", String)
                && Field(rr, "rules", rules => rules.ValueKind == JsonValueKind.Array && rules.EnumerateArray().All(Rule))))
            && Field(o, "bulkSubscribe", b => Object(b, bb => Field(bb, "enabled", Bool) && Field(bb, "maxMessagesCount", Int32) && Field(bb, "maxAwaitDurationMs", Int32))));
        return Null(subscriptions) || (subscriptions.ValueKind == JsonValueKind.Array && subscriptions.EnumerateArray().All(Subscription));
    }

    private static AppSubscription Parse(JsonElement s)
    {
        var rules = new List<(string?, string)>();
        var defaultRoute = "";
        if (GoJson.TryGetField(s, "routes", out var routes) && routes.ValueKind == JsonValueKind.Object)
        {
            if (GoJson.TryGetField(routes, "rules", out var rr) && rr.ValueKind == JsonValueKind.Array)
            {
                foreach (var r in rr.EnumerateArray())
                {
                    var match = GoJson.StringField(r, "match").Trim();
                    rules.Add((match.Length == 0 ? null : match, GoJson.StringField(r, "path")));
                }
            }

            defaultRoute = GoJson.StringField(routes, "default");
        }

        // A default path wins over the v1 "route" field.
        var fallback = defaultRoute.Length > 0 ? defaultRoute : GoJson.StringField(s, "route");
        if (fallback.Length > 0)
        {
            rules.Add((null, fallback));
        }

        var metadata = new Dictionary<string, string>();
        if (GoJson.TryGetField(s, "metadata", out var md) && md.ValueKind == JsonValueKind.Object)
        {
            foreach (var p in md.EnumerateObject())
            {
                metadata[p.Name] = p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString()! : p.Value.GetRawText();
            }
        }

        // The JSON field is "pubsubname"; Go matches "pubsubName" to it case-insensitively.
        return new AppSubscription(GoJson.StringField(s, "pubsubname"), GoJson.StringField(s, "topic"),
            GoJson.StringField(s, "deadLetterTopic"), metadata, rules);
    }

    /// <summary>Delivers what the broker holds for (pubsub, topic): normally a CloudEvent's bytes.</summary>
    public async Task<DeliveryResult> DeliverAsync(string pubsubName, string topic, byte[] onBroker, CancellationToken ct)
    {
        var subs = await GetSubscriptionsAsync(ct).ConfigureAwait(false);
        var sub = subs.FirstOrDefault(s => s.PubsubName == pubsubName && s.Topic == topic)
            ?? throw new InvalidOperationException(
                $"The app has no subscription for pubsub '{pubsubName}', topic '{topic}' (it has: {string.Join(", ", subs.Select(s => $"{s.PubsubName}/{s.Topic}"))}).");

        var raw = sub.Metadata.TryGetValue("rawPayload", out var rp) && PubSubBroker.IsTruthy(rp);
        var body = raw ? CloudEvents.FromRawPayload(onBroker, topic, pubsubName) : onBroker;
        JsonElement cloudEvent;
        try
        {
            cloudEvent = JsonDocument.Parse(body).RootElement.Clone();
            // json.Unmarshal into map[string]interface{}: JSON null gives a nil map, any other non-object is an error.
            if (cloudEvent.ValueKind is not (JsonValueKind.Object or JsonValueKind.Null))
            {
                throw new JsonException("json: cannot unmarshal " + cloudEvent.ValueKind + " into Go value of type map[string]interface {}");
            }
        }
        catch (JsonException)
        {
            // "error deserializing cloud event": dead letter if configured, else back to the broker for redelivery.
            var dlq = DeadLetter(sub, onBroker);
            return new DeliveryResult(null, dlq is null ? DeliveryOutcome.Retry : DeliveryOutcome.Drop, "", default, dlq);
        }

        string? route = null;
        foreach (var (match, path) in sub.Rules)
        {
            if (match is null || RouteMatcher.Matches(match, cloudEvent))
            {
                route = path;
                break;
            }
        }

        if (route is null)
        {
            // No rule matched: daprd skips the event (counted as dropped) and dead-letters it if it can.
            return new DeliveryResult(null, DeliveryOutcome.Drop, "", cloudEvent, DeadLetter(sub, onBroker));
        }

        route = route.TrimStart('/');
        using var request = new HttpRequestMessage(HttpMethod.Post, route) { Content = new ByteArrayContent(body) };
        request.Content.Headers.TryAddWithoutValidation("Content-Type", CloudEvents.ContentType);
        request.Headers.TryAddWithoutValidation("pubsubname", pubsubName); // message metadata becomes headers
        var traceParent = (GoJson.StringField(cloudEvent, "traceparent") is { Length: > 0 } tp ? tp : GoJson.StringField(cloudEvent, "traceid"));
        if (traceParent.Length > 0)
        {
            request.Headers.TryAddWithoutValidation("traceparent", traceParent);
        }

        HttpResponseMessage? response = null;
        DeliveryOutcome outcome;
        try
        {
            response = await app.SendAsync(request, ct).ConfigureAwait(false);
            outcome = await ReadOutcomeAsync(response, ct).ConfigureAwait(false);
        }
        catch (HttpRequestException)
        {
            outcome = DeliveryOutcome.Retry; // app channel error: retriable
        }

        // A 404 is acknowledged, not dead-lettered: postman/http/http.go Deliver returns nil for it ("non-retriable error
        // returned from app"), so subscription.go takes it as delivered. Only {"status":"DROP"} (ErrMessageDropped) and
        // errors the retries gave up on go to the dead-letter topic.
        var notFound = response?.StatusCode == System.Net.HttpStatusCode.NotFound;
        string? deadLetter = null;
        if ((outcome == DeliveryOutcome.Drop && !notFound) || (outcome == DeliveryOutcome.Retry && options.DeadLetterRetriableFailures))
        {
            deadLetter = DeadLetter(sub, onBroker);
        }

        return new DeliveryResult(response, outcome, route, cloudEvent, deadLetter);
    }

    /// <summary>2xx: decode <c>{"status"}</c> (an empty, non-JSON or non-object body is success); 404: drop (never dead-lettered); else retry.</summary>
    internal static async Task<DeliveryOutcome> ReadOutcomeAsync(HttpResponseMessage response, CancellationToken ct)
    {
        var code = (int)response.StatusCode;
        if (code is < 200 or > 299)
        {
            return code == 404 ? DeliveryOutcome.Drop : DeliveryOutcome.Retry;
        }

        var bytes = await response.Content.ReadAsByteArrayAsync(ct).ConfigureAwait(false);
        string status;
        try
        {
            // json.Decoder.Decode reads the first value only; trailing bytes are never looked at.
            var reader = new Utf8JsonReader(bytes, new JsonReaderOptions { AllowMultipleValues = true });
            using var doc = JsonDocument.ParseValue(ref reader);
            if (doc.RootElement.ValueKind == JsonValueKind.Null)
            {
                return DeliveryOutcome.Success;
            }

            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                return DeliveryOutcome.Success; // cannot unmarshal into AppResponse: "skipping status check"
            }

            if (!GoJson.TryGetField(doc.RootElement, "status", out var s) || s.ValueKind == JsonValueKind.Null)
            {
                return DeliveryOutcome.Success;
            }

            if (s.ValueKind != JsonValueKind.String)
            {
                return DeliveryOutcome.Success; // type error while decoding → treated like a parse error
            }

            status = s.GetString()!;
        }
        catch (JsonException)
        {
            return DeliveryOutcome.Success;
        }

        return status switch
        {
            "" or "SUCCESS" => DeliveryOutcome.Success,
            "DROP" => DeliveryOutcome.Drop,
            _ => DeliveryOutcome.Retry, // "RETRY" and any unknown status (case-sensitive)
        };
    }

    private string? DeadLetter(AppSubscription sub, byte[] onBroker)
    {
        if (sub.DeadLetterTopic.Length == 0)
        {
            return null;
        }

        // sendToDeadLetter republishes the broker message as it was.
        broker.Record(new PublishedEvent(sub.PubsubName, sub.DeadLetterTopic, onBroker, CloudEvents.ContentType,
            new Dictionary<string, string> { ["pubsubName"] = sub.PubsubName }, onBroker, PublishOrigin.DeadLetter));
        return sub.DeadLetterTopic;
    }
}
