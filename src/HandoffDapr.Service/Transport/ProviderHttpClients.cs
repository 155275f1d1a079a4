using System.Net.Http.Headers;
using System.Net.Sockets;
using HandoffDapr.Service.Configuration;
using Microsoft.Extensions.Http.Resilience;
using Polly;

namespace HandoffDapr.Service.Transport;

/// <summary>
/// One <see cref="HttpClient"/> per integration (embedded mode): its own base address, key, timeout and circuit
/// breaker, so one provider's outage neither trips another's breaker nor turns into a retry storm. No retry
/// here: retries are the handoff's, scheduled durably. All clients share one connection pool.
/// </summary>
public sealed class ProviderHttpClients(TimeProvider timeProvider, TimeSpan? connectTimeout = null) : IDisposable
{
    // The breaker keeps its break's end and its sampling window as times of day: on the wall clock, stepped back an hour
    // while open, it would refuse every call for that hour. Its "now" moves with the monotonic clock instead.
    private readonly TimeProvider breakerClock = new MonotonicTimeProvider(timeProvider);

    /// <summary>How long making a connection may take (name resolution included) before the call fails as never sent.</summary>
    public static readonly TimeSpan DefaultConnectTimeout = TimeSpan.FromSeconds(10);

    /// <summary>The largest provider answer read; a larger one fails as a network error after sending (reconciled).</summary>
    public const int MaxAnswerBytes = 4 * 1024 * 1024;

    private readonly SocketsHttpHandler sharedHandler = new()
    {
        // The handler lives as long as the process and resolves a host only when it connects: connections are renewed
        // so a provider's changed DNS entries are picked up (by default a connection kept busy is never renewed).
        PooledConnectionLifetime = TimeSpan.FromMinutes(5),
        // The connect's own time limit, as SocketsHttpHandler's default connect would make it: its ConnectTimeout is
        // reported as a cancellation, which reads as the call's time-out (the request maybe sent, so a stop or follow-up
        // answered 504 and a launch reconciled first). A connect that timed out sent nothing: a socket time-out, which
        // the handler reports as a ConnectionError, like a refused connection.
        ConnectCallback = async (context, cancellationToken) =>
        {
            var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            limit.CancelAfter(connectTimeout ?? DefaultConnectTimeout);
            try
            {
                await socket.ConnectAsync(context.DnsEndPoint, limit.Token);
                return new NetworkStream(socket, ownsSocket: true);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                socket.Dispose();
                throw new SocketException((int)SocketError.TimedOut);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        },
        // A redirect would re-send the prompt (and the webhook secret) to wherever it points, without the key: it is
        // answered as it came: a refusal like any other (invalid_request), but a 303 See Other, which says the request
        // was carried out, an unreadable answer (invalid_response), so the agent it made is looked for.
        AllowAutoRedirect = false,
    };

    public HttpClient Create(IntegrationOptions integration)
    {
        // The breaker reads the service's monotonic clock (tests move it); the per-call timeout is real time. It counts
        // 5xx, 408 and 429 answers as well as timeouts and network errors (the options' default, as docs/runbook.md
        // says), where Dapr mode's providerBreaker (components/resiliency.yaml) sees only calls that fail outright:
        // daprd hands a 5xx to the app as an answer.
        var breaker = new ResiliencePipelineBuilder<HttpResponseMessage> { TimeProvider = breakerClock }
            .AddCircuitBreaker(new HttpCircuitBreakerStrategyOptions
            {
                FailureRatio = 0.5,
                MinimumThroughput = 10,
                SamplingDuration = TimeSpan.FromSeconds(30),
                BreakDuration = TimeSpan.FromSeconds(30),
            })
            .Build();
        var timeout = new ResiliencePipelineBuilder<HttpResponseMessage>()
            .AddTimeout(integration.RequestTimeout)
            .Build();

        var handler = new ResilienceHandler(breaker) { InnerHandler = new ResilienceHandler(timeout) { InnerHandler = sharedHandler } };
        var client = new HttpClient(handler, disposeHandler: false)
        {
            BaseAddress = new Uri(integration.EffectiveBaseUrl!.TrimEnd('/') + "/"),
            // The pipeline's timeout governs the exchange up to the answer's headers (and counts for the breaker); this one,
            // a second later, bounds reading the body too, which HttpClient does after the handlers have returned.
            Timeout = integration.RequestTimeout + TimeSpan.FromSeconds(1),
            // A page of 100 agents is tens of KiB; past this an answer is not one (the default would buffer 2 GiB).
            MaxResponseContentBufferSize = MaxAnswerBytes,
        };
        client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", integration.ApiKey);
        client.DefaultRequestHeaders.Accept.Add(new MediaTypeWithQualityHeaderValue("application/json"));
        // GitHub refuses API requests without a User-Agent.
        client.DefaultRequestHeaders.UserAgent.Add(new ProductInfoHeaderValue("HandoffDapr", "1.0"));
        return client;
    }

    public void Dispose() => sharedHandler.Dispose();
}

/// <summary>
/// <paramref name="inner"/>'s timers and timestamps, with a time of day that moves only as its monotonic timestamp does
/// (from the time of day at creation), so that a step of the wall clock cannot stretch or cut an interval measured with it.
/// </summary>
internal sealed class MonotonicTimeProvider(TimeProvider inner) : TimeProvider
{
    private readonly DateTimeOffset startedAt = inner.GetUtcNow();
    private readonly long started = inner.GetTimestamp();

    public override DateTimeOffset GetUtcNow() => startedAt + inner.GetElapsedTime(started);

    public override long GetTimestamp() => inner.GetTimestamp();

    public override long TimestampFrequency => inner.TimestampFrequency;

    public override TimeZoneInfo LocalTimeZone => inner.LocalTimeZone;

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) =>
        inner.CreateTimer(callback, state, dueTime, period);
}
