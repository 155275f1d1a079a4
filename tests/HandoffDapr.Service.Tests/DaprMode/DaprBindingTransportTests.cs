using System.Net;
using System.Net.Sockets;
using Dapr.Client;
using Dapr.Client.Autogen.Grpc.v1;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using HandoffDapr.Core.Providers;
using HandoffDapr.FakeSidecar;
using HandoffDapr.Service.Transport;
using WireMock.RequestBuilders;
using WireMock.ResponseBuilders;
using WireMock.Server;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// daprd reports every failed output binding as Internal with the same error code; the message decides whether the
/// provider may have received the request. Messages as daprd builds them (pkg/messages ErrInvokeOutputBinding,
/// gobreaker's errors, Go's url.Error for a timed-out request).
/// </summary>
public sealed class DaprBindingTransportTests
{
    [Theory]
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: circuit breaker is open", TransportFailureKind.CircuitOpen, false)]
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: too many requests", TransportFailureKind.CircuitOpen, false)]
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: context deadline exceeded", TransportFailureKind.Timeout, true)]
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: Post \"https://api.cursor.com/v0/agents\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)", TransportFailureKind.Timeout, true)]
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: Post \"https://api.cursor.com/v0/agents\": connection reset by peer", TransportFailureKind.Network, true)]
    // Go's dial errors: no connection to the provider was made (daprd 1.x reports them as any other binding error).
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: Post \"https://api.cursor.com/v0/agents/bc-1/followup\": dial tcp 10.0.0.5:443: connect: connection refused", TransportFailureKind.Network, false)]
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: Post \"https://api.cursor.com/v0/agents/bc-1/followup\": dial tcp: lookup api.cursor.com on 10.96.0.10:53: no such host", TransportFailureKind.Network, false)]
    // Any other failed dial (no route, an unreachable network, a dial or DNS time-out, a DNS server failing) made no
    // connection either: nothing reached the provider, as for a refused one.
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: Post \"https://api.cursor.com/v0/agents/bc-1/followup\": dial tcp 10.0.0.5:443: connect: no route to host", TransportFailureKind.Network, false)]
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: Post \"https://api.cursor.com/v0/agents/bc-1/followup\": dial tcp 10.0.0.5:443: connect: network is unreachable", TransportFailureKind.Network, false)]
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: Post \"https://api.cursor.com/v0/agents/bc-1/followup\": dial tcp 10.0.0.5:443: i/o timeout", TransportFailureKind.Network, false)]
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: Post \"https://api.cursor.com/v0/agents/bc-1/followup\": dial tcp: lookup api.cursor.com: i/o timeout", TransportFailureKind.Network, false)]
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: Post \"https://api.cursor.com/v0/agents/bc-1/followup\": dial tcp: lookup api.cursor.com on 10.96.0.10:53: server misbehaving", TransportFailureKind.Network, false)]
    // The binding follows redirects: a refused dial to a redirect's target comes after our request was sent.
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: Get \"https://elsewhere.example/done\": dial tcp 10.0.0.9:443: connect: connection refused", TransportFailureKind.Network, true)]
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: Post \"https://elsewhere.example/v0/other\": dial tcp 10.0.0.9:443: connect: connection refused", TransportFailureKind.Network, true)]
    // A refused dial to a URL that only starts with our path is another request's (a redirect's target): ours was sent.
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: Post \"https://api.cursor.com/v0/agents/bc-1/followup/moved\": dial tcp 10.0.0.9:443: connect: connection refused", TransportFailureKind.Network, true)]
    // Our URL by another method is a redirect's too (a 303 sends a GET to where it points, here the same address).
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: Get \"https://api.cursor.com/v0/agents/bc-1/followup\": dial tcp 10.0.0.9:443: connect: connection refused", TransportFailureKind.Network, true)]
    // Go's http.Client time-out without a context deadline in the text: still a time-out after sending.
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: Post \"https://api.cursor.com/v0/agents/bc-1/followup\": net/http: request canceled (Client.Timeout exceeded while awaiting headers)", TransportFailureKind.Timeout, true)]
    // "too many requests" that is not gobreaker's whole message (here an HTTP/2 GOAWAY's debug text after the request
    // went out) is no open breaker: the provider may have received it.
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: Post \"https://api.cursor.com/v0/agents/bc-1/followup\": http2: server sent GOAWAY and closed the connection; LastStreamID=1, ErrCode=ENHANCE_YOUR_CALM, debug=\"too many requests\"", TransportFailureKind.Network, true)]
    // Unavailable alone may be a connection that broke after daprd had the request (Grpc.Net.Client maps any IOException to it).
    [InlineData(StatusCode.Unavailable, "Error starting gRPC call. HttpRequestException: The response ended prematurely.", TransportFailureKind.Network, true)]
    [InlineData(StatusCode.DeadlineExceeded, "", TransportFailureKind.Timeout, true)]
    // daprd refuses before the binding runs: Handoff:Integrations:*:Binding names no loaded component, or an operation it lacks.
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursr: couldn't find output binding coding-agent-cursr", TransportFailureKind.Network, false)]
    [InlineData(StatusCode.Internal, "error invoking output binding coding-agent-cursor: binding coding-agent-cursor does not support operation post. supported operations:create", TransportFailureKind.Network, false)]
    public void Binding_error_is_classified_by_whether_the_provider_may_have_received_the_request(StatusCode code, string detail, TransportFailureKind kind, bool requestSent)
    {
        var classified = DaprBindingTransport.Classify(new RpcException(new Status(code, detail)), "POST", "/v0/agents/bc-1/followup");

        Assert.Equal((kind, requestSent), classified);
    }

    [Fact]
    public void Refused_dial_for_a_request_with_a_query_is_never_sent()
    {
        // Go's url.Error names the whole URL, query included; the path it ends with is ours without the query.
        var error = new RpcException(new Status(StatusCode.Internal,
            "error invoking output binding coding-agent-cursor: Get \"https://api.cursor.com/v0/agents?limit=100&cursor=abc\": dial tcp 10.0.0.5:443: connect: connection refused"));

        Assert.Equal((TransportFailureKind.Network, false), DaprBindingTransport.Classify(error, "GET", "/v0/agents?limit=100&cursor=abc"));
    }

    [Fact]
    public void Open_breaker_costs_no_attempt_and_needs_no_reconcile()
    {
        var (kind, requestSent) = DaprBindingTransport.Classify(new RpcException(new Status(StatusCode.Internal, "error invoking output binding coding-agent-cursor: circuit breaker is open")), "POST", "/v0/agents");

        var failure = ProviderFailureClassifier.FromTransport(new ProviderTransportException(kind, requestSent));

        Assert.False(failure.Attempted);
        Assert.False(failure.RequestSent);
        Assert.False(failure.OutcomeUnknown);
        Assert.True(failure.Retryable);
    }

    [Fact]
    public async Task Refused_connection_to_the_sidecar_is_reported_as_never_sent()
    {
        // Port 9 (discard) has no listener on loopback: the connection is refused.
        using var dapr = new DaprClientBuilder().UseGrpcEndpoint("http://127.0.0.1:9").Build();

        var failure = await LaunchFailureAsync(dapr);

        Assert.False(failure.RequestSent);
        Assert.Equal(TransportFailureKind.Network, failure.Kind);
    }

    [Fact]
    public async Task Connection_lost_after_the_sidecar_received_the_launch_is_reported_as_maybe_sent()
    {
        var handler = new ReceivesThenConnectionBreaks();
        using var dapr = ClientOver(handler);

        var failure = await LaunchFailureAsync(dapr, "{\"prompt\":{\"text\":\"fix\"}}"u8.ToArray());

        Assert.True(handler.BytesReceived > 0);
        Assert.True(failure.RequestSent);
        Assert.True(ProviderFailureClassifier.FromTransport(failure).OutcomeUnknown);
    }

    [Fact]
    public async Task Connection_the_channels_handler_could_not_open_to_the_sidecar_is_reported_as_never_sent()
    {
        // The default channel's refused connect reaches Classify as its subchannel's SocketException (the test above);
        // over a handler of its own, a failed connect is the handler's HttpRequestException (ConnectionError).
        var handler = new RefusesTheConnection();
        using var dapr = ClientOver(handler);

        var failure = await LaunchFailureAsync(dapr);

        Assert.True(handler.Called);
        Assert.Equal((TransportFailureKind.Network, false), (failure.Kind, failure.RequestSent));
    }

    [Fact]
    public void Socket_error_while_connecting_is_never_sent()
    {
        var error = new RpcException(new Status(StatusCode.Unavailable, "Error connecting to subchannel.", new SocketException((int)SocketError.ConnectionRefused)));

        Assert.Equal((TransportFailureKind.Network, false), DaprBindingTransport.Classify(error, "POST", "/v0/agents"));
    }

    [Fact]
    public async Task Rate_limit_headers_the_binding_returns_as_metadata_reach_the_response()
    {
        // bindings.http hands the provider's headers back as metadata keyed in Go's canonical form (X-Ratelimit-Reset),
        // not as GitHub or Cursor spelled them: Retry-After and GitHub's reset time decide when a rate-limited call is retried.
        using var provider = WireMockServer.Start(new WireMock.Settings.WireMockServerSettings { Urls = ["http://127.0.0.1:0"] });
        provider.Given(Request.Create().WithPath("/agents/tasks/t-1").UsingGet()).RespondWith(Response.Create().WithStatusCode(429)
            .WithHeader("Retry-After", "30").WithHeader("x-ratelimit-remaining", "0").WithHeader("x-ratelimit-reset", "1796119200").WithBody("{}"));
        await using var sidecar = await FakeDaprSidecar.StartAsync();
        sidecar.AddHttpBinding("coding-agent-copilot", new Uri(provider.Url!));
        using var dapr = new DaprClientBuilder().UseGrpcEndpoint(sidecar.GrpcEndpoint.ToString()).Build();
        var transport = new DaprBindingTransport(dapr, "coding-agent-copilot");

        var response = await transport.SendAsync(new ProviderRequest(HttpMethod.Get, "agents/tasks/t-1"), CancellationToken.None);

        Assert.Equal(new ProviderResponse(429, response.Body, "30", "0", "1796119200"), response);
    }

    [Fact]
    public async Task Headers_a_provider_request_carries_reach_the_provider_through_the_binding()
    {
        // GitHub answers a request without its media type and API version by another contract (or not at all): in Dapr
        // mode the only way to the provider's headers is the binding's capitalised metadata.
        using var provider = WireMockServer.Start(new WireMock.Settings.WireMockServerSettings { Urls = ["http://127.0.0.1:0"] });
        provider.Given(Request.Create().WithPath("/agents/tasks/t-1").UsingGet()).RespondWith(Response.Create().WithStatusCode(200).WithBody("{}"));
        await using var sidecar = await FakeDaprSidecar.StartAsync();
        sidecar.AddHttpBinding("coding-agent-copilot", new Uri(provider.Url!));
        using var dapr = new DaprClientBuilder().UseGrpcEndpoint(sidecar.GrpcEndpoint.ToString()).Build();
        var transport = new DaprBindingTransport(dapr, "coding-agent-copilot");
        var headers = new Dictionary<string, string> { ["Accept"] = "application/vnd.github+json", ["X-GitHub-Api-Version"] = "2026-03-10" };

        await transport.SendAsync(new ProviderRequest(HttpMethod.Get, "agents/tasks/t-1", Headers: headers), CancellationToken.None);

        // Go's net/http writes header names in its canonical form (X-Github-Api-Version); HTTP header names are case-insensitive.
        var received = provider.LogEntries.Single().RequestMessage.Headers!.ToDictionary(pair => pair.Key, pair => pair.Value.Single(), StringComparer.OrdinalIgnoreCase);
        Assert.Equal("application/vnd.github+json", received["Accept"]);
        Assert.Equal("2026-03-10", received["X-GitHub-Api-Version"]);
    }

    [Fact]
    public async Task Binding_answer_without_a_status_code_is_reported_as_maybe_sent()
    {
        // An answer daprd gave without the binding's statusCode cannot say what the provider did with the launch.
        using var dapr = ClientOver(new AnswersWithoutMetadata());

        var failure = await LaunchFailureAsync(dapr);

        Assert.Equal(TransportFailureKind.Network, failure.Kind);
        Assert.True(failure.RequestSent);
    }

    [Fact]
    public async Task A_call_its_caller_cancelled_is_not_reported_as_a_provider_failure()
    {
        // Shutdown or an aborted request cancels the call: that is no failure of the provider's to classify and record
        // (it would read as maybe sent); the cancellation goes back to the caller.
        var holding = new HoldsUntilCancelled();
        using var dapr = ClientOver(holding);
        var transport = new DaprBindingTransport(dapr, "coding-agent-cursor");
        using var cancel = new CancellationTokenSource();

        var call = transport.SendAsync(new ProviderRequest(HttpMethod.Post, "v0/agents/bc-1/stop"), cancel.Token);
        await holding.Entered.Task.WaitAsync(TimeSpan.FromSeconds(30));
        await cancel.CancelAsync();
        var thrown = await Record.ExceptionAsync(() => call);

        Assert.NotNull(thrown);
        Assert.IsNotType<ProviderTransportException>(thrown);
    }

    /// <summary>The transport failure a launch through the Cursor binding ends in, over <paramref name="dapr"/>.</summary>
    private static Task<ProviderTransportException> LaunchFailureAsync(DaprClient dapr, byte[]? body = null) =>
        Assert.ThrowsAsync<ProviderTransportException>(() => new DaprBindingTransport(dapr, "coding-agent-cursor")
            .SendAsync(new ProviderRequest(HttpMethod.Post, "v0/agents", body ?? "{}"u8.ToArray()), CancellationToken.None));

    /// <summary>A client whose gRPC calls <paramref name="handler"/> answers in place of a sidecar (the endpoint is never dialled).</summary>
    private static DaprClient ClientOver(HttpMessageHandler handler) => new DaprClientBuilder()
        .UseGrpcEndpoint("http://127.0.0.1:9")
        .UseGrpcChannelOptions(new GrpcChannelOptions { HttpHandler = handler })
        .Build();

    /// <summary>Answers InvokeBinding successfully with data but no metadata (no <c>statusCode</c>).</summary>
    private sealed class AnswersWithoutMetadata : HttpMessageHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            var message = new InvokeBindingResponse { Data = ByteString.CopyFromUtf8("{\"id\":\"bc-1\"}") }.ToByteArray();
            // gRPC's length-prefixed message: not compressed, then the length big-endian.
            var frame = new byte[5 + message.Length];
            System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(frame.AsSpan(1), (uint)message.Length);
            message.CopyTo(frame, 5);
            var response = new HttpResponseMessage(HttpStatusCode.OK) { Version = HttpVersion.Version20, Content = new ByteArrayContent(frame) };
            response.Content.Headers.ContentType = new("application/grpc");
            response.TrailingHeaders.Add("grpc-status", "0");
            return Task.FromResult(response);
        }
    }

    /// <summary>Holds the gRPC call, as a binding waiting on the provider does, until the call is cancelled.</summary>
    private sealed class HoldsUntilCancelled : HttpMessageHandler
    {
        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            Entered.TrySetResult();
            await Task.Delay(Timeout.Infinite, cancellationToken);
            throw new InvalidOperationException("Not reached: the delay ends only by cancellation.");
        }
    }

    /// <summary>Refuses the connection, as SocketsHttpHandler reports a failed connect: nothing is sent.</summary>
    private sealed class RefusesTheConnection : HttpMessageHandler
    {
        public bool Called { get; private set; }

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            Called = true;
            throw new HttpRequestException(HttpRequestError.ConnectionError, "Connection refused (127.0.0.1:50001)",
                new SocketException((int)SocketError.ConnectionRefused));
        }
    }

    /// <summary>Reads the whole gRPC request, as daprd would before calling the provider, then loses the connection.</summary>
    private sealed class ReceivesThenConnectionBreaks : HttpMessageHandler
    {
        public int BytesReceived { get; private set; }

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            BytesReceived = (await request.Content!.ReadAsByteArrayAsync(cancellationToken)).Length;
            throw new HttpRequestException("An error occurred while sending the request.", new IOException("The response ended prematurely."));
        }
    }
}
