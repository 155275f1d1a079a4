using System.Net.Sockets;
using HandoffDapr.Core.Providers;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.Transport;
using WireMock.RequestBuilders;
using WireMock.ResponseBuilders;
using WireMock.Server;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>Embedded mode's provider transport against a WireMock.Net provider on loopback.</summary>
public sealed class HttpProviderTransportTests : IDisposable
{
    private readonly WireMockServer provider = WireMockServer.Start(new WireMock.Settings.WireMockServerSettings { Urls = ["http://127.0.0.1:0"] });
    private readonly ProviderHttpClients clients = new(TimeProvider.System);
    private readonly HttpProviderTransport transport;

    public HttpProviderTransportTests() =>
        transport = new HttpProviderTransport(clients.Create(new IntegrationOptions { BaseUrl = provider.Url, ApiKey = "key", RequestTimeout = TimeSpan.FromSeconds(30) }));

    [Fact]
    public async Task Answer_larger_than_the_limit_fails_as_sent_instead_of_being_buffered_whole()
    {
        Answer(ProviderHttpClients.MaxAnswerBytes + 1);

        var failure = await Assert.ThrowsAsync<ProviderTransportException>(() => transport.SendAsync(new ProviderRequest(HttpMethod.Get, "v0/agents?limit=100"), CancellationToken.None));

        // The request went out: a launch answered this way may have created its agent, so it is reconciled.
        Assert.Equal(TransportFailureKind.Network, failure.Kind);
        Assert.True(failure.RequestSent);
    }

    [Fact]
    public async Task Answer_at_the_limit_is_read()
    {
        Answer(ProviderHttpClients.MaxAnswerBytes);

        var response = await transport.SendAsync(new ProviderRequest(HttpMethod.Get, "v0/agents?limit=100"), CancellationToken.None);

        Assert.Equal(200, response.StatusCode);
        Assert.Equal(ProviderHttpClients.MaxAnswerBytes, response.Body.Length);
    }

    [Fact]
    public async Task Every_call_asks_for_json_names_the_service_and_carries_the_integrations_key()
    {
        Answer(2);

        await transport.SendAsync(new ProviderRequest(HttpMethod.Get, "v0/agents?limit=100"), CancellationToken.None);

        // GitHub's API refuses a request without a User-Agent; answers are read as JSON, so JSON is what is asked for.
        var headers = provider.LogEntries.Single().RequestMessage.Headers!;
        Assert.Equal("application/json", headers["Accept"].Single());
        Assert.StartsWith("HandoffDapr/", headers["User-Agent"].Single(), StringComparison.Ordinal);
        Assert.Equal("Bearer key", headers["Authorization"].Single());
    }

    /// <summary>A BaseUrl with a path (GitHub Enterprise Server's /api/v3) keeps it, with or without a closing slash.</summary>
    [Theory]
    [InlineData("/api/v3")]
    [InlineData("/api/v3/")]
    public async Task Provider_calls_go_under_the_base_urls_path(string basePath)
    {
        provider.Given(Request.Create().UsingGet()).RespondWith(Response.Create().WithStatusCode(200).WithBody("{}"));
        var underPath = new HttpProviderTransport(clients.Create(new IntegrationOptions { BaseUrl = provider.Url + basePath, ApiKey = "key", RequestTimeout = TimeSpan.FromSeconds(30) }));

        await underPath.SendAsync(new ProviderRequest(HttpMethod.Get, "agents/tasks/t-1"), CancellationToken.None);

        Assert.Equal("/api/v3/agents/tasks/t-1", provider.LogEntries.Single().RequestMessage.Path);
    }

    [Fact]
    public async Task A_request_body_is_sent_as_utf8_json()
    {
        // Cursor's and GitHub's APIs read a launch's body by its Content-Type: without it the prompt is no JSON to them.
        provider.Given(Request.Create().WithPath("/v0/agents").UsingPost()).RespondWith(Response.Create().WithStatusCode(201).WithBody("{}"));

        await transport.SendAsync(new ProviderRequest(HttpMethod.Post, "v0/agents", "{\"prompt\":{\"text\":\"fix\"}}"u8.ToArray()), CancellationToken.None);

        var headers = provider.LogEntries.Single().RequestMessage.Headers!;
        Assert.Equal("application/json; charset=utf-8", headers["Content-Type"].Single());
    }

