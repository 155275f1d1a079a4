using Dapr;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.FakeSidecar.Tests;

/// <summary>
/// A sidecar whose actor-call deadlines are on a clock the test moves: with real ones a loaded machine could let a slow
/// method end before the last attempt timed out, make a repeat miss the app, or time out a quick call.
/// </summary>
public abstract class ActorCallClockTest : SidecarTest
{
    protected FakeTimeProvider Clock { get; } = new();

    /// <summary>
    /// The policy around calls to <c>TestActor</c>; its <see cref="ActorCallPolicy.CallTimeout"/> runs on
    /// <see cref="Clock"/>.
    /// </summary>
    protected abstract ActorCallPolicy Policy { get; }

    protected override FakeSidecarOptions Options => WithTestActorPolicy(Policy, Clock);

    /// <summary>
    /// Moves the clock to the deadline as each attempt from the <paramref name="first"/> to the <paramref name="last"/>
    /// reaches the app (counted over <paramref name="paths"/>). The fake sends an actor id's attempts one at a time, in
    /// its turn, with the deadline started before the request: the attempt that arrived last is the one it times out.
    /// An arrival is counted before the SDK dispatches it: wait for the first attempt to be inside the method first.
    /// </summary>
    protected async Task TimeOutEachAttemptAsync(int first, int last, params string[] paths)
    {
        for (var arrived = first; arrived <= last; arrived++)
        {
            await WaitUntil(() => paths.Sum(path => App.Arrivals[path]) == arrived);
            Clock.Advance(Policy.CallTimeout);
        }
    }
}

/// <summary>
/// daprd's actor-call <c>timeout</c> (post-lock policy, transport/http/http.go Invoke): an attempt that outlasts it is given
/// up on, its turn released, the breaker told, and the retry sends the call again while the first still runs in the app.
/// The app's Dapr.Actors 1.19 has a per-actor turn lock of its own (ActorManager.DispatchInternalAsync takes
/// ActorTurnLock with the request's RequestAborted), so a repeat that reaches the app waits there for the first turn,
/// and is dropped when daprd gives up on it too.
/// </summary>
public sealed class ActorCallTimeoutTests : ActorCallClockTest
{
    private const string DeadlineExceeded = "error invoke actor method: context deadline exceeded";

    protected override ActorCallPolicy Policy => new(
        MaxRetries: 2, BreakerConsecutiveFailures: 10, BreakerTimeout: TimeSpan.FromSeconds(30),
        CallTimeout: TimeSpan.FromMilliseconds(300));

    [Fact]
    public async Task Slow_call_is_sent_again_while_the_first_attempt_still_runs_and_fails_with_context_deadline_exceeded()
    {
        var call = Proxy("slow").SlowAsync(4000);
        await WaitUntil(() => App.Probe.Inside("slow") == 1); // in the method, not only through the app's door
        await TimeOutEachAttemptAsync(1, 3, "/actors/TestActor/slow/method/SlowAsync");
        var ex = await Assert.ThrowsAsync<DaprApiException>(() => call);

        Assert.Equal("ERR_ACTOR_INVOKE_METHOD", ex.ErrorCode);
        Assert.Equal(DeadlineExceeded, ex.Message);
        Assert.Equal([DeadlineExceeded, DeadlineExceeded, DeadlineExceeded], ErrorsOf("slow")); // the first attempt and both retries
        Assert.Equal(3, Sidecar.ActorCallTimeouts);
        Assert.Equal(3, App.Arrivals["/actors/TestActor/slow/method/SlowAsync"]); // all three reached the app...
        Assert.Equal(1, App.Probe.Inside("slow")); // ...and the caller is answered while the first still runs there
        Assert.Equal(1, App.Probe.MaxPerId); // the SDK's own turn lock kept the repeats out of the method
    }

    [Fact]
    public async Task Turn_of_a_timed_out_call_is_released_while_the_app_still_runs_it()
    {
        const string slowPath = "/actors/TestActor/same/method/SlowAsync";
        const string addPath = "/actors/TestActor/same/method/AddAsync";
        var slow = Proxy("same").SlowAsync(4000);
        await WaitUntil(() => App.Probe.Inside("same") == 1);
        await TimeOutEachAttemptAsync(1, 1, slowPath);
        await WaitUntil(() => Sidecar.ActorCallTimeouts == 1);

        // The fake's turn is free: another call to the same id is sent to the app beside the method daprd gave up on
        // (it then waits in the SDK's turn lock until its own attempts time out). Its attempts and the slow call's
        // repeats take the turn one at a time, in whichever order.
        var add = Proxy("same").AddAsync(1);
        await TimeOutEachAttemptAsync(2, 6, slowPath, addPath);
        var ex = await Assert.ThrowsAsync<DaprApiException>(() => add);
        Assert.Equal(DeadlineExceeded, ex.Message);
        Assert.Equal(3, App.Arrivals[addPath]);
        Assert.Equal(1, App.Probe.Inside("same"));

        await Assert.ThrowsAsync<DaprApiException>(() => slow);
        await WaitUntil(() => App.Probe.Inside("same") == 0);
        Assert.Equal(1, await Proxy("same").AddAsync(1)); // the repeats given up on never ran
    }

