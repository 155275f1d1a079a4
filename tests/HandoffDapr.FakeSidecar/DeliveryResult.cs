using System.Text.Json;

namespace HandoffDapr.FakeSidecar;

/// <summary>How daprd reads a subscriber's reply (pkg/runtime/subscription/postman/http/http.go).</summary>
public enum DeliveryOutcome
{
    /// <summary>2xx with an empty or non-JSON body, no status, or <c>{"status":"SUCCESS"}</c>.</summary>
    Success,

    /// <summary><c>{"status":"RETRY"}</c>, an unknown status string, a non-2xx other than 404, or no answer.</summary>
    Retry,

    /// <summary>
    /// <c>{"status":"DROP"}</c> (dead-lettered when the subscription has a dead-letter topic), or 404 (acknowledged as
    /// delivered: never dead-lettered, pkg/runtime/subscription/postman/http/http.go).
    /// </summary>
    Drop,
}

/// <summary>What happened to one delivery.</summary>
/// <param name="Response">The app's raw HTTP reply (null when the app could not be reached).</param>
/// <param name="Outcome">The reply read as daprd reads it.</param>
/// <param name="Route">The route the event was posted to (no leading slash).</param>
/// <param name="CloudEvent">The envelope that was posted.</param>
/// <param name="DeadLetterTopic">The topic the event was moved to, when it was dead-lettered.</param>
public sealed record DeliveryResult(
    HttpResponseMessage? Response,
    DeliveryOutcome Outcome,
    string Route,
    JsonElement CloudEvent,
    string? DeadLetterTopic)
{
    /// <summary>The CloudEvent id.</summary>
    public string CloudEventId => CloudEvent.TryGetProperty("id", out var id) ? id.GetString() ?? "" : "";

    /// <summary>The event went to the dead-letter topic.</summary>
    public bool DeadLettered => DeadLetterTopic is not null;
}
