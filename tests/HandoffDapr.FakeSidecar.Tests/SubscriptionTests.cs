using System.Collections.Concurrent;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.Logging;

namespace HandoffDapr.FakeSidecar.Tests;

/// <summary>daprd reads every subscription shape: v1 "route", v2 "routes" with rules and default, any leading slash.</summary>
public sealed class SubscriptionTests : IAsyncLifetime
{
    private const string Subscriptions = """
        [
          {"pubsubName":"pubsub","topic":"v1","route":"/in/v1"},
          {"pubsubname":"pubsub","topic":"v2","routes":{"rules":[{"match":"event.type == \"special\"","path":"in/special"}],"default":"in/default"}},
          {"pubsubName":"other","topic":"v1","route":"in/other","metadata":{"rawPayload":"true"}}
        ]
        """;

    private readonly ConcurrentQueue<string> hits = new();
    private FakeDaprSidecar sidecar = null!;
    private WebApplication app = null!;

    public async Task InitializeAsync()
    {
        sidecar = await FakeDaprSidecar.StartAsync();
        var builder = WebApplication.CreateBuilder();
        builder.WebHost.UseTestServer();
        builder.Logging.ClearProviders();
        app = builder.Build();
        app.MapGet("dapr/subscribe", () => Results.Text(Subscriptions, "application/json"));
        app.MapPost("in/{name}", async (string name, HttpRequest request) =>
        {
            hits.Enqueue(name + ":" + await new StreamReader(request.Body).ReadToEndAsync());
            return Results.Ok();
        });
        await app.StartAsync();
        sidecar.AppChannel = app.GetTestServer().CreateHandler();
    }

    public async Task DisposeAsync()
    {
        await app.DisposeAsync();
        await sidecar.DisposeAsync();
    }

    [Fact]
    public async Task V1_route_with_leading_slash_is_used()
    {
        var result = await sidecar.DeliverEventAsync("pubsub", "v1", new { a = 1 });

        Assert.Equal(("in/v1", DeliveryOutcome.Success), (result.Route, result.Outcome));
    }

    [Fact]
    public async Task Rules_are_tried_before_the_default_route()
    {
        var special = await sidecar.DeliverRawEventAsync("pubsub", "v2", """{"type":"special"}"""u8.ToArray(), "application/cloudevents+json");
        var plain = await sidecar.DeliverEventAsync("pubsub", "v2", new { a = 1 });

        Assert.Equal("in/special", special.Route);
        Assert.Equal("in/default", plain.Route);
    }

    [Fact]
    public async Task Pubsub_name_picks_the_subscription_and_raw_payload_wraps_the_message()
    {
        var result = await sidecar.DeliverEventAsync("other", "v1", new { a = 1 });

        Assert.Equal("in/other", result.Route);
        Assert.Equal("application/octet-stream", result.CloudEvent.GetProperty("datacontenttype").GetString());
        Assert.True(result.CloudEvent.TryGetProperty("data_base64", out _));
        Assert.Equal("other:" + result.CloudEvent.GetRawText(), Assert.Single(hits)); // the app gets the wrapped message
    }
}

/// <summary>
/// daprd reads <c>GET dapr/subscribe</c> with Go's encoding/json into []SubscriptionJSON (pkg/runtime/pubsub/subscriptions.go
/// GetSubscriptionsHTTP): one member of the wrong type anywhere fails the whole answer, and the app is subscribed to nothing.
/// </summary>
public sealed class SubscriptionDecodingTests
{
    [Theory]
    [InlineData("""[{"pubsubName":"pubsub","topic":"t","route":"in","deadLetterTopic":"dl","metadata":{"a":"b"},"bulkSubscribe":{"enabled":false},"extra":1}]""")]
    [InlineData("""[{"pubsubname":"pubsub","topic":"t","routes":{"rules":[],"default":"in"},"metadata":null}]""")]
    public async Task An_answer_go_decodes_subscribes_the_app(string subscriptions)
    {
        var (sidecar, app) = await StartAsync(subscriptions);
        await using (sidecar)
        await using (app)
        {
            var result = await sidecar.DeliverEventAsync("pubsub", "t", new { a = 1 });
            Assert.Equal(DeliveryOutcome.Success, result.Outcome);
        }
    }

    [Theory]
    [InlineData("""[{"pubsubName":"pubsub","topic":"t","route":"in","metadata":{"rawPayload":true}}]""")] // a bool where Go wants a string
    [InlineData("""[{"pubsubName":"pubsub","topic":"t","route":"in","bulkSubscribe":{"enabled":"true"}}]""")]
    [InlineData("""[{"pubsubName":"pubsub","topic":"t","route":"in"},{"pubsubName":"pubsub","topic":"u","routes":{"rules":{}}}]""")] // another entry's fault fails all
    [InlineData("""{"pubsubName":"pubsub","topic":"t","route":"in"}""")] // an object, not a list
    public async Task An_answer_go_cannot_decode_subscribes_the_app_to_nothing(string subscriptions)
    {
        var (sidecar, app) = await StartAsync(subscriptions);
        await using (sidecar)
        await using (app)
        {
            var error = await Assert.ThrowsAsync<InvalidOperationException>(() => sidecar.DeliverEventAsync("pubsub", "t", new { a = 1 }));
            Assert.Contains("has no subscription", error.Message);
        }
    }

    private static async Task<(FakeDaprSidecar Sidecar, WebApplication App)> StartAsync(string subscriptions)
    {
        var sidecar = await FakeDaprSidecar.StartAsync();
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { EnvironmentName = "Testing" });
        builder.WebHost.UseTestServer();
        builder.Logging.ClearProviders();
        var app = builder.Build();
        app.MapGet("dapr/subscribe", () => Results.Text(subscriptions, "application/json"));
        app.MapPost("in", () => Results.Ok());
        await app.StartAsync();
        sidecar.AppChannel = app.GetTestServer().CreateHandler();
        return (sidecar, app);
    }
}