    private IEnumerable<string?> ErrorsOf(string id) =>
        Sidecar.ActorCallAttempts.Where(attempt => attempt.ActorId == id).Select(attempt => attempt.Error);
}

/// <summary>
/// A call answered within the timeout. The deadline is on the sidecar's clock, which moves only when the test moves it
/// to just short of the deadline while the call is out: on a loaded machine a quick call can outlast a real 300 ms.
/// </summary>
public sealed class ActorCallWithinTimeoutTests : ActorCallClockTest
{
    protected override ActorCallPolicy Policy => new(MaxRetries: 2, CallTimeout: TimeSpan.FromMilliseconds(300));

    [Fact]
    public async Task Call_within_the_timeout_is_answered_normally()
    {
        // AddAsync reads its count from the sidecar while the call is out: the clock moves then.
        Sidecar.BeforeActorStateRead = _ =>
        {
            Clock.Advance(Policy.CallTimeout - TimeSpan.FromMilliseconds(1));
            return Task.CompletedTask;
        };

        Assert.Equal(1, await Proxy("quick").AddAsync(1));
        Assert.Equal(TimeSpan.FromMilliseconds(299), Clock.GetUtcNow() - Clock.Start); // the read came during the call
        Assert.Equal([null], Sidecar.ActorCallAttempts.Select(attempt => attempt.Error));
        Assert.Equal(0, Sidecar.ActorCallTimeouts);
        Assert.Equal(1, App.Arrivals["/actors/TestActor/quick/method/AddAsync"]);
    }
}

/// <summary>Timed-out attempts are failures to the actor's circuit breaker (deadlines on a clock the test moves, as above).</summary>
public sealed class ActorCallTimeoutBreakerTests : ActorCallClockTest
{
    protected override ActorCallPolicy Policy => new(
        MaxRetries: 2, BreakerConsecutiveFailures: 3, BreakerTimeout: TimeSpan.FromSeconds(30),
        BreakerPerActorId: true, CallTimeout: TimeSpan.FromMilliseconds(300));

    [Fact]
    public async Task Three_timed_out_attempts_open_a_breaker_that_trips_at_three_failures()
    {
        var proxy = Proxy("slow");
        var call = proxy.SlowAsync(3000);
        await WaitUntil(() => App.Probe.Inside("slow") == 1); // in the method, not only through the app's door
        await TimeOutEachAttemptAsync(1, 3, "/actors/TestActor/slow/method/SlowAsync");

        await Assert.ThrowsAsync<DaprApiException>(() => call);

        var ex = await Assert.ThrowsAsync<DaprApiException>(() => proxy.SlowAsync(0));
        Assert.Equal("error invoke actor method: circuit breaker is open", ex.Message);
        var timedOut = "error invoke actor method: context deadline exceeded";
        Assert.Equal([timedOut, timedOut, timedOut], Sidecar.ActorCallAttempts.Select(attempt => attempt.Error)); // the refused call is no attempt
        Assert.Equal(3, Sidecar.ActorCallTimeouts);
        Assert.Equal(3, App.Arrivals["/actors/TestActor/slow/method/SlowAsync"]); // the refused call never reached the app
    }
}

/// <summary>
/// daprd applies the type's actor-call timeout to reminder deliveries too (targets/app/app.go InvokeReminder runs
/// doInvokeMethod, whose post-lock policy holds the timeout), but not its retry or breaker (router.go CallReminder calls
/// callReminder once for a type with a policy): a delivery past the timeout is a FAILED firing, which the Scheduler fires
/// again 1 s later, while the app's callback may still run.
/// </summary>
public sealed class ReminderDeliveryTimeoutTests : ActorCallClockTest
{
    protected override ActorCallPolicy Policy => new(MaxRetries: 2, CallTimeout: TimeSpan.FromMilliseconds(1500));

