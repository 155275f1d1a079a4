using System.Net;
using Dapr;
using Grpc.Core;

namespace HandoffDapr.FakeSidecar.Tests;

public sealed class DaprApiTokenTests : SidecarTest
{
    protected override FakeSidecarOptions Options => new() { ApiToken = "dapr-secret" };

    [Fact]
    public async Task Sdk_configured_with_the_token_gets_through()
    {
        var proxy = Proxy("t");

        Assert.Equal(2, await proxy.AddAsync(2));
        await App.DaprClient.PublishEventAsync("pubsub", "topic", new { a = 1 });
        Assert.Single(Sidecar.Published);
    }

    [Fact]
    public async Task Http_call_without_the_token_is_401_but_health_is_open()
    {
        using var http = new HttpClient { BaseAddress = Sidecar.HttpEndpoint };

        using var state = await http.GetAsync("v1.0/actors/TestActor/t/state/count");
        Assert.Equal(HttpStatusCode.Unauthorized, state.StatusCode);
        Assert.Equal("invalid api token\n", await state.Content.ReadAsStringAsync());

        using var health = await http.GetAsync("v1.0/healthz");
        Assert.Equal(HttpStatusCode.NoContent, health.StatusCode);
    }

    [Theory]
    [InlineData("GET", "v1.0/actors/TestActor/t/state/count", "wrong")]
    [InlineData("GET", "v1.0/metadata", null)]
    [InlineData("GET", "v1.0/metadata", "wrong")]
    [InlineData("POST", "v1.0/healthz", null)] // only a GET of the health paths is let through
    public async Task Http_call_without_the_right_token_is_401_on_every_path_but_a_health_check(string method, string path, string? token)
    {
        // pkg/api/http/middlewares.go APITokenAuthMiddleware: the header must equal the token, and
        // isRouteExcludedFromAPITokenAuth lets through GET v1.0/healthz and v1.0/healthz/outbound alone.
        using var http = new HttpClient { BaseAddress = Sidecar.HttpEndpoint };
        using var request = new HttpRequestMessage(new HttpMethod(method), path);
        if (token is not null)
        {
            request.Headers.Add("dapr-api-token", token);
        }

        using var response = await http.SendAsync(request);

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        using var authorised = new HttpRequestMessage(HttpMethod.Get, "v1.0/metadata") { Headers = { { "dapr-api-token", "dapr-secret" } } };
        Assert.Equal(HttpStatusCode.OK, (await http.SendAsync(authorised)).StatusCode);
    }

    [Theory]
    [InlineData(false, null, "missing api token in request metadata")]
    [InlineData(true, "wrong", "authentication error: api token mismatch")]
    public async Task Grpc_call_without_the_right_token_is_unauthenticated(bool inMemory, string? token, string detail)
    {
        using var dapr = Clients.Dapr(Sidecar, inMemory, token);

        var ex = await Assert.ThrowsAsync<DaprException>(() => dapr.PublishEventAsync("pubsub", "topic", new { a = 1 }));

        var rpc = Assert.IsType<RpcException>(ex.InnerException);
        Assert.Equal((StatusCode.Unauthenticated, "Unauthorized"), (rpc.StatusCode, rpc.Status.Detail));
        var errorInfo = RichErrors.ErrorInfo(rpc);
        Assert.Equal(("Unauthorized", "401", detail), (errorInfo.Reason, errorInfo.Metadata["http.code"], errorInfo.Metadata["http.error_message"]));
        Assert.Empty(Sidecar.Published);
    }
}

public sealed class AppApiTokenTests : SidecarTest
{
    protected override FakeSidecarOptions Options => new() { AppApiToken = "app-secret" };

    protected override string? AppApiToken => "app-secret";

    [Fact]
    public async Task Sidecar_sends_the_app_token_so_a_protected_subscription_accepts_the_event()
    {
        var result = await Sidecar.DeliverEventAsync("pubsub", "run-completed", new { runId = 1, reply = "ok" });

        Assert.Equal(DeliveryOutcome.Success, result.Outcome);
    }
}

public sealed class MissingAppApiTokenTests : SidecarTest
{
    protected override string? AppApiToken => "app-secret"; // the app wants it, the sidecar does not send it

    [Fact]
    public async Task Protected_subscription_refuses_the_event_and_daprd_would_retry()
    {
        var result = await Sidecar.DeliverEventAsync("pubsub", "run-completed", new { runId = 1, reply = "ok" });

        Assert.Equal(HttpStatusCode.Unauthorized, result.Response!.StatusCode);
        Assert.Equal(DeliveryOutcome.Retry, result.Outcome);
        Assert.Empty(App.Events.Received);
    }
}
