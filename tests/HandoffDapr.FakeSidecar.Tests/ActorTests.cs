using Dapr;
using Dapr.Actors;
using Dapr.Actors.Client;

namespace HandoffDapr.FakeSidecar.Tests;

public sealed class ActorTests : SidecarTest
{
    [Fact]
    public async Task State_saved_through_the_state_manager_round_trips_and_is_visible_in_the_sidecar()
    {
        Assert.Equal(5, await Proxy("run-1").AddAsync(5));
        Assert.Equal(12, await Proxy("run-1").AddAsync(7));

        Assert.Equal(12, Sidecar.GetActorState("TestActor", "run-1", "count")!.Value.GetInt32());
        Assert.Equal("12", Sidecar.GetActorStateKeys("TestActor", "run-1")["count"]);
        Assert.Null(Sidecar.GetActorState("TestActor", "run-2", "count"));
    }

    [Fact]
    public async Task State_is_read_back_from_the_sidecar_after_deactivation()
    {
        await Proxy("run-1").AddAsync(3);
        using var deactivated = await Sidecar.DeactivateActorAsync("TestActor", "run-1");
        Assert.Equal(System.Net.HttpStatusCode.OK, deactivated.StatusCode);

        Sidecar.SetActorState("TestActor", "run-1", "count", 40);
        await Sidecar.DeactivateActorAsync("TestActor", "run-1");

        Assert.Equal(41, await Proxy("run-1").AddAsync(1));
    }

    [Fact]
    public async Task Typed_proxy_call_goes_sidecar_to_app_and_back()
    {
        Assert.Equal("abc", await Proxy("abc").SlowAsync(0));
    }

    [Fact]
    public async Task Untyped_json_proxy_call_goes_sidecar_to_app_and_back()
    {
        var proxy = App.ProxyFactory.Create(new ActorId("json-1"), "TestActor");

        Assert.Equal(4, await proxy.InvokeMethodAsync<int, int>("AddAsync", 4));
        Assert.Equal(4, await proxy.InvokeMethodAsync<int>("GetCountAsync"));
    }

    [Fact]
    public async Task Exception_in_the_actor_comes_back_through_the_error_response_header()
    {
        var ex = await Assert.ThrowsAsync<ActorMethodInvocationException>(() => Proxy("x").FailAsync("no luck"));

        Assert.Contains("InvalidOperationException", ex.Message);
    }

    [Fact]
    public async Task Throwing_json_call_becomes_daprd_invoke_error()
    {
        var proxy = App.ProxyFactory.Create(new ActorId("x"), "TestActor");

        var ex = await Assert.ThrowsAsync<DaprApiException>(() => proxy.InvokeMethodAsync("FailAsync", "boom"));

        Assert.Equal("ERR_ACTOR_INVOKE_METHOD", ex.ErrorCode);
        Assert.Equal("error invoke actor method: error from actor service: (500) ", ex.Message);
        Assert.Contains(Sidecar.AppExceptions, e => e.ToString().Contains("boom"));
    }

    [Fact]
    public async Task Concurrent_calls_to_one_actor_are_serialised()
    {
        await Task.WhenAll(Proxy("same").SlowAsync(250), Proxy("same").SlowAsync(250));

        // Never two turns of one actor at once (no assertion on elapsed time: the probe counts the overlap itself).
        Assert.Equal(1, App.Probe.MaxPerId);
    }

    [Fact]
    public async Task Calls_to_different_actor_ids_run_concurrently()
    {
        // Each turn stays until the other is inside too, however far apart a loaded machine starts the two calls (a fixed
        // 1.5 s turn needed them to start within 1.5 s); turns taken one after the other wait out the 30 s and fail below.
        await Task.WhenAll(Proxy("a").UntilOverlapAsync(30_000), Proxy("b").UntilOverlapAsync(30_000));

        Assert.Equal(1, App.Probe.MaxPerId);
        Assert.Equal(2, App.Probe.MaxOverall);
    }

    [Fact]
    public async Task Call_to_an_actor_type_the_app_does_not_host_is_refused_like_daprd()
    {
        var proxy = App.ProxyFactory.CreateActorProxy<ITestActor>(new ActorId("1"), "NoSuchActor");

        var ex = await Assert.ThrowsAsync<DaprApiException>(() => proxy.AddAsync(1));

        Assert.Equal("ERR_ACTOR_INVOKE_METHOD", ex.ErrorCode);
        Assert.Contains("did not find address for actor 'NoSuchActor||1'", ex.Message);
    }

    [Fact]
    public async Task Injected_state_save_failure_fails_the_call_and_keeps_the_old_state()
    {
        await Proxy("f").AddAsync(1);
        Sidecar.FailNextActorStateSaves(1);

        var ex = await Assert.ThrowsAsync<ActorMethodInvocationException>(() => Proxy("f").AddAsync(10));

        Assert.Contains("DaprApiException", ex.Message);
        Assert.Equal(1, Sidecar.GetActorState("TestActor", "f", "count")!.Value.GetInt32());
    }

    [Fact]
    public async Task Predicate_fault_hits_only_matching_actors_until_disposed()
    {
        using (Sidecar.FailActorStateOperations(c => c.ActorId == "bad" && c.Operation == ActorStateOperation.Transaction))
        {
            await Assert.ThrowsAsync<ActorMethodInvocationException>(() => Proxy("bad").AddAsync(1));
            Assert.Equal(1, await Proxy("good").AddAsync(1));
        }

        Assert.Equal(2, await Proxy("bad").AddAsync(2)); // the SDK cleared its cache after the failure; the store never got the 1
    }

    [Fact]
    public async Task Timer_registration_is_recorded_and_firing_reaches_the_callback()
    {
        await Proxy("t").RegisterTimerAsync("tick");

        var timer = Assert.Single(Sidecar.Timers);
        Assert.Equal(("TestActor", "t", "tick", "0h1m0s0ms"), (timer.ActorType, timer.ActorId, timer.Name, timer.DueTime));

        using var fired = await Sidecar.FireTimerAsync("TestActor", "t", "tick");
        Assert.True(fired.IsSuccessStatusCode, await fired.Content.ReadAsStringAsync());
        Assert.Equal(["t:tick"], App.ReminderLog.Timers);
    }
}
