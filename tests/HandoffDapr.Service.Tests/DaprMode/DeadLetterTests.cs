using HandoffDapr.FakeSidecar;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Testing;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>An event daprd dead-letters is logged with what finds it again: its CloudEvent id and its run.</summary>
public sealed class DeadLetterTests : IDisposable
{
    private readonly FakeCursor cursor = new();

    [Fact]
    public async Task A_dead_letter_is_logged_with_its_event_id_and_run_and_acknowledged()
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, logs: logs);

        var delivered = await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed-deadletter", Payloads.Run(4242, ["acme/shop"]), cloudEventId: "evt-4242\nforged line");

        Assert.Equal(DeliveryOutcome.Success, delivered.Outcome);
        var record = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "DeadLetterReceived");
        var fields = record.StructuredState!.ToDictionary(pair => pair.Key, pair => pair.Value);
        Assert.Equal("evt-4242?forged line", fields["EventId"]);
        Assert.Equal("4242", fields["RunId"]);
        Assert.Equal(0, cursor.LaunchRequests);
    }

    [Fact]
    public async Task A_dead_letter_with_a_long_event_id_is_logged_with_the_id_cut_at_128_characters_and_its_length()
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, logs: logs);
        var data = System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(Payloads.Run(4246, ["acme/shop"]));

        var delivered = await factory.Sidecar.DeliverRawEventAsync("pubsub", "autofix-run-completed-deadletter", data, "application/json", cloudEventId: new string('e', 5000));

        Assert.Equal(DeliveryOutcome.Success, delivered.Outcome);
        var record = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "DeadLetterReceived");
        var fields = record.StructuredState!.ToDictionary(pair => pair.Key, pair => pair.Value);
        Assert.Equal(new string('e', 128) + "…", fields["EventId"]);
        Assert.Equal("4246", fields["RunId"]);
        // The whole CloudEvent's bytes: its data and its (uncut) id at least.
        Assert.True(long.Parse(fields["Length"]!, System.Globalization.CultureInfo.InvariantCulture) > data.Length + 5000, fields["Length"]);
    }

    [Fact]
    public async Task A_dead_letter_whose_data_came_base64_encoded_is_logged_with_its_run()
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, logs: logs);
        // A publisher's binary payload: daprd wraps it as data_base64, which the completion event's endpoint reads too, so
        // such an event may be dead-lettered after daprd gave up retrying it (the state store out of reach).
        var data = System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(Payloads.Run(4243, ["acme/shop"]));

        var delivered = await factory.Sidecar.DeliverRawEventAsync("pubsub", "autofix-run-completed-deadletter", data, "application/octet-stream", cloudEventId: "evt-4243");

        Assert.Equal(DeliveryOutcome.Success, delivered.Outcome);
        var record = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "DeadLetterReceived");
        var fields = record.StructuredState!.ToDictionary(pair => pair.Key, pair => pair.Value);
        Assert.Equal("evt-4243", fields["EventId"]);
        Assert.Equal("4243", fields["RunId"]);
    }

    /// <summary>
    /// A binary payload that is not a run (not JSON at all) is dropped by the event route, so it is just what reaches the
    /// dead-letter topic. Its data_base64 could not be read as JSON, and that failure used to lose the CloudEvent id too:
    /// the dead letter was logged as event "unknown", leaving the operator nothing to find it by.
    /// </summary>
    [Fact]
    public async Task A_dead_letter_whose_base64_data_is_not_json_is_still_logged_with_its_event_id()
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, logs: logs);
        var dropped = await factory.Sidecar.DeliverRawEventAsync(
            "pubsub", "autofix-run-completed", [0x1f, 0x8b, 0x08, 0x00, 0x42], "application/octet-stream", cloudEventId: "evt-4244");
        Assert.Equal(DeliveryOutcome.Drop, dropped.Outcome);
        var deadLetter = Assert.Single(factory.Sidecar.Published, published => published.Origin == PublishOrigin.DeadLetter);

        var delivered = await factory.Sidecar.DeliverAsync(deadLetter);

        Assert.Equal(DeliveryOutcome.Success, delivered.Outcome);
        var record = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "DeadLetterReceived");
        var fields = record.StructuredState!.ToDictionary(pair => pair.Key, pair => pair.Value);
        Assert.Equal("evt-4244", fields["EventId"]);
        Assert.Null(fields["RunId"]);
    }

    /// <summary>
    /// An event larger than Handoff:MaxRequestBodyBytes (daprd takes up to 8 MiB) is dropped by the event route, and its
    /// dead letter is exactly as large: the dead-letter route read it under the same limit, so such a dead letter was
    /// logged as event "unknown", run null. Kestrel on a real port, whose own body limit applies.
    /// </summary>
    [Fact]
    public async Task A_dead_letter_of_an_event_over_the_body_limit_is_logged_with_its_event_id_and_run()
    {
        var logs = new FakeLogCollector();
        await using var factory = await DaprServiceFactory.StartAsync(cursor.Url, logs: logs, kestrel: true);
        var run = Payloads.Run(4245, ["acme/shop"]);
        run["artifacts"]!["root_cause"]!["one_line_description"] = new string('x', 1_200_000);
        var dropped = await factory.Sidecar.DeliverEventAsync("pubsub", "autofix-run-completed", run, cloudEventId: "evt-4245");
        Assert.Equal(DeliveryOutcome.Drop, dropped.Outcome);
        var deadLetter = Assert.Single(factory.Sidecar.Published, published => published.Origin == PublishOrigin.DeadLetter);

        var delivered = await factory.Sidecar.DeliverAsync(deadLetter);

        Assert.Equal(DeliveryOutcome.Success, delivered.Outcome);
        var record = Assert.Single(logs.GetSnapshot(), record => record.Id.Name == "DeadLetterReceived");
        var fields = record.StructuredState!.ToDictionary(pair => pair.Key, pair => pair.Value);
        Assert.Equal("evt-4245", fields["EventId"]);
        Assert.Equal("4245", fields["RunId"]);
        Assert.Equal(0, cursor.LaunchRequests);
    }

    public void Dispose() => cursor.Dispose();
}
