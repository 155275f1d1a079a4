namespace HandoffDapr.FakeSidecar;

/// <summary>The pub/sub components: publishing validates like daprd and records what goes on each topic.</summary>
internal sealed class PubSubBroker(FakeSidecarOptions options)
{
    private readonly object gate = new();
    private readonly List<PublishedEvent> published = new();

    public IReadOnlyList<PublishedEvent> Published
    {
        get
        {
            lock (gate)
            {
                return published.ToList();
            }
        }
    }

    /// <summary>
    /// daprd's PublishEvent (pkg/api/grpc/grpc.go): validate, wrap in a CloudEvent unless <c>rawPayload</c>, publish.
    /// Returns null or a gRPC error.
    /// </summary>
    public GrpcError? Publish(string pubsubName, string topic, byte[] data, string? dataContentType, IReadOnlyDictionary<string, string> metadata)
    {
        if (pubsubName.Length == 0)
        {
            return GrpcError.Rich(Grpc.Core.StatusCode.InvalidArgument, "pubsub name is empty", "DAPR_PUBSUB_NAME_EMPTY");
        }

        if (!options.PubSubNames.Contains(pubsubName))
        {
            return GrpcError.Rich(Grpc.Core.StatusCode.InvalidArgument, $"pubsub {pubsubName} is not found", "DAPR_PUBSUB_NOT_FOUND");
        }

        if (topic.Length == 0)
        {
            return GrpcError.Rich(Grpc.Core.StatusCode.InvalidArgument, "topic is empty in pubsub " + pubsubName, "DAPR_PUBSUB_TOPIC_NAME_EMPTY");
        }

        var raw = metadata.TryGetValue("rawPayload", out var rp) && IsTruthy(rp);
        byte[] onBroker;
        try
        {
            onBroker = raw
                ? data
                : CloudEvents.Envelope(null, options.AppId, topic, pubsubName, dataContentType, data, metadata, options.TimeProvider.GetUtcNow());
        }
        catch (System.Text.Json.JsonException)
        {
            // An app-supplied application/cloudevents+json payload that is not a JSON object.
            return GrpcError.Rich(Grpc.Core.StatusCode.InvalidArgument, "cannot create cloudevent", "DAPR_PUBSUB_CLOUD_EVENT_CREATION");
        }

        Record(new PublishedEvent(pubsubName, topic, data, dataContentType, metadata, onBroker, PublishOrigin.App));
        return null;
    }

    public void Record(PublishedEvent e)
    {
        lock (gate)
        {
            published.Add(e);
        }
    }

    public void Clear()
    {
        lock (gate)
        {
            published.Clear();
        }
    }

    /// <summary>dapr/kit strings.IsTruthy.</summary>
    public static bool IsTruthy(string? v) =>
        (v ?? "").Trim().ToLowerInvariant() is "y" or "yes" or "true" or "t" or "on" or "1";
}
