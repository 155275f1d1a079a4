using System.Net;
using HandoffDapr.Service.DaprHost;
using HandoffDapr.Service.Tests.Infrastructure;

namespace HandoffDapr.Service.Tests.DaprMode;

/// <summary>
/// How long an activation trusts the state it has cached: daprd may have deactivated its actor without telling the
/// app (an app it found unhealthy gets no DELETE) and placed the run on another replica, which changed it; that takes
/// longer than <see cref="HandoffRunActor.CacheTrustedFor"/> without a turn here.
/// </summary>
public sealed class ActorStateCacheTests : DaprModeTest
{
    [Fact]
    public async Task Actor_reads_its_run_again_after_a_pause_longer_than_it_trusts_its_cache_and_not_before()
    {
        var run = Payloads.Run(931, ["acme/shop"], automation: false);
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/931/handoff", Payloads.Trigger(run))).StatusCode);
        var reads = 0;
        factory.Sidecar.BeforeActorStateRead = call =>
        {
            if (call.ActorId == "931")
            {
                Interlocked.Increment(ref reads);
            }

            return Task.CompletedTask;
        };

        time.Advance(HandoffRunActor.CacheTrustedFor - TimeSpan.FromMilliseconds(1));
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/runs/931/handoff")).StatusCode);
        var withinTheTrust = Volatile.Read(ref reads);
        time.Advance(HandoffRunActor.CacheTrustedFor);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/runs/931/handoff")).StatusCode);

        Assert.Equal(0, withinTheTrust);
        Assert.True(Volatile.Read(ref reads) > 0, "the turn after the pause read its cache");
    }

    [Fact]
    public async Task Run_changed_by_another_replica_while_this_one_was_away_is_read_as_changed_after_the_pause()
    {
        var run = Payloads.Run(932, ["acme/shop"], automation: false);
        Assert.Equal(HttpStatusCode.Accepted, (await client.PostJsonAsync("/runs/932/handoff", Payloads.Trigger(run))).StatusCode);
        var before = await (await client.GetAsync("/runs/932/handoff")).ReadJsonAsync();
        // Another replica's save while daprd had this app down: the run's timeline cut to its first entry.
        var timeline = factory.Sidecar.GetActorState(Actor, "932", HandoffRunActor.TimelineKey)!.Value;
        factory.Sidecar.SetActorState(Actor, "932", HandoffRunActor.TimelineKey, new[] { timeline[0] });

        time.Advance(HandoffRunActor.CacheTrustedFor);
        var after = await (await client.GetAsync("/runs/932/handoff")).ReadJsonAsync();

        Assert.True(before["timeline"]!.AsArray().Count > 1, "the run's timeline had more than one entry");
        Assert.Single(after["timeline"]!.AsArray());
    }
}
