using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace HandoffDapr.FakeSidecar;

/// <summary>
/// daprd's CloudEvent envelopes, after components-contrib pubsub/envelope.go and dapr pkg/runtime/pubsub/cloudevents.go.
/// Go marshals the envelope from a map, so members come out sorted by name.
/// </summary>
internal static class CloudEvents
{
    public const string ContentType = "application/cloudevents+json";

    /// <summary>NewCloudEvent: wrap a payload, or complete an app-supplied CloudEvent (content type application/cloudevents+json).</summary>
    public static byte[] Envelope(
        string? id, string source, string topic, string pubsubName, string? dataContentType, byte[] data,
        IReadOnlyDictionary<string, string> metadata, DateTimeOffset now)
    {
        var traceParent = NewTraceParent();
        if (IsContentType(dataContentType, ContentType))
        {
            return FromCloudEvent(data, topic, pubsubName, traceParent, now);
        }

        // "cloudevent.*" metadata overrides (mapstructure.WeakDecode: case-insensitive).
        string? Override(string name) =>
            metadata.FirstOrDefault(kv => string.Equals(kv.Key, "cloudevent." + name, StringComparison.OrdinalIgnoreCase)).Value;

        id = Override("id") ?? id;
        var traceId = Override("traceparent") is { Length: > 0 } tp ? tp : Override("traceid") ?? traceParent;
        var ce = new GoJsonObject()
            .SetString("id", string.IsNullOrEmpty(id) ? Guid.NewGuid().ToString() : id)
            .SetString("specversion", "1.0")
            .SetString("source", Override("source") is { Length: > 0 } src ? src : string.IsNullOrEmpty(source) ? "Dapr" : source)
            .SetString("type", Override("type") is { Length: > 0 } type ? type : "com.dapr.event.sent")
            .SetString("topic", topic)
            .SetString("pubsubname", pubsubName)
            .SetString("traceid", traceId)
            .SetString("traceparent", traceId)
            .SetString("tracestate", Override("tracestate") ?? "")
            .SetString("time", FormatTime(now));
        var contentType = string.IsNullOrEmpty(dataContentType) ? "text/plain" : dataContentType;
        ce.SetString("datacontenttype", contentType);
        if (Override("subject") is { Length: > 0 } subject)
        {
            ce.SetString("subject", subject);
        }

        if (IsContentType(contentType, "application/json") && TryReencode(data, out var json))
        {
            ce.SetRaw("data", json);
        }
        else if (IsContentType(contentType, "application/octet-stream"))
        {
            ce.SetString("data_base64", Convert.ToBase64String(data));
        }
        else
        {
            ce.SetString("data", Encoding.UTF8.GetString(data)); // also JSON that does not parse: Go falls back to string(data)
        }

        return ce.ToUtf8();
    }

    /// <summary>FromCloudEvent: keep the app's envelope, fill in time/trace/topic/pubsubname and defaults.</summary>
    private static byte[] FromCloudEvent(byte[] data, string topic, string pubsubName, string traceParent, DateTimeOffset now)
    {
        using var doc = JsonDocument.Parse(data);
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
        {
            throw new JsonException("a CloudEvent must be a JSON object");
        }

        var ce = new GoJsonObject();
        foreach (var p in doc.RootElement.EnumerateObject())
        {
            ce.SetRaw(p.Name, Encoding.UTF8.GetString(GoJson.Reencode(p.Value, preserveNumbers: true)));
        }

        if (!ce.Contains("time"))
        {
            ce.SetString("time", FormatTime(now));
        }

        if (!ce.Contains("traceid"))
        {
            ce.SetString("traceid", traceParent).SetString("traceparent", traceParent);
        }

        if (!ce.Contains("tracestate"))
        {
            ce.SetString("tracestate", "");
        }

        ce.SetString("topic", topic).SetString("pubsubname", pubsubName);
        SetIfNull(ce, "source", "Dapr");
        SetIfNull(ce, "type", "com.dapr.event.sent");
        SetIfNull(ce, "specversion", "1.0");
        return ce.ToUtf8();

        static void SetIfNull(GoJsonObject ce, string key, string value)
        {
            if (ce.GetRaw(key) is null or "null")
            {
                ce.SetString(key, value);
            }
        }
    }

    /// <summary>FromRawPayload: what a <c>rawPayload=true</c> subscriber gets (new random id every delivery).</summary>
    public static byte[] FromRawPayload(byte[] data, string topic, string pubsubName) =>
        new GoJsonObject()
            .SetString("id", Guid.NewGuid().ToString())
            .SetString("specversion", "1.0")
            .SetString("datacontenttype", "application/octet-stream")
            .SetString("source", "Dapr")
            .SetString("type", "com.dapr.event.sent")
            .SetString("topic", topic)
            .SetString("pubsubname", pubsubName)
            .SetString("data_base64", Convert.ToBase64String(data))
            .ToUtf8();

    /// <summary>Go time.RFC3339 (second precision).</summary>
    public static string FormatTime(DateTimeOffset t) => t.ToUniversalTime().ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>A W3C traceparent for the publish span (not sampled: no tracing is configured).</summary>
    public static string NewTraceParent() =>
        $"00-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16))}-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(8))}-00";

    /// <summary>components-contrib contenttype.isContentType: exact or before ';', case-insensitive.</summary>
    public static bool IsContentType(string? contentType, string expected)
    {
        if (contentType is null)
        {
            return false;
        }

        var lower = contentType.ToLowerInvariant();
        var semi = lower.IndexOf(';', StringComparison.Ordinal);
        return lower == expected || (semi >= 0 && lower[..semi] == expected);
    }

    private static bool TryReencode(byte[] data, out string json)
    {
        try
        {
            using var doc = JsonDocument.Parse(data);
            json = Encoding.UTF8.GetString(GoJson.Reencode(doc.RootElement, preserveNumbers: true));
            return true;
        }
        catch (JsonException)
        {
            json = "";
            return false;
        }
    }
}