    [Theory]
    [InlineData(301)]
    [InlineData(307)]
    [InlineData(308)]
    public async Task A_redirect_is_answered_as_it_came_not_followed_to_where_the_prompt_and_key_would_go(int status)
    {
        using var elsewhere = WireMockServer.Start(new WireMock.Settings.WireMockServerSettings { Urls = ["http://127.0.0.1:0"] });
        elsewhere.Given(Request.Create().UsingAnyMethod()).RespondWith(Response.Create().WithStatusCode(201).WithBody("""{"id":"bc-elsewhere"}"""));
        provider.Given(Request.Create().WithPath("/v0/agents").UsingPost())
            .RespondWith(Response.Create().WithStatusCode(status).WithHeader("Location", elsewhere.Url + "/v0/agents"));

        var response = await transport.SendAsync(new ProviderRequest(HttpMethod.Post, "v0/agents", "{\"prompt\":{\"text\":\"fix\"}}"u8.ToArray()), CancellationToken.None);

        // Classified as any other refusal (invalid_request); the prompt (and a webhook secret) never leave for another host.
        Assert.Equal(status, response.StatusCode);
        Assert.Empty(elsewhere.LogEntries);
    }

    [Fact]
    public async Task Provider_host_whose_name_does_not_resolve_is_reported_as_never_sent()
    {
        // .invalid never resolves (RFC 6761): no connection, so nothing reached the provider, as with a refused one
        // (and as Dapr mode reads Go's "no such host"). Taken as maybe sent, a follow-up was answered 504 and recorded as
        // possibly sent, and every launch attempt looked for an agent first.
        var unresolvable = new HttpProviderTransport(clients.Create(new IntegrationOptions { BaseUrl = "http://handoff-test.invalid", ApiKey = "key", RequestTimeout = TimeSpan.FromSeconds(30) }));

        var failure = await Assert.ThrowsAsync<ProviderTransportException>(() =>
            unresolvable.SendAsync(new ProviderRequest(HttpMethod.Post, "v0/agents/bc-1/followup", "{}"u8.ToArray()), CancellationToken.None));

        Assert.Equal(TransportFailureKind.Network, failure.Kind);
        Assert.False(failure.RequestSent);
        Assert.False(ProviderFailureClassifier.FromTransport(failure).OutcomeUnknown);
    }

    [Theory]
    [InlineData(SocketError.HostUnreachable)]
    [InlineData(SocketError.NetworkUnreachable)]
    [InlineData(SocketError.TimedOut)]
    public async Task A_connection_that_could_not_be_made_is_reported_as_never_sent(SocketError error)
    {
        // What SocketsHttpHandler throws when the connect fails (ConnectHelper wraps the socket's error as a
        // ConnectionError): no route, an unreachable network, a SYN unanswered. Nothing reached the provider, as with a
        // refused connection (and as Dapr mode reads any Go dial error); taken as maybe sent, a follow-up was answered
        // 504 and recorded as possibly sent, and every launch attempt looked for an agent first.
        var unreachable = new HttpProviderTransport(new HttpClient(new ThrowingHandler(
            new HttpRequestException(HttpRequestError.ConnectionError, "No route to host (provider:443)", new SocketException((int)error))))
        { BaseAddress = new Uri("http://provider/") });

        var failure = await Assert.ThrowsAsync<ProviderTransportException>(() =>
            unreachable.SendAsync(new ProviderRequest(HttpMethod.Post, "v0/agents/bc-1/followup", "{}"u8.ToArray()), CancellationToken.None));

        Assert.Equal(TransportFailureKind.Network, failure.Kind);
        Assert.False(failure.RequestSent);
        Assert.False(ProviderFailureClassifier.FromTransport(failure).OutcomeUnknown);
    }

