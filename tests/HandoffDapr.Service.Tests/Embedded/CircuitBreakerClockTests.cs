using HandoffDapr.Core.Providers;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.Transport;
using WireMock.RequestBuilders;
using WireMock.ResponseBuilders;
using WireMock.Server;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>Embedded mode's circuit breaker (one per integration): its thresholds, and its clock when the wall clock steps (NTP, a resumed VM).</summary>
public sealed class CircuitBreakerClockTests : IDisposable
{
    private readonly WireMockServer provider = WireMockServer.Start(new WireMock.Settings.WireMockServerSettings { Urls = ["http://127.0.0.1:0"] });

    /// <summary>A wall clock and a monotonic one that move together, except where a test steps the wall clock alone.</summary>
    private sealed class SteppingClock : TimeProvider
    {
        private DateTimeOffset wall = new(2026, 12, 1, 10, 0, 0, TimeSpan.Zero);
        private long timestamp;

        public override DateTimeOffset GetUtcNow() => wall;

        public override long GetTimestamp() => timestamp;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public void Advance(TimeSpan elapsed)
        {
            wall += elapsed;
            timestamp += elapsed.Ticks;
        }

        public void StepWallClock(TimeSpan step) => wall += step;
    }

    /// <summary>
    /// The breaker kept its break's end on the wall clock: stepped back an hour while open, it refused every call to the
    /// provider (launches, polls, stops, follow-ups) for that hour and its 30 s break, not for the 30 s.
    /// </summary>
    [Fact]
    public async Task An_open_circuit_lets_a_call_through_after_its_break_even_when_the_wall_clock_stepped_back()
    {
        var clock = new SteppingClock();
        using var clients = new ProviderHttpClients(clock);
        var transport = new HttpProviderTransport(clients.Create(new IntegrationOptions { BaseUrl = provider.Url, ApiKey = "key", RequestTimeout = TimeSpan.FromSeconds(30) }));
        provider.Given(Request.Create().WithPath("/v0/me").UsingGet()).RespondWith(Response.Create().WithStatusCode(500));
        for (var i = 0; i < 10; i++)
        {
            await transport.SendAsync(new ProviderRequest(HttpMethod.Get, "v0/me"), CancellationToken.None);
        }

        var open = await Assert.ThrowsAsync<ProviderTransportException>(() => transport.SendAsync(new ProviderRequest(HttpMethod.Get, "v0/me"), CancellationToken.None));
        Assert.Equal(TransportFailureKind.CircuitOpen, open.Kind);

        provider.Reset();
        provider.Given(Request.Create().WithPath("/v0/me").UsingGet()).RespondWith(Response.Create().WithStatusCode(200).WithBody("{}"));
        clock.StepWallClock(-TimeSpan.FromHours(1));
        clock.Advance(TimeSpan.FromSeconds(31)); // past the 30 s break

        var response = await transport.SendAsync(new ProviderRequest(HttpMethod.Get, "v0/me"), CancellationToken.None);

        Assert.Equal(200, response.StatusCode);
    }

    /// <summary>The breaker's thresholds: half of at least 10 calls failing within 30 s opens it for 30 s.</summary>
    [Fact]
    public async Task An_open_circuit_still_refuses_calls_until_its_30_second_break_ends()
    {
        var (clock, transport) = Breaker();
        await FailAsync(transport, 10);
        Failing(false);

        clock.Advance(TimeSpan.FromSeconds(29));
        var open = await Assert.ThrowsAsync<ProviderTransportException>(() => CallAsync(transport));

        Assert.Equal(TransportFailureKind.CircuitOpen, open.Kind);
    }

    [Fact]
    public async Task Half_of_ten_calls_failing_opens_the_circuit()
    {
        var (_, transport) = Breaker();
        Failing(false);
        for (var i = 0; i < 5; i++)
        {
            await CallAsync(transport);
        }

        await FailAsync(transport, 5);
        var open = await Assert.ThrowsAsync<ProviderTransportException>(() => CallAsync(transport));

        Assert.Equal(TransportFailureKind.CircuitOpen, open.Kind);
    }

    [Fact]
    public async Task Failures_within_the_30_second_sampling_window_open_the_circuit_together()
    {
        var (clock, transport) = Breaker();
        await FailAsync(transport, 9);
        clock.Advance(TimeSpan.FromSeconds(25));
        await FailAsync(transport, 1);

        var open = await Assert.ThrowsAsync<ProviderTransportException>(() => CallAsync(transport));

        Assert.Equal(TransportFailureKind.CircuitOpen, open.Kind);
    }

    [Fact]
    public async Task Failures_older_than_the_30_second_sampling_window_do_not_open_the_circuit()
    {
        var (clock, transport) = Breaker();
        await FailAsync(transport, 9);
        clock.Advance(TimeSpan.FromSeconds(31));
        await FailAsync(transport, 1);
        Failing(false);

        var response = await CallAsync(transport);

        Assert.Equal(200, response.StatusCode);
    }

    /// <summary>
    /// What counts as a failure is the options' default (docs/runbook.md, <c>ProviderTransportFailure</c>): a provider
    /// that rate-limits or times out every call is treated as down; one refusing the requests themselves (4xx) is not.
    /// </summary>
    [Theory]
    [InlineData(429, true)]
    [InlineData(408, true)]
    [InlineData(503, true)]
    [InlineData(404, false)]
    [InlineData(401, false)]
    [InlineData(400, false)]
    public async Task Ten_answers_of_a_status_open_the_circuit_only_for_5xx_408_and_429(int status, bool opens)
    {
        var (_, transport) = Breaker();
        Answering(status);
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal(status, (await CallAsync(transport)).StatusCode);
        }

        if (opens)
        {
            var open = await Assert.ThrowsAsync<ProviderTransportException>(() => CallAsync(transport));
            Assert.Equal(TransportFailureKind.CircuitOpen, open.Kind);
        }
        else
        {
            Assert.Equal(status, (await CallAsync(transport)).StatusCode);
        }
    }

    private (SteppingClock Clock, HttpProviderTransport Transport) Breaker()
    {
        var clock = new SteppingClock();
        var clients = new ProviderHttpClients(clock);
        disposables.Add(clients);
        return (clock, new HttpProviderTransport(clients.Create(new IntegrationOptions { BaseUrl = provider.Url, ApiKey = "key", RequestTimeout = TimeSpan.FromSeconds(30) })));
    }

    private void Failing(bool failing) => Answering(failing ? 500 : 200);

    private void Answering(int status)
    {
        provider.Reset();
        provider.Given(Request.Create().WithPath("/v0/me").UsingGet()).RespondWith(Response.Create().WithStatusCode(status).WithBody("{}"));
    }

    private async Task FailAsync(HttpProviderTransport transport, int calls)
    {
        Failing(true);
        for (var i = 0; i < calls; i++)
        {
            Assert.Equal(500, (await CallAsync(transport)).StatusCode);
        }
    }

    private static Task<ProviderResponse> CallAsync(HttpProviderTransport transport) =>
        transport.SendAsync(new ProviderRequest(HttpMethod.Get, "v0/me"), CancellationToken.None);

    private readonly List<IDisposable> disposables = [];

    public void Dispose()
    {
        disposables.ForEach(disposable => disposable.Dispose());
        provider.Dispose();
    }
}
