using System.Text.Json;

namespace HandoffDapr.FakeSidecar;

/// <summary>Why an event was put on a topic.</summary>
public enum PublishOrigin
{
    /// <summary>The app called PublishEvent.</summary>
    App,

    /// <summary>The sidecar moved an undeliverable event to the subscription's dead-letter topic.</summary>
    DeadLetter,
}

/// <summary>An event the sidecar put on a topic.</summary>
/// <param name="PubsubName">Component name.</param>
/// <param name="Topic">Topic.</param>
/// <param name="Data">The payload as the app sent it (for dead letters: the CloudEvent bytes).</param>
/// <param name="DataContentType">The payload's content type as the app sent it.</param>
/// <param name="Metadata">Request metadata.</param>
/// <param name="CloudEvent">What goes on the broker: daprd's CloudEvent envelope (or the raw payload with <c>rawPayload=true</c>).</param>
/// <param name="Origin">App publish or dead letter.</param>
public sealed record PublishedEvent(
    string PubsubName,
    string Topic,
    byte[] Data,
    string? DataContentType,
    IReadOnlyDictionary<string, string> Metadata,
    byte[] CloudEvent,
    PublishOrigin Origin)
{
    /// <summary>The payload parsed as JSON.</summary>
    public JsonElement DataJson => JsonDocument.Parse(Data).RootElement.Clone();

    /// <summary>The CloudEvent envelope parsed as JSON.</summary>
    public JsonElement CloudEventJson => JsonDocument.Parse(CloudEvent).RootElement.Clone();
}
