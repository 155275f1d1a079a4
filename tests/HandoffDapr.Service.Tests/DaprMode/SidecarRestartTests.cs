using System.Net;
using System.Text.Json.Nodes;
using HandoffDapr.FakeSidecar;
using HandoffDapr.Service.Tests.Infrastructure;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// daprd restarting while the app runs (its container restarted, the pod kept): a new sidecar on the same ports, which
/// knows nothing of the actors its predecessor had activated in the app.
/// </summary>
public sealed class SidecarRestartTests : DaprModeTest
{
    private FakeDaprSidecar? restarted;

    // The app on the system clock: nothing here moves time.
    protected override Task<DaprServiceFactory> StartServiceAsync() => DaprServiceFactory.StartAsync(cursor.Url);

    public override async Task DisposeAsync()
    {
        try
        {
            await base.DisposeAsync();
        }
        catch (ObjectDisposedException)
        {
            // Its sidecar was stopped by the test already.
        }

        if (restarted is not null)
        {
            await restarted.DisposeAsync();
        }
    }

    /// <summary>Stops the sidecar and starts another where the app expects it, with <paramref name="store"/> as its actor state.</summary>
    /// <param name="whileDown">What the test does between the stop and the start.</param>
    private async Task<FakeDaprSidecar> RestartSidecarAsync(Action<FakeDaprSidecar>? store = null, Func<Task>? whileDown = null)
    {
        var old = factory.Sidecar;
        var options = new FakeSidecarOptions
        {
            HttpPort = old.HttpEndpoint.Port,
            GrpcPort = old.GrpcEndpoint.Port,
            DeadLetterRetriableFailures = old.Options.DeadLetterRetriableFailures,
            ActorStateTtlEnabled = old.Options.ActorStateTtlEnabled,
        };
        await old.DisposeAsync();
        if (whileDown is not null)
        {
            await whileDown();
        }

        restarted = await FakeDaprSidecar.StartAsync(options);
        DaprServiceFactory.AddBindings(restarted, cursor.Url);
        store?.Invoke(restarted);
        restarted.AppChannel = factory.Server.CreateHandler();
        return restarted;
    }

    [Fact]
    public async Task App_reads_ready_and_takes_calls_again_once_the_sidecar_is_back_on_the_same_ports()
    {
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/903/handoff", Payloads.Trigger(Payloads.Run(903, ["acme/shop"], automation: false)))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/readyz")).StatusCode);

        HttpResponseMessage down = null!, whileDown = null!;
        // Started again on the old one's ports (its Options and endpoints outlive its stop).
        var again = await RestartSidecarAsync(whileDown: async () =>
        {
            down = await client.GetAsync("/readyz");
            whileDown = await client.PostJsonAsync("/runs/904/handoff", Payloads.Trigger(Payloads.Run(904, ["acme/shop"], automation: false)));
        });
        Assert.Equal(HttpStatusCode.ServiceUnavailable, down.StatusCode);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, whileDown.StatusCode);

        var deadline = DateTime.UtcNow.AddSeconds(20);
        HttpStatusCode ready;
        while ((ready = (await client.GetAsync("/readyz")).StatusCode) != HttpStatusCode.OK && DateTime.UtcNow < deadline)
        {
            await Task.Delay(100);
        }

        Assert.Equal(HttpStatusCode.OK, ready);
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/905/handoff", Payloads.Trigger(Payloads.Run(905, ["acme/web"], automation: false)))).StatusCode);
        Assert.Equal(DeliveryOutcome.Success, (await again.DeliverEventAsync("pubsub", "autofix-run-completed", Payloads.Run(906, ["acme/api"]))).Outcome);
        Assert.NotNull(again.GetActorState(Actor, "906", "coding_agents"));
    }

    [Fact]
    public async Task Actor_active_before_a_sidecar_restart_reads_what_another_replica_stored_meanwhile()
    {
        var launched = await (await client.PostJsonAsync("/runs/920/handoff", Payloads.Trigger(Payloads.Run(920, ["acme/shop"], automation: false)))).ReadJsonAsync();
        var agentId = launched.FirstLaunchedAgentId();
        var stored = factory.Sidecar.GetActorStateKeys(Actor, "920");

        // daprd restarts. While it is down the run is placed on another replica, which records the agent's end in the
        // store; then it is placed here again, where the app still holds the actor, never deactivated by the new daprd.
        await RestartSidecarAsync(store: sidecar =>
        {
            foreach (var (key, value) in stored)
            {
                sidecar.SetRawActorState(Actor, "920", key, value);
            }

            var agents = JsonNode.Parse(stored["coding_agents"])!.AsObject();
            agents[agentId]!["status"] = "completed";
            sidecar.SetRawActorState(Actor, "920", "coding_agents", agents.ToJsonString());
        });

        var view = await (await client.GetAsync("/runs/920/handoff")).ReadJsonAsync();

        Assert.Equal("completed", view["coding_agents"]![agentId]!["status"]!.GetValue<string>());
    }

    /// <summary>
    /// An actor active from before daprd's restart reads its state from the store once, at its first turn after it: from
    /// then on what it read is current again, and its turns read its cache, as those of an actor activated since.
    /// </summary>
    [Fact]
    public async Task Actor_active_before_a_sidecar_restart_reads_the_store_once_then_its_cache_again()
    {
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/922/handoff", Payloads.Trigger(Payloads.Run(922, ["acme/shop"], automation: false)))).StatusCode);
        var stored = factory.Sidecar.GetActorStateKeys(Actor, "922");
        var sidecar = await RestartSidecarAsync(store: sidecar =>
        {
            foreach (var (key, value) in stored)
            {
                sidecar.SetRawActorState(Actor, "922", key, value);
            }
        });
        var reads = 0;
        sidecar.BeforeActorStateRead = call =>
        {
            if (call.ActorId == "922")
            {
                Interlocked.Increment(ref reads);
            }

            return Task.CompletedTask;
        };

        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/runs/922/handoff")).StatusCode);
        var afterRestart = Volatile.Read(ref reads);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/runs/922/handoff")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/runs/922/handoff")).StatusCode);

        Assert.True(afterRestart > 0, "the first turn after the restart read its cache");
        Assert.Equal(afterRestart, Volatile.Read(ref reads));
    }

    [Fact]
    public async Task Actor_keeps_reading_its_cached_state_while_the_sidecar_has_not_restarted()
    {
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/921/handoff", Payloads.Trigger(Payloads.Run(921, ["acme/shop"], automation: false)))).StatusCode);
        var reads = 0;
        factory.Sidecar.BeforeActorStateRead = call =>
        {
            if (call.ActorId == "921")
            {
                Interlocked.Increment(ref reads);
            }

            return Task.CompletedTask;
        };

        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/runs/921/handoff")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/runs/921/handoff")).StatusCode);

        Assert.Equal(0, Volatile.Read(ref reads));
    }
}
