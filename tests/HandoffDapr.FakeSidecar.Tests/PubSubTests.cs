using System.Net;
using Dapr;
using Grpc.Core;

namespace HandoffDapr.FakeSidecar.Tests;

public sealed class PubSubTests : SidecarTest
{
    [Theory]
    [InlineData("ok", DeliveryOutcome.Success, HttpStatusCode.OK)]
    [InlineData("success", DeliveryOutcome.Success, HttpStatusCode.OK)]
    [InlineData("retry", DeliveryOutcome.Retry, HttpStatusCode.OK)]
    [InlineData("unknown", DeliveryOutcome.Retry, HttpStatusCode.OK)]
    [InlineData("drop", DeliveryOutcome.Drop, HttpStatusCode.OK)]
    [InlineData("missing", DeliveryOutcome.Drop, HttpStatusCode.NotFound)]
    [InlineData("boom", DeliveryOutcome.Retry, HttpStatusCode.InternalServerError)]
    public async Task Delivered_event_binds_through_UseCloudEvents_and_the_reply_maps_to_an_outcome(string reply, DeliveryOutcome outcome, HttpStatusCode status)
    {
        var result = await Sidecar.DeliverEventAsync("pubsub", "run-completed", new { runId = 123, reply }, cloudEventId: "evt-1");

        Assert.Equal(outcome, result.Outcome);
        Assert.Equal(status, result.Response!.StatusCode);
        Assert.Equal("events/run-completed", result.Route);
        Assert.Equal("evt-1", result.CloudEventId);
        Assert.Equal(new RunCompleted(123, reply), Assert.Single(App.Events.Received));
        Assert.False(result.DeadLettered); // this subscription has no dead-letter topic
    }

    [Fact]
    public async Task Delivered_cloud_event_has_daprd_shape()
    {
        var result = await Sidecar.DeliverEventAsync("pubsub", "run-completed", new { runId = 1, reply = "ok" });

        var ce = result.CloudEvent;
        Assert.Equal("1.0", ce.GetProperty("specversion").GetString());
        Assert.Equal("handoff", ce.GetProperty("source").GetString());
        Assert.Equal("com.dapr.event.sent", ce.GetProperty("type").GetString());
        Assert.Equal("application/json", ce.GetProperty("datacontenttype").GetString());
        Assert.Equal("run-completed", ce.GetProperty("topic").GetString());
        Assert.Equal("pubsub", ce.GetProperty("pubsubname").GetString());
        Assert.Equal(ce.GetProperty("traceid").GetString(), ce.GetProperty("traceparent").GetString());
        Assert.Equal("", ce.GetProperty("tracestate").GetString());
        Assert.True(Guid.TryParse(ce.GetProperty("id").GetString(), out _));
        Assert.True(DateTimeOffset.TryParse(ce.GetProperty("time").GetString(), out _));
        Assert.Equal(1, ce.GetProperty("data").GetProperty("runId").GetInt32());
        // Go marshals the envelope from a map: members in name order.
        var names = ce.EnumerateObject().Select(p => p.Name).ToList();
        Assert.Equal(names.Order(StringComparer.Ordinal), names);
    }

    [Theory]
    [InlineData("drop", DeliveryOutcome.Drop)]
    [InlineData("retry", DeliveryOutcome.Retry)] // no inbound retry policy: the first failure is dead-lettered
    public async Task Failed_delivery_with_a_dead_letter_topic_is_moved_there(string reply, DeliveryOutcome outcome)
    {
        var result = await Sidecar.DeliverEventAsync("pubsub", "with-dlq", new { runId = 9, reply });

        Assert.Equal(outcome, result.Outcome);
        Assert.Equal("dead-letters", result.DeadLetterTopic);
        var dead = Assert.Single(Sidecar.Published);
        Assert.Equal(("pubsub", "dead-letters", PublishOrigin.DeadLetter), (dead.PubsubName, dead.Topic, dead.Origin));
        Assert.Equal(result.CloudEventId, dead.CloudEventJson.GetProperty("id").GetString());
    }

