namespace HandoffDapr.FakeSidecar;

/// <summary>
/// daprd's resiliency policy for calls to an actor type through <c>v1.0/actors/{type}/{id}/method/{method}</c>: the
/// target's retry and circuit breaker (its pre-lock policy, dapr pkg/resiliency/resiliency.go ActorPreLockPolicy, run
/// around the router call in pkg/api/http/actors.go onDirectActorMessage). Every attempt goes through the breaker
/// (pkg/resiliency/policy.go), and an attempt fails when the app answers anything but 200 or throws in the actor
/// (<c>X-DaprErrorResponseHeader</c>). Reminders and timers are not called through the retry and breaker.
/// <para>
/// <see cref="CallTimeout"/> is the target's <c>timeout</c>, which daprd applies after the lock instead (its post-lock
/// policy, resiliency.go ActorPostLockPolicy, run in pkg/actors/targets/app/transport/http/http.go Invoke around the app
/// channel call, inside the turn taken in targets/app/app.go InvokeMethod): an attempt whose app call outlasts it has the
/// HTTP request to the app cancelled and fails at once with <c>context deadline exceeded</c> (policy.go does not wait for
/// the call to return), the turn lock is released (app.go's deferred cancel), the router hands the error back as
/// retriable (router.go callActor/Call), the breaker counts it and the retry makes the call again: while the app's
/// method, which the .NET SDK does not stop, may still run. The caller then sees 500 ERR_ACTOR_INVOKE_METHOD
/// "error invoke actor method: context deadline exceeded". The fake's timer is <see cref="FakeSidecarOptions.TimeProvider"/>.
/// daprd applies the same timeout, and only it, to reminder and timer deliveries (app.go InvokeReminder and InvokeTimer
/// call doInvokeMethod; router.go CallReminder runs no retry or breaker for a type with a policy), and so does the fake:
/// a reminder's delivery given up on is a failed firing, which the Scheduler retries (see <see cref="FakeDaprSidecar.FireReminderAsync"/>).
/// </para>
/// </summary>
/// <param name="MaxRetries">The retry policy's <c>maxRetries</c>: attempts after the first.</param>
/// <param name="RetryInterval">Wait between attempts (the fake's is constant; zero for quick tests).</param>
/// <param name="BreakerConsecutiveFailures">The breaker's <c>trip: consecutiveFailures >= N</c>; 0 = no breaker.</param>
/// <param name="BreakerTimeout">How long an open breaker refuses calls before it lets one through (<c>timeout</c>).</param>
/// <param name="BreakerInterval">How often a closed breaker clears its counts (<c>interval</c>); zero = never.</param>
/// <param name="BreakerMaxRequests">Calls let through while half-open, and successes that close it (<c>maxRequests</c>).</param>
/// <param name="BreakerPerActorId">
/// <c>circuitBreakerScope</c>: false for <c>type</c> (one breaker for every id of the type), true for <c>id</c> or
/// <c>both</c> (daprd keys the breaker by type and id unless the scope is exactly <c>type</c>).
/// </param>
/// <param name="CallTimeout">The target's <c>timeout</c> for each attempt's call into the app, inside the turn; zero = none.</param>
public sealed record ActorCallPolicy(
    int MaxRetries = 0,
    TimeSpan RetryInterval = default,
    int BreakerConsecutiveFailures = 0,
    TimeSpan BreakerTimeout = default,
    TimeSpan BreakerInterval = default,
    int BreakerMaxRequests = 1,
    bool BreakerPerActorId = false,
    TimeSpan CallTimeout = default);

/// <summary>sony/gobreaker's two-step breaker as daprd uses it: closed, open for a timeout, then half-open.</summary>
internal sealed class ActorCircuitBreaker(ActorCallPolicy policy, TimeProvider clock)
{
    private enum State
    {
        Closed,
        Open,
        HalfOpen,
    }

    private readonly object gate = new();
    private State state = State.Closed;
    private int requests;
    private int consecutiveFailures;
    private int consecutiveSuccesses;
    private DateTimeOffset? expiry = policy.BreakerInterval > TimeSpan.Zero ? clock.GetUtcNow() + policy.BreakerInterval : null;

    private int MaxRequests => Math.Max(1, policy.BreakerMaxRequests);

    /// <summary>Null when the call may go ahead, else gobreaker's error text (ErrOpenState, ErrTooManyRequests).</summary>
    public string? TryEnter()
    {
        lock (gate)
        {
            Refresh();
            if (state == State.Open)
            {
                return "circuit breaker is open";
            }

            if (state == State.HalfOpen && requests >= MaxRequests)
            {
                return "too many requests";
            }

            requests++;
            return null;
        }
    }

    public void Record(bool success)
    {
        lock (gate)
        {
            Refresh();
            if (success)
            {
                consecutiveSuccesses++;
                consecutiveFailures = 0;
                if (state == State.HalfOpen && consecutiveSuccesses >= MaxRequests)
                {
                    Move(State.Closed);
                }

                return;
            }

            consecutiveFailures++;
            consecutiveSuccesses = 0;
            if (state == State.HalfOpen || (state == State.Closed && consecutiveFailures >= policy.BreakerConsecutiveFailures))
            {
                Move(State.Open);
            }
        }
    }

    private void Refresh()
    {
        var now = clock.GetUtcNow();
        if (expiry is { } at && at <= now)
        {
            Move(state == State.Open ? State.HalfOpen : State.Closed);
        }
    }

    // A new generation: counts cleared, and the expiry of the new state set.
    private void Move(State to)
    {
        state = to;
        requests = consecutiveFailures = consecutiveSuccesses = 0;
        var now = clock.GetUtcNow();
        expiry = to switch
        {
            State.Open => now + policy.BreakerTimeout,
            State.Closed when policy.BreakerInterval > TimeSpan.Zero => now + policy.BreakerInterval,
            _ => null,
        };
    }
}
