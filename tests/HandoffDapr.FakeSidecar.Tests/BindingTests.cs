using System.Text;
using Dapr;
using Dapr.Client;
using Dapr.Common.Exceptions;
using Grpc.Core;
using WireMock.RequestBuilders;
using WireMock.ResponseBuilders;
using WireMock.Server;

namespace HandoffDapr.FakeSidecar.Tests;

public sealed class BindingTests : IAsyncLifetime
{
    private FakeDaprSidecar sidecar = null!;
    private WireMockServer provider = null!;

    public async Task InitializeAsync()
    {
        sidecar = await FakeDaprSidecar.StartAsync();
        provider = WireMockServer.Start(new WireMock.Settings.WireMockServerSettings { Urls = ["http://127.0.0.1:0"] });
        provider.Given(Request.Create().WithPath("/v0/agents").UsingPost())
            .RespondWith(Response.Create().WithStatusCode(201).WithHeader("X-Request-Id", "req-1").WithBody("""{"id":"bc-1"}"""));
        provider.Given(Request.Create().WithPath("/v0/agents/missing").UsingGet())
            .RespondWith(Response.Create().WithStatusCode(404).WithBody("""{"error":"not found"}"""));
        provider.Given(Request.Create().WithPath("/slow").UsingGet())
            .RespondWith(Response.Create().WithStatusCode(200).WithDelay(TimeSpan.FromSeconds(2)));
        sidecar.AddHttpBinding("cursor", new Uri(provider.Url!), new Dictionary<string, string>
        {
            ["securityToken"] = "Bearer key-123",
            ["securityTokenHeader"] = "Authorization",
        });
    }

