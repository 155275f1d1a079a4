using Dapr;

namespace HandoffDapr.FakeSidecar.Tests;

/// <summary>
/// daprd's deactivation (idle, rebalancing, shutdown) of an actor with a call in progress: targets/app/app.go Deactivate
/// closes the actor's lock (lock.go Close cancels the context of the call in the turn and does not wait for it), deletes
/// the id from the table and sends <c>DELETE actors/{type}/{id}</c>, while the app's method may still run.
/// </summary>
public sealed class DeactivationTests : SidecarTest
{
    [Fact]
    public async Task Deactivation_cancels_the_call_in_progress_and_sends_the_delete_while_the_method_still_runs()
    {
        var slow = Proxy("busy").SlowAsync(4000);
        await WaitUntil(() => App.Probe.Inside("busy") == 1);

        using var deactivated = await Sidecar.DeactivateActorAsync("TestActor", "busy");

        var (id, inside) = Assert.Single(App.Deactivations());
        Assert.Equal("busy", id);
        Assert.Equal(1, inside); // the DELETE reached the app while SlowAsync was inside the actor
        var ex = await Assert.ThrowsAsync<DaprApiException>(() => slow);
        Assert.Equal("error invoke actor method: context canceled", ex.Message);
        Assert.Equal(1, App.Arrivals["/actors/TestActor/busy/method/SlowAsync"]); // no policy for the type: not sent again
    }

    [Fact]
    public async Task Reminder_delivery_cancelled_by_a_deactivation_is_a_failed_firing()
    {
        await Proxy("rb").RegisterReminderAsync(new ReminderSpec("once", "slow:4000", DueMs: 0, PeriodMs: 0));
        var due = Assert.Single(Sidecar.Reminders).NextDueAt;
        var firing = Sidecar.FireReminderAsync("TestActor", "rb", "once");
        await WaitUntil(() => App.Probe.Inside("rb") == 1);

        (await Sidecar.DeactivateActorAsync("TestActor", "rb")).Dispose();

        using var fired = await firing;
        Assert.Equal(System.Net.HttpStatusCode.InternalServerError, fired.StatusCode);
        Assert.Equal("context canceled", await fired.Content.ReadAsStringAsync());
        Assert.Equal(due.AddSeconds(1), Assert.Single(Sidecar.Reminders).NextDueAt);
    }
}

/// <summary>With a retry policy for the type, the call cancelled by the deactivation is made again, to a new activation.</summary>
public sealed class DeactivationRetryTests : SidecarTest
{
    protected override FakeSidecarOptions Options => WithTestActorPolicy(new ActorCallPolicy(MaxRetries: 1));

    [Fact]
    public async Task Call_cancelled_by_a_deactivation_is_retried_and_answered_by_a_new_activation()
    {
        var add = Proxy("moved").AddAsync(1); // warms the id up and saves count 1
        Assert.Equal(1, await add);

        var slow = Proxy("moved").SlowAsync(4000); // still inside while the deactivation is made, on a slow machine too
        await WaitUntil(() => App.Probe.Inside("moved") == 1);
        (await Sidecar.DeactivateActorAsync("TestActor", "moved")).Dispose();

        Assert.Equal("moved", await slow); // the retry's answer
        Assert.Equal(2, App.Arrivals["/actors/TestActor/moved/method/SlowAsync"]);
        Assert.Equal(2, await Proxy("moved").AddAsync(1)); // the new activation read the state back from the sidecar
    }
}

/// <summary>The fake's former deactivation, kept as an option: it waits for the call in progress.</summary>
public sealed class WaitingDeactivationTests : SidecarTest
{
    protected override FakeSidecarOptions Options => new() { DeactivationCancelsCalls = false };

    [Fact]
    public async Task Deactivation_waits_for_the_call_in_progress()
    {
        // The call stays inside until another turn joins it: a fixed 500 ms could end before a loaded machine's
        // WaitUntil saw it inside.
        var busy = Proxy("busy").UntilOverlapAsync(30_000);
        await WaitUntil(() => App.Probe.Inside("busy") == 1);

        var deactivation = Sidecar.DeactivateActorAsync("TestActor", "busy");
        await Task.Delay(300); // time for a DELETE that does not wait to be sent (too short, and such a fake passes)
        Assert.Equal("other", await Proxy("other").UntilOverlapAsync(0)); // ends busy's call
        (await deactivation).Dispose();

        Assert.Equal(0, Assert.Single(App.Deactivations()).CallsInside); // the DELETE came after the method ended
        Assert.Equal("busy", await busy);
    }
}