    // The deadline is on the sidecar's clock, moved past it only once the callback is inside: a real 1.5 s could pass
    // before a loaded machine brought the delivery to the callback (its first reminder delivery JITs the SDK's path).
    [Fact]
    public async Task Reminder_delivery_past_the_timeout_is_a_failed_firing_retried_by_the_scheduler_not_by_the_actor_retry()
    {
        await Proxy("r").RegisterReminderAsync(new ReminderSpec("once", "slow:4000", DueMs: 0, PeriodMs: 0));
        var due = Assert.Single(Sidecar.Reminders).NextDueAt;

        var firing = Sidecar.FireReminderAsync("TestActor", "r", "once");
        await WaitUntil(() => App.Probe.Inside("r") == 1);
        Clock.Advance(Policy.CallTimeout);
        using var fired = await firing;

        Assert.Equal(System.Net.HttpStatusCode.InternalServerError, fired.StatusCode);
        Assert.Equal("context deadline exceeded", await fired.Content.ReadAsStringAsync());
        Assert.Equal(1, Sidecar.ActorCallTimeouts);
        Assert.Equal(1, App.Arrivals["/actors/TestActor/r/method/remind/once"]); // delivered once: no actorRetry for reminders
        Assert.Equal(1, App.Probe.Inside("r")); // answered while the callback still runs in the app
        Assert.Equal(due.AddSeconds(1), Assert.Single(Sidecar.Reminders).NextDueAt); // not spent: the Scheduler tries again
    }
}

/// <summary>
/// The timeout is decided by which came first, the app's reply or the deadline, not by when the sidecar's thread gets
/// to look: daprd's runner selects on the reply and the deadline from the start (resiliency policy.go), so a reply that
/// comes after the deadline is given up on even when the sidecar holds it by the time it looks.
/// </summary>
public sealed class ActorCallLateReplyTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromMilliseconds(200);

    [Fact]
    public async Task Reply_that_comes_only_after_the_deadline_is_given_up_on_even_when_it_is_in_hand_when_the_sidecar_looks()
    {
        var clock = new LateTimerClock();
        var options = new FakeSidecarOptions { TimeProvider = clock };
        options.ActorCallPolicies["Late"] = new ActorCallPolicy(MaxRetries: 2, CallTimeout: Timeout);
        await using var sidecar = await FakeDaprSidecar.StartAsync(options);
        using var channel = new LateAppChannel(clock, late: Timeout * 2);
        sidecar.AppChannel = channel;

        using var http = new HttpClient { BaseAddress = sidecar.HttpEndpoint };
        using var answer = await http.PutAsync("v1.0/actors/Late/a/method/m", new StringContent("{}"));

        Assert.Equal(System.Net.HttpStatusCode.InternalServerError, answer.StatusCode);
        Assert.Contains("context deadline exceeded", await answer.Content.ReadAsStringAsync());
        var timedOut = "error invoke actor method: context deadline exceeded";
        Assert.Equal([timedOut, timedOut, timedOut], sidecar.ActorCallAttempts.Select(attempt => attempt.Error));
        Assert.Equal(3, sidecar.ActorCallTimeouts);
        Assert.Equal(3, channel.MethodCalls);
    }

    /// <summary>
    /// A clock the test moves by hand whose timers have not fired yet: the deadline's callback is still waiting for a
    /// thread when the reply is in hand, as on a starved thread pool.
    /// </summary>
    private sealed class LateTimerClock : TimeProvider
    {
        private long ticks = TimeProvider.System.GetTimestamp();

        public override long TimestampFrequency => TimeProvider.System.TimestampFrequency;

        public override long GetTimestamp() => Interlocked.Read(ref ticks);

        public void Advance(TimeSpan by) => Interlocked.Add(ref ticks, (long)(by.TotalSeconds * TimestampFrequency));

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period) => new NotYet();

        private sealed class NotYet : ITimer
        {
            public bool Change(TimeSpan dueTime, TimeSpan period) => true;

            public void Dispose()
            {
            }

            public ValueTask DisposeAsync() => ValueTask.CompletedTask;
        }
    }

    /// <summary>An app whose method calls answer 200 <paramref name="late"/> after they were sent (on its clock), at once: the reply is complete when the sidecar first looks.</summary>
    private sealed class LateAppChannel(LateTimerClock clock, TimeSpan late) : HttpMessageHandler
    {
        private int methodCalls;

        public int MethodCalls => Volatile.Read(ref methodCalls);

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            if (request.Method == HttpMethod.Get)
            {
                return Task.FromResult(new HttpResponseMessage(System.Net.HttpStatusCode.OK) { Content = new StringContent("""{"entities":["Late"]}""") });
            }

            Interlocked.Increment(ref methodCalls);
            clock.Advance(late);
            return Task.FromResult(new HttpResponseMessage(System.Net.HttpStatusCode.OK) { Content = new StringContent("{}") });
        }
    }
}