    [Fact]
    public async Task A_404_with_a_dead_letter_topic_is_acknowledged_not_dead_lettered()
    {
        // pkg/runtime/subscription/postman/http/http.go Deliver: a 404 returns nil (delivered), unlike {"status":"DROP"}.
        var result = await Sidecar.DeliverEventAsync("pubsub", "with-dlq", new { runId = 9, reply = "missing" });

        Assert.Equal(HttpStatusCode.NotFound, result.Response!.StatusCode);
        Assert.Equal(DeliveryOutcome.Drop, result.Outcome);
        Assert.False(result.DeadLettered);
        Assert.Empty(Sidecar.Published);
    }

    [Fact]
    public async Task Malformed_json_payload_is_delivered_as_a_string_like_daprd_does()
    {
        var result = await Sidecar.DeliverRawEventAsync("pubsub", "run-completed", "{not json"u8.ToArray(), "application/json");

        Assert.Equal("{not json", result.CloudEvent.GetProperty("data").GetString());
        Assert.Equal(DeliveryOutcome.Retry, result.Outcome); // the app cannot bind it: 400 is retried
    }

    [Fact]
    public async Task Delivery_to_a_topic_the_app_does_not_subscribe_to_is_a_test_error()
    {
        await Assert.ThrowsAsync<InvalidOperationException>(() => Sidecar.DeliverEventAsync("pubsub", "nobody-listens", new { }));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task PublishEvent_is_recorded_with_the_daprd_envelope(bool inMemory)
    {
        using var dapr = Clients.Dapr(Sidecar, inMemory);

        await dapr.PublishEventAsync("pubsub", "agent-status", new { runId = 5, status = "running" });

        var e = Assert.Single(Sidecar.Published);
        Assert.Equal(("pubsub", "agent-status", "application/json", PublishOrigin.App), (e.PubsubName, e.Topic, e.DataContentType, e.Origin));
        Assert.Equal(5, e.DataJson.GetProperty("runId").GetInt32());
        Assert.Equal("handoff", e.CloudEventJson.GetProperty("source").GetString());
        Assert.Equal("running", e.CloudEventJson.GetProperty("data").GetProperty("status").GetString());
    }

    [Fact]
    public async Task App_publish_can_be_delivered_back_to_the_app()
    {
        await App.DaprClient.PublishEventAsync("pubsub", "run-completed", new RunCompleted(77, "ok"));

        var result = await Sidecar.DeliverAsync(Assert.Single(Sidecar.Published));

        Assert.Equal(DeliveryOutcome.Success, result.Outcome);
        Assert.Equal(new RunCompleted(77, "ok"), Assert.Single(App.Events.Received));
    }

    [Fact]
    public async Task Publishing_to_an_unknown_pubsub_fails_like_daprd()
    {
        using var dapr = Clients.Dapr(Sidecar, inMemory: true);

        var ex = await Assert.ThrowsAsync<DaprException>(() => dapr.PublishEventAsync("kafka", "t", new { }));

        var rpc = Assert.IsType<RpcException>(ex.InnerException);
        Assert.Equal((StatusCode.InvalidArgument, "pubsub kafka is not found"), (rpc.StatusCode, rpc.Status.Detail));
        Assert.Empty(Sidecar.Published);
    }

    [Fact]
    public async Task Http_publish_api_records_the_event()
    {
        using var http = new HttpClient { BaseAddress = Sidecar.HttpEndpoint };
        using var response = await http.PostAsync("v1.0/publish/pubsub/raw-topic?metadata.rawPayload=true",
            new StringContent("""{"a":1}""", System.Text.Encoding.UTF8, "application/json"));

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        var e = Assert.Single(Sidecar.Published);
        Assert.Equal("""{"a":1}""", System.Text.Encoding.UTF8.GetString(e.CloudEvent)); // raw payload: no envelope
    }

    [Fact]
    public async Task App_supplied_cloud_event_gets_the_topic_and_pubsub_it_is_published_on()
    {
        // components-contrib v1.16.11 pubsub/envelope.go FromCloudEvent sets topic and pubsubname whatever the event says.
        var result = await Sidecar.DeliverRawEventAsync("pubsub", "run-completed",
            """{"id":"own-1","topic":"elsewhere","pubsubname":"other","data":{"runId":4,"reply":"ok"}}"""u8.ToArray(), "application/cloudevents+json");

        Assert.Equal(("run-completed", "pubsub", "own-1"), (result.CloudEvent.GetProperty("topic").GetString(),
            result.CloudEvent.GetProperty("pubsubname").GetString(), result.CloudEventId));
        Assert.Equal(DeliveryOutcome.Success, result.Outcome);
    }

    [Fact]
    public async Task Message_that_is_no_cloud_event_is_redelivered_or_dead_lettered_if_the_subscription_has_a_dead_letter_topic()
    {
        // pkg/runtime/subscription/subscription.go: "error deserializing cloud event" goes to the dead-letter topic when
        // there is one (counted as a drop), else the error goes back to the broker, which redelivers it.
        var plain = await Sidecar.DeliverBrokerMessageAsync("pubsub", "run-completed", "not json"u8.ToArray());
        Assert.Equal((DeliveryOutcome.Retry, null), (plain.Outcome, plain.DeadLetterTopic));
        Assert.Empty(Sidecar.Published);

        var withDlq = await Sidecar.DeliverBrokerMessageAsync("pubsub", "with-dlq", "not json"u8.ToArray());
        Assert.Equal((DeliveryOutcome.Drop, "dead-letters"), (withDlq.Outcome, withDlq.DeadLetterTopic));
        Assert.Equal("not json", System.Text.Encoding.UTF8.GetString(Assert.Single(Sidecar.Published).CloudEvent));
        Assert.Empty(App.Events.Received); // neither reached the app
    }

    [Theory]
    [InlineData("[1,2]")]
    [InlineData("\"text\"")]
    [InlineData("42")]
    public async Task Message_that_is_json_but_no_object_is_no_cloud_event_either(string message)
    {
        // subscription.go json.Unmarshal(msg.Data, &cloudEvent) into a map: valid JSON of another kind fails it all the same.
        var plain = await Sidecar.DeliverBrokerMessageAsync("pubsub", "run-completed", System.Text.Encoding.UTF8.GetBytes(message));
        Assert.Equal((DeliveryOutcome.Retry, null), (plain.Outcome, plain.DeadLetterTopic));

        var withDlq = await Sidecar.DeliverBrokerMessageAsync("pubsub", "with-dlq", System.Text.Encoding.UTF8.GetBytes(message));
        Assert.Equal((DeliveryOutcome.Drop, "dead-letters"), (withDlq.Outcome, withDlq.DeadLetterTopic));
        Assert.Empty(App.Events.Received);
    }

    [Fact]
    public async Task Cloudevent_metadata_overrides_the_envelopes_type_source_and_id()
    {
        // pkg/runtime/pubsub/cloudevents.go NewCloudEvent: "cloudevent.*" metadata decoded over the envelope's fields.
        await App.DaprClient.PublishEventAsync("pubsub", "agent-status", new { runId = 5 }, new Dictionary<string, string>
        {
            ["cloudevent.type"] = "run.completed",
            ["cloudevent.source"] = "elsewhere",
            ["cloudevent.id"] = "evt-7",
        });

        var ce = Assert.Single(Sidecar.Published).CloudEventJson;
        Assert.Equal(("run.completed", "elsewhere", "evt-7"),
            (ce.GetProperty("type").GetString(), ce.GetProperty("source").GetString(), ce.GetProperty("id").GetString()));
    }
}