    [Fact]
    public async Task A_connect_that_times_out_is_reported_as_never_sent()
    {
        // A listener whose backlog is full drops further SYNs, as a firewall that drops them does: the connect hangs
        // until the connect timeout, and nothing reached the provider. SocketsHttpHandler reports its own ConnectTimeout
        // as a cancellation, which read as the call's time-out: maybe sent, a stop or follow-up answered 504.
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, 0));
        listener.Listen(0);
        using var queued = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await queued.ConnectAsync(listener.LocalEndPoint!);
        using var slowClients = new ProviderHttpClients(TimeProvider.System, connectTimeout: TimeSpan.FromMilliseconds(500));
        var blackholed = new HttpProviderTransport(slowClients.Create(new IntegrationOptions
        {
            BaseUrl = $"http://127.0.0.1:{((System.Net.IPEndPoint)listener.LocalEndPoint!).Port}", ApiKey = "key", RequestTimeout = TimeSpan.FromSeconds(30),
        }));

        var failure = await Assert.ThrowsAsync<ProviderTransportException>(() =>
            blackholed.SendAsync(new ProviderRequest(HttpMethod.Post, "v0/agents/bc-1/followup", "{}"u8.ToArray()), CancellationToken.None));

        Assert.Equal(TransportFailureKind.Network, failure.Kind);
        Assert.False(failure.RequestSent);
    }

    [Fact]
    public void A_connect_gives_up_before_a_call_times_out_by_default()
    {
        // A connect that hangs (a firewall dropping SYNs) fails by its own limit, as never sent, only if that comes first:
        // at the call's RequestTimeout it is the call's time-out, the request maybe sent (a stop or follow-up answered
        // 504, a launch looked for before it is tried again).
        Assert.True(ProviderHttpClients.DefaultConnectTimeout < new IntegrationOptions().RequestTimeout);
    }

    [Fact]
    public async Task A_connection_lost_after_it_was_made_is_still_reported_as_maybe_sent()
    {
        // Not a connect failure: the request may have reached the provider.
        var broken = new HttpProviderTransport(new HttpClient(new ThrowingHandler(
            new HttpRequestException(HttpRequestError.ResponseEnded, "The response ended prematurely.", new IOException())))
        { BaseAddress = new Uri("http://provider/") });

        var failure = await Assert.ThrowsAsync<ProviderTransportException>(() =>
            broken.SendAsync(new ProviderRequest(HttpMethod.Post, "v0/agents", "{}"u8.ToArray()), CancellationToken.None));

        Assert.True(failure.RequestSent);
    }

    /// <summary>
    /// A launch answered with a failure may still have made its agent: the HTTP pipeline must not send it again (a
    /// second agent), whatever the status. Retries are the handoff's, scheduled durably, and look for the agent first.
    /// </summary>
    [Theory]
    [InlineData(500)]
    [InlineData(502)]
    [InlineData(503)]
    [InlineData(408)]
    [InlineData(429)]
    public async Task A_launch_answered_with_a_failure_is_sent_to_the_provider_once(int status)
    {
        provider.Given(Request.Create().WithPath("/v0/agents").UsingPost()).RespondWith(Response.Create().WithStatusCode(status).WithBody("{}"));

        var response = await transport.SendAsync(new ProviderRequest(HttpMethod.Post, "v0/agents", "{\"prompt\":{\"text\":\"fix\"}}"u8.ToArray()), CancellationToken.None);

        Assert.Equal(status, response.StatusCode);
        Assert.Single(provider.LogEntries);
    }

    [Fact]
    public async Task A_launch_that_times_out_before_the_answer_is_reported_as_maybe_sent()
    {
        // The provider had the launch and may have made its agent: reported as never sent, the next attempt would launch
        // a second agent instead of looking for the first.
        provider.Given(Request.Create().WithPath("/v0/agents").UsingPost()).RespondWith(Response.Create().WithStatusCode(201).WithBody("{}").WithDelay(TimeSpan.FromSeconds(5)));
        var slow = new HttpProviderTransport(clients.Create(new IntegrationOptions { BaseUrl = provider.Url, ApiKey = "key", RequestTimeout = TimeSpan.FromMilliseconds(200) }));

        var failure = await Assert.ThrowsAsync<ProviderTransportException>(() =>
            slow.SendAsync(new ProviderRequest(HttpMethod.Post, "v0/agents", "{\"prompt\":{\"text\":\"fix\"}}"u8.ToArray()), CancellationToken.None));

        Assert.Equal(TransportFailureKind.Timeout, failure.Kind);
        Assert.True(failure.RequestSent);
        Assert.True(ProviderFailureClassifier.FromTransport(failure).OutcomeUnknown);
    }

    [Fact]
    public async Task A_launch_that_times_out_is_sent_to_the_provider_once()
    {
        // Nothing accepts the connections: each completes in the listener's queue, takes its request and is never
        // answered. A second launch sent after the time-out would be a second connection waiting there. The time-out is
        // real time and must come after the connect: with 200 ms a starved thread pool could cancel the connect first, and
        // the accept below waited forever.
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        var unanswered = new HttpProviderTransport(clients.Create(new IntegrationOptions
        {
            BaseUrl = $"http://127.0.0.1:{((System.Net.IPEndPoint)listener.LocalEndpoint).Port}", ApiKey = "key", RequestTimeout = TimeSpan.FromSeconds(2),
        }));

        var failure = await Assert.ThrowsAsync<ProviderTransportException>(() =>
            unanswered.SendAsync(new ProviderRequest(HttpMethod.Post, "v0/agents", "{\"prompt\":{\"text\":\"fix\"}}"u8.ToArray()), CancellationToken.None));

        Assert.Equal(TransportFailureKind.Timeout, failure.Kind);
        Assert.True(listener.Pending(), "the launch timed out before it connected");
        using var launch = listener.AcceptSocket();
        Assert.False(listener.Pending(), "the launch was sent again after its time-out");
    }

    [Fact]
    public async Task A_launch_whose_connection_is_lost_after_sending_is_sent_to_the_provider_once()
    {
        // The provider read the launch and dropped the connection before answering: it may have made the agent.
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        var provider = Task.Run(async () =>
        {
            using var socket = await listener.AcceptSocketAsync();
            await socket.ReceiveAsync(new byte[8192], SocketFlags.None);
            socket.LingerState = new LingerOption(true, 0);
        });
        var dropping = new HttpProviderTransport(clients.Create(new IntegrationOptions
        {
            BaseUrl = $"http://127.0.0.1:{((System.Net.IPEndPoint)listener.LocalEndpoint).Port}", ApiKey = "key", RequestTimeout = TimeSpan.FromSeconds(5),
        }));

        var failure = await Assert.ThrowsAsync<ProviderTransportException>(() =>
            dropping.SendAsync(new ProviderRequest(HttpMethod.Post, "v0/agents", "{\"prompt\":{\"text\":\"fix\"}}"u8.ToArray()), CancellationToken.None));
        await provider;

        Assert.Equal(TransportFailureKind.Network, failure.Kind);
        Assert.True(failure.RequestSent);
        Assert.False(listener.Pending(), "the launch was sent again after its connection was lost");
    }

    [Fact]
    public async Task Calls_that_time_out_before_the_answer_count_toward_opening_the_circuit()
    {
        // A provider that takes every call and never answers is down as surely as one answering 500: its time-outs open
        // the breaker, so calls stop piling up on it for RequestTimeout each.
        provider.Given(Request.Create().WithPath("/v0/me").UsingGet()).RespondWith(Response.Create().WithStatusCode(200).WithDelay(TimeSpan.FromSeconds(5)));
        var hanging = new HttpProviderTransport(clients.Create(new IntegrationOptions { BaseUrl = provider.Url, ApiKey = "key", RequestTimeout = TimeSpan.FromMilliseconds(200) }));

        var timedOut = await Task.WhenAll(Enumerable.Range(0, 10).Select(_ =>
            Assert.ThrowsAsync<ProviderTransportException>(() => hanging.SendAsync(new ProviderRequest(HttpMethod.Get, "v0/me"), CancellationToken.None))));
        Assert.All(timedOut, failure => Assert.Equal(TransportFailureKind.Timeout, failure.Kind));
        var open = await Assert.ThrowsAsync<ProviderTransportException>(() => hanging.SendAsync(new ProviderRequest(HttpMethod.Get, "v0/me"), CancellationToken.None));

        Assert.Equal(TransportFailureKind.CircuitOpen, open.Kind);
    }

    [Fact]
    public async Task A_call_its_caller_cancelled_is_not_reported_as_a_provider_failure()
    {
        // Shutdown or an aborted request cancels the call: that is no time-out of the provider's to classify and record
        // (it would read as maybe sent); the cancellation goes back to the caller.
        var holding = new HoldsUntilCancelled();
        var held = new HttpProviderTransport(new HttpClient(holding) { BaseAddress = new Uri("http://provider/") });
        using var cancel = new CancellationTokenSource();

        var call = held.SendAsync(new ProviderRequest(HttpMethod.Post, "v0/agents/bc-1/stop"), cancel.Token);
        await holding.Entered.Task.WaitAsync(TimeSpan.FromSeconds(30));
        await cancel.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => call);
    }

    /// <summary>Holds the request, as a provider slow to answer does, until the call is cancelled.</summary>
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

    private sealed class ThrowingHandler(Exception exception) : HttpMessageHandler
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken) => Task.FromException<HttpResponseMessage>(exception);
    }

    private void Answer(int bytes) =>
        provider.Given(Request.Create().WithPath("/v0/agents").UsingGet())
            .RespondWith(Response.Create().WithStatusCode(200).WithHeader("Content-Type", "application/json").WithBody(new byte[bytes]));

    public void Dispose()
    {
        clients.Dispose();
        provider.Stop();
    }
}
