using Dapr;
using Dapr.Actors;

namespace HandoffDapr.FakeSidecar.Tests;

/// <summary>daprd's resiliency policy around actor calls: retries, and a circuit breaker every attempt is counted by.</summary>
public sealed class ActorCallPolicyTests : SidecarTest
{
    protected override FakeSidecarOptions Options => WithTestActorPolicy(
        new ActorCallPolicy(MaxRetries: 3, BreakerConsecutiveFailures: 10, BreakerTimeout: TimeSpan.FromSeconds(30)));

    [Fact]
    public async Task Call_whose_actor_throws_is_retried_and_answered_with_the_last_attempts_error()
    {
        await Assert.ThrowsAsync<ActorMethodInvocationException>(() => Proxy("x").FailAsync("no luck"));

        Assert.Equal(4, App.ReminderLog.Failures.Count);
        Assert.Equal(1, await Proxy("x").AddAsync(1));
    }

    [Fact]
    public async Task Type_scoped_breaker_opened_by_one_actors_failures_refuses_calls_to_every_actor_of_the_type()
    {
        // Three calls, four attempts each: twelve failures in a row.
        for (var i = 0; i < 3; i++)
        {
            await Assert.ThrowsAnyAsync<Exception>(() => Proxy("bad").FailAsync("no luck"));
        }

        var ex = await Assert.ThrowsAsync<DaprApiException>(() => Proxy("good").AddAsync(1));

        Assert.Equal("ERR_ACTOR_INVOKE_METHOD", ex.ErrorCode);
        Assert.Equal("error invoke actor method: circuit breaker is open", ex.Message);
        Assert.Equal(10, App.ReminderLog.Failures.Count); // the breaker opened at the tenth; the rest never reached the app
        Assert.Null(Sidecar.GetActorState("TestActor", "good", "count"));
    }
}

/// <summary>The same with <c>circuitBreakerScope: id</c>: one breaker per actor.</summary>
public sealed class ActorCallPolicyPerIdTests : SidecarTest
{
    protected override FakeSidecarOptions Options => WithTestActorPolicy(
        new ActorCallPolicy(MaxRetries: 3, BreakerConsecutiveFailures: 10, BreakerTimeout: TimeSpan.FromSeconds(30), BreakerPerActorId: true));

    [Fact]
    public async Task Id_scoped_breaker_refuses_only_the_failing_actor()
    {
        var proxy = Proxy("bad");
        for (var i = 0; i < 3; i++)
        {
            await Assert.ThrowsAnyAsync<Exception>(() => proxy.FailAsync("no luck"));
        }

        Assert.Equal(1, await Proxy("good").AddAsync(1));
        var ex = await Assert.ThrowsAsync<DaprApiException>(() => proxy.AddAsync(1));
        Assert.Equal("error invoke actor method: circuit breaker is open", ex.Message);
    }
}
