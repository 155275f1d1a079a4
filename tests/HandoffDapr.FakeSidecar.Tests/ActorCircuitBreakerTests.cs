namespace HandoffDapr.FakeSidecar.Tests;

/// <summary>
/// The half-open state of sony/gobreaker v0.5.0 (daprd's pkg/resiliency/breaker wraps it): beforeRequest refuses with
/// ErrTooManyRequests once maxRequests calls were let through, onFailure in half-open sets the state back to open, and
/// maxRequests consecutive successes close it.
/// </summary>
public sealed class ActorCircuitBreakerTests
{
    private readonly ManualClock clock = new();

    [Fact]
    public void A_failed_trial_call_in_the_half_open_state_opens_the_breaker_again()
    {
        var breaker = OpenBreaker(maxRequests: 1);
        clock.Advance(TimeSpan.FromSeconds(31)); // past the open timeout: half-open

        Assert.Null(breaker.TryEnter());
        breaker.Record(success: false);

        Assert.Equal("circuit breaker is open", breaker.TryEnter());
        clock.Advance(TimeSpan.FromSeconds(31));
        Assert.Null(breaker.TryEnter()); // a new open period, then half-open again
    }

    [Fact]
    public void A_half_open_breaker_lets_only_maxRequests_trial_calls_through_until_they_succeed()
    {
        var breaker = OpenBreaker(maxRequests: 2);
        clock.Advance(TimeSpan.FromSeconds(31));

        Assert.Null(breaker.TryEnter());
        Assert.Null(breaker.TryEnter());
        Assert.Equal("too many requests", breaker.TryEnter());

        breaker.Record(success: true);
        Assert.Equal("too many requests", breaker.TryEnter()); // one success of two: still half-open
        breaker.Record(success: true);

        for (var i = 0; i < 5; i++)
        {
            Assert.Null(breaker.TryEnter()); // closed
        }
    }

    private ActorCircuitBreaker OpenBreaker(int maxRequests)
    {
        var breaker = new ActorCircuitBreaker(
            new ActorCallPolicy(BreakerConsecutiveFailures: 1, BreakerTimeout: TimeSpan.FromSeconds(30), BreakerMaxRequests: maxRequests), clock);
        Assert.Null(breaker.TryEnter());
        breaker.Record(success: false);
        Assert.Equal("circuit breaker is open", breaker.TryEnter());
        return breaker;
    }

    private sealed class ManualClock : TimeProvider
    {
        private DateTimeOffset now = new(2025, 1, 1, 0, 0, 0, TimeSpan.Zero);

        public override DateTimeOffset GetUtcNow() => now;

        public void Advance(TimeSpan by) => now += by;
    }
}