    public async Task DisposeAsync()
    {
        provider.Stop();
        provider.Dispose();
        await sidecar.DisposeAsync();
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task InvokeBinding_reaches_the_target_with_path_headers_and_security_token(bool inMemory)
    {
        using var dapr = Clients.Dapr(sidecar, inMemory);
        var request = new BindingRequest("cursor", "post")
        {
            Data = Encoding.UTF8.GetBytes("""{"prompt":{"text":"fix it"}}"""),
            Metadata = { ["path"] = "/v0/agents", ["X-Handoff-Run"] = "123", ["lowercase"] = "not-a-header" },
        };

        var response = await dapr.InvokeBindingAsync(request);

        Assert.Equal("201", response.Metadata["statusCode"]);
        Assert.Equal("201 Created", response.Metadata["status"]);
        Assert.Equal("req-1", response.Metadata["X-Request-Id"]);
        Assert.Equal("""{"id":"bc-1"}""", Encoding.UTF8.GetString(response.Data.Span));

        var sent = Assert.Single(provider.LogEntries).RequestMessage;
        Assert.Equal("/v0/agents", sent.Path);
        Assert.Equal("Bearer key-123", sent.Headers!["Authorization"].ToString());
        Assert.Equal("123", sent.Headers["X-Handoff-Run"].ToString());
        Assert.Equal("application/json; charset=utf-8", sent.Headers["Content-Type"].ToString());
        Assert.Equal("application/json; charset=utf-8", sent.Headers["Accept"].ToString());
        Assert.False(sent.Headers.ContainsKey("lowercase"));
        Assert.Equal("""{"prompt":{"text":"fix it"}}""", sent.Body);

        var recorded = Assert.Single(sidecar.BindingInvocations);
        Assert.Equal(("cursor", "post", 201, null), (recorded.Name, recorded.Operation, recorded.StatusCode, recorded.Error));
        Assert.Equal("/v0/agents", recorded.Metadata["path"]);
    }

    [Fact]
    public async Task Non_2xx_answer_is_a_gRPC_Internal_error_by_default()
    {
        using var dapr = Clients.Dapr(sidecar);

        var ex = await Assert.ThrowsAsync<DaprException>(() =>
            dapr.InvokeBindingAsync(new BindingRequest("cursor", "get") { Metadata = { ["path"] = "v0/agents/missing" } }));

        var rpc = Assert.IsType<RpcException>(ex.InnerException);
        Assert.Equal(StatusCode.Internal, rpc.StatusCode);
        Assert.Equal("error invoking output binding cursor: received status code 404", rpc.Status.Detail);
        var errorInfo = RichErrors.ErrorInfo(rpc);
        Assert.Equal(("ERR_INVOKE_OUTPUT_BINDING", "dapr.io"), (errorInfo.Reason, errorInfo.Domain));
    }

    [Fact]
    public async Task Sdk_extended_error_info_does_not_recognise_the_ErrorInfo_type_url_daprd_sends()
    {
        using var dapr = Clients.Dapr(sidecar);

        var ex = await Assert.ThrowsAsync<DaprException>(() => dapr.InvokeBindingAsync(new BindingRequest("nope", "get")));

        // grpc-go packs "type.googleapis.com/google.rpc.ErrorInfo"; Dapr.Common 1.19 only maps "…/Google.rpc.ErrorInfo"
        // (src/Dapr.Common/Exceptions/DaprExtendedErrorConstants.cs), so apps must read the reason from the raw status.
        Assert.True(ex.TryGetExtendedErrorInfo(out var info));
        var detail = Assert.IsType<DaprUnknownDetail>(Assert.Single(info!.Details));
        Assert.Equal("type.googleapis.com/google.rpc.ErrorInfo", detail.TypeUrl);
    }

    [Fact]
    public async Task ErrorIfNot2XX_false_in_the_request_returns_status_and_body()
    {
        using var dapr = Clients.Dapr(sidecar);

        var response = await dapr.InvokeBindingAsync(new BindingRequest("cursor", "get")
        {
            Metadata = { ["path"] = "/v0/agents/missing", ["errorIfNot2XX"] = "false" },
        });

        Assert.Equal("404", response.Metadata["statusCode"]);
        Assert.Equal("""{"error":"not found"}""", Encoding.UTF8.GetString(response.Data.Span));
        var sent = Assert.Single(provider.LogEntries).RequestMessage;
        Assert.False(sent.Headers!.ContainsKey("Content-Type")); // GET sends no body
    }

    [Fact]
    public async Task ErrorIfNot2XX_false_in_the_component_is_the_default_for_its_requests()
    {
        sidecar.AddHttpBinding("lenient", new Uri(provider.Url!), new Dictionary<string, string> { ["errorIfNot2XX"] = "false" });
        using var dapr = Clients.Dapr(sidecar, inMemory: true);

        var response = await dapr.InvokeBindingAsync(new BindingRequest("lenient", "get") { Metadata = { ["path"] = "/v0/agents/missing" } });

        Assert.Equal("404", response.Metadata["statusCode"]);
        // Only the default: a request that asks for the error gets it.
        var strict = new BindingRequest("lenient", "get")
        {
            Metadata = { ["path"] = "/v0/agents/missing", ["errorIfNot2XX"] = "true" },
        };
        await Assert.ThrowsAsync<DaprException>(() => dapr.InvokeBindingAsync(strict));
    }

    [Theory]
    [InlineData("nope", "post", "error invoking output binding nope: couldn't find output binding nope")]
    [InlineData("cursor", "POST", "error invoking output binding cursor: binding cursor does not support operation POST. supported operations:create get head post put patch delete options trace")]
    public async Task Unknown_binding_or_operation_fails_like_daprd(string name, string operation, string message)
    {
        using var dapr = Clients.Dapr(sidecar, inMemory: true);

        var ex = await Assert.ThrowsAsync<DaprException>(() => dapr.InvokeBindingAsync(new BindingRequest(name, operation)));

        var rpc = Assert.IsType<RpcException>(ex.InnerException);
        Assert.Equal((StatusCode.Internal, message), (rpc.StatusCode, rpc.Status.Detail));
        Assert.Empty(provider.LogEntries);
    }

    [Fact]
    public async Task ResponseTimeout_cuts_a_slow_target_off()
    {
        sidecar.AddHttpBinding("impatient", new Uri(provider.Url!), new Dictionary<string, string> { ["responseTimeout"] = "200ms" });
        using var dapr = Clients.Dapr(sidecar, inMemory: true);

        var ex = await Assert.ThrowsAsync<DaprException>(() =>
            dapr.InvokeBindingAsync(new BindingRequest("impatient", "get") { Metadata = { ["path"] = "slow" } }));

        Assert.EndsWith("/slow\": context deadline exceeded", ((RpcException)ex.InnerException!).Status.Detail);
    }

    [Fact]
    public async Task Target_that_refuses_the_connection_fails_with_gos_dial_error()
    {
        // A port nothing listens on: bound, then released.
        var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        var port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        listener.Stop();
        sidecar.AddHttpBinding("closed", new Uri($"http://127.0.0.1:{port}"));
        using var dapr = Clients.Dapr(sidecar, inMemory: true);

        var ex = await Assert.ThrowsAsync<DaprException>(() =>
            dapr.InvokeBindingAsync(new BindingRequest("closed", "post") { Metadata = { ["path"] = "v0/agents" } }));

        // net/http's *url.Error around net's *OpError, as bindings/http returns it and daprd wraps it.
        Assert.Equal(
            $"error invoking output binding closed: Post \"http://127.0.0.1:{port}/v0/agents\": dial tcp 127.0.0.1:{port}: connect: connection refused",
            ((RpcException)ex.InnerException!).Status.Detail);
    }

    [Fact]
    public async Task Create_operation_is_a_POST()
    {
        using var dapr = Clients.Dapr(sidecar);

        var response = await dapr.InvokeBindingAsync(new BindingRequest("cursor", "create") { Metadata = { ["path"] = "v0/agents" } });

        Assert.Equal("201", response.Metadata["statusCode"]);
        Assert.Equal("POST", Assert.Single(provider.LogEntries).RequestMessage.Method);
    }
}
